"""I-JEPA: the image domain's multi-block masks follow the reference's rules, the context encoder
sees the context block only, the predictor answers at the target positions, it learns on real images,
its state (EMA target encoder) round-trips, and 2 processes equal 1."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from domains.image.masking import multiblock_masks
from multissl.modules import MaskTokenPredictor
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

# 32 px images and 4 px patches: an 8 x 8 grid, where the reference's scales make real blocks
DOMAIN = {"image_size": 32, "normalization": "cifar10"}
OPTIONS = {"predictor_dim": 32, "predictor_depth": 1, "predictor_heads": 2}


def build_ijepa():
    torch.manual_seed(0)
    encoder = build_domain("image", DOMAIN).build_encoder(EncoderConfig("vit", "tiny"))
    return build_objective("ijepa", [encoder], OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, architecture="vit", rows=12, options={"image_size": 32})


def _grid_positions(index: torch.Tensor, columns: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    return index // columns, index % columns


def _targets_kept_out(context: torch.Tensor, targets: torch.Tensor) -> list[int]:
    """Per row, how many of the target blocks, in order, the context avoids (the reference drops
    the constraints from the last target backwards when a context keeps too few patches)."""
    kept = []
    for row_context, row_targets in zip(context.tolist(), targets):
        count = 0
        while count < len(row_targets) and not set(row_context) & set(row_targets[: count + 1].reshape(-1).tolist()):
            count += 1
        kept.append(count)
    return kept


def test_multiblock_masks_follow_the_reference():
    generator = torch.Generator().manual_seed(0)
    kept_out = []
    for _ in range(5):
        context, targets, union = multiblock_masks(16, (8, 8), generator, torch.device("cpu"))
        batch, blocks, area = targets.shape
        assert (batch, blocks) == (16, 4)
        rows, columns = _grid_positions(targets)
        heights = rows.amax(-1) - rows.amin(-1) + 1
        widths = columns.amax(-1) - columns.amin(-1) + 1
        # one block size for the whole batch, a full rectangle, never on the last row or column
        assert (heights * widths == area).all() and heights.unique().numel() == 1 and widths.unique().numel() == 1
        assert rows.max() < 7 and columns.max() < 7
        assert 0.15 * 64 - 1 <= area <= 0.2 * 64 + 2  # the reference's rounding of (0.15, 0.2) of 64 patches
        aspect = heights[0, 0].item() / widths[0, 0].item()
        assert 0.5 <= aspect <= 2
        # the context keeps more than 10 patches, increasing, the same count in every row (cut to the
        # smallest), and the targets removed
        assert context.shape[1] > 10 and (context.diff(dim=1) > 0).all()
        kept_out += _targets_kept_out(context, targets)
        expected_union = torch.zeros(16, 64, dtype=torch.bool).scatter(1, targets.reshape(16, -1), True)
        assert torch.equal(union, expected_union)
    assert min(kept_out) >= 1 and sum(k == 4 for k in kept_out) >= 0.9 * len(kept_out), kept_out


def test_multiblock_masks_come_from_the_generator_only():
    draw = lambda seed: multiblock_masks(4, (8, 8), torch.Generator().manual_seed(seed), torch.device("cpu"))  # noqa: E731
    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, other))


def test_multiblock_masks_fall_back_on_tiny_grids():
    # a 4 x 4 grid cannot keep 10 context patches: the reference would loop forever, here the
    # context block is used with the targets left in
    context, targets, _ = multiblock_masks(3, (4, 4), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert context.shape[1] == 9 and targets.shape[:2] == (3, 4)


def test_predictor_answers_at_the_query_positions_only():
    torch.manual_seed(0)
    predictor = MaskTokenPredictor(6, 5, dim=8, depth=1, heads=2).eval()
    context, positions = torch.randn(2, 3, 6), torch.tensor([[0, 1, 2], [4, 5, 6]])
    queries = torch.tensor([[7, 8], [9, 10]])
    out = predictor(context, positions, queries, (4, 4))
    assert out.shape == (2, 2, 5)
    # permuting the context tokens together with their positions changes nothing (positions travel along)
    order = torch.tensor([2, 0, 1])
    torch.testing.assert_close(predictor(context[:, order], positions[:, order], queries, (4, 4)), out)
    # ... and the answers depend on where the context sits
    assert not torch.allclose(predictor(context, positions + 1, queries, (4, 4)), out)


def test_context_encoder_sees_only_the_context_block(image):
    objective = build_ijepa()
    (views,) = make_views(objective, [image], [raw_batch(image, 4)], seed=1)
    assert views["inputs"]["keep_index"].shape[1] == objective.encoder(**views["inputs"]).sequence.shape[1]
    pixels = views["inputs"]["pixel_values"].clone().requires_grad_(True)
    views = dict(views, inputs=dict(views["inputs"], pixel_values=pixels))
    objective(views).loss.backward()
    seen = torch.zeros(4, 64, dtype=torch.bool).scatter(1, views["inputs"]["keep_index"], True)
    seen_pixels = seen.view(4, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3).expand_as(pixels)
    assert pixels.grad[~seen_pixels].abs().max() == 0 and pixels.grad[seen_pixels].abs().max() > 0


def test_ijepa_overfits_a_small_batch_and_round_trips(image):
    objective = build_objective("ijepa", [image.encoder], OPTIONS)
    losses = overfit(objective, [image], [raw_batch(image, 12)], steps=15, lr=3e-3)
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    assert all(math.isfinite(loss) for loss in losses)
    assert 0.996 < float(objective.target_encoder.momentum) <= 1.0  # linear 0.996 -> 1 over the run
    assert_state_round_trip(objective, build_ijepa)


def test_ijepa_needs_a_vit():
    encoder = build_domain("image", DOMAIN).build_encoder(EncoderConfig("convnext", "tiny"))
    with pytest.raises(ValueError, match=r"encoder\.architecture: vit"):
        build_objective("ijepa", [encoder], OPTIONS)


def test_ijepa_two_processes_equal_one(image):
    objective = build_ijepa()
    views = make_views(objective, [image], [raw_batch(image, 10)], seed=3)
    distributed_equivalence(build_ijepa, views, sizes=[6, 4])
