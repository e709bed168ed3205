"""Small building blocks that objectives compose: heads (DINO's among them), predictors, the EMA
teacher, the teacher's centre, queues, the memory bank, learnable temperatures, shuffle-BN and global
BN, GradCache, k-means, MoCHi's hard-negative mixing, position codes, the mask-token predictor and
the positive-pair accuracy. Methods live in :mod:`multissl.objectives`; what two methods share lives
here, once."""

from multissl.modules.centering import TeacherCentering
from multissl.modules.gradcache import GradCache, grad_cache_or_none
from multissl.modules.hard_negatives import mix_hard_negatives
from multissl.modules.heads import DINOHead, Predictor, ProjectedEncoder, ProjectionHead
from multissl.modules.memory_bank import MemoryBank, sample_ids
from multissl.modules.metrics import positive_accuracy
from multissl.modules.momentum import MomentumEncoder, cosine_momentum, linear_momentum, momentum_update
from multissl.modules.normalization import (
    GlobalBatchNorm,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    convert_to_global_batchnorm,
)
from multissl.modules.positions import sincos_1d, sincos_2d
from multissl.modules.predictor import MaskTokenPredictor
from multissl.modules.queue import MomentumQueue
from multissl.modules.temperature import LearnableTemperature, warmup_temperature

__all__ = [
    "ProjectionHead",
    "Predictor",
    "ProjectedEncoder",
    "DINOHead",
    "MomentumEncoder",
    "momentum_update",
    "cosine_momentum",
    "linear_momentum",
    "TeacherCentering",
    "MaskTokenPredictor",
    "MomentumQueue",
    "mix_hard_negatives",
    "MemoryBank",
    "sample_ids",
    "LearnableTemperature",
    "warmup_temperature",
    "SplitBatchNorm",
    "GlobalBatchNorm",
    "convert_to_global_batchnorm",
    "batch_shuffle",
    "batch_unshuffle",
    "GradCache",
    "grad_cache_or_none",
    "positive_accuracy",
    "sincos_1d",
    "sincos_2d",
]
