"""The image quality benchmark's pieces: seeded splits, budget stopping, the progress schedule, the
evaluation, and the contenders' training steps on a few real CIFAR-10 rows (tiny encoder, seconds).

The whole benchmark (minutes to tens of minutes) is not run here; see bench/quality_image.py.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from bench._quality import (
    CpuBudget,
    StepResult,
    budgeted_training,
    estimated_total_steps,
    evaluate_frozen,
    held_out_split,
    labelled_subset,
    probe_rows,
    progress_schedule,
)

# ------------------------------------------------------------------------------------------ splits


def _labels(counts: dict[int, int]) -> torch.Tensor:
    labels = torch.cat([torch.full((n,), c) for c, n in counts.items()])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(7))]


def test_held_out_split_is_disjoint_complete_stratified_and_seeded():
    labels = _labels({0: 300, 1: 200, 2: 100, 3: 7})
    train, held = held_out_split(labels, 100, seed=3)
    assert len(held) == 100 and len(train) == len(labels) - 100
    assert set(train.tolist()).isdisjoint(held.tolist())
    assert sorted(train.tolist() + held.tolist()) == list(range(len(labels)))
    per_class = {c: int((labels[held] == c).sum()) for c in range(4)}
    for c, n in {0: 300, 1: 200, 2: 100, 3: 7}.items():  # proportional, off by less than one row
        assert abs(per_class[c] - 100 * n / len(labels)) < 1
    again, held_again = held_out_split(labels, 100, seed=3)
    assert torch.equal(held, held_again) and torch.equal(train, again)
    _, other = held_out_split(labels, 100, seed=4)
    assert not torch.equal(held, other)


def test_held_out_split_rejects_impossible_sizes():
    labels = torch.zeros(10, dtype=torch.long)
    for size in (0, 10, 11):
        with pytest.raises(ValueError, match="held_out"):
            held_out_split(labels, size, seed=0)


def test_labelled_subset_picks_stratified_rows_of_the_given_rows_only():
    labels = _labels({0: 50, 1: 50, 2: 50})
    rows = torch.arange(0, 150, 2)  # only even rows may be chosen
    subset = labelled_subset(rows, labels, 30, seed=1)
    assert len(subset) == 30 and len(set(subset.tolist())) == 30
    assert set(subset.tolist()) <= set(rows.tolist())
    counts = torch.bincount(labels[subset], minlength=3)
    expected = torch.bincount(labels[rows], minlength=3).double() * 30 / len(rows)
    assert (counts.double() - expected).abs().max() < 1
    assert torch.equal(labelled_subset(rows, labels, None, seed=1), rows)
    assert torch.equal(labelled_subset(rows, labels, 10_000, seed=1), rows)


# ------------------------------------------------------------------------------------------ budget


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_budgeted_training_stops_between_steps_once_the_cpu_budget_is_spent():
    progress_seen = []

    def step(progress: float) -> StepResult:
        progress_seen.append(progress)
        _busy(0.02)
        return StepResult(loss=1.0, samples=4)

    report = budgeted_training(step, 0.15, name="busy")
    # each step costs >= 0.02 CPU s: the budget buys at most ceil(0.15 / 0.02) = 8 steps, and the run
    # stops only when spent, so it used at least the budget and at most one step more
    assert 1 <= report.steps <= 8
    assert report.cpu_seconds >= 0.15
    assert report.stopped_by == "budget"
    assert report.samples == 4 * report.steps
    assert progress_seen[0] < 0.2 and all(0 <= p < 1 for p in progress_seen)
    assert progress_seen == sorted(progress_seen)


def test_budgeted_training_does_not_count_sleeping_and_honours_max_steps():
    def sleepy(progress: float) -> StepResult:
        time.sleep(0.05)  # wall time, no CPU time: must not use up a CPU budget
        return StepResult(loss=0.5, samples=2)

    report = budgeted_training(sleepy, 5.0, max_steps=3)
    assert report.steps == 3 and report.stopped_by == "max_steps"
    assert report.wall_seconds >= 0.15 and report.cpu_seconds < report.wall_seconds


def test_budgeted_training_names_the_step_of_a_non_finite_loss():
    losses = iter([1.0, math.nan])

    def step(progress: float) -> StepResult:
        return StepResult(loss=next(losses), samples=1)

    with pytest.raises(FloatingPointError, match="run-x.*step 2"):
        budgeted_training(step, 60.0, name="run-x")


def test_cpu_budget_must_start_and_be_positive():
    with pytest.raises(ValueError):
        CpuBudget(0)
    with pytest.raises(RuntimeError, match="start"):
        CpuBudget(1).spent()


def test_progress_schedule_warms_up_then_follows_a_half_cosine():
    assert progress_schedule(0.0, warmup=0.1) == 0.0
    assert progress_schedule(0.05, warmup=0.1) == pytest.approx(0.5)
    assert progress_schedule(0.1, warmup=0.1) == pytest.approx(1.0)
    for p in (0.3, 0.55, 0.9):  # the formula, written out
        expected = 0.5 * (1 + math.cos(math.pi * (p - 0.1) / 0.9))
        assert progress_schedule(p, warmup=0.1) == pytest.approx(expected, abs=1e-5)
    assert progress_schedule(1.0, warmup=0.0, final_fraction=0.01) == pytest.approx(0.01)
    assert progress_schedule(1.7) == pytest.approx(0.0)  # clipped


def test_estimated_total_steps():
    assert estimated_total_steps(10, 0.25) == 40
    assert estimated_total_steps(0, 0.0) == 1
    assert estimated_total_steps(5, 1.0) == 5


# -------------------------------------------------------------------------------------- evaluation


def test_evaluate_frozen_separable_features_score_high_and_noise_scores_chance():
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=generator) * 4
    train_labels = torch.arange(400) % 4
    test_labels = torch.arange(200) % 4
    train = centers[train_labels] + torch.randn(400, 16, generator=generator)
    test = centers[test_labels] + torch.randn(200, 16, generator=generator)
    scores = evaluate_frozen(train, train_labels, test, test_labels, ks=(5, 50), weight_decays=(0.0, 1e-3))
    assert scores.linear_accuracy > 0.95 and scores.knn_accuracy[5] > 0.95 and scores.knn_accuracy[50] > 0.95
    noise = evaluate_frozen(torch.randn(400, 16, generator=generator), train_labels,
                            torch.randn(200, 16, generator=generator), test_labels, ks=(5,), weight_decays=(1e-2,))
    assert noise.linear_accuracy < 0.45 and noise.knn_accuracy[5] < 0.45
    rows = probe_rows("toy", "multissl X", scores, 10.0, "n")
    assert [r["task"] for r in rows] == ["toy, linear probe", "toy, kNN k=5", "toy, kNN k=50"]
    assert all(r["higher_is_better"] and r["budget_seconds"] == 10.0 for r in rows)
