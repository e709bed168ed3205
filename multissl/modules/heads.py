"""MLP heads that sit on top of an encoder's pooled features.

One class covers the projection heads of the joint-embedding family; only depth, width and the
placement of batch norm differ between papers:

- SimCLR (Chen et al. 2020a): 2 layers, 2048 -> 128, BN on every layer, the output's without centering.
- SimCLRv2 (Chen et al. 2020b): 3 layers, 2048 -> 2048 -> 128, the same with one more layer.
- MoCo v2 (Chen et al. 2020c): 2 layers, 2048 -> 128, no BN (``batch_norm=False``).
- MoCo v3 (Chen et al. 2021): 3 layers, 4096 -> 4096 -> 256, BN on every layer.
- BYOL (Grill et al. 2020) projector: 2 layers, 4096 -> 256, BN on the hidden layer.
- Barlow Twins (Zbontar et al. 2021) / VICReg (Bardes et al. 2022): 3 layers, 8192 wide throughout,
  BN on the hidden layers.

A layer is ``Linear -> [BatchNorm1d] -> ReLU``; the last layer is ``Linear -> [BatchNorm1d]`` with
no activation. A linear layer followed by batch norm carries no bias (BN's shift makes it redundant,
as in MoCo v3 and Barlow Twins). The optional last BN has no affine parameters, as in MoCo v3, or
a learnable scale and no shift (``last_norm_scale``), as both official SimCLR codebases
(``linear_layer(..., use_bn=True, center=False)`` on the output layer).

SimCLRv2 fine-tunes "from the middle layer of the projection head": the encoder plus the head's
first layer(s) become the network the classifier sits on. ``head(x, up_to=k)`` returns the output
after layer ``k`` (ReLU included), and ``head.truncated(k)`` returns those first ``k`` layers as an
``nn.Sequential`` sharing the head's weights, to hand to a fine-tuning or probing stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from multissl.features import encode_views
from multissl.modules.gradcache import grad_cache_or_none

__all__ = ["ProjectionHead", "Predictor", "ProjectedEncoder", "DINOHead"]


class ProjectionHead(nn.Module):
    """MLP ``in_dim -> hidden_dim -> ... -> out_dim`` with ``num_layers`` linear layers.

    Input ``[..., in_dim]``, output ``[..., out_dim]`` (``[..., hidden_dim]`` for ``up_to <
    num_layers``). Leading dimensions are flattened into one batch dimension for batch norm, so
    every row given contributes to the batch statistics: pass only valid rows (no padding).
    The output is not L2-normalised; losses normalise where their paper does.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
        last_norm_scale: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_dim, self.hidden_dim, self.out_dim, self.num_layers = in_dim, hidden_dim, out_dim, num_layers
        self.batch_norm, self.last_batch_norm, self.last_norm_scale = batch_norm, last_batch_norm, last_norm_scale
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers = []
        for index in range(num_layers):
            last = index == num_layers - 1
            with_norm = last_batch_norm if last else batch_norm
            block: list[nn.Module] = [nn.Linear(widths[index], widths[index + 1], bias=not with_norm)]
            if with_norm:
                block.append(_output_norm(widths[index + 1], last_norm_scale) if last else nn.BatchNorm1d(widths[index + 1]))
            if not last:
                block.append(nn.ReLU(inplace=True))
            layers.append(nn.Sequential(*block))
        self.layers = nn.ModuleList(layers)

    def shape(self) -> dict[str, int | bool]:
        """The constructor's arguments: ``ProjectionHead(**head.shape())`` builds the same layers."""
        return dict(in_dim=self.in_dim, hidden_dim=self.hidden_dim, out_dim=self.out_dim, num_layers=self.num_layers,
                    batch_norm=self.batch_norm, last_batch_norm=self.last_batch_norm,
                    last_norm_scale=self.last_norm_scale)

    def _check_up_to(self, up_to: int | None) -> int:
        if up_to is None:
            return self.num_layers
        if not 1 <= up_to <= self.num_layers:
            raise ValueError(f"up_to must be in [1, {self.num_layers}] for this {self.num_layers}-layer head, got {up_to}")
        return up_to

    def forward(self, x: Tensor, up_to: int | None = None) -> Tensor:
        """Run the first ``up_to`` layers (all by default) on ``x`` ``[..., in_dim]``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"input must end in in_dim={self.in_dim}, got shape {tuple(x.shape)}")
        leading = x.shape[:-1]
        out = x.reshape(-1, self.in_dim)
        for layer in self.layers[: self._check_up_to(up_to)]:
            out = layer(out)
        return out.reshape(*leading, out.shape[-1])

    def truncated(self, up_to: int) -> nn.Sequential:
        """The first ``up_to`` layers as an ``nn.Sequential`` that shares this head's weights
        (SimCLRv2's fine-tuning from the middle of the head). Takes ``[B, in_dim]`` rows."""
        return nn.Sequential(*self.layers[: self._check_up_to(up_to)])


def _output_norm(width: int, scale: bool) -> nn.BatchNorm1d:
    """Batch norm of the output layer: no affine parameters, or a learnable scale with the shift
    fixed at 0 (TensorFlow's ``center=False``; the bias stays a frozen zero in the state dict)."""
    if not scale:
        return nn.BatchNorm1d(width, affine=False)
    norm = nn.BatchNorm1d(width)
    norm.bias.requires_grad_(False)
    return norm


class Predictor(ProjectionHead):
    """The predictor MLP of BYOL (Grill et al. 2020), SimSiam (Chen & He 2021) and MoCo v3:
    ``Linear -> BatchNorm1d -> ReLU -> Linear``, input ``[..., in_dim]``, output ``[..., out_dim]``.

    BYOL: 256 -> 4096 -> 256; SimSiam: 2048 -> 512 -> 2048 (a bottleneck); MoCo v3: 256 -> 4096 -> 256.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=True, last_batch_norm=False)


class ProjectedEncoder(nn.Module):
    """An encoder followed by a head on its pooled features: ``f`` then ``g`` of SimCLR/MoCo/BYOL.

    ``forward(views)`` takes a list of input dicts (the ``augmented`` views, each ``B`` rows) and
    returns one projection ``[B, out_dim]`` per view. Views of equal shapes share one encoder call
    (:func:`~multissl.features.encode_views`) and all views share one head call, so batch norm
    anywhere in the network normalises the views together, as SimCLR's reference does. Outputs are
    not normalised. ``chunk_size`` encodes through :class:`~multissl.modules.GradCache` (that many
    rows per encoder call; parameter names unchanged).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, chunk_size: int | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.grad_cache = grad_cache_or_none(encoder, chunk_size)

    def forward(self, views: list[dict[str, Any]]) -> list[Tensor]:
        pooled = [features.pooled for features in encode_views(self.grad_cache or self.encoder, views)]
        return list(self.head(torch.cat(pooled)).split([p.shape[0] for p in pooled]))


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, section 3.1 and ``DINOHead`` of the reference
    ``vision_transformer.py``), also the head of iBOT and DINOv2.

    ``num_layers`` linear layers ``in_dim -> hidden_dim -> ... -> bottleneck_dim`` with GELU between
    them (batch norm after each hidden layer when ``batch_norm``, the reference's ``use_bn``, off by
    default), an L2 normalisation of the bottleneck, then a weight-normalised linear layer without
    bias to ``out_dim`` prototypes: ``logits = z / |z| . (g_k v_k / |v_k|)``. With
    ``norm_last_layer`` (the reference's default) the scales ``g_k`` are fixed at 1, so every
    prototype is a unit vector and the logits are cosines; otherwise ``g`` is learned (initialised
    at 1). Defaults are the paper's: 3 layers, hidden 2048, bottleneck 256, 65,536 prototypes.
    Hidden layers start from a truncated normal (std 0.02) with zero biases; the last layer keeps
    ``nn.Linear``'s initialisation, as the reference.

    ``forward(x, last_layer_gate)``: ``x`` [..., in_dim] -> [..., out_dim]. ``last_layer_gate`` (a
    0-d tensor, 1 or 0) lets the caller stop the last layer's gradient for the first steps without
    leaving a parameter unused under DDP (the reference zeroes its gradient during the first epoch,
    ``freeze_last_layer``): same value, gradient multiplied by the gate.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 num_layers: int = 3, batch_norm: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.in_dim, self.out_dim = in_dim, out_dim
        widths = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index in range(num_layers):
            layers.append(nn.Linear(widths[index], widths[index + 1]))
            if index < num_layers - 1:
                layers += [nn.BatchNorm1d(widths[index + 1])] if batch_norm else []
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_layer_scale = None if norm_last_layer else nn.Parameter(torch.ones(out_dim))

    def forward(self, x: Tensor, last_layer_gate: Tensor | None = None) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"input must end in in_dim={self.in_dim}, got shape {tuple(x.shape)}")
        leading = x.shape[:-1]
        bottleneck = nn.functional.normalize(self.mlp(x.reshape(-1, self.in_dim)), dim=-1)
        weight = nn.functional.normalize(_gated(self.last_layer.weight, last_layer_gate), dim=1)
        if self.last_layer_scale is not None:
            weight = weight * _gated(self.last_layer_scale, last_layer_gate).unsqueeze(1)
        return nn.functional.linear(bottleneck, weight).reshape(*leading, self.out_dim)


def _gated(parameter: Tensor, gate: Tensor | None) -> Tensor:
    """``parameter``'s value with its gradient multiplied by ``gate`` (no gate: unchanged)."""
    if gate is None:
        return parameter
    gate = gate.to(parameter.dtype)
    return parameter * gate + parameter.detach() * (1 - gate)
