"""MoCo v2 and v3: learn on data, state round-trips, the key network follows the query network
by EMA only, 2 processes equal 1 where that is exact, and shuffling BN does what MoCo sec. 3.3 says."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl import distributed
from multissl.modules import SplitBatchNorm
from multissl.objectives import build_objective
from multissl.modules import positive_accuracy
from tests.dist import run_in_processes
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, slice_rows, tiny_setup,
)

# CIFAR-10-strength views (SimCLR appendix B.9), milder crops: 16 px images stay recognisable, so a
# tiny network learns the task within a few dozen steps.
MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
V2_OPTIONS = {"queue_size": 32, "projection_dim": 16, "hidden_dim": 32, "momentum": 0.9}
V3_OPTIONS = {"projection_dim": 16, "hidden_dim": 32, "momentum": 0.9}


def _image_encoder(architecture: str):
    return build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig(architecture, "tiny"))


# --- factories: module level, fixed seed, so spawned processes build identical objectives ----------

def build_moco_v2():
    torch.manual_seed(0)
    return build_objective("moco_v2", [_image_encoder("convnext")], V2_OPTIONS)


def build_moco_v2_resnet():
    """A key network with batch norm, so shuffling BN applies (the paper's setting: 1 split per process)."""
    torch.manual_seed(0)
    return build_objective("moco_v2", [_image_encoder("resnet")], {**V2_OPTIONS, "split_batchnorm_splits": 1})


def build_moco_v3():
    torch.manual_seed(0)
    return build_objective("moco_v3", [_image_encoder("convnext")], V3_OPTIONS)


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _fresh(setup, name, options, architecture="resnet"):
    torch.manual_seed(0)
    return build_objective(name, [setup.domain.build_encoder(EncoderConfig(architecture, "tiny"))], options)


# --- learning and state --------------------------------------------------------------------------

def test_moco_v2_learns_on_images_and_round_trips_queue_and_key_network(image):
    objective = _fresh(image, "moco_v2", V2_OPTIONS)
    steps = 30
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=steps, lr=3e-3)
    # The first two steps score queries against the queue's random initial keys (easy negatives);
    # after them the queue holds 32 real keys, so the loss is compared over steps where it is full,
    # and against chance: log(16 in-batch keys + 32 queued) for embeddings that know nothing.
    assert sum(losses[-5:]) / 5 < sum(losses[2:7]) / 5 - 0.3, losses
    assert sum(losses[-5:]) / 5 < math.log(16 + 32) - 0.5, losses
    queue = objective.queue
    assert int(queue.total_enqueued) == steps * 16 and int(queue.pointer) == steps * 16 % queue.size
    state = objective.state_dict()
    assert {"queue.keys", "queue.pointer", "queue.total_enqueued", "key_network.momentum"} <= set(state)
    assert any(k.startswith("key_network.module.encoder.") for k in state)
    assert_state_round_trip(objective, lambda: _fresh(image, "moco_v2", V2_OPTIONS))


@pytest.mark.slow
def test_moco_v2_learns_on_text(data_root):
    """Text views are identical copies (the domain's dropout policy): dropout in the query and key
    networks makes them differ, as in SimCSE."""
    text = tiny_setup("text", data_root, rows=16)
    torch.manual_seed(0)
    objective = build_objective("moco_v2", [text.encoder], V2_OPTIONS)
    losses = overfit(objective, [text], [raw_batch(text, 16)], steps=20, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[2:7]) / 5 - 0.5, losses
    assert sum(losses[-5:]) / 5 < math.log(16 + 32) - 0.5, losses


@pytest.mark.slow
def test_moco_v3_learns_on_images_and_round_trips(image):
    objective = _fresh(image, "moco_v3", V3_OPTIONS)
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert sum(losses[-5:]) / 5 < 2 * 0.2 * 2 * math.log(16) - 0.2, losses  # chance: 2 tau * 2 log(B)
    assert_state_round_trip(objective, lambda: _fresh(image, "moco_v3", V3_OPTIONS))


# --- the loss is the paper's -----------------------------------------------------------------------

def _cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _contrastive_term(query, positive, candidates, temperature):
    """-log softmax of the positive among ``candidates`` (MoCo eq. 1), by a loop."""
    scores = [_cosine(query, c) / temperature for c in candidates]
    return -(_cosine(query, positive) / temperature - math.log(sum(math.exp(s) for s in scores)))


def test_positive_accuracy_counts_queries_whose_own_key_beats_every_candidate():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(8, 5, generator=generator)
    key = torch.randn(8, 5, generator=generator)
    key[:5] = 3 * query[:5] + 0.1 * torch.randn(5, 5, generator=generator)  # 5 easy positives
    negatives = torch.randn(20, 5, generator=generator)
    negatives[0] = query[1]  # a queued copy of query 1 beats its positive
    candidates = list(key) + list(negatives)
    expected = sum(max(range(28), key=lambda j: _cosine(query[i], candidates[j])) == i for i in range(8)) / 8
    assert 0 < expected < 1
    assert float(positive_accuracy(query, key, negatives)) == pytest.approx(expected)
    in_batch = sum(max(range(8), key=lambda j: _cosine(query[i], key[j])) == i for i in range(8)) / 8
    assert float(positive_accuracy(query, key)) == pytest.approx(in_batch)


@pytest.mark.parametrize("symmetric", [False, True])
def test_moco_v2_loss_is_equation_1_with_the_queue_and_enqueues_the_keys(image, symmetric):
    objective = _fresh(image, "moco_v2", {**V2_OPTIONS, "symmetric": symmetric}, "convnext")
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    queue = objective.queue.keys.clone()
    out = objective(*views)
    loss = out.loss
    first, second = views[0]["views"][:2]
    with torch.no_grad():  # no batch norm anywhere (ConvNeXt, MoCo v2's head): the same values again
        q1, q2 = objective.query_network([first, second])
        k1, k2 = objective.key_network([first, second])

    def direction(q, k):  # candidates: every key of the batch, then the queue
        return sum(_contrastive_term(q[i], k[i], list(k) + list(queue), 0.2) for i in range(6)) / 6

    expected = direction(q1, k2) + (direction(q2, k1) if symmetric else 0.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    enqueued = torch.cat([k2, k1] if symmetric else [k2])
    torch.testing.assert_close(objective.queue.keys[: len(enqueued)], F.normalize(enqueued, dim=1))
    torch.testing.assert_close(objective.queue.keys[len(enqueued):], queue[len(enqueued):])
    # logs: the fraction of queries whose own key beats every other candidate, and the queue's fill
    candidates = list(k2) + list(queue)
    correct = [max(range(len(candidates)), key=lambda j: _cosine(q1[i], candidates[j])) == i for i in range(6)]
    assert float(out.logs["positive_accuracy"]) == pytest.approx(sum(correct) / 6)
    assert float(out.logs["queue_fill"]) == pytest.approx(len(enqueued) / V2_OPTIONS["queue_size"])


def test_moco_v3_loss_is_two_tau_times_the_symmetrised_in_batch_loss(image):
    objective = _fresh(image, "moco_v3", V3_OPTIONS, "convnext")
    views = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    loss = objective(*views).loss
    pair = views[0]["views"][:2]
    with torch.no_grad():  # train-mode batch norm depends only on the batch: the same values again
        q1, q2 = objective.predictor(torch.cat(objective.query_network(pair))).chunk(2)
        k1, k2 = objective.key_network(pair)

    def ctr(q, k):
        return sum(_contrastive_term(q[i], k[i], list(k), 0.2) for i in range(6)) / 6

    assert float(loss.detach()) == pytest.approx(2 * 0.2 * (ctr(q1, k2) + ctr(q2, k1)), rel=1e-5)


# --- the key network -----------------------------------------------------------------------------

@pytest.mark.parametrize("name,architecture", [("moco_v2", "resnet"), ("moco_v3", "convnext")])
def test_key_network_gets_no_gradient_and_moves_by_exactly_the_ema_rule(image, name, architecture):
    options = V2_OPTIONS if name == "moco_v2" else V3_OPTIONS
    objective = _fresh(image, name, options, architecture)
    out = objective(*make_views(objective, [image], [raw_batch(image, 8)], seed=1))
    out.loss.backward()
    key_network = objective.key_network.module
    assert all(not p.requires_grad and p.grad is None for p in key_network.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.query_network.parameters())

    # Move the query network far from the key network (weights and batch-norm statistics), then step.
    with torch.no_grad():
        for tensor in objective.query_network.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor))
    before = {k: v.clone() for k, v in key_network.state_dict().items()}
    online = {k: v.clone() for k, v in objective.query_network.state_dict().items()}
    objective.on_step_end(3, 10)

    # MoCo v2: constant 0.9; MoCo v3: cosine from 0.9 to 1 (MoCo v3 main_moco.py adjust_moco_momentum).
    m = 0.9 if name == "moco_v2" else 1 - 0.5 * (1 + math.cos(math.pi * 3 / 10)) * (1 - 0.9)
    assert float(objective.key_network.momentum) == pytest.approx(m, abs=1e-7)
    for key, value in key_network.state_dict().items():
        if value.is_floating_point():
            expected = m * before[key].double() + (1 - m) * online[key].double()
            torch.testing.assert_close(value.double(), expected, rtol=1e-6, atol=1e-6, msg=f"{key} is not the EMA")
        else:  # batch norm's step counter: copied, it cannot be averaged
            assert torch.equal(value, online[key]), key
    if name == "moco_v2":  # shuffling BN's split batch norms are still paired by name with the query's
        assert any(isinstance(module, SplitBatchNorm) for module in key_network.modules())


# --- shuffling BN ---------------------------------------------------------------------------------

def _rows_of(inputs: torch.Tensor, reference: torch.Tensor) -> list[int]:
    """Index in ``reference`` of each row of ``inputs`` (every row must occur exactly once)."""
    matches = (inputs.flatten(1)[:, None, :] == reference.flatten(1)[None, :, :]).all(dim=2)
    assert (matches.sum(dim=1) == 1).all(), "a key-network input row is not one of the batch's rows"
    return matches.int().argmax(dim=1).tolist()


def _record_key_inputs(objective) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    objective.key_network.module.register_forward_pre_hook(
        lambda module, args: seen.append(args[0][0]["pixel_values"].clone()))
    return seen


def _keys(network, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(network([{"pixel_values": pixels}])[0], dim=1)


def test_shuffle_batchnorm_on_one_process_normalises_keys_in_shuffled_sub_batches(image):
    objective = _fresh(image, "moco_v2", {**V2_OPTIONS, "split_batchnorm_splits": 2}, "resnet")
    assert objective.shuffle_batchnorm
    plain = copy.deepcopy(objective.query_network)  # the key network's weights, plain batch norm
    views = make_views(objective, [image], [raw_batch(image, 8)], seed=1)
    seen = _record_key_inputs(objective)
    torch.manual_seed(3)
    objective(*views)

    second = views[0]["views"][1]["pixel_values"]
    order = _rows_of(seen[0], second)
    assert sorted(order) == list(range(8))
    halves = [order[:4], order[4:]]
    assert sorted(map(sorted, halves)) != [[0, 1, 2, 3], [4, 5, 6, 7]], "keys were not shuffled"
    # Independently: plain batch norm over each shuffled half reproduces the enqueued keys.
    expected = torch.empty(8, V2_OPTIONS["projection_dim"])
    for half in halves:
        expected[half] = _keys(plain, second[half])
    torch.testing.assert_close(objective.queue.keys[:8], expected, rtol=1e-5, atol=1e-5)
    # ...and the statistics matter: the whole batch (the queries' batch) gives other keys.
    assert (_keys(plain, second) - expected).abs().max() > 1e-3


def test_shuffle_batchnorm_batch_that_does_not_divide_into_splits_is_an_error(image):
    objective = _fresh(image, "moco_v2", {**V2_OPTIONS, "split_batchnorm_splits": 3}, "resnet")
    with pytest.raises(ValueError, match="split_batchnorm_splits=3"):
        objective(*make_views(objective, [image], [raw_batch(image, 8)], seed=1))


def test_shuffle_batchnorm_is_off_where_the_key_network_has_no_batch_norm():
    assert not build_moco_v2().shuffle_batchnorm  # ConvNeXt + MoCo v2's head: layer norm only


def _shuffled_keys_worker(views, sizes):
    objective = build_moco_v2_resnet()
    rank = distributed.rank()
    start = sum(sizes[:rank])
    seen = _record_key_inputs(objective)
    torch.manual_seed(5)
    objective(*slice_rows(views, start, start + sizes[rank], sum(sizes)))
    return {"key_inputs": seen[0], "queue": objective.queue.keys.clone(), "pointer": objective.queue.pointer.clone()}


@pytest.mark.slow
def test_shuffle_batchnorm_across_two_processes(image):
    """Under shuffling BN the keys are not those of one process (each process normalises a random
    part of the global batch, by design), so instead: each key is normalised in a different
    sub-batch from its query, the key network's output for exactly that sub-batch is what every
    process enqueues, in global row order (the queue is exact)."""
    sizes = [6, 6]
    views = make_views(build_moco_v2_resnet(), [image], [raw_batch(image, 12)], seed=2)
    results = run_in_processes(_shuffled_keys_worker, views, sizes)

    second = views[0]["views"][1]["pixel_values"]
    key_batches = [_rows_of(r["key_inputs"], second) for r in results]
    assert sorted(sum(key_batches, [])) == list(range(12)), "the shuffle is not a permutation of the global batch"
    query_batches = [set(range(0, 6)), set(range(6, 12))]
    for rank, rows in enumerate(key_batches):
        for row in rows:
            assert set(rows) != query_batches[row // 6], f"key {row} shares its query's sub-batch"

    plain = build_moco_v2_resnet().query_network
    expected = torch.empty(12, V2_OPTIONS["projection_dim"])
    for rows in key_batches:
        expected[rows] = _keys(plain, second[rows])
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["queue"][:12], expected, rtol=1e-5, atol=1e-5,
                                   msg=f"rank {rank} enqueued other keys")
        assert int(result["pointer"]) == 12
    unshuffled = torch.cat([_keys(plain, second[:6]), _keys(plain, second[6:])])
    assert (unshuffled - expected).abs().max() > 1e-3


# --- two processes ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_moco_v2_two_processes_equal_one(image):
    """Exact where MoCo v2 is deterministic: without batch norm in the key network there is no
    shuffle, and the queue-negatives kernel gives one process's loss and gradients (the queue's
    random initial keys are the same on every process)."""
    views = make_views(build_moco_v2(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_moco_v2, views, sizes=[7, 5])


@pytest.mark.slow
def test_moco_v3_two_processes_equal_one(image):
    views = make_views(build_moco_v3(), [image], [raw_batch(image, 12)], seed=3)
    distributed_equivalence(build_moco_v3, views, sizes=[7, 5])
