"""Audio encoders: stock ``transformers`` speech models that return :class:`Features`.

* ``wav2vec2``: ``Wav2Vec2Model`` (Baevski et al. 2020), a strided conv feature encoder on raw
  waveforms (``input_values`` [B, L]) followed by a transformer; 50 frames/s at 16 kHz for the
  "small"/"base" presets (stride 320, receptive field 400 samples), ~50 frames/s for "tiny".
* ``w2v-bert``: ``Wav2Vec2BertModel`` (w2v-BERT 2.0, a conformer) on spectrogram frames
  (``input_features`` [B, T, F] from the ``log_mel`` / ``mfcc`` front end, one encoder frame per
  spectrogram frame: 100 frames/s).

Presets use a layer-normalised conv feature encoder (``feat_extract_norm="layer"``) with a pre-LN
transformer (``do_stable_layer_norm=True``), as wav2vec2-large-lv60: the group-normalised encoder
of wav2vec2-base normalises each channel over the whole padded time axis, so a clip's features
would change with the padding of the batch it sits in (and HF says not to pass it an attention
mask). With layer norm every frame depends only on its own samples, the transformer masks padded
frames, and pooled features are padding invariant.

Masking is the domain's ``masked`` view, drawn from the engine's seeded generator and passed as
``mask_time_indices``; the models replace those frames with their learned ``masked_spec_embed``.
The models' own SpecAugment sampler (numpy's global random state) must never run: the wrapper
passes an all-False ``mask_time_indices`` in training mode when no mask is given, and feature
masking is off. ``mask_time_prob`` stays > 0 in the config (0.05, HF's default) because the model
only creates ``masked_spec_embed`` then, and a fine-tuner loading the pushed model gets the usual
time masking.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from domains.audio.frames import FrameGeometry, lengths_to_mask
from multissl.domain import EncoderConfig
from multissl.features import Encoder, Features, masked_mean

__all__ = ["AudioEncoder", "build_audio_encoder", "WAV2VEC2_PRESETS", "W2V_BERT_PRESETS", "ARCHITECTURES"]

_STANDARD_CONV = dict(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))

WAV2VEC2_PRESETS: dict[str, dict[str, Any]] = {
    # Tests: 3 conv layers (stride 320, receptive field 325 samples), 2 transformer layers, width 64.
    "tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
    ),
    # A 2-core CPU in minutes: the tiny conv stack (stride 320) twice as wide, 4 transformer layers
    # of width 128 (2.1 M parameters; ~6x the tiny preset's cost per second of audio).
    "cpu": dict(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
        conv_dim=(64, 128, 128), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8,
    ),
    "small": dict(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
        conv_dim=(256,) * 7, **_STANDARD_CONV, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    ),
    # wav2vec2-base sizes (95M parameters).
    "base": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        conv_dim=(512,) * 7, **_STANDARD_CONV, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    ),
}
_WAV2VEC2_COMMON = dict(
    feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True, layerdrop=0.0,
    apply_spec_augment=True, mask_time_prob=0.05, mask_feature_prob=0.0,
)

W2V_BERT_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, conv_depthwise_kernel_size=15),
    "cpu": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                conv_depthwise_kernel_size=15),
    "small": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=512, num_hidden_layers=12, num_attention_heads=8, intermediate_size=2048),
}
_W2V_BERT_COMMON = dict(layerdrop=0.0, add_adapter=False, apply_spec_augment=True, mask_time_prob=0.05, mask_feature_prob=0.0)

ARCHITECTURES = ("wav2vec2", "w2v-bert")


class AudioEncoder(Encoder):
    """A wav2vec2-family ``PreTrainedModel`` returning :class:`Features`.

    ``encoder(input_values=... | input_features=..., attention_mask=None, mask_time_indices=None,
    output_hidden_states=False)``:

    * sequence [B, T, D]: the last transformer layer's frames.
    * mask Bool[B, T]: frames computed from valid input only, from the input lengths
      (``attention_mask.sum(-1)``) through the model's own ``_get_feat_extract_output_lengths``.
    * pooled [B, D]: masked mean of ``sequence`` (these models have no CLS token).
    * hidden_states: embeddings + every layer, when ``output_hidden_states`` is set.

    Attributes: ``frame_geometry`` (samples -> encoder frames, for masks and frame labels),
    ``input_name`` ("input_values" or "input_features").
    """

    def __init__(self, model, frame_geometry: FrameGeometry, pooling: str = "mean", processor: Any = None) -> None:
        super().__init__()
        if pooling != "mean":
            raise ValueError(f"{type(model).__name__} has no CLS token: pooling must be 'mean', got {pooling!r}")
        self.model = model
        config = model.config
        self.dim = getattr(config, "output_hidden_size", None) if getattr(config, "add_adapter", False) else config.hidden_size
        self.dim = self.dim or config.hidden_size
        self.pooling = pooling
        self.processor = processor
        self.frame_geometry = frame_geometry
        self.input_name = model.main_input_name
        # Group-normalised conv encoders were trained on zero padding without a mask (HF's advice).
        self.pass_attention_mask = getattr(config, "feat_extract_norm", "layer") == "layer"

    def forward(
        self,
        attention_mask: Tensor | None = None,
        mask_time_indices: Tensor | None = None,
        output_hidden_states: bool = False,
        **inputs: Tensor,
    ) -> Features:
        if set(inputs) != {self.input_name}:
            raise TypeError(f"{type(self).__name__} takes {self.input_name!r} (+ attention_mask, mask_time_indices); got {sorted(inputs)}")
        values = inputs[self.input_name]
        if mask_time_indices is not None and not hasattr(self.model, "masked_spec_embed"):
            raise ValueError(
                f"{type(self.model).__name__} has no masked_spec_embed (its config had mask_time_prob=0 when it was "
                "built), so it cannot take mask_time_indices; rebuild it with mask_time_prob > 0"
            )
        if mask_time_indices is None and self.training and hasattr(self.model, "masked_spec_embed"):
            # An explicit empty mask keeps the model's own numpy-seeded SpecAugment from running.
            frames = int(self.model._get_feat_extract_output_lengths(torch.tensor(values.shape[1])))
            mask_time_indices = torch.zeros(values.shape[0], frames, dtype=torch.bool, device=values.device)
        outputs = self.model(
            values,
            attention_mask=attention_mask if self.pass_attention_mask else None,
            mask_time_indices=mask_time_indices,
            output_hidden_states=output_hidden_states,
        )
        sequence = outputs.last_hidden_state
        if attention_mask is None:
            mask = torch.ones(sequence.shape[:2], dtype=torch.bool, device=sequence.device)
        else:
            frames = self.model._get_feat_extract_output_lengths(attention_mask.sum(dim=-1))
            mask = lengths_to_mask(frames, sequence.shape[1])
        return Features(
            pooled=masked_mean(sequence, mask),
            sequence=sequence,
            mask=mask,
            hidden_states=tuple(outputs.hidden_states) if output_hidden_states else None,
        )


def _apply_overrides(model_config, overrides: dict[str, Any], architecture: str) -> None:
    for key, value in overrides.items():
        if not hasattr(model_config, key):
            raise ValueError(f"EncoderConfig.overrides: {type(model_config).__name__} ({architecture}) has no field {key!r}")
        setattr(model_config, key, value)


def _geometry_of(model, front_end_geometry: FrameGeometry | None) -> FrameGeometry:
    config = model.config
    if model.main_input_name == "input_features":
        if getattr(config, "add_adapter", False):
            raise ValueError("w2v-bert with an adapter subsamples frames; multissl supports it without (add_adapter=False)")
        if front_end_geometry is None:
            raise ValueError("a spectrogram encoder needs the front end's frame geometry")
        return front_end_geometry
    kernels, strides = list(config.conv_kernel), list(config.conv_stride)
    if getattr(config, "add_adapter", False):  # as _get_feat_extract_output_lengths counts adapter layers
        kernels += [1] * config.num_adapter_layers
        strides += [config.adapter_stride] * config.num_adapter_layers
    return FrameGeometry(tuple(kernels), tuple(strides))


def _disable_model_masking(model) -> None:
    # Masks come from the domain's seeded `masked` view; the model's own samplers use numpy's state.
    # Time masking is kept from running by AudioEncoder.forward; feature masking has no such hook.
    model.config.mask_feature_prob = 0.0
    model.config.apply_spec_augment = True  # needed for mask_time_indices to take effect


def build_audio_encoder(
    config: EncoderConfig,
    *,
    sample_rate: int,
    normalize: bool,
    front_end: str,
    feature_size: int,
    front_end_geometry: FrameGeometry | None,
) -> AudioEncoder:
    """Build (preset + overrides) or load (``name_or_path``) an audio encoder for this front end.

    ``feature_size``: bins per spectrogram frame (the w2v-bert input width); ignored for waveforms.
    """
    from transformers import AutoFeatureExtractor, AutoModel, Wav2Vec2BertConfig, Wav2Vec2BertModel, Wav2Vec2Config, Wav2Vec2Model
    from transformers import Wav2Vec2FeatureExtractor

    if config.name_or_path is not None:
        model = AutoModel.from_pretrained(config.name_or_path)
        if not hasattr(model, "_get_feat_extract_output_lengths") or model.main_input_name not in ("input_values", "input_features"):
            raise ValueError(f"{config.name_or_path!r} is a {type(model).__name__}, not a wav2vec2-family speech encoder")
        try:
            processor = AutoFeatureExtractor.from_pretrained(config.name_or_path)
        except (OSError, ValueError):
            processor = None
    elif config.architecture == "wav2vec2":
        if config.size not in WAV2VEC2_PRESETS:
            raise ValueError(f"unknown wav2vec2 size {config.size!r}; presets: {sorted(WAV2VEC2_PRESETS)}")
        model_config = Wav2Vec2Config(**WAV2VEC2_PRESETS[config.size], **_WAV2VEC2_COMMON)
        _apply_overrides(model_config, config.overrides, config.architecture)
        model = Wav2Vec2Model(model_config)
        processor = None
    elif config.architecture in ("w2v-bert", "wav2vec2-bert"):
        if config.size not in W2V_BERT_PRESETS:
            raise ValueError(f"unknown w2v-bert size {config.size!r}; presets: {sorted(W2V_BERT_PRESETS)}")
        model_config = Wav2Vec2BertConfig(
            **W2V_BERT_PRESETS[config.size], **_W2V_BERT_COMMON, feature_projection_input_dim=feature_size
        )
        _apply_overrides(model_config, config.overrides, config.architecture)
        model = Wav2Vec2BertModel(model_config)
        processor = None
    else:
        raise ValueError(f"unknown audio encoder architecture {config.architecture!r}; known: {list(ARCHITECTURES)}")

    wants_waveform = model.main_input_name == "input_values"
    if wants_waveform != (front_end == "waveform"):
        raise ValueError(
            f"{type(model).__name__} takes {model.main_input_name!r} but the domain's front end is {front_end!r}: "
            "use front_end='waveform' for wav2vec2 and 'log_mel'/'mfcc' for w2v-bert"
        )
    if not wants_waveform and model.config.feature_projection_input_dim != feature_size:
        raise ValueError(
            f"{type(model).__name__} expects {model.config.feature_projection_input_dim} bins per frame, "
            f"the {front_end} front end makes {feature_size}"
        )
    processor_rate = getattr(processor, "sampling_rate", sample_rate)
    if processor_rate != sample_rate:
        raise ValueError(f"the encoder's feature extractor expects {processor_rate} Hz audio; set AudioConfig.sample_rate={processor_rate}")
    _disable_model_masking(model)
    if processor is None and wants_waveform:
        # The stock extractor that reproduces the domain's plain inputs (see augment.normalize_waveforms).
        processor = Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=sample_rate,
            padding_value=0.0,
            do_normalize=normalize,
            return_attention_mask=getattr(model.config, "feat_extract_norm", "layer") == "layer",
        )
    # Spectrogram encoders get no processor: no stock extractor computes this front end exactly
    # (torchaudio log-mel, Kaldi framing); saving a near miss would silently shift the inputs.
    return AudioEncoder(model, _geometry_of(model, front_end_geometry), pooling=config.pooling or "mean", processor=processor)
