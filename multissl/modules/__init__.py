"""Small stateful building blocks that objectives compose: heads, predictors, EMA copies, queues,
learnable temperatures, shuffle-BN."""

from multissl.modules.heads import Predictor, ProjectionHead
from multissl.modules.momentum import MomentumEncoder, cosine_momentum, momentum_update
from multissl.modules.normalization import (
    GlobalBatchNorm,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_to_global_batchnorm,
)
from multissl.modules.queue import MomentumQueue
from multissl.modules.temperature import LearnableTemperature

__all__ = [
    "ProjectionHead",
    "Predictor",
    "MomentumEncoder",
    "momentum_update",
    "cosine_momentum",
    "MomentumQueue",
    "LearnableTemperature",
    "SplitBatchNorm",
    "GlobalBatchNorm",
    "convert_to_global_batchnorm",
    "batch_shuffle",
    "batch_unshuffle",
]
