"""HuBERT on real speech (FSDD): the audio domain's MFCC targets carry Kaldi's deltas, the objective
clusters them once its bank is full and then learns, the loss is the paper's on its own units, a
saved encoder serves as the fixed labeler of the next iteration, state round-trips, and 2
processes equal 1."""

from __future__ import annotations

import functools

import pytest
import torch

from domains.audio.frontends import with_deltas
from multissl.objectives import build_objective
from multissl.views import ViewRequest
from tests.objective_factories import audio_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)
from tests.test_losses_contrastive import naive_masked_cluster_prediction

OPTIONS = {"num_clusters": 8, "bank_size": 64, "projection_dim": 16}


@pytest.fixture(scope="module")
def audio(data_root):
    return tiny_setup("audio", data_root, rows=8, options={"n_mfcc": 13})


def clustered_hubert(options: dict) -> torch.nn.Module:
    """A HuBERT objective whose k-means already ran (fixed centroids): the same in every process."""
    objective = audio_objective("hubert", options)
    with torch.no_grad():
        objective.centroids.copy_(torch.randn(objective.centroids.shape, generator=torch.Generator().manual_seed(1)))
    objective.clustered_at_step.fill_(0)
    return objective


def test_deltas_are_kaldis_regression_with_the_last_frame_repeated():
    features = torch.randn(2, 9, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lengths = torch.tensor([9, 6])

    def regression(sequence):  # d(t) = sum_n n (x(t+n) - x(t-n)) / (2 sum n^2), n = 1, 2, for any integer t
        return lambda t: sum(n * (sequence(t + n) - sequence(t - n)) for n in (1, 2)) / 10

    out = with_deltas(features, lengths)
    for row, length in enumerate(lengths.tolist()):
        frames = list(features[row, :length])
        clip = lambda t: frames[min(max(t, 0), length - 1)]  # noqa: E731  (Kaldi: edge frames repeated)
        first = [regression(clip)(t) for t in range(length)]
        second = [regression(regression(clip))(t) for t in range(length)]
        expected = torch.stack([torch.cat([c, d, dd]) for c, d, dd in zip(frames, first, second)])
        torch.testing.assert_close(out[row, :length], expected)
        assert out[row, length:].abs().sum() == 0


def test_masked_view_offers_mfcc_targets_and_the_clean_inputs(audio):
    batch = raw_batch(audio, 4)
    views = audio.domain.make_views(batch, ViewRequest("masked", {"targets": "mfcc"}), torch.Generator().manual_seed(0))
    assert views["targets"].shape[:2] == views["mask"].shape and views["targets"].shape[2] == 3 * 13
    assert "mask_time_indices" in views["inputs"] and "mask_time_indices" not in views["clean"]
    assert all(views["clean"][k] is views["inputs"][k] for k in views["clean"])
    with pytest.raises(ValueError, match="targets"):
        audio.domain.make_views(batch, ViewRequest("masked", {"targets": "mel"}), torch.Generator())


def test_hubert_clusters_its_mfcc_bank_then_learns_and_round_trips(audio, data_root):
    objective = build_objective("hubert", [audio.encoder], OPTIONS)
    losses = overfit(objective, [audio], [raw_batch(audio, 8)], steps=15, lr=3e-3)
    # step 1 fills the 64-frame bank (8 clips of ~18 frames): no units yet, loss 0; k-means after it
    assert losses[0] == 0.0 and int(objective.clustered_at_step) == 1 and losses[1] > 0
    assert sum(losses[-4:]) / 4 < sum(losses[1:5]) / 4 - 0.3, losses
    assert not [name for name, p in objective.named_parameters() if p.requires_grad and p.grad is None], "DDP needs every parameter used"
    assert_state_round_trip(objective, lambda: build_objective(
        "hubert", [tiny_setup("audio", data_root, rows=8, options={"n_mfcc": 13}).encoder], OPTIONS))


def test_hubert_loss_is_the_papers_on_its_own_units(audio):
    objective = clustered_hubert(OPTIONS).eval()  # no dropout; the view still masks through mask_time_indices
    (views,) = make_views(objective, [audio], [raw_batch(audio, 5)], seed=2)
    out = objective(views)
    with torch.no_grad():
        features = objective.encoder(**views["inputs"])
        units = torch.cdist(views["targets"].flatten(0, 1), objective.centroids).argmin(dim=1).view(views["mask"].shape)
        predictions = objective.projection(features.sequence)
        expected = naive_masked_cluster_prediction(predictions.double(), objective.codewords.double(), units,
                                                   views["mask"] & features.mask, 0.1)
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-5)
    wrong = build_objective("hubert", [audio.encoder], {**OPTIONS, "target_dim": 40})
    with pytest.raises(ValueError, match="target_dim"):
        wrong(views)


def test_hubert_features_come_from_a_fixed_labeler_read_from_a_saved_encoder(audio, data_root, tmp_path):
    audio.encoder.save_pretrained(str(tmp_path / "iteration1"))
    student = tiny_setup("audio", data_root, rows=8, options={"n_mfcc": 13}, seed=1).encoder
    options = {**OPTIONS, "targets": "features", "target_layer": 1, "labeler_path": str(tmp_path / "iteration1")}
    objective = build_objective("hubert", [student], options).train()
    labeler = objective.labeler.module
    saved = audio.encoder.model.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in labeler.model.state_dict().items())
    assert not torch.equal(student.model.state_dict()["feature_projection.projection.weight"],
                           saved["feature_projection.projection.weight"])
    assert not labeler.training and all(not p.requires_grad for p in labeler.parameters())
    (views,) = make_views(objective, [audio], [raw_batch(audio, 4)], seed=3)
    objective(views).loss.backward()
    with torch.no_grad():  # the bank holds the labeler's layer-1 states of the clean clips' valid frames
        clean = labeler(**views["clean"], output_hidden_states=True)
    frames = clean.hidden_states[1][clean.mask]
    torch.testing.assert_close(objective.bank.keys[: len(frames)], frames.float())
    assert "mask_time_indices" not in objective.view_requests()[0].options
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        build_objective("hubert", [student], {**options, "labeler_path": str(tmp_path)})
    with pytest.raises(ValueError, match="targets='features'"):
        build_objective("hubert", [student], {**OPTIONS, "target_layer": 1})


def test_hubert_two_processes_equal_one(audio):
    factory = functools.partial(clustered_hubert, {**OPTIONS, "unmasked_weight": 0.5})
    views = make_views(factory(), [audio], [raw_batch(audio, 8)], seed=1)
    distributed_equivalence(factory, views, sizes=[5, 3])
