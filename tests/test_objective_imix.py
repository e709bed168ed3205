"""i-Mix (Lee et al. 2021): the loss is the cross-entropy with mixed virtual labels (a loop over the
formula), the objective reads the domain's Mixup / CutMix view and learns, its state round-trips,
and 2 processes, each mixing its own rows as the engine does, equal 1 on the global batch."""

from __future__ import annotations

import math

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl import distributed
from multissl.losses import imix_info_nce
from multissl.modules import convert_to_global_batchnorm
from multissl.objectives import build_objective
from tests.dist import run_in_processes
from tests.objective_harness import assert_state_round_trip, make_views, overfit, raw_batch, tiny_setup

MILD = {"augment": {"crop_scale": (0.5, 1.0), "jitter_strength": 0.5, "blur_probability": 0.0}}
OPTIONS = {"projection_dim": 16, "hidden_dim": 32, "temperature": 0.2}


def naive_imix(query, key, partner, lam, temperature):
    """-lam log p_i[i] - (1 - lam) log p_i[partner(i)], p_i the softmax of cosines / tau, averaged."""
    total = 0.0
    n = len(query)
    for i in range(n):
        scores = [float(torch.nn.functional.cosine_similarity(query[i], key[j], dim=0)) / temperature for j in range(n)]
        log_z = math.log(sum(math.exp(s) for s in scores))
        total -= float(lam[i]) * (scores[i] - log_z) + (1 - float(lam[i])) * (scores[int(partner[i])] - log_z)
    return total / n


def test_imix_info_nce_matches_the_mixed_label_cross_entropy():
    generator = torch.Generator().manual_seed(0)
    query, key = torch.randn(7, 5, generator=generator, dtype=torch.float64), torch.randn(7, 5, generator=generator,
                                                                                          dtype=torch.float64)
    partner = torch.tensor([3, 0, 6, 1, 4, 2, 5])
    lam = torch.tensor([0.5, 0.9, 1.0, 0.7, 0.6, 0.8, 0.55], dtype=torch.float64)
    assert float(imix_info_nce(query, key, partner, lam, 0.2)) == pytest.approx(
        naive_imix(query, key, partner, lam, 0.2), rel=1e-10)
    # lam = 1 everywhere is plain InfoNCE against the other view
    from multissl.losses import info_nce
    ones = torch.ones(7, dtype=torch.float64)
    torch.testing.assert_close(imix_info_nce(query, key, partner, ones, 0.2), info_nce(query, key, temperature=0.2))
    with pytest.raises(ValueError, match="lam"):
        imix_info_nce(query, key, partner, lam[:3], 0.2)


def _image_encoder():
    return build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))


def build_imix(mix: str = "mixup"):
    torch.manual_seed(0)
    return build_objective("imix", [_image_encoder()], {**OPTIONS, "mix": mix})


@pytest.fixture(scope="module")
def image(data_root):
    return tiny_setup("image", data_root, rows=16, options=MILD)


def _fresh(setup, mix="mixup"):
    torch.manual_seed(0)
    return build_objective("imix", [setup.domain.build_encoder(EncoderConfig("convnext", "tiny"))], {**OPTIONS, "mix": mix})


@pytest.mark.parametrize("mix", ["mixup", "cutmix"])
def test_reads_the_mixing_view_and_its_loss_is_the_formula(image, mix):
    objective = _fresh(image, mix)
    (views,) = make_views(objective, [image], [raw_batch(image, 6)], seed=1)
    assert {"mix_partner", "mix_lambda"} <= set(views) and float(views["mix_lambda"].min()) >= 0.5
    loss = objective(views).loss
    with torch.no_grad():  # ConvNeXt has no batch norm; the head's is in train mode: same batch, same values
        pooled = [f.pooled for f in [objective.encoder(**v) for v in views["views"]]]
        query, key = objective.head(torch.cat(pooled)).chunk(2)
    expected = naive_imix(query, key, views["mix_partner"], views["mix_lambda"], 0.2)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_learns_and_round_trips(image):
    objective = _fresh(image)
    losses = overfit(objective, [image], [raw_batch(image, 16)], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses
    assert_state_round_trip(objective, lambda: _fresh(image))


def _merged(parts: list[dict]) -> dict:
    """One process's view of the global batch: the ranks' rows in order, partners shifted to global rows."""
    offsets = [0]
    for part in parts[:-1]:
        offsets.append(offsets[-1] + part["mix_partner"].shape[0])
    return {
        "views": [{"pixel_values": torch.cat([p["views"][i]["pixel_values"] for p in parts])} for i in range(2)],
        "mix_partner": torch.cat([p["mix_partner"] + offset for p, offset in zip(parts, offsets)]),
        "mix_lambda": torch.cat([p["mix_lambda"] for p in parts]),
    }


def _rank_worker(parts: list[dict]) -> dict:
    torch.manual_seed(0)
    objective = convert_to_global_batchnorm(build_imix())
    loss = objective(parts[distributed.rank()]).loss
    loss.backward()
    return {"loss": loss.detach(), "grads": {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}}


@pytest.mark.slow
def test_two_processes_equal_one(image):
    """Each rank mixes its own rows (its own generator), as the engine's views do."""
    objective = build_imix()
    parts = [make_views(objective, [image], [raw_batch(image, size, start=start)], seed=seed)[0]
             for size, start, seed in ((7, 0, 11), (5, 7, 12))]
    parts = [{k: v for k, v in p.items() if k in ("views", "mix_partner", "mix_lambda")} for p in parts]
    single = convert_to_global_batchnorm(build_imix())
    reference = single(_merged(parts)).loss
    reference.backward()
    results = run_in_processes(_rank_worker, parts)
    for rank, result in enumerate(results):
        torch.testing.assert_close(result["loss"], reference.detach(), atol=1e-5, rtol=1e-4, msg=f"rank {rank} loss")
    for name, parameter in single.named_parameters():
        if parameter.grad is None:
            continue
        averaged = sum(r["grads"][name] for r in results) / len(results)
        torch.testing.assert_close(averaged, parameter.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {name}")
