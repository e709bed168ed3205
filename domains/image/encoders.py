"""Image encoders: stock ``transformers`` models (ViT, ResNet, ConvNeXt) that return Features.

The wrapped ``model`` is a plain ``ViTModel`` / ``ResNetModel`` / ``ConvNextModel`` and ``processor``
a ``ViTImageProcessor`` that reproduces the domain's collate (resize, centre crop) and ``plain`` view
(rescale, normalise), so ``save_pretrained`` writes a folder that ``AutoModel`` +
``AutoImageProcessor`` load without multissl.

Presets (``EncoderConfig.size``), named for what they are for: "tiny" for tests, "cpu" to learn
something useful on a 2-core CPU in minutes, "small"/"base" for GPUs::

    vit       tiny: hidden 64, 2 layers, 2 heads, MLP 128 | cpu: hidden 192, 6 layers, 3 heads, MLP 768
              small: ViT-S (384, 12, 6, 1536) | base: ViT-B (768, 12, 12, 3072)
              patch = the domain's patch_size (4 below 112 px, 16 above)
    convnext  tiny: widths (16, 32), depths (1, 1) | cpu: widths 32..256, depths 1-1-1-1
              small: ConvNeXt-S (96..768, 3-3-27-3) | base: ConvNeXt-B (128..1024, 3-3-27-3)
              stem stride (patch_size) 2 below 112 px, else 4 (32 px: final map 2x2 with four stages)
    resnet    tiny: basic blocks, widths (16, 32), depths (1, 1) | cpu: ResNet-10 narrow (32..256,
              1-1-1-1, 1.2 M parameters) | small: ResNet-18 | base: ResNet-50
              The Hugging Face stem is fixed (7x7 stride 2 + max-pool: ``ResNetEmbeddings`` takes no
              kernel, stride or pooling setting), so a 32 px image is 8x8 when the first stage sees it
              and 1x1 at the end: cheap, and it loses detail. Prefer regnet below 64 px.
    regnet    small images (CIFAR, 32-64 px): the closest stock Hugging Face model to the CIFAR ResNets
              of SimCLR, MoCo and solo-learn. ``RegNetModel``'s stem is one 3x3 convolution of stride 2
              with no max-pool, and ``downsample_in_first_stage=False`` keeps the first stage at the
              stem's resolution: a 32 px image is 16x16 in the first stage (4x the positions of the
              ResNet stem), 2x2 at the end. X blocks (1x1, 3x3, 1x1 convolutions with batch norm) with
              one group (``groups_width`` = the widest stage): plain 3x3 convolutions, no grouping.
              tiny: widths (16, 32), depths (1, 1) | cpu: widths 32..256, depths 1-1-1-1 (1.0 M)
              small: widths 64..512, depths 2-2-2-2 (ResNet-18's widths and depths) | base: 96..768, 2-4-6-2
Features: ViT ``sequence`` is the patch tokens after the final layer norm (no CLS), ``pooled`` the
CLS token ("cls") or the mean of the patch tokens ("mean"); a convnet's ``sequence`` is its last
feature map flattened row-major, ``pooled`` the model's own ``pooler_output`` (global average, plus
ConvNeXt's final layer norm). ``mask`` is all True.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    ConvNextConfig,
    ConvNextModel,
    PreTrainedModel,
    RegNetConfig,
    RegNetModel,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)

from multissl.domain import EncoderConfig
from multissl.features import Encoder, Features, InputGeometry
from multissl.modules.positions import sincos_2d

from .config import ImageConfig

__all__ = [
    "ViTEncoder",
    "ConvNetEncoder",
    "build_image_encoder",
    "image_processor",
    "VIT_PRESETS",
    "CONVNEXT_PRESETS",
    "RESNET_PRESETS",
    "REGNET_PRESETS",
    "PRESETS",
]

VIT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "cpu": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768),
    "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
CONVNEXT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    "cpu": dict(hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_stages=4),
    "small": dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3], num_stages=4),
    "base": dict(hidden_sizes=[128, 256, 512, 1024], depths=[3, 3, 27, 3], num_stages=4),
}
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
    "cpu": dict(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic"),
    "small": dict(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"),
    "base": dict(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck"),
}
_SMALL_IMAGE_REGNET = dict(layer_type="x", downsample_in_first_stage=False)
REGNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=32, **_SMALL_IMAGE_REGNET),
    "cpu": dict(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], groups_width=256,
                **_SMALL_IMAGE_REGNET),
    "small": dict(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], groups_width=512,
                  **_SMALL_IMAGE_REGNET),
    "base": dict(embedding_size=64, hidden_sizes=[96, 192, 384, 768], depths=[2, 4, 6, 2], groups_width=768,
                 **_SMALL_IMAGE_REGNET),
}
#: architecture -> size -> Hugging Face config fields
PRESETS: dict[str, dict[str, dict[str, Any]]] = {"vit": VIT_PRESETS, "convnext": CONVNEXT_PRESETS,
                                                 "resnet": RESNET_PRESETS, "regnet": REGNET_PRESETS}
_PRESETS = PRESETS
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}  # PIL.Image.Resampling values


class ViTEncoder(Encoder):
    """A ``ViTModel`` (no pooler) returning Features; supports MAE's visible-only forward and, when
    built with a mask token, BEiT's masked forward.

    ``encoder(pixel_values=x)`` runs the stock model; ``encoder(pixel_values=x, keep_index=k)``
    (k Long[B, T_keep], patch indices in row-major order) embeds all patches, adds their position
    embeddings, keeps only the patches in ``k`` and runs the transformer on CLS + those (He et al.
    2022, section 3: the encoder sees visible patches only). ``sequence`` then has T_keep rows in
    the order of ``k``. ``encoder(pixel_values=x, bool_masked_pos=m)`` (m Bool[B, T]) replaces the
    embeddings of the masked patches by a learned mask token before adding positions (BEiT, iBOT,
    data2vec, DINOv2's ``prepare_tokens_with_masks``); the token (``mask_token``, [1, 1, D],
    truncated normal of std 0.02) exists when the domain's ``vit_mask_token`` is set, and lives in
    this wrapper, not in the saved ``ViTModel``: it is a pre-training part. Inputs of another size
    than the config's use interpolated positions.
    """

    def __init__(self, model: ViTModel, pooling: str = "mean", processor: Any = None, mask_token: bool = False) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"ViT pooling must be 'cls' or 'mean', got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.processor = processor
        self.dim = model.config.hidden_size
        self.mask_token = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, 1, self.dim), std=0.02)) if mask_token else None

    def forward(self, pixel_values: Tensor, keep_index: Tensor | None = None, bool_masked_pos: Tensor | None = None,
                output_hidden_states: bool = False) -> Features:
        if keep_index is None and bool_masked_pos is None:
            height, width = pixel_values.shape[-2:]
            output = self.model(pixel_values=pixel_values, output_hidden_states=output_hidden_states,
                                interpolate_pos_encoding=(height, width) != self._config_size())
            tokens, hidden = output.last_hidden_state, output.hidden_states
        else:
            tokens, hidden = self._token_forward(pixel_values, keep_index, bool_masked_pos, output_hidden_states)
        sequence = tokens[:, 1:]
        pooled = tokens[:, 0] if self.pooling == "cls" else sequence.mean(dim=1)
        mask = torch.ones(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
        hidden_states = tuple(h[:, 1:] for h in hidden) if output_hidden_states and hidden is not None else None
        return Features(pooled=pooled, sequence=sequence, mask=mask, hidden_states=hidden_states)

    def _config_size(self) -> tuple[int, int]:
        size = self.model.config.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def _token_forward(self, pixel_values: Tensor, keep_index: Tensor | None, bool_masked_pos: Tensor | None,
                       output_hidden_states: bool) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        embeddings = self.model.embeddings
        pixel_values = pixel_values.to(embeddings.patch_embeddings.projection.weight.dtype)
        patches = embeddings.patch_embeddings(pixel_values)  # [B, T, D]
        batch, num_patches, dim = patches.shape
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("this ViT has no mask token for bool_masked_pos: set the image domain's option "
                                 "vit_mask_token: true (domains.<image domain>.options.vit_mask_token)")
            if bool_masked_pos.shape != (batch, num_patches):
                raise ValueError(f"bool_masked_pos must be Bool[{batch}, {num_patches}], got {tuple(bool_masked_pos.shape)}")
            patches = torch.where(bool_masked_pos.unsqueeze(-1), self.mask_token.to(patches.dtype), patches)
        if keep_index is not None and (keep_index.dim() != 2 or keep_index.shape[0] != batch):
            raise ValueError(f"keep_index must be Long[{batch}, T_keep], got shape {tuple(keep_index.shape)}")
        if (height_width := tuple(pixel_values.shape[-2:])) != self._config_size():
            positions = embeddings.interpolate_pos_encoding(patches.new_empty(1, num_patches + 1, dim), *height_width)
        else:
            positions = embeddings.position_embeddings
        patches = patches + positions[:, 1:]
        visible = patches if keep_index is None else patches.gather(1, keep_index.unsqueeze(-1).expand(-1, -1, dim))
        cls = (embeddings.cls_token + positions[:, :1]).expand(batch, -1, -1)
        hidden = embeddings.dropout(torch.cat((cls, visible), dim=1))
        states = [hidden]
        for layer in self.model.layers:
            hidden = layer(hidden, None)
            states.append(hidden)
        return self.model.layernorm(hidden), tuple(states) if output_hidden_states else None


class ConvNetEncoder(Encoder):
    """A ``ResNetModel``, ``RegNetModel`` or ``ConvNextModel`` returning Features (pooling "mean":
    the model's pooler)."""

    def __init__(self, model: PreTrainedModel, pooling: str = "mean", processor: Any = None) -> None:
        super().__init__()
        if pooling != "mean":
            raise ValueError(f"convnets have no CLS token: pooling must be 'mean', got {pooling!r}")
        self.model = model
        self.pooling = pooling
        self.processor = processor
        self.dim = model.config.hidden_sizes[-1]

    def forward(self, pixel_values: Tensor, output_hidden_states: bool = False, **unexpected: Tensor) -> Features:
        if unexpected:
            raise TypeError(
                f"{type(self.model).__name__} takes only pixel_values, got {sorted(unexpected)}"
                " (visible-only masked forward needs a ViT)"
            )
        output = self.model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        sequence = output.last_hidden_state.flatten(2).transpose(1, 2)  # [B, h*w, D]
        pooled = output.pooler_output.flatten(1)
        mask = torch.ones(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(stage.mean(dim=(-2, -1)) for stage in output.hidden_states)
        return Features(pooled=pooled, sequence=sequence, mask=mask, hidden_states=hidden_states)


def image_processor(image: ImageConfig) -> ViTImageProcessor:
    """A ``ViTImageProcessor`` doing what collate + the ``plain`` view do: resize (shorter side then
    centre crop, or stretch), rescale by 1/255, normalise with the domain's mean and std.

    One processor class for every architecture: ``ConvNextImageProcessor`` warps instead of cropping
    at 384 px and above, so it cannot reproduce the centre crop at every size.
    """
    side = image.image_size
    if image.resize == "center_crop":
        geometry: dict[str, Any] = dict(size={"shortest_edge": side}, do_center_crop=True,
                                        crop_size={"height": side, "width": side})
    else:
        geometry = dict(size={"height": side, "width": side}, do_center_crop=False)
    return ViTImageProcessor(
        do_resize=True, resample=_RESAMPLE[image.resample], do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(image.mean), image_std=list(image.std),
        do_convert_rgb=image.channels == 3, **geometry,
    )


def preprocessing_of_processor(folder: str) -> dict[str, Any]:
    """The image domain's preprocessing options that a saved image processor describes (its
    ``preprocessor_config.json``, read as JSON) and, for a ViT, the patch size (``config.json``):
    side, centre crop or stretch, resampling, channels, mean and std. {} when there is no such file."""
    import json
    from pathlib import Path

    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        return {}
    processor = json.loads(path.read_text())
    options: dict[str, Any] = {}
    crop, size = processor.get("crop_size") or {}, processor.get("size") or {}
    if processor.get("do_center_crop") and "height" in crop:
        options.update(image_size=int(crop["height"]), resize="center_crop")
    elif "height" in size:
        options.update(image_size=int(size["height"]), resize="stretch")
    names = {value: name for name, value in _RESAMPLE.items()}
    if processor.get("resample") in names:
        options["resample"] = names[processor["resample"]]
    if processor.get("image_mean") is not None:
        options.update(mean=list(processor["image_mean"]), std=list(processor["image_std"]),
                       channels=len(processor["image_mean"]))
    model = Path(folder) / "config.json"
    if model.is_file():
        config = json.loads(model.read_text())
        if config.get("model_type") == "vit" and "patch_size" in config:
            options["patch_size"] = int(config["patch_size"])
        options.setdefault("channels", config.get("num_channels", 3))
    return options


def _preset_config(config: EncoderConfig, image: ImageConfig) -> PreTrainedModel:
    presets = _PRESETS.get(config.architecture)
    if presets is None:
        raise ValueError(f"unknown image architecture {config.architecture!r}; known: {sorted(_PRESETS)}")
    if config.size not in presets:
        raise ValueError(f"unknown {config.architecture} size {config.size!r}; known: {sorted(presets)}")
    settings: dict[str, Any] = dict(num_channels=image.input_channels, **presets[config.size])
    if config.architecture == "vit":
        config_class: type = ViTConfig
        settings.update(image_size=image.image_size, patch_size=image.patch_size)
    elif config.architecture == "convnext":
        config_class = ConvNextConfig
        settings.update(image_size=image.image_size, patch_size=2 if image.image_size < 112 else 4)
    elif config.architecture == "regnet":
        config_class = RegNetConfig
    else:
        config_class = ResNetConfig
    defaults = config_class()
    for key in config.overrides:
        if not hasattr(defaults, key):
            raise ValueError(f"encoder override {key!r} is not a field of {config_class.__name__}")
    # overrides go in before construction, so fields derived in __post_init__ (stage names) follow them
    return config_class(**{**settings, **config.overrides})


def _wrap(model: PreTrainedModel, pooling: str, processor: Any, mask_token: bool = False) -> Encoder:
    if isinstance(model, ViTModel):
        return ViTEncoder(model, pooling, processor, mask_token)
    if mask_token:
        raise ValueError(f"vit_mask_token applies to ViT encoders, not {type(model).__name__}")
    return ConvNetEncoder(model, pooling, processor)


@torch.no_grad()
def input_geometry(encoder: Encoder, image: ImageConfig) -> InputGeometry:
    """The encoder's :class:`InputGeometry` at the domain's image size, by one dry run (eval mode,
    so batch norm statistics are untouched)."""
    was_training = encoder.training
    encoder.eval()
    try:
        size = image.image_size
        parameter = next(encoder.parameters())
        zeros = torch.zeros(1, image.input_channels, size, size, device=parameter.device, dtype=parameter.dtype)
        positions = encoder(pixel_values=zeros).sequence.shape[1]
    finally:
        encoder.train(was_training)
    if isinstance(encoder, ViTEncoder):
        patch = int(encoder.model.config.patch_size)
        return InputGeometry(image.input_channels, (size, size), (size // patch, size // patch), patch)
    side = math.isqrt(positions)  # square inputs make square feature maps
    if side * side != positions:
        raise ValueError(f"the encoder's {positions} feature positions are not a square grid")
    return InputGeometry(image.input_channels, (size, size), (side, side))


def build_image_encoder(config: EncoderConfig, image: ImageConfig) -> Encoder:
    """:func:`load_or_build_image_encoder` with the encoder's :class:`InputGeometry` attached and the
    domain's ViT settings applied (:func:`fix_vit_embeddings`)."""
    encoder = load_or_build_image_encoder(config, image)
    if isinstance(encoder, ViTEncoder):
        fix_vit_embeddings(encoder.model, image.vit_position_embedding == "sincos", image.vit_freeze_patch_embedding)
    elif image.vit_position_embedding != "learned" or image.vit_freeze_patch_embedding:
        raise ValueError(f"vit_position_embedding / vit_freeze_patch_embedding apply to ViT encoders, not "
                         f"{config.architecture!r}")
    encoder.geometry = input_geometry(encoder, image)
    return encoder


@torch.no_grad()
def fix_vit_embeddings(model: ViTModel, sincos_positions: bool, freeze_patch_embedding: bool) -> None:
    """MoCo v3's stabilisers for ViT (Chen, Xie, He 2021, section 4.2 and ``vits.py``), also MAE's
    positions (He et al. 2022, ``models_mae.py``): fixed 2-D sine-cosine position embeddings (the
    CLS position 0; :func:`multissl.modules.sincos_2d`, rows on the first half of the channels), and
    a frozen random patch projection, which the paper finds avoids the training instability
    ("dips") of ViT under contrastive learning. Both are parameters with ``requires_grad=False``:
    saved with the model and loaded back by plain ``AutoModel`` as ordinary weights."""
    embeddings = model.embeddings
    if sincos_positions:
        side = math.isqrt(embeddings.position_embeddings.shape[1] - 1)  # the domain's images are square
        dim = embeddings.position_embeddings.shape[-1]
        codes = sincos_2d(side, side, dim).to(embeddings.position_embeddings)
        embeddings.position_embeddings.copy_(torch.cat([codes.new_zeros(1, dim), codes])[None])
        embeddings.position_embeddings.requires_grad_(False)
    if freeze_patch_embedding:
        embeddings.patch_embeddings.projection.requires_grad_(False)


def load_or_build_image_encoder(config: EncoderConfig, image: ImageConfig) -> Encoder:
    """Build from a preset (random weights) or load ``name_or_path`` (local folder or Hub id).

    Loading never runs remote code; only ViT, ResNet, RegNet and ConvNeXt checkpoints are accepted, and
    their channels (and a ViT's patch size, the masking unit) must match the domain.
    """
    if config.name_or_path is None:
        hf_config = _preset_config(config, image)
        if isinstance(hf_config, ViTConfig):
            model: PreTrainedModel = ViTModel(hf_config, add_pooling_layer=False)
        elif isinstance(hf_config, ConvNextConfig):
            model = ConvNextModel(hf_config)
        elif isinstance(hf_config, RegNetConfig):
            model = RegNetModel(hf_config)
        else:
            model = ResNetModel(hf_config)
        return _wrap(model, config.pooling or "mean", image_processor(image), image.vit_mask_token)

    hf_config = AutoConfig.from_pretrained(config.name_or_path, trust_remote_code=False)
    if hf_config.model_type not in _PRESETS:
        raise ValueError(
            f"{config.name_or_path}: model type {hf_config.model_type!r} is not an image encoder of this domain;"
            f" supported: {sorted(_PRESETS)}"
        )
    if hf_config.num_channels != image.input_channels:
        raise ValueError(
            f"{config.name_or_path} takes {hf_config.num_channels} channels, the domain makes {image.input_channels}: "
            f"set the image domain's channels={hf_config.num_channels} (multissl probe reads it from the folder)"
        )
    if hf_config.model_type == "vit":
        if hf_config.patch_size != image.patch_size:
            raise ValueError(
                f"{config.name_or_path} has patch size {hf_config.patch_size}; set the image domain's"
                f" patch_size={hf_config.patch_size} (it is the masking unit)"
            )
        model = ViTModel.from_pretrained(config.name_or_path, add_pooling_layer=False)
    else:
        model = AutoModel.from_pretrained(config.name_or_path, trust_remote_code=False)
    try:
        processor = AutoImageProcessor.from_pretrained(config.name_or_path, trust_remote_code=False)
    except OSError:  # a checkpoint saved without its processor: use the domain's preprocessing
        processor = image_processor(image)
    return _wrap(model, config.pooling or "mean", processor, image.vit_mask_token)
