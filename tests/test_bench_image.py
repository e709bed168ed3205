"""The image quality benchmark's pieces: seeded splits, budget stopping, the progress schedule, the
evaluation, and the contenders' training steps on a few CIFAR-10-like rows (the synthetic tree of
tests/fixture_data.py, laid out as ../shared/data; tiny encoder, seconds).

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


# --------------------------------------------------------------------------- the image benchmark

quality_image = pytest.importorskip("bench.quality_image")


@pytest.fixture(scope="module", autouse=True)
def _cifar_shards(data_root):
    """The benchmark reads CIFAR-10 from ../shared/data: point it at the synthetic shards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quality_image, "DATA_GLOB", data_root / "image" / "cifar10" / "*.parquet")
        yield


def _tiny_settings(**changes):
    settings = dict(budget_cpu_seconds=60.0, encoder="resnet-tiny", batch_size=16, held_out=40, train_images=64,
                    probe_train_images=48, data_limit=240, eval_batch_size=64, max_steps=2, processes=1)
    settings.update(changes)
    return quality_image.BenchSettings(**settings)


@pytest.fixture(scope="module")
def tiny_run(data_root):
    settings = _tiny_settings()
    domain = quality_image.eval_domain()
    data = quality_image.load_cifar(settings, domain)
    reference = quality_image.initial_encoder(settings, domain.config)
    return settings, domain, data, reference


def test_held_out_images_are_never_trained_or_probed_on(tiny_run):
    settings, _, data, _ = tiny_run
    held = set(data.held_out.tolist())
    assert len(held) == settings.held_out == len(data.held_out)
    assert len(data.train) == settings.train_images and len(data.probe_train) == settings.probe_train_images
    assert held.isdisjoint(data.train.tolist()) and held.isdisjoint(data.probe_train.tolist())
    assert len(data.labels) == settings.data_limit
    per_class = torch.bincount(data.labels[data.held_out], minlength=10)
    expected = torch.bincount(data.labels, minlength=10).double() * settings.held_out / len(data.labels)
    assert (per_class - expected).abs().max() < 1


def _jitter_and_steps(transform):
    """(crop scale, ratio, flip p, jitter p, jitter ranges, gray p, blur p, solarize p, mean, std) of
    one lightly view transform, read from its torchvision pieces."""
    found = {}
    for part in transform.transform.transforms:
        kind = type(part).__name__
        if kind == "RandomResizedCrop":
            found["crop"] = (tuple(part.scale), tuple(round(r, 6) for r in part.ratio), tuple(part.size))
        elif kind == "RandomHorizontalFlip":
            found["flip"] = part.p
        elif kind == "RandomApply":
            jitter = part.transforms[0]
            found["jitter_p"] = part.p
            found["jitter"] = tuple(tuple(round(v, 6) for v in getattr(jitter, name))
                                    for name in ("brightness", "contrast", "saturation", "hue"))
        elif kind == "RandomGrayscale":
            found["gray"] = part.p
        elif kind == "GaussianBlur":
            found["blur"] = part.prob
        elif kind == "RandomSolarization":
            found["solarize"] = part.prob
        elif kind == "Normalize":
            found["normalize"] = (tuple(part.mean), tuple(part.std))
    found.setdefault("solarize", 0.0)
    return found


def _multissl_view(recipe, config):
    s = recipe.settings
    return {
        "crop": (tuple(s.crop_scale), tuple(round(r, 6) for r in s.crop_ratio), (recipe.size, recipe.size)),
        "flip": s.flip_probability, "jitter_p": s.jitter_probability,
        "jitter": tuple((round(low, 6), round(high, 6)) for low, high in recipe.jitter_ranges()),
        "gray": s.grayscale_probability, "blur": s.blur_probability,
        "solarize": s.solarize_probability, "normalize": (tuple(config.mean), tuple(config.std)),
    }


@pytest.mark.parametrize("method", quality_image.METHODS)
def test_lightly_gets_the_augmentation_multissl_draws_view_by_view(method, tmp_path):
    from domains.image import ImageConfig
    from domains.image.views import view_recipes

    recipe = quality_image.bench_recipe(method, _tiny_settings(), str(tmp_path))
    config = ImageConfig(**recipe.domains["image"].options)
    policy = recipe.objectives[0].options.get("policy") or "simclr"
    local_views = recipe.objectives[0].options.get("local_views", 0)  # DINO's multi-crop
    ours = view_recipes(config, policy, 2, local_views, config.local_size)
    theirs = quality_image.lightly_transform(method, config, local_views).transforms
    assert len(theirs) == 2 + local_views
    for view, (recipe_view, transform) in enumerate(zip(ours, theirs)):
        assert _jitter_and_steps(transform) == _multissl_view(recipe_view, config), f"{method} view {view}"
    assert all(v.settings.blur_probability == 0 for v in ours)  # the bench's CIFAR setting, for both


@pytest.mark.parametrize("method", quality_image.METHODS)
def test_both_libraries_train_the_same_start_with_the_same_hyper_parameters(method, tiny_run):
    from bench._quality import CpuBudget, budgeted_training

    settings, _, data, reference = tiny_run
    results = {}
    for peer, build in (("multissl", quality_image.multissl_trainer), ("lightly", quality_image.lightly_trainer)):
        clock = CpuBudget(settings.budget_cpu_seconds)
        trainer = build(method, settings, data, reference, "unused-output-dir", clock)  # checks the start itself
        report = budgeted_training(trainer.step, clock, max_steps=settings.max_steps, name=f"{peer} {method}")
        assert report.steps == 2 and report.samples == 2 * settings.batch_size
        assert all(math.isfinite(loss) for loss in report.losses)
        assert trainer.counters["data_cpu_seconds"] > 0
        moved = [name for name, value in trainer.encoder.state_dict().items()
                 if value.is_floating_point() and not torch.equal(value, reference.state_dict()[name])]
        assert moved, f"{peer} {method} did not change its encoder"
        results[peer] = trainer
    assert results["multissl"].encoder is not results["lightly"].encoder


def test_a_start_from_other_weights_is_refused(tiny_run):
    settings, domain, _, reference = tiny_run
    other = quality_image.initial_encoder(_tiny_settings(seed=1), domain.config)
    with pytest.raises(RuntimeError, match="shared initial weights"):
        quality_image.assert_same_start(other, reference, "lightly simclr")


def test_evaluation_of_the_baselines_runs_the_shared_probe_code(tiny_run):
    settings, domain, data, reference = tiny_run
    for encoder in (reference, quality_image.PixelEncoder()):
        scores = quality_image.evaluate(encoder, domain, data, settings)
        assert scores.num_test == settings.held_out and scores.num_train == settings.probe_train_images
        assert 0.0 <= scores.linear_accuracy <= 1.0 and set(scores.knn_accuracy) == {20, 200}
    assert scores.feature_dim == 3 * 32 * 32


def _row(task, contender, value):
    return {"task": task, "contender": contender, "metric": "top1_accuracy", "value": value,
            "higher_is_better": True, "budget_seconds": 1.0, "notes": "trained"}


def test_losing_notes_say_plainly_where_multissl_loses_and_nothing_where_it_wins():
    rows = [_row("t, linear probe", "multissl SimCLR", 0.40), _row("t, linear probe", "lightly SimCLR", 0.45),
            _row("t, kNN k=20", "multissl SimCLR", 0.50), _row("t, kNN k=20", "lightly SimCLR", 0.45),
            _row("t, linear probe", "random init", 0.60)]
    summary = {"steps": 3, "samples": 384, "last_loss": 1.0}
    quality_image.losing_notes(rows, {"multissl SimCLR": summary, "lightly SimCLR": summary}, 5000)
    assert "multissl loses this row to lightly SimCLR by 5.0 points" in rows[0]["notes"]
    assert "beyond two standard errors" in rows[0]["notes"]
    assert rows[2]["notes"] == "trained" and rows[1]["notes"] == "trained"


def test_the_whole_script_writes_a_results_file_the_report_reads(data_root, tmp_path, monkeypatch):
    """main() end to end on a tiny setting: every contender and baseline row lands in a valid
    results file (a full run is ~40 minutes: a crash at the write would lose all of it)."""
    import argparse

    from bench.report import load_results, render

    output = tmp_path / "quality_image.json"
    settings = _tiny_settings(methods=("simclr",))
    monkeypatch.setattr(quality_image, "parse_settings", lambda argv: (settings, argparse.Namespace(output=output)))
    quality_image.main(["--quick"])
    ((_, data),) = load_results(tmp_path)  # validated against the results schema
    contenders = {row["contender"] for row in data["rows"]}
    assert contenders == {"multissl SimCLR", "lightly SimCLR", "random init", "raw pixels"}
    assert {row["metric"] for row in data["rows"]} == {"top1_accuracy", "fraction_of_lightly_time"}
    assert "multissl SimCLR" in render([(output, data)])
    # learning curves: a point before training and at the end, for both libraries, drawn as a PNG
    curves = {name: summary["curve"] for name, summary in data["training"].items()}
    assert set(curves) == {"multissl SimCLR", "lightly SimCLR"}
    assert all(points[0]["steps"] == 0 and points[-1]["steps"] == 2 for points in curves.values())
    assert (tmp_path / "quality_image_curves.png").stat().st_size > 1000


def test_time_to_accuracy_interpolates_between_curve_points():
    points = [{"cpu_seconds": 0.0, "knn_top1": 0.2}, {"cpu_seconds": 100.0, "knn_top1": 0.4},
              {"cpu_seconds": 200.0, "knn_top1": 0.5}]
    assert quality_image.time_to_accuracy(points, 0.3) == pytest.approx(50.0)
    assert quality_image.time_to_accuracy(points, 0.5) == pytest.approx(200.0)
    assert quality_image.time_to_accuracy(points, 0.1) == 0.0
    assert quality_image.time_to_accuracy(points, 0.6) is None
