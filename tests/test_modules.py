"""multissl.modules against naive re-implementations written here: heads, EMA copies, the MoCo
queue, the learnable temperature, split batch norm and (one process) batch shuffling."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from multissl.modules import (
    LearnableTemperature,
    MomentumEncoder,
    MomentumQueue,
    Predictor,
    ProjectionHead,
    SplitBatchNorm,
    batch_shuffle,
    batch_unshuffle,
    cosine_momentum,
)
from multissl.optim import parameter_groups

# ---------------------------------------------------------------- heads


def _layer_kinds(head: ProjectionHead) -> list[list[type]]:
    return [[type(module) for module in layer] for layer in head.layers]


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_projection_head_depth_shapes_and_batch_norm_placement(num_layers):
    head = ProjectionHead(6, 16, 5, num_layers=num_layers, batch_norm=True, last_batch_norm=True)
    hidden = [nn.Linear, nn.BatchNorm1d, nn.ReLU]
    assert _layer_kinds(head) == [hidden] * (num_layers - 1) + [[nn.Linear, nn.BatchNorm1d]]
    linears = [layer[0] for layer in head.layers]
    assert [(l.in_features, l.out_features) for l in linears] == list(
        zip([6] + [16] * (num_layers - 1), [16] * (num_layers - 1) + [5])
    )
    # linear layers followed by BN have no bias; the last BN has no affine parameters (MoCo v3)
    assert all(l.bias is None for l in linears)
    assert not head.layers[-1][1].affine
    assert head(torch.randn(7, 6)).shape == (7, 5)


def test_projection_head_without_batch_norm_and_simclr_default():
    plain = ProjectionHead(6, 16, 5, num_layers=2, batch_norm=False)
    assert _layer_kinds(plain) == [[nn.Linear, nn.ReLU], [nn.Linear]]
    assert all(layer[0].bias is not None for layer in plain.layers)
    simclr = ProjectionHead(6, 16, 5)
    assert _layer_kinds(simclr) == [[nn.Linear, nn.BatchNorm1d, nn.ReLU], [nn.Linear]]
    assert simclr.layers[-1][0].bias is not None


def test_predictor_is_linear_bn_relu_linear():
    predictor = Predictor(8, 32, 8)
    assert _layer_kinds(predictor) == [[nn.Linear, nn.BatchNorm1d, nn.ReLU], [nn.Linear]]
    assert predictor(torch.randn(4, 8)).shape == (4, 8)


def test_head_up_to_and_truncated_match_manual_layers():
    torch.manual_seed(1)
    head = ProjectionHead(6, 16, 5, num_layers=3, last_batch_norm=True).double()
    x = torch.randn(9, 6, dtype=torch.float64)

    def manual_bn(h, bn):
        mean, var = h.mean(0), h.var(0, unbiased=False)
        out = (h - mean) / torch.sqrt(var + bn.eps)
        return out * bn.weight + bn.bias if bn.affine else out

    h = x
    manual = []
    for layer in head.layers:
        h = manual_bn(h @ layer[0].weight.T, layer[1])
        if len(layer) == 3:
            h = h.clamp_min(0)
        manual.append(h)
    for k in (1, 2, 3):
        torch.testing.assert_close(head(x, up_to=k), manual[k - 1])
        torch.testing.assert_close(head.truncated(k)(x), manual[k - 1])
    torch.testing.assert_close(head(x), manual[-1])
    # truncated shares weights: a change to the head shows in the truncated module
    truncated = head.truncated(1)
    assert truncated[0][0].weight is head.layers[0][0].weight
    with pytest.raises(ValueError, match="up_to"):
        head(x, up_to=4)
    with pytest.raises(ValueError, match="in_dim=6"):
        head(torch.randn(3, 7, dtype=torch.float64))


def test_head_flattens_leading_dimensions():
    head = ProjectionHead(6, 16, 5).eval()  # eval: rows are independent, so a reshape must commute
    x = torch.randn(2, 3, 6)
    torch.testing.assert_close(head(x), head(x.reshape(6, 6)).reshape(2, 3, 5))


# ---------------------------------------------------------------- momentum encoder


def _online() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_momentum_update_equals_naive_loop_over_parameters_and_buffers():
    torch.manual_seed(2)
    online = _online()
    ema = MomentumEncoder(online)
    # move the online network away from the copy: new weights and new BN statistics
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    online(torch.randn(8, 3, dtype=torch.float64))
    online(torch.randn(8, 3, dtype=torch.float64))
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    source = online.state_dict()
    momentum = 0.9
    ema.update(online, momentum)
    after = ema.module.state_dict()
    assert after["1.num_batches_tracked"] == source["1.num_batches_tracked"] == 2
    for name, old in before.items():
        if old.is_floating_point():
            expected = torch.empty_like(old)
            flat_old, flat_new, flat_exp = old.flatten(), source[name].flatten(), expected.view(-1)
            for i in range(flat_old.numel()):
                flat_exp[i] = momentum * flat_old[i] + (1 - momentum) * flat_new[i]
            torch.testing.assert_close(after[name], expected, rtol=1e-14, atol=1e-14)
            assert not torch.equal(after[name], old) or torch.equal(old, source[name])
        else:
            assert torch.equal(after[name], source[name])
    # momentum 1 keeps the target, 0 copies the online network
    ema.update(online, 1.0)
    torch.testing.assert_close(ema.module.state_dict()["0.weight"], after["0.weight"], rtol=0, atol=0)
    ema.update(online, 0.0)
    for name, value in online.state_dict().items():
        torch.testing.assert_close(ema.module.state_dict()[name], value)


class _Owner(nn.Module):
    def __init__(self):
        super().__init__()
        self.online = _online()
        self.target = MomentumEncoder(self.online)

    def forward(self, x):
        return self.online(x), self.target(x)


@pytest.mark.parametrize("use_groups", [True, False])
def test_momentum_encoder_gets_no_gradient_and_no_optimiser_update(use_groups):
    owner = _Owner()
    assert any(k.startswith("target.module.") for k in owner.state_dict())  # checkpoints carry it
    assert all(not p.requires_grad for p in owner.target.parameters())
    params = parameter_groups(owner, 0.1) if use_groups else owner.parameters()
    optimizer = torch.optim.AdamW(params, lr=0.1, weight_decay=0.5)
    frozen = {k: v.clone() for k, v in owner.target.state_dict().items()}
    online_out, target_out = owner(torch.randn(6, 3, dtype=torch.float64))
    assert not target_out.requires_grad
    (online_out.sum() + target_out.sum()).backward()
    optimizer.step()
    assert all(p.grad is None for p in owner.target.parameters())
    for name, param in owner.target.named_parameters():
        assert torch.equal(param, frozen[name]), name
    assert not torch.equal(owner.online[0].weight, frozen["module.0.weight"])


def test_momentum_encoder_mirrors_train_eval_mode_and_rejects_other_modules():
    owner = _Owner()
    owner.eval()
    assert not owner.target.module.training  # follows the owner's mode as a submodule
    owner.train()
    owner.online[1].eval()
    owner.target.update(owner.online, 0.5)
    assert not owner.target.module[1].training and owner.target.module[0].training
    with pytest.raises(ValueError, match="unwrap"):
        owner.target.update(nn.Sequential(nn.Linear(3, 4)).double(), 0.5)
    with pytest.raises(ValueError, match="momentum"):
        owner.target.update(owner.online, 1.5)


def test_cosine_momentum_endpoints_and_formula():
    base, total = 0.996, 1000
    assert cosine_momentum(0, total, base) == pytest.approx(base)
    assert cosine_momentum(total, total, base) == pytest.approx(1.0)
    assert cosine_momentum(total + 50, total, base) == pytest.approx(1.0)
    assert cosine_momentum(total // 2, total, base) == pytest.approx(1 - (1 - base) / 2)
    for k in (1, 137, 999):
        expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert cosine_momentum(k, total, base) == pytest.approx(expected, abs=1e-15)
    assert cosine_momentum(0, 10, base=0.99, final=0.999) == pytest.approx(0.99)
    assert cosine_momentum(10, 10, base=0.99, final=0.999) == pytest.approx(0.999)


# ---------------------------------------------------------------- queue


class _NaiveQueue:
    def __init__(self, rows: list[torch.Tensor]):
        self.rows, self.pointer, self.total = list(rows), 0, 0

    def enqueue(self, keys: torch.Tensor) -> None:
        for key in keys:
            self.rows[self.pointer] = key
            self.pointer = (self.pointer + 1) % len(self.rows)
            self.total += 1


def test_queue_initial_rows_are_unit_norm_and_seeded():
    rng_before = torch.get_rng_state()
    queue = MomentumQueue(16, 8, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # global random stream untouched
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(16))
    assert torch.equal(queue.keys, MomentumQueue(16, 8, seed=3).keys)  # every rank builds the same
    assert not torch.equal(queue.keys, MomentumQueue(16, 8, seed=4).keys)
    assert int(queue.pointer) == 0 and int(queue.total_enqueued) == 0


def test_queue_enqueue_order_and_wrap_around_against_list_model():
    queue = MomentumQueue(10, 4)
    naive = _NaiveQueue(list(queue.keys.clone()))
    generator = torch.Generator().manual_seed(5)
    for count in (3, 5, 7, 0, 12, 2, 10, 25):  # non-dividing, empty, longer than the queue
        keys = torch.randn(count, 4, generator=generator)
        queue.enqueue(keys)
        naive.enqueue(keys)
        assert torch.equal(queue.keys, torch.stack(naive.rows)), count
        assert int(queue.pointer) == naive.pointer and int(queue.total_enqueued) == naive.total


def test_queue_casts_keys_and_filled_negatives():
    queue = MomentumQueue(6, 3)
    keys = torch.randn(4, 3).bfloat16()
    queue.enqueue(keys)
    assert queue.keys.dtype == torch.float32
    torch.testing.assert_close(queue.negatives(filled_only=True), keys.float())
    assert queue.negatives().shape == (6, 3)
    queue.enqueue(torch.randn(5, 3))
    assert queue.negatives(filled_only=True).shape == (6, 3)
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        queue.enqueue(torch.randn(2, 4))
    with pytest.raises(ValueError, match="floating"):
        queue.enqueue(torch.ones(2, 3, dtype=torch.long))


def test_queue_negatives_survive_enqueue_before_backward():
    queue = MomentumQueue(8, 3)
    query = torch.randn(2, 3, requires_grad=True)
    logits = query @ queue.negatives().T
    queue.enqueue(torch.randn(2, 3))  # in place, as MoCo does between forward and backward
    logits.sum().backward()
    assert query.grad is not None


def test_queue_state_dict_round_trip_is_exact():
    queue = MomentumQueue(10, 4, seed=1)
    queue.enqueue(torch.randn(13, 4))
    state = queue.state_dict()
    assert set(state) == {"keys", "pointer", "total_enqueued"}  # all persistent
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    fresh = MomentumQueue(10, 4, seed=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for name in state:
        assert torch.equal(getattr(fresh, name), getattr(queue, name)), name
    keys = torch.randn(6, 4)
    queue.enqueue(keys)
    fresh.enqueue(keys)
    assert torch.equal(fresh.keys, queue.keys) and int(fresh.pointer) == int(queue.pointer) == 9
    assert int(fresh.total_enqueued) == 19


# ---------------------------------------------------------------- temperature


def test_learnable_temperature_init_clamp_and_gradient():
    temperature = LearnableTemperature()
    assert temperature.scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert temperature.temperature.item() == pytest.approx(0.07, rel=1e-6)
    scale = temperature()
    scale.backward()
    # d exp(s) / ds = exp(s)
    assert temperature.log_scale.grad.item() == pytest.approx(scale.item(), rel=1e-6)

    with torch.no_grad():
        temperature.log_scale.fill_(math.log(250.0))
    temperature.log_scale.grad = None
    clamped = temperature()
    assert clamped.item() == pytest.approx(100.0, rel=1e-6)
    clamped.backward()
    assert temperature.log_scale.grad.item() == 0.0  # above the bound nothing flows

    temperature.clamp_()
    assert temperature.log_scale.item() == pytest.approx(math.log(100.0), rel=1e-6)
    temperature.log_scale.grad = None
    temperature().backward()
    # on the bound the full gradient flows again, so the loss can lower the scale
    assert temperature.log_scale.grad.item() == pytest.approx(100.0, rel=1e-5)


def test_learnable_temperature_is_saved_and_excluded_from_decay():
    temperature = LearnableTemperature(initial_temperature=0.2)
    with torch.no_grad():
        temperature.log_scale.add_(0.3)
    fresh = LearnableTemperature()
    fresh.load_state_dict(temperature.state_dict())
    assert fresh.scale.item() == temperature.scale.item()
    groups = parameter_groups(nn.ModuleDict({"t": temperature, "w": nn.Linear(3, 3, bias=False)}), 0.1)
    no_decay = next(g for g in groups if g["name"] == "no_decay")
    assert any(p is temperature.log_scale for p in no_decay["params"])
    with pytest.raises(ValueError, match="max_scale"):
        LearnableTemperature(initial_temperature=0.001)


# ---------------------------------------------------------------- split batch norm


def _naive_split_batch_norm(x, weight, bias, running_mean, running_var, splits, momentum, eps):
    """Per-split BN by its formula; running stats averaged over the splits' updates."""
    channels = x.shape[1]
    reduce_dims = [0] + list(range(2, x.dim()))
    shape = [1, channels] + [1] * (x.dim() - 2)
    outs, means, variances = [], [], []
    for chunk in x.chunk(splits):
        mean = chunk.mean(dim=reduce_dims)
        var = ((chunk - mean.view(shape)) ** 2).mean(dim=reduce_dims)
        count = chunk.numel() // channels
        outs.append((chunk - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * weight.view(shape) + bias.view(shape))
        means.append((1 - momentum) * running_mean + momentum * mean)
        variances.append((1 - momentum) * running_var + momentum * var * count / (count - 1))
    return torch.cat(outs), torch.stack(means).mean(0), torch.stack(variances).mean(0)


@pytest.mark.parametrize("shape,splits", [((8, 3, 4, 5), 4), ((12, 5), 3), ((6, 2, 7), 2)])
def test_split_batch_norm_equals_naive_per_split(shape, splits):
    torch.manual_seed(3)
    norm = SplitBatchNorm(shape[1], splits, momentum=0.3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).requires_grad_(True)
    x_naive = x.detach().clone().requires_grad_(True)
    weight = norm.weight.detach().clone().requires_grad_(True)
    running_mean, running_var = norm.running_mean.clone(), norm.running_var.clone()

    out = norm(x)
    expected, expected_mean, expected_var = _naive_split_batch_norm(
        x_naive, weight, norm.bias.detach(), running_mean, running_var, splits, 0.3, norm.eps
    )
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm.running_mean, expected_mean)
    torch.testing.assert_close(norm.running_var, expected_var)
    assert int(norm.num_batches_tracked) == 1
    upstream = torch.randn(shape, dtype=torch.float64)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(x.grad, x_naive.grad)
    torch.testing.assert_close(norm.weight.grad, weight.grad)

    # evaluation: plain BN with the running statistics
    norm.eval()
    stat_shape = [1, shape[1]] + [1] * (len(shape) - 2)
    with torch.no_grad():
        reference = (x - norm.running_mean.view(stat_shape)) / torch.sqrt(norm.running_var.view(stat_shape) + norm.eps)
        reference = reference * norm.weight.view(stat_shape) + norm.bias.view(stat_shape)
        torch.testing.assert_close(norm(x), reference)


def test_split_batch_norm_rejects_indivisible_batch():
    with pytest.raises(ValueError, match="num_splits=4"):
        SplitBatchNorm(3, 4)(torch.randn(6, 3))


# ---------------------------------------------------------------- batch shuffle, one process


def test_batch_shuffle_round_trip_and_gradient_one_process():
    x = torch.arange(24, dtype=torch.float64).view(12, 2).requires_grad_(True)
    shuffled, unshuffle_index = batch_shuffle(x, generator=torch.Generator().manual_seed(0))
    permutation = torch.argsort(unshuffle_index)
    assert torch.equal(shuffled, x[permutation])
    assert not torch.equal(permutation, torch.arange(12))
    restored = batch_unshuffle(shuffled * 2, unshuffle_index)
    assert torch.equal(restored, x * 2)
    weights = torch.arange(12, dtype=torch.float64)[:, None]
    (shuffled * weights).sum().backward()
    # row i sits at position unshuffle_index[i] of the shuffled batch
    assert torch.equal(x.grad[:, 0], unshuffle_index.double())
