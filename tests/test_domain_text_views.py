"""Text views on captions (tests/fixture_data.py): shapes, the statistics each augmentation promises (checked against
binomial tolerances and naive per-row loops written here), special tokens left alone, and
reproducibility from the engine's generator."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

from multissl.domain import DataConfig, EncoderConfig
from domains.text import TextConfig, TextDomain
from multissl.views import ViewRequest

BATCH = 384


@pytest.fixture(scope="module")
def domain_and_batch(data_root):
    domain = TextDomain(TextConfig(vocab_size=800, max_length=48))
    rows = domain.load(DataConfig(path=str(data_root / "text/corpus/multi30k_captions.txt"), limit=3000))
    batch = domain.collate([rows[i] for i in range(BATCH)])
    return domain, batch


def generator(seed):
    return torch.Generator().manual_seed(seed)


def special_mask(domain, ids):
    return torch.isin(ids, torch.tensor(domain.tokenizer.all_special_ids))


def within_binomial(count, trials, probability, sigmas=5.0):
    """|count / trials - p| within ``sigmas`` binomial standard deviations."""
    return abs(count / trials - probability) <= sigmas * math.sqrt(probability * (1 - probability) / trials)


def words_of_row(domain, ids, mask):
    """Naive word split of one row's content: a new word at every "▁" piece."""
    pieces = domain.tokenizer.convert_ids_to_tokens(ids[mask.bool()].tolist())
    special = set(domain.tokenizer.all_special_tokens)
    words = []
    for piece in pieces:
        if piece in special:
            continue
        if piece.startswith("\u2581") or not words:
            words.append([piece])
        else:
            words[-1].append(piece)
    return [tuple(word) for word in words]


# ------------------------------------------------------------------ plain, sequence, dropout, pair


def test_plain_and_sequence_are_the_collated_tokens(domain_and_batch):
    domain, batch = domain_and_batch
    for kind in ("plain", "sequence"):
        views = domain.make_views(batch, ViewRequest(kind), generator(0))
        assert torch.equal(views["inputs"]["input_ids"], batch["input_ids"])
        assert torch.equal(views["inputs"]["attention_mask"], batch["attention_mask"])
        assert views["skipped"] == 0


def test_dropout_views_differ_only_after_the_encoder_in_train_mode(domain_and_batch):
    domain, batch = domain_and_batch
    small = {key: value[:8] if torch.is_tensor(value) else value for key, value in batch.items()}
    views = domain.make_views(small, ViewRequest("augmented", {"policy": "dropout", "num_views": 2}), generator(0))["views"]
    assert torch.equal(views[0]["input_ids"], views[1]["input_ids"])
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny"))
    encoder.train()
    first, second = encoder(**views[0]).pooled, encoder(**views[1]).pooled
    assert (first - second).abs().max() > 1e-4
    encoder.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(**views[0]).pooled, encoder(**views[1]).pooled, atol=1e-6)


def test_pair_policy_needs_pair_columns(domain_and_batch):
    domain, batch = domain_and_batch
    with pytest.raises(ValueError, match="needs a text_pair column"):
        domain.make_views(batch, ViewRequest("augmented", {"policy": "pair"}), generator(0))
    paired = {**batch, "pair_input_ids": batch["input_ids"].flip(0), "pair_attention_mask": batch["attention_mask"].flip(0)}
    views = domain.make_views(paired, ViewRequest("augmented", {"policy": "pair"}), generator(0))["views"]
    assert len(views) == 2 and torch.equal(views[1]["input_ids"], batch["input_ids"].flip(0))
    negatives = {**paired, "negative_input_ids": batch["input_ids"].roll(1, 0), "negative_attention_mask": batch["attention_mask"].roll(1, 0)}
    views = domain.make_views(negatives, ViewRequest("augmented", {"policy": "pair"}), generator(0))["views"]
    assert len(views) == 3 and torch.equal(views[0]["input_ids"], batch["input_ids"])
    assert torch.equal(views[2]["attention_mask"], batch["attention_mask"].roll(1, 0))


# ------------------------------------------------------------------ masked language modelling


def test_mlm_selects_15_percent_splits_80_10_10_and_never_touches_specials(domain_and_batch):
    domain, batch = domain_and_batch
    ids, attention = batch["input_ids"], batch["attention_mask"]
    views = domain.make_views(batch, ViewRequest("masked"), generator(1))
    masked, selected, targets = views["inputs"]["input_ids"], views["mask"], views["targets"]
    assert views["vocab_size"] == len(domain.tokenizer)
    assert masked.shape == selected.shape == targets.shape == ids.shape and selected.dtype == torch.bool
    assert torch.equal(views["inputs"]["attention_mask"], attention)

    special = special_mask(domain, ids) | (attention == 0)
    content = int((~special).sum())
    assert not (selected & special).any()
    assert within_binomial(int(selected.sum()), content, 0.15)
    assert torch.equal(targets[selected], ids[selected])
    assert (targets[~selected] == -100).all()
    assert torch.equal(masked[~selected], ids[~selected])

    chosen = int(selected.sum())
    to_mask = selected & (masked == domain.tokenizer.mask_token_id)
    changed = selected & (masked != ids) & ~to_mask
    # a random replacement equals the original with chance 1/R (R non-special tokens)
    ordinary = len(domain.tokenizer) - len(set(domain.tokenizer.all_special_ids))
    assert within_binomial(int(to_mask.sum()), chosen, 0.8)
    assert within_binomial(int(changed.sum()), chosen, 0.1 * (1 - 1 / ordinary))
    assert not special_mask(domain, masked[changed]).any()


def test_mask_ratio_option_overrides_the_config(domain_and_batch):
    domain, batch = domain_and_batch
    selected = domain.make_views(batch, ViewRequest("masked", {"mask_ratio": 0.4}), generator(2))["mask"]
    content = int((~special_mask(domain, batch["input_ids"]) & batch["attention_mask"].bool()).sum())
    assert within_binomial(int(selected.sum()), content, 0.4)


# ------------------------------------------------------------------ cutoff, deletion, swap


@pytest.mark.parametrize("mode", ["token", "span"])
def test_cutoff_removes_floor_ratio_of_content_from_the_mask(domain_and_batch, mode):
    domain, batch = domain_and_batch
    ids, attention = batch["input_ids"], batch["attention_mask"]
    request = ViewRequest("augmented", {"policy": "cutoff", "cutoff_ratio": 0.2, "cutoff_mode": mode, "num_views": 3})
    views = domain.make_views(batch, request, generator(3))["views"]
    assert len(views) == 3
    special = special_mask(domain, ids)
    for view in views:
        assert torch.equal(view["input_ids"], ids)
        cut = (attention == 1) & (view["attention_mask"] == 0)
        assert not (cut & special).any()
        assert not ((attention == 0) & (view["attention_mask"] == 1)).any()
        for row in range(len(ids)):
            content = int(((attention[row] == 1) & ~special[row]).sum())
            assert int(cut[row].sum()) == math.floor(0.2 * content + 1e-9)
            if mode == "span" and cut[row].any():
                # contiguous among the row's content tokens ([UNK] inside the span is special: kept)
                is_content = ((attention[row] == 1) & ~special[row]).tolist()
                ranks = [rank for rank, (c, k) in enumerate((c, k) for c, k in zip(is_content, cut[row].tolist()) if c) if k]
                assert ranks == list(range(ranks[0], ranks[0] + len(ranks)))


def test_deletion_keeps_specials_repacks_and_deletes_whole_words(domain_and_batch):
    domain, batch = domain_and_batch
    ids, attention = batch["input_ids"], batch["attention_mask"]
    tokenizer = domain.tokenizer
    request = ViewRequest("augmented", {"policy": "delete", "delete_probability": 0.3})
    view = domain.make_views(batch, request, generator(4))["views"][0]
    new_ids, new_attention = view["input_ids"], view["attention_mask"]
    assert new_ids.shape == ids.shape
    words_before = words_after = 0
    for row in range(len(ids)):
        length = int(new_attention[row].sum())
        assert (new_attention[row, :length] == 1).all() and (new_attention[row, length:] == 0).all()
        assert (new_ids[row, length:] == tokenizer.pad_token_id).all()
        assert new_ids[row, 0] == tokenizer.cls_token_id and new_ids[row, length - 1] == tokenizer.sep_token_id
        before = words_of_row(domain, ids[row], attention[row])
        after = words_of_row(domain, new_ids[row], new_attention[row])
        assert 1 <= len(after) <= len(before)
        # the survivors are whole words, in their order: a subsequence of the original words
        remaining = iter(before)
        assert all(any(word == candidate for candidate in remaining) for word in after)
        words_before += len(before)
        words_after += len(after)
    assert within_binomial(words_before - words_after, words_before, 0.3, sigmas=6.0)


def test_swap_exchanges_exactly_two_words_and_keeps_specials_in_place(domain_and_batch):
    domain, batch = domain_and_batch
    ids, attention = batch["input_ids"], batch["attention_mask"]
    view = domain.make_views(batch, ViewRequest("augmented", {"policy": "swap", "swap_count": 1}), generator(5))["views"][0]
    new_ids = view["input_ids"]
    special = special_mask(domain, ids)
    assert torch.equal(view["attention_mask"], attention)
    assert torch.equal(new_ids[special], ids[special])
    for row in range(len(ids)):
        assert sorted(new_ids[row].tolist()) == sorted(ids[row].tolist())
        before = words_of_row(domain, ids[row], attention[row])
        after = words_of_row(domain, new_ids[row], attention[row])
        differ = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        assert len(before) == len(after)
        assert differ == [] or (len(differ) == 2 and after[differ[0]] == before[differ[1]] and after[differ[1]] == before[differ[0]])
    moved = sum(not torch.equal(new_ids[row], ids[row]) for row in range(len(ids)))
    assert moved > 0.8 * len(ids)  # only rows with two equal words swapped (or < 2 words) stay


def test_swap_keeps_a_word_whole_when_an_unknown_piece_sits_inside_it(domain_and_batch):
    domain, _ = domain_and_batch
    text = "a man in a red shirt is pai\u03a9nting a wall near the water ."  # the omega is no piece: [UNK]
    batch = domain.collate([{"text": text}] * 256)
    ids, attention = batch["input_ids"], batch["attention_mask"]
    pieces = domain.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    unknown = pieces.index(domain.tokenizer.unk_token)
    assert not pieces[unknown + 1].startswith("\u2581"), "the word must go on after the unknown piece"
    view = domain.make_views(batch, ViewRequest("augmented", {"policy": "swap", "swap_count": 1}), generator(5))["views"][0]
    before = words_of_row(domain, ids[0], attention[0])
    broken = [row for row in range(len(ids))
              if sorted(words_of_row(domain, view["input_ids"][row], attention[row])) != sorted(before)]
    assert broken == [], f"{len(broken)} of {len(ids)} rows lost a word whole"


def test_token_unit_swaps_single_tokens(data_root):
    domain = TextDomain(TextConfig(vocab_size=300, augment_unit="token"))
    rows = domain.load(DataConfig(path=str(data_root / "text/corpus/multi30k_captions.txt"), limit=500))
    batch = domain.collate([rows[i] for i in range(64)])
    new_ids = domain.make_views(batch, ViewRequest("augmented", {"policy": "swap"}), generator(6))["views"][0]["input_ids"]
    for row in range(64):
        differ = (new_ids[row] != batch["input_ids"][row]).nonzero().squeeze(1).tolist()
        assert differ == [] or (len(differ) == 2 and new_ids[row, differ[0]] == batch["input_ids"][row, differ[1]])


# ------------------------------------------------------------------ randomness and requests


@pytest.mark.parametrize("options", [{"policy": "cutoff"}, {"policy": "delete"}, {"policy": "swap"}])
def test_views_depend_only_on_the_given_generator(domain_and_batch, options):
    domain, batch = domain_and_batch
    torch.manual_seed(123)
    first = domain.make_views(batch, ViewRequest("augmented", options), generator(7))["views"]
    torch.manual_seed(456)  # the global RNG must not matter
    again = domain.make_views(batch, ViewRequest("augmented", options), generator(7))["views"]
    other = domain.make_views(batch, ViewRequest("augmented", options), generator(8))["views"]
    for a, b in zip(first, again):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["attention_mask"], b["attention_mask"])
    assert not all(torch.equal(a["input_ids"], c["input_ids"]) and torch.equal(a["attention_mask"], c["attention_mask"])
                   for a, c in zip(first, other))
    # two views of one call are drawn independently
    assert not (torch.equal(first[0]["input_ids"], first[1]["input_ids"])
                and torch.equal(first[0]["attention_mask"], first[1]["attention_mask"]))
    masked = [domain.make_views(batch, ViewRequest("masked"), generator(9))["inputs"]["input_ids"] for _ in range(2)]
    assert torch.equal(masked[0], masked[1])


def test_requests_the_text_domain_cannot_serve_are_named(domain_and_batch):
    domain, batch = domain_and_batch
    with pytest.raises(ValueError, match="no view kind 'pretext'"):
        domain.make_views(batch, ViewRequest("pretext"), generator(0))
    with pytest.raises(ValueError, match=r"no option\(s\) \['local_views'\]"):
        domain.make_views(batch, ViewRequest("augmented", {"local_views": 2}), generator(0))
    with pytest.raises(ValueError, match="policy 'simclr' unknown"):
        domain.make_views(batch, ViewRequest("augmented", {"policy": "simclr"}), generator(0))


def test_bad_num_views_and_pickled_domain(domain_and_batch):
    domain, batch = domain_and_batch
    with pytest.raises(ValueError, match="num_views must be a positive int"):
        domain.make_views(batch, ViewRequest("augmented", {"policy": "cutoff", "num_views": 0}), generator(0))
    domain.make_views(batch, ViewRequest("masked"), generator(0))  # fills the token tables
    copy = pickle.loads(pickle.dumps(domain))  # what a spawned DataLoader worker receives
    assert copy._token_tables == {}
    rows = [{"text": "a dog runs"}, {"text": "two men talk"}]
    assert torch.equal(copy.collate(rows)["input_ids"], domain.collate(rows)["input_ids"])


def test_views_run_on_the_batch_device(domain_and_batch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    domain, batch = domain_and_batch
    on_device = {key: value.cuda() if torch.is_tensor(value) else value for key, value in batch.items()}
    for options in ({"policy": "cutoff"}, {"policy": "delete"}, {"policy": "swap"}):
        cpu = domain.make_views(batch, ViewRequest("augmented", options), generator(10))["views"][0]
        gpu = domain.make_views(on_device, ViewRequest("augmented", options), generator(10))["views"][0]
        assert gpu["input_ids"].is_cuda
        assert torch.equal(cpu["input_ids"], gpu["input_ids"].cpu())
