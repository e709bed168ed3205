"""The engine end to end: 2 real processes against 1, SIGKILL and resume, the NaN guard, recipe
errors before training. Runs real `accelerate launch` / `python -m multissl.train` processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multissl.checkpoint import list_checkpoints
from tests.kill import kill_after_checkpoint
from multissl.config import RecipeError, load_recipe
from multissl.train import NonFiniteLossError, train

ROOT = Path(__file__).resolve().parents[1]


def text_recipe(shared: Path, out: Path, **train_overrides) -> dict:
    """SimCLR on text with dropout off and identical views: every step is deterministic, so one
    process on batch 2B and two processes on B each must give the same numbers. SGD, not Adam:
    some parameters get an exactly-zero gradient in theory (a bias shifted away by the head's batch
    norm), and Adam would turn their round-off noise into full-size steps that differ run to run."""
    return {
        "description": "engine test",
        "data": {"path": str(shared / "text/corpus/multi30k_captions.txt"), "limit": 96},
        "domains": {"text": {
            "options": {"tokenizer": "train", "vocab_size": 200, "max_length": 24},
            "encoder": {"architecture": "bert", "size": "tiny",
                        "overrides": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}},
        }},
        "objectives": [{"name": "simclr", "domains": ["text"], "options": {"temperature": 0.2, "projection_dim": 16}}],
        "optimizer": {"name": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4},
        "schedule": {"warmup": 2},
        "train": {"batch_size": 16, "max_steps": 6, "global_batchnorm": True, **train_overrides},
        "logging": {"every": 1, "health_every": 3, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 3, "keep": 5},
        "output_dir": str(out),
    }


def write_recipe(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def read_log(run_dir: Path) -> list[dict]:
    """The step records of a run's log.jsonl (event records, such as the end-of-run summary, left out)."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "event" not in r]


def run_module(args: list[str], env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_doubled_batch(data_root, tmp_path):
    one = write_recipe(tmp_path, text_recipe(data_root, tmp_path / "one", batch_size=16), "one.yaml")
    two = write_recipe(tmp_path, text_recipe(data_root, tmp_path / "two", batch_size=8), "two.yaml")
    run_module([sys.executable, "-m", "multissl.train", str(one)])
    # the launch that really starts two synchronised CPU processes (shared/ENVIRONMENT.md)
    run_module([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", "0", "-m", "multissl.train", str(two)],
               env_extra={"ACCELERATE_USE_CPU": "1"})
    log_one, log_two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in log_one] == [r["step"] for r in log_two] == list(range(1, 7))
    losses_one = torch.tensor([r["loss"] for r in log_one])
    losses_two = torch.tensor([r["loss"] for r in log_two])
    assert losses_one.std() > 1e-2, "the weights should move enough to change the loss"
    torch.testing.assert_close(losses_two, losses_one, atol=1e-4, rtol=1e-4)
    # one set of checkpoints, written once: not one per process
    assert [p.name for p in list_checkpoints(tmp_path / "two")] == ["step-00000003", "step-00000006"]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]
    weights_one = load_file(tmp_path / "one/encoders/text/model.safetensors")
    weights_two = load_file(tmp_path / "two/encoders/text/model.safetensors")
    for key in weights_one:
        torch.testing.assert_close(weights_two[key], weights_one[key], atol=1e-4, rtol=1e-3)


def image_memory_recipe(shared: Path, out: Path, objective: dict, max_steps: int = 8) -> dict:
    """80 rows in batches of 16: 5 steps an epoch, so the step-4 checkpoint is mid-epoch and a
    resume must restart inside the epoch, at the right batch of the right shuffle."""
    return {
        "description": "resume test",
        "data": {"path": str(shared / "image/cifar10/train-00000-of-00004.parquet"),
                 "columns": {"image": "img", "label": "label"}, "limit": 80},
        "domains": {"image": {"options": {"image_size": 16}, "encoder": {"architecture": "convnext", "size": "tiny"}}},
        "objectives": [objective],
        "optimizer": {"name": "sgd", "lr": 0.05, "weight_decay": 1e-4},
        "train": {"batch_size": 16, "max_steps": max_steps},
        "logging": {"every": 1, "health_every": 2, "trackers": [], "progress_bar": False},
        "checkpoint": {"every": 2, "keep": 3},
        "output_dir": str(out),
    }


RESUME_OBJECTIVES = [
    pytest.param({"name": "simclr", "domains": ["image"], "options": {"projection_dim": 16}}, id="simclr"),
    pytest.param({"name": "moco_v2", "domains": ["image"], "options": {"queue_size": 48, "projection_dim": 16}},
                 id="moco_v2-queue-and-ema"),
    pytest.param({"name": "instance_discrimination", "domains": ["image"],
                  "options": {"bank_size": 80, "projection_dim": 16, "num_negatives": 32}},
                 id="instance_discrimination-memory-bank"),
    pytest.param({"name": "dino", "domains": ["image"],
                  "options": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8, "local_views": 2,
                              "freeze_last_layer_steps": 3, "teacher_temperature_warmup_steps": 6}},
                 id="dino-centre-ema-and-schedules"),
]


@pytest.mark.slow
@pytest.mark.parametrize("objective", RESUME_OBJECTIVES)
def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(data_root, tmp_path, objective):
    from multissl.objectives import objective_class

    try:
        objective_class(objective["name"])
    except ImportError:
        pytest.skip(f"objective {objective['name']!r} is not built yet")
    full = write_recipe(tmp_path, image_memory_recipe(data_root, tmp_path / "full", objective), "full.yaml")
    run_module([sys.executable, "-m", "multissl.train", str(full)])

    killed_dir = tmp_path / "killed"
    killed = write_recipe(tmp_path, image_memory_recipe(data_root, killed_dir, objective), "killed.yaml")
    kill_after_checkpoint(killed, killed_dir, step=4, last_step=8)

    run_module([sys.executable, "-m", "multissl.train", str(killed), "checkpoint.resume=auto"])
    expected = load_file(tmp_path / "full/checkpoints/step-00000008/model.safetensors")
    resumed = load_file(killed_dir / "checkpoints/step-00000008/model.safetensors")
    assert set(expected) == set(resumed)
    for key in expected:  # every parameter and persistent buffer: queue, pointer, EMA teacher, ...
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-6, rtol=0, msg=f"{key} differs after resume")
    full_log, resumed_log = read_log(tmp_path / "full"), read_log(killed_dir)
    assert [r["loss"] for r in full_log][-2:] == pytest.approx([r["loss"] for r in resumed_log][-2:], abs=1e-6)
    # steps logged after the checkpoint and trained again are logged once
    assert [r["step"] for r in resumed_log] == [r["step"] for r in full_log]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(data_root, tmp_path):
    data = image_memory_recipe(data_root, tmp_path / "nan",
                               {"name": "simclr", "domains": ["image"], "options": {"projection_dim": 16}}, max_steps=30)
    data["optimizer"] = {"name": "sgd", "lr": 1.0e12, "weight_decay": 0.0}
    data["checkpoint"] = {"every": 1, "keep": 2}
    recipe = load_recipe(write_recipe(tmp_path, data))
    with pytest.raises(NonFiniteLossError) as error:
        train(recipe)
    message = str(error.value)
    step = int(message.split(" at step ")[1].split()[0])
    assert "no update was applied" in message
    kept = list_checkpoints(tmp_path / "nan")
    assert kept and int(kept[-1].name.split("-")[1]) == step - 1, (message, kept)
    # the last good checkpoint holds finite weights and loads
    weights = load_file(kept[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_recipe_errors_stop_before_training(data_root, tmp_path):
    base = image_memory_recipe(data_root, tmp_path / "err",
                               {"name": "simclr", "domains": ["image"], "options": {"projection_dim": 16}})
    path = write_recipe(tmp_path, base)
    for override, fragment in [
        ("train.bach_size=3", "unknown key 'train.bach_size'"),
        ("train.batch_size=three", "expects an integer"),
        (f"data.path={tmp_path}/missing.parquet", "which does not exist"),
    ]:
        with pytest.raises(RecipeError, match=fragment):
            load_recipe(path, [override])
    # unknown objective options and domain options are named too, before any step
    with pytest.raises(ValueError, match="temprature"):
        train(load_recipe(path, ["objectives.0.options.temprature=0.1"]))
    with pytest.raises(ValueError, match="imag_size"):
        train(load_recipe(path, ["domains.image.options.imag_size=8"]))
    assert not (tmp_path / "err" / "checkpoints").exists()
    # and from the command line: exit code 2 and the key on stderr
    result = subprocess.run([sys.executable, "-m", "multissl.train", str(path), "train.bach_size=3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "train.bach_size" in result.stderr
