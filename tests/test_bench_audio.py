"""The pieces of bench/quality_audio.py a wrong number would come from: the FSDD split (the probes
never see a test take in training, the SSL rows carry no label), the leave-one-utterance-out phone
folds and their validation blocks, the MFCC pooling, and a real budgeted SSL run (it starts from the
random-init weights and stops once its CPU budget is spent; the budget loop itself is
bench/_quality.py's, tested with the image benchmark). No timings are asserted. The benchmark's FSDD
is the synthetic one of tests/fixture_data.py (same names, takes 0-12); the real split's sizes are
checked in tests/test_real_data.py.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import quality_audio as bench  # noqa: E402

NAME = re.compile(r"(\d)_([a-z]+)_(\d+)\.wav$")


def _parsed(rows) -> list[tuple[int, str, int]]:
    return [(int(m.group(1)), m.group(2), int(m.group(3))) for m in (NAME.search(os.path.basename(p)) for p in rows["audio"])]


# ------------------------------------------------------------------------------------------ splits


@pytest.fixture(scope="module", autouse=True)
def _synthetic_fsdd(data_root):
    """The benchmark reads ../shared/data: point it at the synthetic tree."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bench, "FSDD", data_root / "audio" / "fsdd" / "recordings")
        patch.setattr(bench, "PHONE_LABELS", data_root / "audio" / "librispeech_mini" / "phone_labels.txt")
        yield


@pytest.fixture(scope="module")
def fsdd_splits():
    _, train = bench.load_fsdd(bench.TRAIN_TAKES)
    _, test = bench.load_fsdd(bench.TEST_TAKES)
    return train, test


def test_fsdd_split_holds_out_takes_0_to_4_for_every_speaker_and_digit(fsdd_splits):
    train, test = fsdd_splits
    train_names, test_names = _parsed(train), _parsed(test)
    every_take = {int(NAME.search(name).group(3)) for name in os.listdir(bench.FSDD)}
    assert {take for _, _, take in test_names} == set(range(0, 5))
    assert {take for _, _, take in train_names} == every_take - set(range(0, 5)) and max(every_take) >= 5
    assert not set(train["audio"]) & set(test["audio"])
    # 6 speakers x 10 digits, each in both splits: 5 test takes and every other take of each pair
    for names, takes in ((test_names, 5), (train_names, len(every_take) - 5)):
        pairs: dict[tuple[int, str], int] = {}
        for digit, speaker, _ in names:
            pairs[(digit, speaker)] = pairs.get((digit, speaker), 0) + 1
        assert len(pairs) == 60 and set(pairs.values()) == {takes}


def test_fsdd_labels_and_speaker_ids_agree_with_the_file_names_in_both_splits(fsdd_splits):
    train, test = fsdd_splits
    names = sorted({speaker for _, speaker, _ in _parsed(train)})
    for rows in (train, test):
        for (digit, speaker, _), label, speaker_id in zip(_parsed(rows), rows["label"], bench._speakers(rows).tolist()):
            assert label == digit
            assert speaker_id == names.index(speaker)  # the same id for a speaker in both splits


@pytest.mark.parametrize("method", sorted(bench.METHODS))
def test_ssl_training_rows_are_the_train_takes_without_any_label(fsdd_splits, method, tmp_path):
    from domains import build_domain

    train, _ = fsdd_splits
    recipe, _ = bench.load_method_recipe(bench.METHODS[method], "tiny", 0, str(tmp_path))
    domain = build_domain("audio", recipe.domains["audio"].options)
    rows = domain.load(recipe.data)
    assert rows.column_names == ["audio", "row_index"]  # no label; the row number only names bad clips
    assert sorted(rows["audio"]) == sorted(train["audio"])


def test_take_range_rejects_reversed_bounds():
    assert bench.take_range((5, 49)) == "5..49"
    with pytest.raises(ValueError, match="take range"):
        bench.take_range((9, 3))


# ------------------------------------------------------------------------------------- phone folds


@pytest.mark.parametrize("count", [2, 3, 5])
def test_utterance_folds_test_each_utterance_once_and_never_train_on_it(count):
    folds = bench.utterance_folds(count)
    assert sorted(test for _, (test,) in folds) == list(range(count))
    for train, test in folds:
        assert not set(train) & set(test)
        assert sorted(train + test) == list(range(count))


def test_utterance_folds_need_two_utterances():
    with pytest.raises(ValueError, match="at least 2"):
        bench.utterance_folds(1)


def test_frame_blocks_match_a_loop_over_utterances_and_frames():
    utterances, frames, block = 3, 11, 4
    blocks = bench.frame_blocks(utterances, frames, block)
    expected, next_id = torch.empty(utterances, frames, dtype=torch.long), 0
    for u in range(utterances):
        for t in range(frames):
            if t % block == 0:
                current, next_id = next_id, next_id + 1
            expected[u, t] = current
    assert torch.equal(blocks, expected)


# --------------------------------------------------------------------------------------- baselines


def test_mean_std_pool_matches_a_loop_over_valid_frames():
    frames = torch.randn(3, 7, 5)
    valid = torch.tensor([[1] * 7, [1] * 3 + [0] * 4, [1] + [0] * 6], dtype=torch.bool)
    pooled = bench.mean_std_pool(frames, valid)
    for b in range(3):
        kept = [frames[b, t] for t in range(7) if valid[b, t]]
        mean = sum(kept) / len(kept)
        std = (sum((k - mean) ** 2 for k in kept) / len(kept)).sqrt()
        assert torch.allclose(pooled[b], torch.cat([mean, std]), atol=1e-6)


def test_mean_std_pool_rejects_a_clip_without_frames():
    with pytest.raises(ValueError, match="shorter than one MFCC window"):
        bench.mean_std_pool(torch.randn(2, 4, 3), torch.tensor([[True] * 4, [False] * 4]))


# ------------------------------------------------------------------------- a real budgeted SSL run


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True, mixed_precision="no")


def test_a_contender_starts_from_the_random_init_weights_and_stops_when_its_cpu_budget_is_spent(fsdd_splits, accelerator):
    from bench._quality import CpuBudget

    initial = bench.build_random_encoder("tiny", seed=0).state_dict()
    budget = CpuBudget(1.5)
    result = bench.train_method(bench.METHODS["cpc"], "tiny", budget, seed=0, accelerator=accelerator,
                                initial_state=initial)
    report = result.report
    assert report.stopped_by == "budget" and report.cpu_seconds >= 1.5 and report.steps >= 1
    assert budget.exhausted()
    assert all(math.isfinite(loss) for loss in report.losses)
    assert result.epochs == pytest.approx(report.steps * 64 / len(fsdd_splits[0]))  # batch 64 of the training clips
    assert any(not torch.equal(value, initial[name]) for name, value in result.encoder.state_dict().items())
    assert f"data.path={bench.FSDD}" in result.overrides and not any(o.startswith("output_dir=") for o in result.overrides)


def test_a_contender_that_does_not_start_from_the_shared_weights_is_refused(accelerator):
    from bench._quality import CpuBudget

    other = bench.build_random_encoder("tiny", seed=1).state_dict()
    with pytest.raises(AssertionError, match="random-init weights"):
        bench.train_method(bench.METHODS["cpc"], "tiny", CpuBudget(60.0), seed=0, accelerator=accelerator,
                           initial_state=other, max_steps=1)


@pytest.mark.parametrize("method", ["masked_frames", "byol", "data2vec"])
def test_every_method_takes_finite_steps_on_fsdd(accelerator, method):
    from bench._quality import CpuBudget

    result = bench.train_method(bench.METHODS[method], "tiny", CpuBudget(60.0), seed=0, accelerator=accelerator,
                                max_steps=2)
    assert result.report.steps == 2 and result.report.stopped_by == "max_steps"
    assert all(math.isfinite(loss) for loss in result.report.losses)
