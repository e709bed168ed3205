"""Hard negatives as objective options: SimCLR and MoCo v2 with the debiased (tau+) and reweighted
(beta) estimators, and MoCHi's synthetic negatives in MoCo v2: the mixing is what the paper says,
the losses are the papers' formulas on the objective's own embeddings, they learn on real images,
the state (MoCHi's step) round-trips, and 2 processes equal 1."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl.features import encode_views
from multissl.modules import mix_hard_negatives
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)
from tests.test_losses_contrastive import naive_hard_info_nce, naive_hard_nt_xent

MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
MOCHI = {"queue_size": 32, "projection_dim": 16, "hidden_dim": 32, "momentum": 0.9, "tau_plus": 0.1, "beta": 0.5,
         "mochi_hardest": 8, "mochi_pairs": 4, "mochi_query_mixes": 2}


def build_moco_v2_mochi(architecture: str = "convnext"):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig(architecture, "tiny"))
    return build_objective("moco_v2", [encoder], MOCHI)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


# --- MoCHi's mixing ------------------------------------------------------------------------------

def test_mochi_mixes_pairs_of_the_hardest_negatives_and_the_query_with_one():
    queries, queue = _unit(5, 6, seed=1), _unit(20, 6, seed=2)
    hardest, pairs, mixes = 3, 4, 3
    synthetic = mix_hard_negatives(queries, queue, hardest, pairs, mixes, torch.Generator().manual_seed(0))
    assert synthetic.shape == (5, pairs + mixes, 6) and not synthetic.requires_grad
    torch.testing.assert_close(synthetic.norm(dim=2), torch.ones(5, pairs + mixes, dtype=torch.float64))

    def on_segment(point, a, b, low, high):
        """Is ``point`` normalize(w a + (1 - w) b) for some w in [low, high]? Solve point = c_a a + c_b b."""
        if torch.allclose(a, b):
            return torch.allclose(point, a, atol=1e-9)
        coefficients = torch.linalg.lstsq(torch.stack([a, b], dim=1), point[:, None]).solution[:, 0]
        if not torch.allclose(torch.stack([a, b], dim=1) @ coefficients, point, atol=1e-9) or (coefficients < 0).any():
            return False
        weight = float(coefficients[0] / coefficients.sum())
        return low - 1e-9 <= weight <= high + 1e-9

    for i in range(5):
        closest = queue[(queue @ queries[i]).topk(hardest).indices]  # the N hardest, by cosine
        for h in synthetic[i, :pairs]:
            assert any(on_segment(h, closest[a], closest[b], 0.0, 1.0)
                       for a, b in itertools.product(range(hardest), repeat=2)), "not a mix of two hardest negatives"
        for h in synthetic[i, pairs:]:
            assert any(on_segment(h, queries[i], closest[b], 0.0, 0.5) for b in range(hardest)), \
                "not the query mixed (weight < 0.5) with a hardest negative"


def test_mochi_draws_for_the_global_batch_so_ranks_get_their_slice():
    queries, queue = _unit(7, 6, seed=3), _unit(12, 6, seed=4)
    whole = mix_hard_negatives(queries, queue, 4, 3, 2, torch.Generator().manual_seed(9))
    first = mix_hard_negatives(queries[:4], queue, 4, 3, 2, torch.Generator().manual_seed(9), 0, 7)
    second = mix_hard_negatives(queries[4:], queue, 4, 3, 2, torch.Generator().manual_seed(9), 4, 7)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=0)
    with pytest.raises(ValueError, match="hardest"):
        mix_hard_negatives(queries, queue, 13, 1, 0, torch.Generator())


# --- the objectives' losses are the papers' formulas -------------------------------------------------

def test_moco_v2_with_mochi_and_hard_negatives_is_the_formula(image):
    objective = build_moco_v2_mochi()
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    queue = objective.queue.negatives()
    first, second = views[0]["views"][:2]
    with torch.no_grad():  # ConvNeXt and MoCo v2's head have no batch norm: the same values again
        (q,) = objective.query_network([first])
        (k,) = objective.key_network([second])
        synthetic = objective._synthetic_negatives(q, queue, 0)
        expected = naive_hard_info_nce(q.double(), F.normalize(k, dim=1).double(), queue.double(),
                                       synthetic.double(), 0.2, 0.1, 0.5)
    loss = objective(*views).loss
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    # the synthetic negatives follow the step, so the next step mixes new ones
    objective.on_step_end(1, 10)
    assert int(objective.steps_done) == 1
    assert not torch.equal(objective._synthetic_negatives(q, queue, 0), synthetic)


def test_simclr_debiased_hard_negatives_is_the_formula(image):
    torch.manual_seed(0)
    objective = build_objective("simclr", [image.encoder], {"projection_dim": 16, "tau_plus": 0.1, "beta": 1.0})
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=2)
    loss = objective(*views).loss
    with torch.no_grad():  # one encoder call and one head call on both views: the same statistics again
        first, second = (f.pooled for f in encode_views(objective.encoder, views[0]["views"][:2]))
        z1, z2 = objective.head(torch.cat([first, second])).chunk(2)
    expected = naive_hard_nt_xent(z1.double(), z2.double(), 0.5, 0.1, 1.0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


def test_options_are_checked_when_the_objective_is_built(image):
    with pytest.raises(ValueError, match="tau_plus"):
        build_objective("simclr", [image.encoder], {"tau_plus": 1.0})
    with pytest.raises(ValueError, match="mochi_hardest"):
        build_objective("moco_v2", [image.encoder], {"queue_size": 16, "mochi_pairs": 4})
    with pytest.raises(ValueError, match="mochi_hardest"):
        build_objective("moco_v2", [image.encoder], {"queue_size": 16, "mochi_hardest": 17, "mochi_query_mixes": 1})
    assert "steps_done" not in build_objective("moco_v2", [image.encoder], {"queue_size": 16}).state_dict()


# --- learning, state, processes --------------------------------------------------------------------

def test_moco_v2_with_mochi_learns_and_round_trips(image):
    # ResNet and 30 steps, as MoCo v2's own learning test (the tiny ConvNeXt at 16 px does not move
    # MoCo v2's loss in 30 steps, with or without MoCHi); the queue's first keys are easy negatives,
    # so the loss is compared from step 2 on, once real keys fill it
    objective = build_moco_v2_mochi("resnet")
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[2:7]) / 5 - 0.2, losses
    assert int(objective.steps_done) == 30
    assert_state_round_trip(objective, lambda: build_moco_v2_mochi("resnet"))


@pytest.mark.slow
def test_moco_v2_with_mochi_two_processes_equal_one(image):
    views = make_views(build_moco_v2_mochi(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_moco_v2_mochi, views, sizes=[7, 5])
