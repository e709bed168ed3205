"""Token-level augmentations on whole batches, vectorised, on the batch's device.

Every function takes token tensors ``input_ids`` / ``attention_mask`` Long[B, T] and a boolean
``content`` [B, T] (True on the real, non-special tokens: never [CLS], [SEP], padding, nor any other
id of ``tokenizer.all_special_ids``, [UNK] included, as BERT's masking treats them), draws its
randomness per row from the ``torch.Generator`` it is given, and never touches a non-content
position: special tokens are never masked, cut, deleted or moved.

Words: deletion and swap act on words (every piece of a word together) when given the word index
of each token (:func:`word_index`); with ``word_starts=None`` every token is its own word.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "uniform",
    "content_mask",
    "word_index",
    "mlm_mask",
    "token_cutoff",
    "delete_words",
    "swap_words",
]


def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """U[0, 1) of ``shape`` drawn from ``generator`` (on its own device), moved to ``device``."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def content_mask(input_ids: Tensor, attention_mask: Tensor, special_ids: Tensor) -> Tensor:
    """Bool[B, T]: attended tokens that are no special token (``special_ids``: Long[S])."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))


def word_index(input_ids: Tensor, content: Tensor, word_starts: Tensor | None) -> Tensor:
    """Long[B, T]: 0-based index, within its row, of the word each content token belongs to; -1 off
    the content. ``word_starts``: Bool[V], True for ids that begin a word (None: each token is a
    word). A row's first content token opens word 0 even without a word-start marker."""
    starts = content if word_starts is None else content & word_starts.to(input_ids.device)[input_ids]
    first = content & (content.long().cumsum(dim=1) == 1)
    index = (starts | first).long().cumsum(dim=1) - 1
    return torch.where(content, index, torch.full_like(index, -1))


def mlm_mask(
    input_ids: Tensor,
    content: Tensor,
    generator: torch.Generator,
    *,
    mask_token_id: int,
    replacement_ids: Tensor,
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """BERT masked language modelling inputs (Devlin et al. 2019, section 3.1).

    Each content token is selected independently with ``probability`` (15%); of the selected,
    ``mask_fraction`` (80%) become ``mask_token_id``, ``random_fraction`` (10%) a token drawn
    uniformly from ``replacement_ids`` (Long[R], the non-special vocabulary), the rest stay as
    they are. Returns (input_ids with the replacements, selected Bool[B, T], targets Long[B, T]:
    the original id where selected, -100 elsewhere, the ``ignore_index`` of cross-entropy).
    """
    device = input_ids.device
    selected = content & (uniform(input_ids.shape, generator, device) < probability)
    action = uniform(input_ids.shape, generator, device)
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    draw = (uniform(input_ids.shape, generator, device) * len(replacement_ids)).long().clamp_max(len(replacement_ids) - 1)
    random_ids = replacement_ids.to(device)[draw]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    targets = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return masked, selected, targets


def token_cutoff(attention_mask: Tensor, content: Tensor, generator: torch.Generator, *, ratio: float, mode: str = "token") -> Tensor:
    """Token or span cutoff (Shen et al. 2020, "A Simple but Tough-to-Beat Data Augmentation
    Approach for Natural Language Understanding and Generation", section 3).

    Each row loses ``floor(ratio * n)`` of its ``n`` content tokens (the paper's count): random
    positions ("token") or one contiguous span at a random start ("span"). The paper erases them
    from the embedding layer; here they leave the attention mask, so no token attends to them and
    masked pooling skips them. Returns the new attention mask [B, T] (same dtype).
    """
    device = attention_mask.device
    counts = content.sum(dim=1)
    cut_counts = (ratio * counts.double() + 1e-9).floor().long()  # 1e-9: 0.3 * 10 must give 3
    if mode == "token":
        scores = torch.where(content, uniform(content.shape, generator, device), torch.full(content.shape, 2.0, device=device))
        rank = scores.argsort(dim=1).argsort(dim=1)
        cut = content & (rank < cut_counts[:, None])
    elif mode == "span":
        start = (uniform(counts.shape, generator, device) * (counts - cut_counts + 1)).long()
        position = content.long().cumsum(dim=1) - 1  # rank among the row's content tokens
        cut = content & (position >= start[:, None]) & (position < (start + cut_counts)[:, None])
    else:
        raise ValueError(f"cutoff mode {mode!r}; choose 'token' or 'span'")
    return attention_mask.masked_fill(cut, 0)


def delete_words(
    input_ids: Tensor,
    attention_mask: Tensor,
    content: Tensor,
    words: Tensor,
    generator: torch.Generator,
    *,
    probability: float,
    pad_token_id: int,
) -> tuple[Tensor, Tensor]:
    """Random deletion (EDA, Wei and Zou 2019): each word (``words`` from :func:`word_index`) is
    deleted with ``probability``; a row that would lose every word keeps one at random, as EDA
    does. The survivors, special tokens included, are packed to the left in their order and the
    row is padded with ``pad_token_id`` to the same length T. Returns (input_ids, attention_mask)."""
    batch, length = input_ids.shape
    device = input_ids.device
    word_draw = uniform((batch, length), generator, device)  # one draw per word slot (<= T words)
    deleted = content & (word_draw.gather(1, words.clamp(min=0)) < probability)
    word_count = words.max(dim=1).values + 1
    survivor = (uniform((batch,), generator, device) * word_count).long()
    everything_deleted = ~(content & ~deleted).any(dim=1)
    deleted &= ~(everything_deleted[:, None] & (words == survivor[:, None]))
    keep = attention_mask.bool() & ~deleted
    order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)  # kept positions first, in order
    new_mask = torch.arange(length, device=device) < keep.sum(dim=1, keepdim=True)
    packed = input_ids.gather(1, order).masked_fill(~new_mask, pad_token_id)
    return packed, new_mask.to(attention_mask.dtype)


def swap_words(input_ids: Tensor, content: Tensor, words: Tensor, generator: torch.Generator, *, swaps: int = 1) -> Tensor:
    """Random swap (EDA, Wei and Zou 2019): ``swaps`` times, two distinct random words of each row
    trade places (rows with fewer than two words are left alone). Multi-piece words move whole;
    special tokens and padding keep their positions. Returns input_ids [B, T]."""
    batch, length = input_ids.shape
    device = input_ids.device
    position = torch.arange(length, device=device).expand(batch, length)
    word_count = (words.max(dim=1).values + 1).clamp_min(1)
    slot_of_word = position.clone()  # slot_of_word[b, w]: where word w of row b goes
    for _ in range(swaps):
        first = (uniform((batch,), generator, device) * word_count).long()
        second = (first + 1 + (uniform((batch,), generator, device) * (word_count - 1)).long()) % word_count
        slot_first = slot_of_word.gather(1, first[:, None])
        slot_second = slot_of_word.gather(1, second[:, None])
        slot_of_word = slot_of_word.scatter(1, first[:, None], slot_second).scatter(1, second[:, None], slot_first)
    # order the content tokens by (new word slot, offset within the word) ...
    # (a word begins where the previous *content* token belongs to another word: a special token
    # inside a word, such as [UNK] for a character the vocabulary lacks, does not restart it)
    last_content = torch.where(content, position, torch.full_like(position, -1)).cummax(dim=1).values
    before = torch.cat([torch.full_like(last_content[:, :1], -1), last_content[:, :-1]], dim=1)
    previous = torch.where(before >= 0, words.gather(1, before.clamp(min=0)), torch.full_like(words, -1))
    word_begins = content & (words != previous)
    offset = position - torch.where(word_begins, position, torch.zeros_like(position)).cummax(dim=1).values
    key = torch.where(content, slot_of_word.gather(1, words.clamp(min=0)) * length + offset, length * length + position)
    source = key.argsort(dim=1)
    # ... and write them into the row's content positions, in order; the rest map onto themselves
    target = torch.where(content, position, length * length + position).argsort(dim=1)
    return torch.empty_like(input_ids).scatter_(1, target, input_ids.gather(1, source))
