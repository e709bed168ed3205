"""Masked language modelling, BERT's first pre-training task (Devlin et al. 2019, section 3.1).

    15% of the tokens are selected (the text domain's ``masked`` view: of those, 80% -> [MASK],
        10% -> a random token, 10% unchanged)
    h = encoder(corrupted tokens).sequence at the selected positions           [N, D]
    logits = decoder(transform(h)): transform = dense + GELU + LayerNorm, decoder = the input
        embedding matrix transposed plus an output bias (tied, as BERT), or its own linear layer
    loss = masked_token_cross_entropy(logits, original ids): mean over the selected tokens of the
        global batch

BERT's next-sentence prediction is left out (RoBERTa, Liu et al. 2019, found it does not help).
The vocabulary projection is computed at the selected positions only ([N, V], not [B, T, V]).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multissl.distributed import all_reduce_sum
from multissl.features import Encoder
from multissl.losses import masked_token_cross_entropy
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.views import ViewRequest

__all__ = ["MaskedLanguageModeling"]


def _input_embeddings(encoder: Encoder) -> nn.Embedding | None:
    model = getattr(encoder, "model", None)
    getter = getattr(model, "get_input_embeddings", None)
    embeddings = getter() if callable(getter) else None
    if isinstance(embeddings, nn.Embedding) and embeddings.embedding_dim == encoder.dim:
        return embeddings
    return None


class MaskedLanguageModeling(Objective):
    name = "mlm"

    def __init__(
        self,
        encoder: Encoder,
        *,
        tie_weights: bool = True,
        vocab_size: int | None = None,
        mask_ratio: float | None = None,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        """tie_weights: decode with the encoder's input embedding matrix when it exposes one
        (``model.get_input_embeddings()``), else (or when False) with an own linear layer of
        ``vocab_size`` outputs (None: the encoder config's vocab_size); mask_ratio: the share of
        tokens selected (None: the text domain's mlm_probability, 15%)."""
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        dim = encoder.dim
        self.transform = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim, eps=layer_norm_eps))
        embeddings = _input_embeddings(encoder) if tie_weights else None
        if embeddings is not None:
            # a function of the encoder's own parameter: the tie survives any state_dict round trip
            self.tied = True
            self.decoder = None
            self.bias = nn.Parameter(torch.zeros(embeddings.num_embeddings))
        else:
            vocab_size = vocab_size or getattr(getattr(getattr(encoder, "model", None), "config", None), "vocab_size", None)
            if not vocab_size:
                raise ValueError("MLM without tied embeddings needs the objective option vocab_size")
            self.tied = False
            self.decoder = nn.Linear(dim, int(vocab_size))
            self.bias = None

    def view_requests(self) -> tuple[ViewRequest, ...]:
        return (ViewRequest("masked", {} if self.mask_ratio is None else {"mask_ratio": self.mask_ratio}),)

    def logits(self, hidden: Tensor) -> Tensor:
        """[N, D] encoder states -> [N, V] vocabulary logits."""
        hidden = self.transform(hidden)
        if self.tied:
            return F.linear(hidden, _input_embeddings(self.encoder).weight, self.bias)
        return self.decoder(hidden)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        selected, targets = views["mask"], views["targets"]
        sequence = self.encoder(**views["inputs"]).sequence
        logits = self.logits(sequence[selected])
        labels = targets[selected]
        vocabulary = views.get("vocab_size")
        if vocabulary is not None and vocabulary > logits.shape[-1]:
            raise ValueError(f"the tokenizer has {vocabulary} tokens but the MLM decoder predicts {logits.shape[-1]}")
        loss = masked_token_cross_entropy(logits, labels)
        with torch.no_grad():
            counts = all_reduce_sum(torch.stack([(logits.argmax(-1) == labels).sum().float(),
                                                 torch.tensor(float(labels.numel()), device=logits.device)]))
        return ObjectiveOutput(loss=loss, logs={"masked_token_accuracy": counts[0] / counts[1].clamp_min(1.0)})
