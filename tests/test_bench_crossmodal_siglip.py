"""SigLIP beside CLIP in bench/quality_crossmodal.py, on a tiny setting: the SigLIP contender starts
from the scratch CLIP's towers, trains through the engine's step, is scored in its joint space, and
its notes call a gap to open_clip's CLIP a difference between methods.

No measured number is asserted (the full run is scheduled by the lead, not run by tests).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality_crossmodal as crossmodal  # noqa: E402
from bench._quality import DifferentStartError, TrainingReport  # noqa: E402

TINY = [
    "domains.image.options.image_size=16", "domains.image.options.patch_size=8",
    "domains.image.encoder.overrides={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
    "domains.text.options.vocab_size=120",
    "domains.text.encoder.overrides={hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 32}",
    "objectives.0.options.projection_dim=8", "train.batch_size=8",
]


def tiny_runs(data_root: Path, folder: Path, seed: int = 0):
    """The benchmark's Flickr CLIP and SigLIP runs on 12 photos (60 captions), tiny towers, batch 8,
    and the split's files."""
    rows = crossmodal.read_captions(data_root / "pairs" / "flickr8k_1k" / "captions.csv")
    photos = list(dict.fromkeys(image for image, _ in rows))[:15]
    split = crossmodal.split_by_image([row for row in rows if row[0] in photos], 3, seed)
    files = crossmodal.write_split_files(split, folder)
    overrides = crossmodal.recipe_overrides(
        crossmodal.FLICKR_OVERRIDES, train_captions=files["train_captions"],
        images=data_root / "pairs" / "flickr8k_1k" / "images", seed=seed, output_dir=folder / "run") + TINY
    clip = crossmodal.build_clip_run(crossmodal.FLICKR_RECIPE, overrides, seed)
    siglip = crossmodal.build_clip_run(crossmodal.SIGLIP_RECIPE, overrides, seed)
    return clip, siglip, files, split


def test_siglip_contender_starts_from_clips_towers_trains_and_is_scored(data_root, tmp_path):
    clip, siglip, files, split = tiny_runs(data_root, tmp_path)
    assert siglip.objective_name == "siglip" and type(siglip.clip).__name__ == "SigLIP"
    reference = crossmodal.initial_state(clip)
    crossmodal.check_same_towers(siglip, reference, "siglip")
    with pytest.raises(DifferentStartError):  # its temperature starts elsewhere (10 vs 1 / 0.07), and it has a bias
        crossmodal.check_same_start(siglip, reference, "siglip")
    with torch.no_grad():
        siglip.clip.projection_b.weight.add_(1.0)
    with pytest.raises(DifferentStartError, match="projection_b.weight"):
        crossmodal.check_same_towers(siglip, reference, "siglip")

    clip, siglip, files, split = tiny_runs(data_root, tmp_path / "again")
    step = crossmodal.multissl_step(siglip, crossmodal.BatchStream(siglip, 0))
    losses = [step(0.5).loss for _ in range(3)]  # mid-budget: the schedule's peak learning rate
    assert all(math.isfinite(loss) for loss in losses)
    assert float(siglip.clip.logit_bias.detach()) != -10.0  # the engine's step trains the bias too
    scores = crossmodal.flickr_recall(siglip, files, split.text_to_image)
    assert set(scores) == {f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in crossmodal.RECALL_KS}
    assert all(0.0 <= value <= 1.0 for value in scores.values())


def test_siglip_below_open_clip_is_a_method_difference_in_the_notes():
    def report(steps: int, seconds: float) -> TrainingReport:
        return TrainingReport(steps, steps * 8, seconds, seconds, 10.0, "budget", [1.0] * steps)

    task, metric = crossmodal.FLICKR_TASK, "text_to_image_recall@1"
    outcomes = [
        crossmodal.Outcome(task, "multissl SigLIP (scratch)", {metric: 0.02}, report(10, 10.0), 1.0, "ours", "scratch",
                           "SigLIP"),
        crossmodal.Outcome(task, "open_clip ClipLoss (peer)", {metric: 0.05}, report(12, 10.0), 1.2, "peer", "scratch"),
    ]
    notes = {row["contender"]: row["notes"] for row in crossmodal.build_rows(outcomes, 10.0)}
    siglip = notes["multissl SigLIP (scratch)"]
    assert "loses this row to open_clip ClipLoss (peer): 0.020 vs 0.050" in siglip
    assert "another loss (SigLIP vs CLIP): a difference between methods" in siglip
    assert "two implementations of the same loss" not in siglip
    settings = crossmodal.parse_args(["--no-siglip", "--quick"])
    assert not settings.siglip and crossmodal.parse_args([]).siglip
