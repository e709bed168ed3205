"""CPC: representation learning with contrastive predictive coding (van den Oord et al. 2018,
arXiv:1807.03748), on audio and text, and in 2-D on image patches.

    inputs [B, L] -> n segments of ``segment_length`` positions, each encoded alone: z_t [B, n, D]
    c_t = causal context network(z_1..z_t)     (GRU, as the paper, or a causal transformer)
    prediction of z_{t+k} = W_k c_t, k = 1..K  (one linear map per step)
    loss = cpc(predictions, z, valid): InfoNCE of each prediction against every valid z of the
           global batch (other steps and other sequences are the negatives), eq. 4

Why segments, and not ``Features.sequence`` as z: CPC needs z_t to carry no information about
the future, or predicting z_{t+k} from c_t is trivial. The paper's encoders are local (a strided
convnet on audio; a sentence encoder on text, predicting whole sentences ahead). The stock
encoders here are bidirectional transformers: every BERT token and every wav2vec2 frame attends
to the whole input, so their ``sequence`` leaks the future. The two usual fixes fall short:
a causal BERT (``is_decoder=True``) makes z_{t+k} a summary of the same prefix c_t has seen, and
the token-embedding output (word + position embeddings) trains only the embedding table, with
absolute positions that tell same-sequence negatives apart for free. So the encoder runs on each
segment alone, as the paper's text model encodes each sentence alone: z_t = the encoder's pooled
features of segment t, which sees segment t only, positions restarting at 0 in every segment
(no absolute position to exploit). Every parameter of the encoder is trained.

``segment_length`` counts input positions: tokens for text (16 ~ a clause), samples for
waveforms (1600 = 100 ms at 16 kHz, 4 wav2vec2 frames; it must cover the conv encoder's
receptive field), frames for spectrogram inputs. The first text segment holds [CLS] and the last
non-empty one [SEP], as ordinary tokens. Trailing segments with no valid frame (padding) are
neither predicted nor negatives.

**Images (section 3.3).** The image domain's sequence view is a grid of overlapping patches
(``parts``, row-major, and ``grid``); each patch is encoded alone, z [B, rows, columns, D], and
every column is read top to bottom as one sequence: c_{i,j} summarises the patches above and at
(i, j) in column j and predicts z_{i+k,j}. The paper's PixelCNN context also sees the other
columns of the rows above; a per-column context is the simple form of the same causal order.
Negatives are every other patch of the global batch, of the same image and of the others.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.features import Encoder
from multissl.losses import cpc, cpc_accuracy
from multissl.objectives.base import Objective, ObjectiveOutput
from multissl.modules.positions import sincos_1d
from multissl.views import ViewRequest

__all__ = ["CPC", "CausalTransformer", "encode_segments", "encode_patch_columns"]


def encode_segments(encoder: nn.Module, inputs: dict[str, Tensor], valid: Tensor,
                    segment_length: int) -> tuple[Tensor, Tensor]:
    """Cut every input of the sequence length L ([B, L, ...]) into ``n = ceil(L / segment_length)``
    consecutive segments, encode each alone, and return z [B, n, D] (each segment's
    ``Features.pooled``) with valid Bool[B, n].

    ``valid`` Bool[B, L] (the view's) says which positions hold content; inputs are zero padded to
    ``n * segment_length``. Only segments holding at least one valid position go through the
    encoder; a segment is valid when the encoder says it produced a valid frame
    (``Features.mask``: e.g. audio shorter than one conv frame is not). Invalid segments' z is 0.
    """
    batch, length = valid.shape
    segments = -(-length // segment_length)
    padding = segments * segment_length - length

    def cut(value: Tensor, key: str) -> Tensor:
        if value.dim() < 2 or value.shape[:2] != (batch, length):
            raise ValueError(f"input {key!r} {tuple(value.shape)} is not a [B={batch}, L={length}, ...] sequence")
        if padding:
            value = torch.cat([value, value.new_zeros(batch, padding, *value.shape[2:])], dim=1)
        return value.reshape(batch * segments, segment_length, *value.shape[2:])

    pieces = {key: cut(value, key) for key, value in inputs.items()}
    attended = cut(valid, "valid").any(dim=1)
    features = encoder(**{key: value[attended] for key, value in pieces.items()})
    produced = features.mask.any(dim=1) if features.mask is not None else torch.ones_like(attended[attended])
    z = features.pooled.new_zeros(batch * segments, features.pooled.shape[-1])
    z = z.index_put((attended.nonzero().squeeze(1),), features.pooled * produced[:, None].to(features.pooled.dtype))
    valid_segments = attended.clone()
    valid_segments[attended] = produced
    return z.view(batch, segments, -1), valid_segments.view(batch, segments)


def encode_patch_columns(encoder: nn.Module, parts: list[dict[str, Tensor]], grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Encode each patch of a row-major grid alone (one encoder call) and return its columns as
    sequences read top to bottom: z [B * columns, rows, D] and valid Bool (all True)."""
    rows, columns = grid
    if len(parts) != rows * columns:
        raise ValueError(f"a {rows}x{columns} grid needs {rows * columns} patches, got {len(parts)}")
    batch = next(iter(parts[0].values())).shape[0]
    pooled = encoder(**{key: torch.cat([part[key] for part in parts]) for key in parts[0]}).pooled  # [R*C*B, D]
    z = pooled.view(rows, columns, batch, -1).permute(2, 1, 0, 3).reshape(batch * columns, rows, -1)
    return z, torch.ones(z.shape[:2], dtype=torch.bool, device=z.device)


class CausalTransformer(nn.Module):
    """Pre-LN transformer whose output at t attends to inputs 1..t only; fixed sine-cosine positions.
    [B, T, in_dim] -> [B, T, dim]."""

    def __init__(self, in_dim: int, dim: int, layers: int, heads: int) -> None:
        super().__init__()
        self.input = nn.Linear(in_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, z: Tensor) -> Tensor:
        length = z.shape[1]
        hidden = self.input(z) + sincos_1d(length, self.input.out_features, z.device).to(z.dtype)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=z.device, dtype=hidden.dtype)
        return self.norm(self.blocks(hidden, mask=causal, is_causal=True))


class CPC(Objective):
    name = "cpc"

    def __init__(
        self,
        encoder: Encoder,
        *,
        segment_length: int = 16,
        prediction_steps: int = 3,
        context: str = "gru",
        context_dim: int = 256,
        context_layers: int = 1,
        context_heads: int = 4,
        temperature: float = 1.0,
        crop_seconds: float | None = None,
    ) -> None:
        """prediction_steps: K segments ahead (the paper: 12 audio frames, 3 sentences);
        context: "gru" (the paper) or "transformer" (causal, ``context_layers`` x ``context_heads``);
        temperature: divides the paper's log-bilinear score z^T W_k c (1: the paper);
        crop_seconds: length of the audio sequence view's crops (None: the domain's default)."""
        super().__init__()
        if segment_length < 1 or prediction_steps < 1:
            raise ValueError(f"segment_length and prediction_steps must be >= 1, got {segment_length}, {prediction_steps}")
        self.encoder = encoder
        self.segment_length = segment_length
        self.prediction_steps = prediction_steps
        self.crop_seconds = crop_seconds
        self.temperature = temperature
        if context == "gru":
            self.context = nn.GRU(encoder.dim, context_dim, num_layers=context_layers, batch_first=True)
        elif context == "transformer":
            self.context = CausalTransformer(encoder.dim, context_dim, context_layers, context_heads)
        else:
            raise ValueError(f"context must be 'gru' or 'transformer', got {context!r}")
        # W_1..W_K as one matrix: predictions for every step in one matmul (no bias: z^T W_k c_t)
        self.predictors = nn.Linear(context_dim, prediction_steps * encoder.dim, bias=False)

    def view_requests(self) -> tuple[ViewRequest, ...]:
        options = {} if self.crop_seconds is None else {"crop_seconds": self.crop_seconds}
        return (ViewRequest("sequence", options),)

    def contexts(self, z: Tensor) -> Tensor:
        """c_t for every t: [B, n, D] -> [B, n, context_dim]; c_t depends on z_1..z_t only."""
        if isinstance(self.context, nn.GRU):
            return self.context(z)[0]
        return self.context(z)

    def forward(self, views: dict[str, Any]) -> ObjectiveOutput:
        if "parts" in views:  # a 2-D grid of patches: its columns are the sequences
            z, valid = encode_patch_columns(self.encoder, views["parts"], views["grid"])
        else:
            z, valid = encode_segments(self.encoder, views["inputs"], views["valid"], self.segment_length)
        if z.shape[1] < 2:
            raise ValueError(
                f"CPC: the inputs make {z.shape[1]} segment(s) of {self.segment_length} positions; nothing to "
                "predict. Lower the objective's segment_length or lengthen the sequences"
            )
        context = self.contexts(z)
        batch, steps, dim = z.shape
        predictions = self.predictors(context).view(batch, steps, self.prediction_steps, dim)
        loss = cpc(predictions, z, valid, temperature=self.temperature)
        accuracy = cpc_accuracy(predictions.detach(), z.detach(), valid)
        logs = {f"accuracy_step{k + 1}": accuracy[k] for k in range(self.prediction_steps)}
        logs["segments"] = valid.sum(dim=1).float().mean().detach()
        return ObjectiveOutput(loss=loss, logs=logs)
