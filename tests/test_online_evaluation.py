"""Online evaluation (recipe section ``evaluation``, ``multissl.probes.online``): the scores, the
engine's calls, exactness under SIGKILL + resume, and two processes against one.

Everything here makes its own data (scikit-learn's digits ship with scikit-learn), so it runs on a
fresh clone without ../shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.kill import kill_after_checkpoint
from multissl.config import RecipeError, parse_recipe
from multissl.errors import DataError, describe
from multissl.probes.knn import knn_predict
from multissl.probes.online import (
    cross_fitted_linear_accuracy,
    evaluation_steps,
    knn_leave_one_out,
    split_held_out,
)

ROOT = Path(__file__).resolve().parents[1]


def clustered(num_classes: int = 10, per_class: int = 60, dim: int = 32, spread: float = 0.3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=generator), labels


# ------------------------------------------------------------------------------------ the scores


def test_knn_and_linear_are_high_on_separated_classes_and_near_chance_on_random_features():
    features, labels = clustered()
    assert knn_leave_one_out(features, labels) > 0.97
    assert cross_fitted_linear_accuracy(features, labels) > 0.97
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(1))
    chance = 1 / 10
    standard_error = (chance * (1 - chance) / len(labels)) ** 0.5  # 0.012 for 600 rows
    assert abs(knn_leave_one_out(noise, labels) - chance) < 4 * standard_error
    assert abs(cross_fitted_linear_accuracy(noise, labels) - chance) < 4 * standard_error


def test_leave_one_out_knn_never_votes_with_the_row_itself():
    features, labels = clustered(num_classes=3, per_class=20, spread=2.0, seed=3)
    predicted = knn_predict(features, labels, features, ks=(1, 5), leave_one_out=True)
    unit = torch.nn.functional.normalize(features, dim=1)
    similarity = unit @ unit.T
    similarity.fill_diagonal_(float("-inf"))
    for k in (1, 5):
        top, index = similarity.topk(k, dim=1)
        votes = torch.zeros(len(labels), 3).scatter_add_(1, labels[index], (top / 0.07).exp())
        assert torch.equal(predicted[k], votes.argmax(dim=1)), k
    # without leave-one-out, k=1 is the row itself: always right
    assert torch.equal(knn_predict(features, labels, features, ks=(1,))[1], labels)


def test_leave_one_out_needs_the_train_rows_as_queries():
    features, labels = clustered(num_classes=2, per_class=4)
    with pytest.raises(ValueError, match="leave_one_out"):
        knn_predict(features, labels, features[:3], ks=(1,), leave_one_out=True)


def test_evaluation_steps_and_held_out_split():
    assert evaluation_steps(None, 95) == (10, {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95})
    assert evaluation_steps(4, 8) == (4, {0, 4, 8})
    # 2,000 rows per evaluation against 128 images a step: at most 3% of the forward passes
    every, steps = evaluation_steps(None, 200, rows=2000, images_per_step=128)
    assert every == 87 and steps == {0, 87, 174, 200}
    assert 2000 / (every * 128 * 6) <= 0.03
    assert evaluation_steps(None, 2400, rows=2000, images_per_step=128)[0] == 240
    train, held = split_held_out(100, 0.2, seed=5)
    assert len(held) == 20 and len(train) == 80 and sorted(train + held) == list(range(100))
    assert split_held_out(100, 0.2, seed=5) == (train, held)
    assert split_held_out(100, 0.2, seed=6) != (train, held)


# ------------------------------------------------------------------------------------ the recipe


def digits_recipe(out: Path, **evaluation) -> dict:
    """SimCLR on scikit-learn's digits, a tiny ConvNeXt (no batch norm, no dropout), views with no
    randomness left (full crop, no flip, no jitter): every process draws the same views whatever
    its rank, so two processes on batch B compute what one process computes on 2B."""
    return {
        "description": "online evaluation test",
        "data": {"path": "sklearn:digits", "columns": {"image": "image", "label": "label"}, "limit": 1000},
        "domains": {"image": {
            # "mnist" statistics, not "none": an all-zero background through ConvNeXt's stem (zero bias)
            # gives its channel layer norm zero variance, and SGD's first step explodes
            "options": {"image_size": 16, "channels": 1, "normalization": "mnist",
                        "augment": {"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "flip_probability": 0.0,
                                    "jitter_probability": 0.0, "grayscale_probability": 0.0, "blur_probability": 0.0}},
            "encoder": {"architecture": "convnext", "size": "tiny"},
        }},
        "objectives": [{"name": "simclr", "domains": ["image"], "options": {"temperature": 0.2, "projection_dim": 16}}],
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"warmup": 0},
        "train": {"batch_size": 32, "max_steps": 8, "global_batchnorm": True},
        "logging": {"every": 1, "health_every": 4, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 2, "keep": 10},
        # 300 held-out digits, 30 a class: leave-one-out kNN with k = 20 needs classes larger than k
        "evaluation": {"held_out_fraction": 0.3, "every": 2, "linear": True, **evaluation},
        "output_dir": str(out),
    }


def online_records(run_dir: Path) -> dict[int, dict]:
    """step -> online scores (the last record of a step: a resumed run may replay steps)."""
    records = {}
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "online/knn_top1" in record:
            records[record["step"]] = {k: v for k, v in record.items() if k in ("online/knn_top1", "online/linear_top1")}
    return records


def test_recipe_section_is_checked():
    base = digits_recipe(Path("unused"))
    parse_recipe(base)
    for evaluation, message in (
        ({"held_out_fraction": 0.2, "data": {"path": "sklearn:digits"}}, "not both"),
        ({"held_out_fraction": 1.0}, "below 1"),
        ({"held_out_fraction": 0.2, "domain": "audio"}, "evaluation.domain"),
        ({"held_out_fraction": 0.2, "knn": 5}, "unknown key 'evaluation.knn'"),
        ({"held_out_fraction": 0.2, "every": 0}, "at least 1"),
    ):
        data = dict(base, evaluation=evaluation)
        with pytest.raises(RecipeError, match=message):
            parse_recipe(data)
    with pytest.raises(RecipeError, match="needs labelled rows"):
        parse_recipe(dict(base, evaluation={"every": 5}))


def test_engine_logs_online_scores_and_training_is_unchanged_by_them(tmp_path):
    from multissl.train import train

    with_eval = parse_recipe(digits_recipe(tmp_path / "with", every=3))
    result = train(with_eval)
    records = online_records(tmp_path / "with")
    assert sorted(records) == [0, 3, 6, 8]  # step 0, every 3 steps, the last step
    for scores in records.values():
        assert 0.0 <= scores["online/knn_top1"] <= 1.0 and 0.0 <= scores["online/linear_top1"] <= 1.0
    # kNN on digits is well above chance (0.1) from the start, even through random convolutions
    assert records[0]["online/knn_top1"] > 0.25
    assert (tmp_path / "with" / "curves.png").stat().st_size > 1000
    timing = [json.loads(line) for line in (tmp_path / "with" / "log.jsonl").read_text().splitlines()
              if "online/seconds" in line]
    assert len(timing) == 4 and all(r["online/seconds"] > 0 for r in timing)

    # the same run with the 30% held out but no evaluation: the same training, step for step
    # (the evaluation leaves every random stream and the weights as it found them)
    data = digits_recipe(tmp_path / "without")
    data["evaluation"] = {"held_out_fraction": 0.3, "every": 1000, "max_rows": 2}
    plain = train(parse_recipe(data))
    assert plain.losses == pytest.approx(result.losses, abs=0, rel=0)


def test_a_labelled_validation_set_and_a_missing_label_are_handled(tmp_path):
    from multissl.train import train

    data = digits_recipe(tmp_path / "validation")
    data["data"] = {"path": "sklearn:digits", "split": "train[:60%]", "columns": {"image": "image"}}
    data["train"]["max_steps"] = 2
    data["evaluation"] = {"data": {"path": "sklearn:digits", "split": "train[60%:]",
                                   "columns": {"image": "image", "label": "label"}}, "max_rows": 300}
    train(parse_recipe(data))
    records = online_records(tmp_path / "validation")
    # the default cadence: 300 rows are too many to embed after every 32-image step (> 3%): first and last
    assert sorted(records) == [0, 2] and "online/linear_top1" not in records[2]

    from PIL import Image

    folder = tmp_path / "photos"  # a flat folder of images: no labels
    folder.mkdir()
    for index in range(6):
        Image.fromarray(torch.randint(0, 256, (12, 12), dtype=torch.uint8).numpy()).save(folder / f"{index}.png")
    data["output_dir"] = str(tmp_path / "unlabelled")
    data["evaluation"]["data"] = {"path": str(folder), "format": "imagefolder", "columns": {"image": "image"}}
    with pytest.raises(DataError, match="labelled rows") as raised:
        train(parse_recipe(data))
    # the command line prints it as one line (exit code 2), naming the fix
    assert describe(raised.value).startswith("error: online evaluation needs labelled rows")
    assert "data.columns.label" in describe(raised.value)


# ------------------------------------------------------------------------ resume and processes


def run_module(args: list[str], env_extra: dict | None = None, timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def write(tmp_path: Path, data: dict, name: str) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_sigkill_then_resume_logs_the_online_scores_of_an_uninterrupted_run(tmp_path):
    full = write(tmp_path, digits_recipe(tmp_path / "full", every=2), "full.yaml")
    run_module([sys.executable, "-m", "multissl.train", str(full)])

    killed_dir = tmp_path / "killed"
    killed = write(tmp_path, digits_recipe(killed_dir, every=2), "killed.yaml")
    kill_after_checkpoint(killed, killed_dir, step=4, last_step=8)

    run_module([sys.executable, "-m", "multissl.train", str(killed), "checkpoint.resume=auto"])
    expected, resumed = online_records(tmp_path / "full"), online_records(killed_dir)
    assert sorted(expected) == sorted(resumed) == [0, 2, 4, 6, 8]
    assert resumed == expected  # identical values, not merely close


@pytest.mark.slow
def test_two_processes_log_the_online_scores_of_one(tmp_path):
    one = write(tmp_path, digits_recipe(tmp_path / "one"), "one.yaml")
    data = digits_recipe(tmp_path / "two")
    data["train"]["batch_size"] = 16
    two = write(tmp_path, data, "two.yaml")
    run_module([sys.executable, "-m", "multissl.train", str(one)])
    run_module([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", "0", "-m", "multissl.train", str(two)],
               env_extra={"ACCELERATE_USE_CPU": "1"})
    log_one = [json.loads(line) for line in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    log_two = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    losses_one = [r["loss"] for r in log_one if "loss" in r]
    losses_two = [r["loss"] for r in log_two if "loss" in r]
    assert losses_two == pytest.approx(losses_one, rel=1e-2)  # the same training up to float order (the premise)
    # written once (by the main process), with the same values
    scores_one, scores_two = online_records(tmp_path / "one"), online_records(tmp_path / "two")
    assert sorted(scores_two) == sorted(scores_one) == [0, 2, 4, 6, 8]
    assert sum("online/knn_top1" in r for r in log_two) == 5
    # features far from collapse (ties among near-identical features would turn float noise into votes)
    assert min(s["online/knn_top1"] for s in scores_one.values()) > 0.2  # chance: 0.1
    # the same weights at step 0 give the same numbers; later the two runs' weights differ by the
    # order of float sums (DDP's all-reduce, and the synchronised batch norm of SimCLR's head), which
    # may move kNN's vote on one row and the linear probe's answers (a fit on 150 rows) on two
    assert scores_two[0] == scores_one[0]
    for step, scores in scores_one.items():
        assert scores_two[step]["online/knn_top1"] == pytest.approx(scores["online/knn_top1"], abs=1.01 / 300), step
        assert scores_two[step]["online/linear_top1"] == pytest.approx(scores["online/linear_top1"], abs=2.01 / 300), step
