"""SimCLRv2's fine-tuned network survives save_teacher/load_teacher exactly, head layers included,
and a folder whose parts do not belong together is refused (it used to load and silently apply the
classifier to the wrong features)."""

from __future__ import annotations

import pytest
import torch

from domains import EncoderConfig, build_domain
from multissl.objectives import build_objective
from multissl.teacher import HeadedEncoder, load_teacher, save_teacher


def _simclr_v2(seed: int):
    torch.manual_seed(seed)
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("convnext", "tiny"))
    return build_objective("simclr", [encoder], {"head_layers": 3, "hidden_dim": 24, "projection_dim": 8})


@pytest.mark.parametrize("up_to", [1, 2, 3])
def test_fine_tuned_network_from_the_middle_of_the_head_round_trips_exactly(tmp_path, up_to):
    objective = _simclr_v2(seed=0)
    network = objective.encoder_with_head(up_to)
    # move the weights away from their initialisation, BN running statistics included
    network.train()
    with torch.no_grad():
        for _ in range(3):
            network(pixel_values=torch.randn(8, 3, 16, 16))
        for parameter in objective.head.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    network.eval()
    classifier = torch.nn.Linear(network.dim, 10)
    save_teacher(tmp_path, network, classifier)

    student_like = _simclr_v2(seed=1).encoder  # another init: everything must come from the folder
    teacher, head = load_teacher(tmp_path, student_like)
    assert isinstance(teacher, HeadedEncoder) and teacher.dim == network.dim
    pixels = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        expected = classifier(network(pixel_values=pixels).pooled)
        torch.testing.assert_close(head(teacher(pixel_values=pixels).pooled), expected, rtol=0, atol=0)


def test_a_classifier_that_does_not_fit_the_saved_network_is_refused(tmp_path):
    objective = _simclr_v2(seed=0)
    network = objective.encoder_with_head(1).eval()
    save_teacher(tmp_path, network, torch.nn.Linear(network.dim, 10))
    for name in ("projection_head.safetensors", "projection_head.json"):
        (tmp_path / name).unlink()  # the head layers lost: the classifier would read h instead
    if network.dim == objective.encoder.dim:
        pytest.skip("the head's hidden width equals the encoder's: pick widths that differ")
    with pytest.raises(ValueError, match="do not belong together"):
        load_teacher(tmp_path, _simclr_v2(seed=1).encoder)
