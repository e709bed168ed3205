"""The memory bank (multissl.modules.MemoryBank) and NCE against it (multissl.losses.memory_bank_nce):
the loss against a loop over Wu et al. 2018's eq. 7, the bank's momentum update, uniform noise, the
constant partition function, a state round trip, and two processes against one on the global batch."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from multissl import distributed
from multissl.losses import memory_bank_nce
from multissl.modules import MemoryBank
from multissl.modules.memory_bank import uniform_draws
from tests.dist import run_in_processes


# --- the loss against the paper's formula, by loops ------------------------------------------------

def naive_memory_bank_nce(scores: list[list[float]], num_items: int, normalizer: float) -> float:
    """Wu et al. 2018 eq. 5-7: P(i|v) = exp(score) / Z, P_n = 1/n, h = P / (P + m P_n);
    J = -1/B sum_b [log h(positive) + sum_j log(1 - h(noise_j))]."""
    total = 0.0
    for row in scores:
        m = len(row) - 1
        probabilities = [math.exp(s) / normalizer for s in row]
        h = [p / (p + m / num_items) for p in probabilities]
        total += math.log(h[0]) + sum(math.log(1 - value) for value in h[1:])
    return -total / len(scores)


@pytest.mark.parametrize("num_items,noise,normalizer", [(50, 4, 30.0), (1000, 16, 2500.0), (7, 1, 1.0)])
def test_memory_bank_nce_matches_equation_7(num_items, noise, normalizer):
    scores = torch.randn(6, 1 + noise, dtype=torch.float64) * 3
    expected = naive_memory_bank_nce(scores.tolist(), num_items, normalizer)
    assert float(memory_bank_nce(scores, num_items, normalizer)) == pytest.approx(expected, rel=1e-10)
    assert float(memory_bank_nce(scores, num_items, torch.tensor(normalizer))) == pytest.approx(expected, rel=1e-10)


def test_memory_bank_nce_rewards_the_positive_and_checks_its_arguments():
    scores = torch.zeros(4, 9)
    better = scores.clone()
    better[:, 0] = 5.0
    assert memory_bank_nce(better, 100, 100.0) < memory_bank_nce(scores, 100, 100.0)
    assert memory_bank_nce(scores.bfloat16(), 100, 100.0).dtype == torch.float32
    with pytest.raises(ValueError, match="noise column"):
        memory_bank_nce(torch.zeros(4, 1), 100, 1.0)
    with pytest.raises(ValueError, match="num_items"):
        memory_bank_nce(scores, 0, 1.0)
    with pytest.raises(ValueError, match="normalizer"):
        memory_bank_nce(scores, 10, 0.0)


# --- the bank ----------------------------------------------------------------------------------------

def test_uniform_draws_are_uniform_independent_and_a_stream_of_rows():
    draws = uniform_draws(7, 0, 400, 500, 100, "cpu")
    assert draws.shape == (400, 500) and draws.min() >= 0 and draws.max() < 100
    counts = torch.bincount(draws.flatten(), minlength=100).double()
    expected = draws.numel() / 100
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 99 + 5 * math.sqrt(2 * 99), chi_square  # 99 degrees of freedom, 5 sigma
    pairs = draws[:, :-1] * 100 + draws[:, 1:]  # neighbouring columns independent
    assert torch.bincount(pairs.flatten(), minlength=10_000).double().std() < 2 * math.sqrt(pairs.numel() / 10_000)
    # rows 100..149 of the stream, drawn alone, are rows 100..149 of the whole
    assert torch.equal(uniform_draws(7, 100, 50, 500, 100, "cpu"), draws[100:150])
    assert not torch.equal(uniform_draws(8, 0, 400, 500, 100, "cpu"), draws)


def test_initial_bank_is_the_official_uniform_and_the_same_for_every_seeded_build():
    bank = MemoryBank(500, 48, seed=3)
    bound = 1 / math.sqrt(48 / 3)
    assert bank.features.abs().max() <= bound and bank.features.min() < -0.9 * bound
    assert bank.features.norm(dim=1).mean() == pytest.approx(1.0, abs=0.05)
    assert torch.equal(MemoryBank(500, 48, seed=3).features, bank.features)
    unit = MemoryBank(10, 48, normalize_init=True).features.norm(dim=1)
    torch.testing.assert_close(unit, torch.ones(10))


def test_update_moves_each_named_row_by_momentum_and_renormalises():
    bank = MemoryBank(10, 4, momentum=0.5)
    before = bank.features.clone()
    embeddings = F.normalize(torch.randn(4, 4), dim=1)
    indices = torch.tensor([2, 7, 2, 0])  # sample 2 twice: its last occurrence counts
    bank.update(embeddings, indices)
    for row, embedding in ((7, embeddings[1]), (2, embeddings[2]), (0, embeddings[3])):
        moved = 0.5 * before[row] + 0.5 * embedding
        torch.testing.assert_close(bank.features[row], moved / moved.norm())
    untouched = [i for i in range(10) if i not in (0, 2, 7)]
    assert torch.equal(bank.features[untouched], before[untouched])
    with pytest.raises(ValueError, match="bank_size"):
        bank.update(embeddings[:1], torch.tensor([10]))


def test_sample_puts_the_own_row_first_and_draws_fresh_noise_each_call():
    bank = MemoryBank(1000, 4)
    indices = torch.tensor([5, 999, 0])
    first, second = bank.sample(indices, 64), bank.sample(indices, 64)
    assert first.shape == (3, 65) and first[:, 0].tolist() == [5, 999, 0]
    assert not torch.equal(first[:, 1:], second[:, 1:]) and int(bank.draws) == 2
    embeddings = torch.randn(3, 4, requires_grad=True)
    expected = torch.stack([bank.features[first[b]] @ embeddings[b] / 0.1 for b in range(3)])
    scores = bank.scores(embeddings, first, temperature=0.1)  # 1000 rows: the drawn rows gathered
    torch.testing.assert_close(scores, expected)
    scores.sum().backward()
    assert embeddings.grad is not None and not bank.features.requires_grad


def test_a_small_bank_is_scored_whole_and_an_update_after_scoring_leaves_backward_intact():
    bank = MemoryBank(10, 4)
    indices = torch.tensor([5, 9, 0])
    rows = bank.sample(indices, 64)  # 10 x (4 + 3) rows + scores < 3 x 65 x 4 gathered values
    embeddings = torch.randn(3, 4, requires_grad=True)
    expected = torch.stack([bank.features[rows[b]] @ embeddings[b] / 0.1 for b in range(3)]).detach()
    before = bank.features.clone()
    scores = bank.scores(embeddings, rows, 0.1)
    torch.testing.assert_close(scores, expected)
    bank.update(torch.randn(3, 4), indices)  # in place, as the objectives do before backward
    (scores * torch.arange(65.0)).sum().backward()
    expected_grad = torch.stack([(before[rows[b]] * torch.arange(65.0)[:, None]).sum(0) / 0.1 for b in range(3)])
    torch.testing.assert_close(embeddings.grad, expected_grad)


def test_normalizer_is_set_once_from_the_first_scores():
    bank = MemoryBank(100, 4)
    scores = torch.randn(3, 5)
    z = bank.normalizer_from(scores)
    assert float(z) == pytest.approx(100 * float(scores.exp().mean()), rel=1e-6)
    assert float(bank.normalizer_from(scores + 3)) == float(z)


def test_bank_state_round_trips_and_resumes_the_same_draws():
    bank = MemoryBank(20, 4)
    bank.update(torch.randn(3, 4), torch.tensor([1, 2, 3]))
    bank.normalizer_from(torch.randn(2, 3))
    bank.sample(torch.tensor([0]), 5)
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    fresh = MemoryBank(20, 4)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in bank.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert torch.equal(fresh.sample(torch.tensor([4, 5]), 7), bank.sample(torch.tensor([4, 5]), 7))


# --- two processes against one ---------------------------------------------------------------------

SIZES = [3, 5]
BANK, DIM, NOISE = 40, 6, 12


def _global_inputs():
    generator = torch.Generator().manual_seed(0)
    embeddings = F.normalize(torch.randn(sum(SIZES), DIM, generator=generator, dtype=torch.float64), dim=1)
    indices = torch.tensor([4, 17, 4, 30, 0, 39, 8, 17])  # repeats across the two ranks
    return embeddings, indices


def _step(embeddings: torch.Tensor, indices: torch.Tensor) -> dict:
    """One memory-bank step as the objectives take it: sample, score, Z, loss, backward, update."""
    bank = MemoryBank(BANK, DIM)
    leaf = embeddings.clone().requires_grad_(True)
    rows = bank.sample(indices, NOISE)
    scores = bank.scores(leaf, rows, 0.07)
    normalizer = bank.normalizer_from(scores)
    loss = memory_bank_nce(scores, BANK, normalizer)
    loss.backward()
    bank.update(leaf.detach(), indices)
    return {"rows": rows, "loss": loss.detach(), "grad": leaf.grad, "normalizer": normalizer,
            "bank": bank.features.clone()}


def _on_each_rank() -> dict:
    embeddings, indices = _global_inputs()
    start = sum(SIZES[: distributed.rank()])
    mine = slice(start, start + SIZES[distributed.rank()])
    return _step(embeddings[mine], indices[mine])


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_sample_score_and_update_as_one_on_the_global_batch():
    reference = _step(*_global_inputs())
    results = run_in_processes(_on_each_rank)
    assert torch.equal(torch.cat([r["rows"] for r in results]), reference["rows"])
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["loss"], reference["loss"], rtol=0, atol=1e-6)
        torch.testing.assert_close(result["normalizer"], reference["normalizer"], rtol=1e-6, atol=0)
        torch.testing.assert_close(result["bank"], reference["bank"], rtol=0, atol=1e-7, msg=f"rank {rank} bank")
    # each rank's gradient is N x the global one on its rows; DDP's averaging divides by N
    grads = torch.cat([r["grad"] for r in results]) / len(results)
    torch.testing.assert_close(grads, reference["grad"], rtol=1e-5, atol=1e-7)
