"""MoCo v3's ViT stabilisers and MAE's positions: fixed 2-D sine-cosine position embeddings and a
frozen random patch projection, built by the image domain, trained by no optimiser, saved and loaded
back by plain transformers."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

from domains import EncoderConfig, build_domain
from multissl.modules import sincos_2d
from multissl.optim import parameter_groups


def test_sincos_positions_and_frozen_patch_projection(tmp_path):
    domain = build_domain("image", {"image_size": 16, "patch_size": 4, "vit_position_embedding": "sincos",
                                    "vit_freeze_patch_embedding": True})
    encoder = domain.build_encoder(EncoderConfig("vit", "tiny"))
    embeddings = encoder.model.embeddings
    positions = embeddings.position_embeddings[0]
    # CLS at position 0 gets a zero code, the 4 x 4 patches the MAE-form 2-D codes, row-major
    torch.testing.assert_close(positions[0], torch.zeros(positions.shape[1]))
    torch.testing.assert_close(positions[1:], sincos_2d(4, 4, positions.shape[1]))
    frozen = {id(embeddings.position_embeddings), *map(id, embeddings.patch_embeddings.projection.parameters())}
    trained = {id(p) for group in parameter_groups(encoder, 0.1) for p in group["params"]}
    assert frozen and not frozen & trained, "frozen embeddings must not reach the optimiser"
    encoder.save_pretrained(str(tmp_path))
    loaded = AutoModel.from_pretrained(str(tmp_path))
    torch.testing.assert_close(loaded.embeddings.position_embeddings, embeddings.position_embeddings)


def test_default_vit_learns_its_positions_and_convnets_refuse_vit_settings():
    encoder = build_domain("image", {"image_size": 16}).build_encoder(EncoderConfig("vit", "tiny"))
    assert encoder.model.embeddings.position_embeddings.requires_grad
    with pytest.raises(ValueError, match="apply to ViT encoders"):
        build_domain("image", {"image_size": 16, "vit_position_embedding": "sincos"}).build_encoder(
            EncoderConfig("convnext", "tiny"))
