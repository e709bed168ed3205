"""Every loss formula of the field as a pure function on tensors.

Each function documents its source, input shapes, normalisation and reduction. Losses that compare
rows across the batch, or reduce statistics over it, use the global batch under data parallelism
(see :mod:`multissl.distributed` for the value/gradient convention). Inputs are cast to float32
inside, so callers may hand in bf16/fp16 activations from autocast.
"""

# --- contrastive family (InfoNCE kernel and its users) ---
from .contrastive import (
    clip_loss,
    cpc,
    cpc_accuracy,
    cross_entropy_at_positives,
    imix_info_nce,
    info_nce,
    masked_cluster_prediction,
    masked_frame_contrastive,
    nt_xent,
    siglip_loss,
    soft_nearest_neighbors,
    spectral_contrastive,
    supcon,
)

# --- similarity, redundancy reduction, metric learning, reconstruction ---
from .metric import contrastive_pair, lifted_structured, memory_bank_nce, n_pair, nce, triplet
from .reconstruction import masked_reconstruction, masked_token_cross_entropy
from .redundancy import BarlowTwinsTerms, VICRegTerms, barlow_twins, barlow_twins_terms, vicreg, vicreg_terms
from .similarity import byol, distillation, simsiam, soft_cross_entropy

# --- self-distillation (DINO, iBOT, DINOv2's KoLeo, data2vec, I-JEPA) ---
from .self_distillation import data2vec_targets, dino, ibot_patch, koleo, latent_regression, teacher_distribution

# --- online clustering (SwAV) ---
from .clustering import sinkhorn_knopp, swapped_prediction
