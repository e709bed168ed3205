"""Typed settings of the image domain (filled by recipes under ``domain.options``).

Small dataclasses: :class:`ImageConfig` (geometry, normalisation, masking) holds an
:class:`AugmentConfig` (SimCLR-family strengths), a :class:`PretextConfig` (jigsaw, relative
position, inpainting, denoising) and a ``RandAugmentConfig`` (N ops at magnitude M). Nested groups may be given as plain dicts (YAML); unknown keys are
errors that name the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from multissl.options import build

from .randaugment import RandAugmentConfig

__all__ = ["ImageConfig", "AugmentConfig", "PretextConfig", "NORMALIZATION_STATISTICS"]

#: Named per-channel (mean, std) of pixel values in [0, 1].
NORMALIZATION_STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": ((0.1307,), (0.3081,)),
    "none": ((0.0,), (1.0,)),
}

# ITU-R BT.601 luma weights (what Pillow's convert("L") uses): folds 3-channel statistics into one.
_LUMA = (0.299, 0.587, 0.114)


def _pair(name: str, value: Any) -> tuple[float, float]:
    pair = tuple(float(v) for v in value)
    if len(pair) != 2 or pair[0] > pair[1]:
        raise ValueError(f"{name} must be a (low, high) pair with low <= high, got {value!r}")
    return pair  # type: ignore[return-value]


def _probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def _from_mapping(cls: type, value: Any, owner: str) -> Any:
    """A nested config given as a dict (YAML, or a direct call) built and checked like a recipe's."""
    return value if isinstance(value, cls) else build(cls, value, owner)


@dataclass
class AugmentConfig:
    """Strengths of the ``augmented`` views.

    Defaults are SimCLR's ImageNet recipe (Chen et al. 2020, appendix A): random resized crop with
    scale (0.08, 1) and ratio (3/4, 4/3), flip p=0.5, colour jitter p=0.8 with strength s=1
    (brightness, contrast, saturation 0.8 s; hue 0.2 s), grayscale p=0.2, Gaussian blur p=0.5 with
    sigma in [0.1, 2] and a kernel 10% of the view's side. SimCLR's CIFAR-10 runs used s=0.5 and no
    blur (set ``jitter_strength=0.5, blur_probability=0``). BYOL (Grill et al. 2020, table 6) uses
    brightness/contrast 0.4, saturation 0.2, hue 0.1 (``jitter_strength=0.5, saturation=0.4``) and the
    asymmetric blur/solarize probabilities of policy "byol" (``byol_*``).

    Multi-crop (SwAV, Caron et al. 2020): local views of side ``local_size`` with ``local_crop_scale``;
    ``local_size`` None is 96/224 of the image side rounded to the patch size (12 for 32 px, patch 4).
    SwAV's global crops use scale (0.14, 1): set ``crop_scale`` for that.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    jitter_probability: float = 0.8
    jitter_strength: float = 1.0
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_probability: float = 0.0
    solarize_threshold: float = 0.5
    byol_blur_probability: tuple[float, float] = (1.0, 0.1)
    byol_solarize_probability: tuple[float, float] = (0.0, 0.2)
    local_size: int | None = None
    local_crop_scale: tuple[float, float] = (0.05, 0.14)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "local_crop_scale"):
            setattr(self, name, _pair(name, getattr(self, name)))
        for name in ("byol_blur_probability", "byol_solarize_probability"):
            pair = tuple(_probability(name, float(p)) for p in getattr(self, name))
            if len(pair) != 2:
                raise ValueError(f"{name} must hold one probability per BYOL view (2), got {pair}")
            setattr(self, name, pair)
        for name in ("flip_probability", "jitter_probability", "grayscale_probability", "blur_probability",
                     "solarize_probability"):
            _probability(name, getattr(self, name))
        if self.crop_scale[0] <= 0 or self.crop_scale[1] > 1 or self.local_crop_scale[0] <= 0:
            raise ValueError(
                f"crop scales are area fractions in (0, 1], got {self.crop_scale} / {self.local_crop_scale}"
            )
        if self.crop_ratio[0] <= 0:
            raise ValueError(f"crop_ratio must be positive, got {self.crop_ratio}")
        strengths = (self.brightness, self.contrast, self.saturation, self.hue, self.jitter_strength)
        if min(strengths) < 0 or self.hue * self.jitter_strength > 0.5:
            raise ValueError(f"jitter strengths must be >= 0 and hue * jitter_strength <= 0.5, got {strengths}")
        if self.blur_sigma[0] <= 0 or not 0 < self.blur_kernel_fraction <= 1:
            raise ValueError(
                f"blur_sigma must be positive and blur_kernel_fraction in (0, 1], got {self.blur_sigma}, "
                f"{self.blur_kernel_fraction}"
            )


@dataclass
class PretextConfig:
    """Settings of the ``pretext`` and ``corrupted`` views.

    Jigsaw (Noroozi & Favaro 2016): the image is a 3x3 grid of cells; each tile is a random crop of
    ``jigsaw_tile_fraction`` of its cell (64 px in a 75 px cell in the paper, so gaps between tiles),
    tiles are standardised independently when ``standardize_tiles``; ``jigsaw_permutations`` is the
    size of the permutation set (the paper's best: 1000; 100 suits small images).
    Relative position (Doersch et al. 2015): patches of ``relative_position_tile_fraction`` of a cell
    (96 px patches on a 144 px grid: 2/3) moved by up to ``relative_position_jitter`` of the free room
    (7 of 24 px: 0.29). ``tile_size``: side the tiles are resized to (None: a cell rounded to the
    patch size).
    Inpainting (Pathak et al. 2016): ``inpainting_mask`` "central" | "block" | "region" removing
    ``inpainting_area`` of the image. Denoising (Vincent et al. 2008/2010): ``denoising_noise``
    "gaussian" (std ``noise_std`` on [0, 1] pixels) | "masking" | "salt_and_pepper" (a fraction
    ``noise_fraction`` of the elements).
    Colorization (Zhang et al. 2016): ab soft-encoded onto its ``colorization_neighbours`` nearest
    classes with Gaussian weights of ``colorization_sigma`` (ab units; the paper's 5 and 5).
    2-D CPC (van den Oord et al. 2018, section 3.3): the ``sequence`` view is a grid of square
    patches of side ``cpc_patch_fraction`` of the image's shorter side, overlapping by half (a
    64 px image and 16 px patches: 7 x 7), each resized to ``tile_size``.
    """

    jigsaw_permutations: int = 100
    jigsaw_tile_fraction: float = 64 / 75
    standardize_tiles: bool = True
    relative_position_tile_fraction: float = 2 / 3
    relative_position_jitter: float = 7 / 24
    tile_size: int | None = None
    inpainting_mask: Literal["central", "block", "region"] = "central"
    inpainting_area: float = 0.25
    denoising_noise: Literal["gaussian", "masking", "salt_and_pepper"] = "gaussian"
    noise_std: float = 0.1
    noise_fraction: float = 0.25
    cpc_patch_fraction: float = 0.25
    colorization_neighbours: int = 5
    colorization_sigma: float = 5.0

    def __post_init__(self) -> None:
        if not 2 <= self.jigsaw_permutations <= 362880:
            raise ValueError(f"jigsaw_permutations must be in [2, 9!], got {self.jigsaw_permutations}")
        for name in ("jigsaw_tile_fraction", "relative_position_tile_fraction", "cpc_patch_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("relative_position_jitter", "inpainting_area", "noise_fraction"):
            _probability(name, getattr(self, name))
        if self.inpainting_mask not in ("central", "block", "region"):
            raise ValueError(f"inpainting_mask must be 'central', 'block' or 'region', got {self.inpainting_mask!r}")
        if self.denoising_noise not in ("gaussian", "masking", "salt_and_pepper"):
            raise ValueError(
                f"denoising_noise must be 'gaussian', 'masking' or 'salt_and_pepper', got {self.denoising_noise!r}"
            )


@dataclass
class ImageConfig:
    """Settings of the image domain.

    image_size:     side of the square images collate produces (and the encoders' input size).
    channels:       3 (RGB) or 1 (grayscale); every decoded image is converted to this.
    normalization:  named statistics (``NORMALIZATION_STATISTICS``) used where ``mean``/``std`` are
                    None; 3-channel statistics fold to 1 channel with BT.601 luma weights.
    resize:         "center_crop" (shorter side to image_size, then a centred square crop: keeps the
                    aspect ratio) or "stretch" (both sides to image_size).
    resample:       "bicubic" | "bilinear" | "nearest" (antialiased when shrinking).
    patch_size:     ViT patch side and MAE masking unit; None: 4 below 112 px, else 16 (or the
                    largest smaller power of two that divides image_size).
    mask_ratio:     MAE's fraction of masked patches (0.75, He et al. 2022).
    masked_crop_scale: MAE's random resized crop scale for the ``masked`` view (0.2, 1).
    image_root:     folder that relative file paths in the image column are read from (a CSV of
                    file names beside an images folder); None: the folder of ``DataConfig.path``.
    vit_position_embedding: "learned" (ViT's) or "sincos": fixed 2-D sine-cosine positions (MAE,
                    MoCo v3).
    vit_freeze_patch_embedding: keep a ViT's random patch projection frozen (MoCo v3's stabiliser).
    randaugment:    N operations at magnitude M of the ``augmented`` view's policy "randaugment"
                    (:class:`~domains.image.randaugment.RandAugmentConfig`).
    color_space:    what every view feeds the encoder: "rgb" (the decoded channels, normalised with
                    ``mean``/``std``), or the CIE L*a*b* "L" (1 channel) or "ab" (2 channels) of the
                    RGB pixels after augmentation, normalised as CMC's code does (to about [-1, 1]:
                    L by 50 around 50, a and b by half their sRGB range around its middle): CMC's two
                    views of an image (Tian et al. 2019), one image domain each. Needs channels=3;
                    the encoder takes ``input_channels``. A saved encoder records it for ``multissl
                    probe``; its ``transformers`` image processor does not convert to Lab.
    vit_mask_token: give a ViT a learned mask token, so views can mask patches in place
                    ("bool_masked_pos": iBOT, DINOv2, data2vec); a pre-training part, not saved with
                    the model.
    """

    image_size: int = 32
    channels: Literal[1, 3] = 3
    normalization: str = "imagenet"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: Literal["center_crop", "stretch"] = "center_crop"
    resample: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    patch_size: int | None = None
    mask_ratio: float = 0.75
    masked_crop_scale: tuple[float, float] = (0.2, 1.0)
    image_root: str | None = None
    vit_position_embedding: Literal["learned", "sincos"] = "learned"
    vit_freeze_patch_embedding: bool = False
    color_space: Literal["rgb", "L", "ab"] = "rgb"
    vit_mask_token: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    randaugment: RandAugmentConfig = field(default_factory=RandAugmentConfig)

    def __post_init__(self) -> None:
        self.augment = _from_mapping(AugmentConfig, self.augment, "augment")
        self.pretext = _from_mapping(PretextConfig, self.pretext, "pretext")
        self.randaugment = _from_mapping(RandAugmentConfig, self.randaugment, "randaugment")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.color_space != "rgb" and self.channels != 3:
            raise ValueError(f"color_space {self.color_space!r} is computed from RGB: it needs channels=3")
        if self.image_size < 2:
            raise ValueError(f"image_size must be at least 2, got {self.image_size}")
        if self.resize not in ("center_crop", "stretch"):
            raise ValueError(f"resize must be 'center_crop' or 'stretch', got {self.resize!r}")
        if self.resample not in ("bicubic", "bilinear", "nearest"):
            raise ValueError(f"resample must be 'bicubic', 'bilinear' or 'nearest', got {self.resample!r}")
        if self.patch_size is None:  # the largest usual patch that tiles the image
            candidates = (4, 2, 1) if self.image_size < 112 else (16, 8, 4, 2, 1)
            self.patch_size = next(p for p in candidates if self.image_size % p == 0)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        self.masked_crop_scale = _pair("masked_crop_scale", self.masked_crop_scale)
        self.mean, self.std = self._statistics()

    def _statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if self.normalization not in NORMALIZATION_STATISTICS:
            raise ValueError(
                f"unknown normalization {self.normalization!r}; known: {sorted(NORMALIZATION_STATISTICS)}"
            )
        named_mean, named_std = NORMALIZATION_STATISTICS[self.normalization]
        mean = tuple(float(m) for m in (self.mean if self.mean is not None else named_mean))
        std = tuple(float(s) for s in (self.std if self.std is not None else named_std))
        mean, std = self._fit_channels("mean", mean), self._fit_channels("std", std)
        if min(std) <= 0:
            raise ValueError(f"std must be positive, got {std}")
        return mean, std

    def _fit_channels(self, name: str, values: tuple[float, ...]) -> tuple[float, ...]:
        if len(values) == self.channels:
            return values
        if len(values) == 1:
            return values * self.channels
        if len(values) == 3 and self.channels == 1:
            return (sum(w * v for w, v in zip(_LUMA, values)),)
        raise ValueError(f"{name} has {len(values)} values for {self.channels} channels: {values}")

    @property
    def input_channels(self) -> int:
        """Channels of what the views feed the encoder: ``channels`` in RGB, 1 for L, 2 for ab."""
        return {"rgb": self.channels, "L": 1, "ab": 2}[self.color_space]

    @property
    def local_size(self) -> int:
        """Side of multi-crop local views (SwAV's 96 of 224, rounded to the patch size)."""
        if self.augment.local_size is not None:
            return self.augment.local_size
        return self.round_to_patch(self.image_size * 96 / 224)

    @property
    def tile_size(self) -> int:
        """Side jigsaw / relative-position tiles are resized to (a grid cell, rounded to the patch size)."""
        if self.pretext.tile_size is not None:
            return self.pretext.tile_size
        return self.round_to_patch(self.image_size / 3)

    def round_to_patch(self, side: float) -> int:
        assert self.patch_size is not None
        return max(self.patch_size, round(side / self.patch_size) * self.patch_size)
