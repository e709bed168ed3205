"""Module-level factories for ``distributed_equivalence`` on text and audio objectives.

Each builds the same objective in every process: a fixed seed and every dropout off. Text
encoders are sized by a tokenizer the parent process saved (``save_tokenizer``), so the spawned
processes neither retrain it nor read the corpus. Bind the arguments with ``functools.partial``
(it pickles by name).
"""

from __future__ import annotations

from typing import Any

import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.objectives.base import Objective

__all__ = ["TEXT_NO_DROPOUT", "AUDIO_NO_DROPOUT", "text_objective", "audio_objective"]

TEXT_NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
AUDIO_NO_DROPOUT = {"hidden_dropout": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.0,
                    "feat_proj_dropout": 0.0, "layerdrop": 0.0}


def text_objective(tokenizer_dir: str, name: str, options: dict[str, Any], pooling: str = "mean",
                   max_length: int = 32) -> Objective:
    torch.manual_seed(0)
    domain = build_domain("text", {"tokenizer": tokenizer_dir, "max_length": max_length})
    encoder = domain.build_encoder(EncoderConfig("bert", "tiny", pooling=pooling, overrides=TEXT_NO_DROPOUT))
    return build_objective(name, [encoder], options)


def audio_objective(name: str, options: dict[str, Any], sample_rate: int = 8000) -> Objective:
    torch.manual_seed(0)
    domain = build_domain("audio", {"sample_rate": sample_rate})
    encoder = domain.build_encoder(EncoderConfig("wav2vec2", "tiny", overrides=AUDIO_NO_DROPOUT))
    return build_objective(name, [encoder], options)
