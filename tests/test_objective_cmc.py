"""CMC (Tian et al. 2019): each view's embedding against the other view's bank (NCE, two terms
summed), both banks move towards their own view, L and ab of one crop learn, the banks round-trip,
any two domains work (image and text), and 2 processes equal 1 on the global batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domains import DataConfig, EncoderConfig, build_domain
from multissl.modules import MemoryBank
from multissl.objectives import build_objective
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

CROP = {"augment": {"crop_scale": (0.5, 1.0), "jitter_probability": 0.0, "grayscale_probability": 0.0,
                    "blur_probability": 0.0}}
OPTIONS = {"bank_size": 16, "projection_dim": 16, "num_negatives": 24, "temperature": 0.1, "same_crop": True}
LEARN = {**OPTIONS, "bank_size": 4096, "num_negatives": 64}  # noise rarely the sample itself


def _encoder(space: str):
    return build_domain("image", {"image_size": 16, "color_space": space}).build_encoder(EncoderConfig("convnext", "tiny"))


def build_cmc():
    torch.manual_seed(0)
    return build_objective("cmc", [_encoder("L"), _encoder("ab")], OPTIONS)


@pytest.fixture(scope="module")
def lab(data_root):
    return [tiny_setup("image", data_root, rows=16, options={**CROP, "color_space": space}) for space in ("L", "ab")]


def _fresh(setups, options=OPTIONS):
    torch.manual_seed(0)
    return build_objective("cmc", [s.domain.build_encoder(EncoderConfig("convnext", "tiny")) for s in setups], options)


def _naive_nce(scores: list[list[float]], n: int, z: float) -> float:
    total = 0.0
    for row in scores:
        m = len(row) - 1
        h = [math.exp(s) / z / (math.exp(s) / z + m / n) for s in row]
        total -= math.log(h[0]) + sum(math.log(1 - value) for value in h[1:])
    return total / len(scores)


def test_loss_contrasts_each_view_with_the_other_views_bank(lab):
    objective = _fresh(lab)
    views = make_views(objective, lab, [raw_batch(s, 6, start=3) for s in lab], seed=1)
    assert views[0]["views"][0]["pixel_values"].shape[1] == 1 and views[1]["views"][0]["pixel_values"].shape[1] == 2
    banks = objective.bank_a.features.clone(), objective.bank_b.features.clone()
    out = objective(*views)
    indices = views[0]["indices"]
    with torch.no_grad():
        z_a = F.normalize(objective.head_a(objective.encoder_a(**views[0]["views"][0]).pooled), dim=1)
        z_b = F.normalize(objective.head_b(objective.encoder_b(**views[1]["views"][0]).pooled), dim=1)
    rows = MemoryBank(16, 16).sample(indices, 24)  # one draw, the same rows of both banks

    def scores(embedding, bank):
        return [[float(bank[j] @ embedding[b]) / 0.1 for j in rows[b].tolist()] for b in range(6)]

    total = 0.0
    for embedding, other_bank in ((z_a, banks[1]), (z_b, banks[0])):
        s = scores(embedding, other_bank)
        z = 16 * sum(math.exp(v) for row in s for v in row) / (6 * 25)  # each bank's own Z
        total += _naive_nce(s, 16, z)
    assert float(out.loss.detach()) == pytest.approx(total, rel=1e-5)
    for bank, before, z in ((objective.bank_a, banks[0], z_a), (objective.bank_b, banks[1], z_b)):
        for b, row in enumerate(indices.tolist()):
            moved = 0.5 * before[row] + 0.5 * z[b]
            torch.testing.assert_close(bank.features[row], moved / moved.norm(), rtol=1e-5, atol=1e-6)


def test_learns_l_and_ab_and_round_trips_both_banks(lab):
    objective = _fresh(lab, LEARN)
    losses = overfit(objective, lab, [raw_batch(s, 16) for s in lab], steps=30, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses
    state = objective.state_dict()
    assert {"bank_a.features", "bank_b.features", "bank_a.normalizer", "bank_b.normalizer"} <= set(state)
    assert_state_round_trip(objective, lambda: _fresh(lab, LEARN))


@pytest.mark.slow
def test_contrasts_any_two_domains(data_root):
    """Images and captions of the same rows: each domain's bank indexed by its own ids."""
    pairs = str(data_root / "pairs/flickr8k_1k")
    image = build_domain("image", {"image_size": 16, "image_root": f"{pairs}/images"})
    text = build_domain("text", {"tokenizer": "train", "vocab_size": 300, "max_length": 32})
    rows = [domain.load(DataConfig(path=f"{pairs}/captions.csv", columns=columns, limit=16))
            for domain, columns in ((image, {"image": "image"}), (text, {"text": "caption"}))]
    torch.manual_seed(0)
    encoders = [image.build_encoder(EncoderConfig("convnext", "tiny")), text.build_encoder(EncoderConfig("bert", "tiny"))]
    objective = build_objective("cmc", encoders, {**LEARN, "same_crop": False})
    setups = [type("S", (), {"domain": d, "dataset": r})() for d, r in zip((image, text), rows)]
    batches = [d.collate([r[i] for i in range(16)]) for d, r in zip((image, text), rows)]
    losses = overfit(objective, setups, batches, steps=20, lr=3e-3)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.0, losses


@pytest.mark.slow
def test_two_processes_equal_one(lab):
    views = make_views(build_cmc(), lab, [raw_batch(s, 12) for s in lab], seed=3)
    distributed_equivalence(build_cmc, views, sizes=[7, 5])
