"""SimCLRv2 distillation: a teacher trained on real CIFAR-10 labels is saved, loaded back exactly,
stays frozen in eval mode, and a student of another width learns to agree with it; state
round-trips and 2 processes equal 1."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.teacher import load_teacher, save_teacher
from multissl.views import ViewRequest
from tests.objective_harness import (
    assert_state_round_trip, distributed_equivalence, make_views, overfit, raw_batch, tiny_setup,
)

WIDE = {"hidden_sizes": [24, 48]}  # the teacher is wider than the student's tiny preset (16, 32)


def make_teacher(data_root: Path, folder: Path, image_size: int = 16, steps: int = 40) -> float:
    """A convnext teacher whose linear head is trained on 64 real CIFAR-10 labels (the encoder is
    random and frozen: what matters is a teacher with real, non-uniform class beliefs). Saves it
    with save_teacher and returns its training accuracy."""
    setup = tiny_setup("image", data_root, rows=64, options={"image_size": image_size})
    torch.manual_seed(0)
    encoder = setup.domain.build_encoder(EncoderConfig("convnext", "tiny", overrides=WIDE)).eval()
    batch = raw_batch(setup, 64)
    with torch.no_grad():
        features = encoder(**setup.domain.make_views(batch, ViewRequest("plain"), torch.Generator())["inputs"]).pooled
    head = torch.nn.Linear(encoder.dim, 10)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_teacher(folder, encoder, head, class_names=[str(i) for i in range(10)])
    return float((head(features).argmax(1) == batch["labels"]).float().mean())


@pytest.fixture(scope="module")
def teacher(data_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("teacher")
    accuracy = make_teacher(data_root, folder)
    assert accuracy > 0.5, f"the teacher should fit its 64 labelled images (chance 0.1), got {accuracy}"
    return folder


def build_distillation(teacher_folder: str):
    torch.manual_seed(0)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("distillation", [encoder], {"teacher": teacher_folder, "augment": False})


def test_teacher_folder_loads_back_exactly(teacher, data_root):
    setup = tiny_setup("image", data_root, rows=8)
    files = {p.name for p in Path(teacher).iterdir()}
    assert {"config.json", "model.safetensors", "head.safetensors", "teacher.json"} <= files
    from transformers import ConvNextModel

    reference = ConvNextModel.from_pretrained(str(teacher)).eval()
    from safetensors.torch import load_file

    head = load_file(str(teacher / "head.safetensors"))
    inputs = setup.domain.make_views(raw_batch(setup, 8), ViewRequest("plain"), torch.Generator())["inputs"]
    objective = build_distillation(str(teacher))
    with torch.no_grad():
        expected = reference(**inputs).pooler_output.flatten(1) @ head["weight"].T + head["bias"]
    torch.testing.assert_close(objective.teacher_logits(inputs), expected)


def test_student_learns_to_agree_with_a_frozen_teacher(teacher, data_root):
    """On plain views (fixed inputs) the cross-entropy to the teacher can fall to the teacher's own
    entropy: the KL divergence left must shrink several-fold and the argmax must come to agree."""
    setup = tiny_setup("image", data_root, rows=16)
    objective = build_objective("distillation", [setup.encoder], {"teacher": str(teacher), "augment": False})
    assert [r.kind for r in objective.view_requests()] == ["plain"]
    assert [r.kind for r in build_distillation(str(teacher)).view_requests()] == ["plain"]
    before = {k: v.clone() for k, v in objective.teacher_encoder.state_dict().items()}
    (views,) = make_views(objective, [setup], [raw_batch(setup, 16)], seed=0)
    teacher_probabilities = objective.teacher_logits(views["inputs"]).softmax(dim=1)
    teacher_entropy = float(-(teacher_probabilities * teacher_probabilities.log()).sum(1).mean())

    def agreement():
        objective.eval()
        with torch.no_grad():
            return float(objective(views).logs["teacher_agreement"])

    initial_agreement = agreement()
    losses = overfit(objective, [setup], [raw_batch(setup, 16)], steps=30, lr=3e-3)
    assert not objective.teacher_encoder.training and not objective.teacher_head.training
    assert all(not p.requires_grad for p in objective.teacher_encoder.parameters())
    for key, value in objective.teacher_encoder.state_dict().items():
        assert torch.equal(value, before[key]), f"teacher {key} changed"
    initial_kl, final_kl = losses[0] - teacher_entropy, sum(losses[-3:]) / 3 - teacher_entropy
    assert final_kl < initial_kl / 4, (teacher_entropy, losses)
    assert agreement() >= max(0.75, initial_agreement + 0.3), (initial_agreement, agreement())
    assert_state_round_trip(objective, lambda: build_objective(
        "distillation", [tiny_setup("image", data_root, rows=16).encoder], {"teacher": str(teacher)}))


def test_bad_teacher_folders_are_named(teacher, data_root, tmp_path):
    encoder = tiny_setup("image", data_root, rows=4).encoder
    with pytest.raises(ValueError, match="options.teacher"):
        build_objective("distillation", [encoder], {})
    with pytest.raises(FileNotFoundError, match="lacks"):
        build_objective("distillation", [encoder], {"teacher": str(tmp_path)})
    vit = tiny_setup("image", data_root, architecture="vit", rows=4).encoder
    with pytest.raises(ValueError, match="'convnext' model, the student a 'vit'"):
        load_teacher(teacher, vit)


def test_distillation_two_processes_equal_one(teacher, data_root):
    setup = tiny_setup("image", data_root, rows=12)
    factory = functools.partial(build_distillation, str(teacher))
    views = make_views(factory(), [setup], [raw_batch(setup, 12)], seed=3)
    distributed_equivalence(factory, views, sizes=[7, 5])


def recipe_teacher_overrides(data_root: Path, folder: Path) -> list[str]:
    """For tests/test_recipes.py: a tiny teacher that fits the recipe's tiny stand-in encoder."""
    make_teacher(data_root, folder, image_size=16, steps=5)
    return [f"objectives.0.options.teacher={folder}"]
