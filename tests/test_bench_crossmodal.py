"""The pieces of bench/quality_crossmodal.py: the split by photo, chance recall, class prototypes,
budget stopping of the real training steps, the peer loop's equality with multissl's at the start,
and the notes of rows multissl loses.

No measured number is asserted: expectations come from loops written here, enumeration, or
properties (disjoint splits, equal first losses of two implementations of one formula). Data: the
synthetic Flickr8k, MNIST and FSDD of tests/fixture_data.py (laid out as ../shared/data); the real
split's sizes are checked in tests/test_real_data.py.
"""

from __future__ import annotations

import csv
import itertools
import math
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality_crossmodal as crossmodal  # noqa: E402
from bench._common import losing_rows  # noqa: E402
from bench._quality import CpuBudget, StepResult, TrainingReport, budgeted_training  # noqa: E402
from tests.fixture_data import MNIST_IMAGES  # noqa: E402


def synthetic_rows(num_images: int, seed: int = 0) -> list[tuple[str, str]]:
    """Photos with 1-5 captions each, rows of one photo not adjacent (as a shuffled captions file)."""
    generator = torch.Generator().manual_seed(seed)
    rows = [(f"img{i:03d}.jpg", f"caption {j} of photo {i}")
            for i in range(num_images) for j in range(1 + int(torch.randint(5, (1,), generator=generator)))]
    order = torch.randperm(len(rows), generator=generator).tolist()
    return [rows[i] for i in order]


# ------------------------------------------------------------------------------------------ splits


def test_split_by_image_keeps_every_caption_with_its_photo():
    rows = synthetic_rows(40)
    split = crossmodal.split_by_image(rows, test_images=9, seed=3)
    assert len(split.test_images) == 9 and len(split.train_images) == 31
    assert not set(split.test_images) & set(split.train_images)
    assert {image for image, _ in split.train_rows} == set(split.train_images)
    # every row lands on exactly one side, on its photo's side
    assert sorted(split.train_rows + split.test_rows) == sorted(rows)
    for image, _ in split.test_rows:
        assert image in split.test_images
    # text_to_image points each test caption at its own photo
    assert len(split.text_to_image) == len(split.test_rows)
    for (image, _), position in zip(split.test_rows, split.text_to_image):
        assert split.test_images[position] == image
    # seeded: the same seed draws the same photos, another seed others
    assert crossmodal.split_by_image(rows, 9, seed=3).test_images == split.test_images
    assert crossmodal.split_by_image(rows, 9, seed=4).test_images != split.test_images


def test_flickr_split_by_photo_with_5_captions_each_and_its_files(data_root, tmp_path):
    rows = crossmodal.read_captions(data_root / "pairs" / "flickr8k_1k" / "captions.csv")
    photos = len({image for image, _ in rows})
    test_photos = photos // 5  # the benchmark holds out 200 of the 1,000 real photos
    split = crossmodal.split_by_image(rows, test_photos, seed=0)
    assert (len(split.train_images), len(split.test_images)) == (photos - test_photos, test_photos)
    assert (len(split.train_rows), len(split.test_rows)) == (5 * (photos - test_photos), 5 * test_photos)
    assert torch.bincount(torch.tensor(split.text_to_image)).tolist() == [5] * test_photos

    files = crossmodal.write_split_files(split, tmp_path)
    with open(files["test_images"], newline="") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == split.test_images
    assert crossmodal.read_captions(files["train_captions"]) == split.train_rows
    assert crossmodal.read_captions(files["test_captions"]) == split.test_rows


def test_read_captions_names_the_bad_line(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("image,caption\na.jpg,a dog runs\nb.jpg,\n")
    with pytest.raises(ValueError, match=r"line 3: empty caption"):
        crossmodal.read_captions(path)
    path.write_text("picture,text\na.jpg,a dog\n")
    with pytest.raises(ValueError, match="needs columns 'image' and 'caption'"):
        crossmodal.read_captions(path)


# ------------------------------------------------------------------------------------------ chance


@pytest.mark.parametrize("num_captions, captions_per_image, k", [(8, 2, 1), (8, 2, 3), (9, 3, 4), (6, 5, 2), (5, 2, 7)])
def test_chance_image_to_text_recall_matches_enumeration(num_captions, captions_per_image, k):
    # every set of k retrieved captions is equally likely under a random ranking; captions 0..c-1 are the image's
    shown = min(k, num_captions)
    subsets = list(itertools.combinations(range(num_captions), shown))
    hits = sum(any(c < captions_per_image for c in subset) for subset in subsets)
    expected = hits / len(subsets)
    assert crossmodal.chance_image_to_text_recall(k, captions_per_image, num_captions) == pytest.approx(expected)


def test_chance_text_to_image_recall_matches_enumeration():
    num_images = 7
    for k in (1, 3, 7, 10):
        # over all positions the own image can take in a random ranking
        expected = sum(position < k for position in range(num_images)) / num_images
        assert crossmodal.chance_text_to_image_recall(k, num_images) == pytest.approx(expected)


@pytest.mark.slow  # loads all of MNIST t10k and FSDD, pairs the training rows by label
def test_digits_training_rows_never_hold_a_held_out_image(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(crossmodal, "MNIST", data_root / "image" / "mnist")
    monkeypatch.setattr(crossmodal, "FSDD", data_root / "audio" / "fsdd" / "recordings")
    overrides = crossmodal.recipe_overrides(crossmodal.DIGITS_OVERRIDES, mnist=crossmodal.MNIST, fsdd=crossmodal.FSDD,
                                            seed=0, output_dir=tmp_path / "run")
    run = crossmodal.build_clip_run(crossmodal.DIGITS_RECIPE, overrides, 0)
    mnist = run.dataset.datasets["image"]
    labels = crossmodal.column(mnist, "label")
    held_out = len(mnist) // 5  # the benchmark's MNIST_HELD_OUT is a fifth of the real t10k's 10,000
    train_rows, held_out_rows = crossmodal.held_out_split(labels, held_out, 0)
    crossmodal.keep_training_rows(run, {"image": train_rows})
    assert len(mnist) == MNIST_IMAGES and len(run.dataset) == MNIST_IMAGES - held_out
    training_images = set(crossmodal.column(run.dataset.datasets["image"], "row_index").tolist())
    assert training_images == set(train_rows.tolist())
    assert not training_images & set(crossmodal.column(mnist.select(held_out_rows.tolist()), "row_index").tolist())
    # stratified: every digit keeps a fifth of its images for the test
    for digit in range(10):
        assert int((labels[held_out_rows] == digit).sum()) == pytest.approx(0.2 * int((labels == digit).sum()), abs=1)
    # pairs by label, with FSDD takes 5-49 only
    for index in range(0, len(run.dataset), 37):
        pair = run.dataset[index]
        assert pair["image"]["label"] == pair["audio"]["label"]
        digit, _, take = Path(pair["audio"]["audio"]).stem.split("_")
        assert int(digit) == pair["audio"]["label"] and 5 <= int(take) <= 49


# ------------------------------------------------------------------------------------- prototypes


def test_class_prototypes_match_a_loop():
    embeddings = torch.randn(23, 5)
    labels = torch.tensor([i % 4 for i in range(23)])
    prototypes = crossmodal.class_prototypes(embeddings, labels, 4)
    for c in range(4):
        members = [F.normalize(embeddings[i], dim=0) for i in range(23) if labels[i] == c]
        mean = sum(members) / len(members)
        torch.testing.assert_close(prototypes[c], mean / mean.norm())


def test_class_prototypes_reject_a_class_without_rows():
    with pytest.raises(ValueError, match="every class"):
        crossmodal.class_prototypes(torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 3, 3]), 4)


# ------------------------------------------------------------------------------- training steps


def tiny_flickr_run(data_root: Path, folder: Path, seed: int = 0) -> crossmodal.ClipRun:
    """The benchmark's Flickr run on 12 photos (60 captions), tiny towers, batch 8."""
    rows = crossmodal.read_captions(data_root / "pairs" / "flickr8k_1k" / "captions.csv")
    photos = list(dict.fromkeys(image for image, _ in rows))[:15]
    split = crossmodal.split_by_image([row for row in rows if row[0] in photos], 3, seed)
    files = crossmodal.write_split_files(split, folder)
    overrides = crossmodal.recipe_overrides(
        crossmodal.FLICKR_OVERRIDES, train_captions=files["train_captions"],
        images=data_root / "pairs" / "flickr8k_1k" / "images", seed=seed, output_dir=folder / "run")
    overrides += [
        "domains.image.options.image_size=16", "domains.image.options.patch_size=8",
        "domains.image.encoder.overrides={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
        "domains.text.options.vocab_size=120",
        "domains.text.encoder.overrides={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
        "objectives.0.options.projection_dim=8", "train.batch_size=8",
    ]
    return crossmodal.build_clip_run(crossmodal.FLICKR_RECIPE, overrides, seed)


def test_training_stops_once_the_budget_is_spent(data_root, tmp_path):
    run = tiny_flickr_run(data_root, tmp_path)
    step = crossmodal.multissl_step(run, crossmodal.BatchStream(run, 0))
    step(0.0)  # first-call costs (allocator, kernels) outside the measured run
    spent_before_step, step_costs = [], []
    budget = CpuBudget(0.6)

    def timed_step(progress: float) -> StepResult:
        spent_before_step.append(budget.spent())
        start = time.process_time()
        result = step(progress)
        step_costs.append(time.process_time() - start)
        return result

    report = budgeted_training(timed_step, budget)
    assert report.stopped_by == "budget" and report.steps == len(step_costs) >= 1
    assert report.cpu_seconds >= 0.6
    # every step started with budget left, and the run stopped after the first one that used it up
    assert all(spent < 0.6 for spent in spent_before_step)
    assert spent_before_step[-1] + step_costs[-1] <= report.cpu_seconds + 1e-6
    assert report.cpu_seconds - 0.6 <= step_costs[-1] + 0.05


def test_budgeted_training_stops_at_max_steps_and_epochs_cycle(data_root, tmp_path):
    run = tiny_flickr_run(data_root, tmp_path)
    stream = crossmodal.BatchStream(run, 0)
    assert stream.epoch_batches == len(run.dataset) // 8
    report = budgeted_training(crossmodal.multissl_step(run, stream), 3600.0, max_steps=stream.epoch_batches + 2)
    assert report.stopped_by == "max_steps" and report.steps == stream.epoch_batches + 2
    assert stream.epochs == pytest.approx((stream.epoch_batches + 2) / stream.epoch_batches)
    assert all(math.isfinite(loss) for loss in report.losses)


def test_open_clip_peer_starts_where_multissl_does(data_root, tmp_path):
    """Same weights, batches and views: the first losses are equal (two implementations of CLIP's
    loss at the same temperature), and after identical updates the second ones still agree."""
    ours = tiny_flickr_run(data_root, tmp_path / "a")
    peer = tiny_flickr_run(data_root, tmp_path / "b")
    crossmodal.check_same_start(peer, crossmodal.initial_state(ours), "peer")
    our_step = crossmodal.multissl_step(ours, crossmodal.BatchStream(ours, 0))
    peer_step = crossmodal.open_clip_step(peer, crossmodal.BatchStream(peer, 0))
    for seed in (1, 2):
        torch.manual_seed(seed)  # the towers' dropout draws from the global generator
        our_loss = our_step(0.5).loss
        torch.manual_seed(seed)
        assert our_loss == pytest.approx(peer_step(0.5).loss, rel=1e-4)
    # the peer trains open_clip's own temperature, not the multissl objective's
    assert torch.equal(peer.clip.logit_scale.log_scale, crossmodal.initial_state(peer)["logit_scale.log_scale"])


def test_budget_schedule_warms_up_then_decays_every_group_from_its_own_rate():
    weights = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    optimizer = torch.optim.AdamW([{"params": [weights[0]], "lr": 0.1}, {"params": [weights[1]], "lr": 0.4}])
    schedule = crossmodal.BudgetSchedule(optimizer, warmup=0.2, final_fraction=0.0)
    for progress, multiplier in ((0.0, 0.0), (0.1, 0.5), (0.2, 1.0), (0.6, 0.5), (1.0, 0.0)):
        schedule.set(progress)
        schedule.step()  # what the engine calls after the optimiser step: must not move the rate
        assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.1 * multiplier, 0.4 * multiplier])
    with pytest.raises(ValueError, match="fraction of the budget"):
        crossmodal.BudgetSchedule(optimizer, warmup=100, final_fraction=0.0)


def test_check_same_start_names_the_differing_weight(data_root, tmp_path):
    run = tiny_flickr_run(data_root, tmp_path)
    reference = crossmodal.initial_state(run)
    with torch.no_grad():
        run.clip.projection_a.weight.add_(1.0)
    with pytest.raises(AssertionError, match="projection_a.weight"):
        crossmodal.check_same_start(run, reference, "contender")


# ------------------------------------------------------------------------------------------- rows


def test_rows_say_where_multissl_loses():
    def report(steps: int, seconds: float) -> TrainingReport:
        return TrainingReport(steps, steps * 8, seconds, seconds, 10.0, "budget", [1.0] * steps)

    task, metric = crossmodal.FLICKR_TASK, "text_to_image_recall@1"
    outcomes = [
        crossmodal.Outcome(task, "multissl CLIP (scratch)", {metric: 0.02}, report(10, 10.0), 1.0, "ours", "scratch"),
        crossmodal.Outcome(task, "multissl CLIP (MiniLM text)", {metric: 0.004}, report(2, 10.0), 0.1, "ours", "minilm"),
        crossmodal.Outcome(task, "open_clip ClipLoss (peer)", {metric: 0.05}, report(12, 10.0), 1.2, "peer", "scratch"),
        crossmodal.Outcome(task, "chance", {metric: 0.005}, None, None, "chance"),
    ]
    rows = crossmodal.build_rows(outcomes, 10.0)
    notes = {row["contender"]: row["notes"] for row in rows}
    scratch = notes["multissl CLIP (scratch)"]
    assert "multissl loses this row to open_clip ClipLoss (peer): 0.020 vs 0.050" in scratch
    assert "10 steps (1.00 epochs) at 1.00 CPU s/step" in scratch and "12 steps at 0.83" in scratch
    assert "same initial weights" in scratch and "loses this row to chance" not in scratch
    minilm = notes["multissl CLIP (MiniLM text)"]
    assert "trains other towers" in minilm and "same initial weights" not in minilm
    assert "loses this row to chance: 0.004 vs 0.005" in minilm and "no better than a random ranking" in minilm
    assert "multissl loses" not in notes["open_clip ClipLoss (peer)"]
    chance = next(row for row in rows if row["contender"] == "chance")
    assert chance["budget_seconds"] is None and chance["train_steps"] == 0
    lost = {(loss["row"]["contender"], loss["peer"]) for loss in losing_rows({"kind": "quality", "rows": rows})}
    assert lost == {("multissl CLIP (scratch)", "open_clip ClipLoss (peer)"),
                    ("multissl CLIP (MiniLM text)", "open_clip ClipLoss (peer)")}
