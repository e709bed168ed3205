"""The image domain: loading (datasets, sklearn digits, MNIST IDX), collate, batched views, encoders.

Public names: :class:`ImageDomain`, :class:`ImageConfig` (with :class:`AugmentConfig`,
:class:`PretextConfig`), :func:`build_image_encoder`, :class:`ViTEncoder`, :class:`ConvNetEncoder`.
"""

from .config import AugmentConfig, ImageConfig, PretextConfig
from .domain import ImageDomain
from .encoders import ConvNetEncoder, ViTEncoder, build_image_encoder, image_processor

__all__ = ["ImageDomain", "ImageConfig", "AugmentConfig", "PretextConfig", "build_image_encoder", "ViTEncoder",
           "ConvNetEncoder", "image_processor"]
