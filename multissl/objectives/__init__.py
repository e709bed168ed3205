"""Self-supervised methods, each one small module composing multissl.losses and multissl.modules.

Objectives are looked up by the name recipes use and imported only when used.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from multissl.features import Encoder
from multissl.objectives.base import Objective, ObjectiveOutput

__all__ = ["OBJECTIVES", "objective_class", "build_objective", "Objective", "ObjectiveOutput"]

#: recipe name -> "module:Class"
OBJECTIVES: dict[str, str] = {
    # contrastive, joint embedding
    "simclr": "multissl.objectives.simclr:SimCLR",
    "moco_v2": "multissl.objectives.moco:MoCoV2",
    "moco_v3": "multissl.objectives.moco:MoCoV3",
    "nnclr": "multissl.objectives.nnclr:NNCLR",
    "supcon": "multissl.objectives.supcon:SupCon",
    # non-contrastive and clustering
    "byol": "multissl.objectives.byol:BYOL",
    "simsiam": "multissl.objectives.simsiam:SimSiam",
    "barlow_twins": "multissl.objectives.barlow_twins:BarlowTwins",
    "vicreg": "multissl.objectives.vicreg:VICReg",
    "swav": "multissl.objectives.swav:SwAV",
    "deepcluster": "multissl.objectives.deepcluster:DeepCluster",
    # sequence and masked prediction
    "cpc": "multissl.objectives.cpc:CPC",
    "mae": "multissl.objectives.mae:MAE",
    "masked_frames": "multissl.objectives.masked_frames:MaskedFramePrediction",
    "mlm": "multissl.objectives.mlm:MaskedLanguageModeling",
    "simcse": "multissl.objectives.simcse:SimCSE",
    "denoising_autoencoder": "multissl.objectives.autoencoding:DenoisingAutoencoder",
    "context_encoder": "multissl.objectives.autoencoding:ContextEncoder",
    # pretext tasks and distillation
    "rotation": "multissl.objectives.pretext:RotationPrediction",
    "jigsaw": "multissl.objectives.pretext:JigsawPuzzle",
    "relative_position": "multissl.objectives.pretext:RelativePosition",
    "colorization": "multissl.objectives.colorization:Colorization",
    "distillation": "multissl.objectives.distillation:Distillation",
    # cross-modal
    "clip": "multissl.objectives.clip:CLIP",
}


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known objectives: {sorted(OBJECTIVES)}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_objective(name: str, encoders: list[Encoder], options: dict[str, Any] | None = None) -> Objective:
    """Build objective ``name`` around ``encoders`` (one per domain it reads, recipe order).

    ``options`` are the constructor's keyword arguments; an unknown one is an error naming it and
    the known ones.
    """
    cls = objective_class(name)
    options = dict(options or {})
    parameters = inspect.signature(cls.__init__).parameters
    positional = [p for p in parameters.values() if p.kind == p.POSITIONAL_OR_KEYWORD][1:]  # drop self
    encoder_args = positional[: len(encoders)]
    keywords = {p.name for p in parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    keywords -= {p.name for p in encoder_args} | {"self"}
    unknown = sorted(set(options) - keywords)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for objective {name!r}; known: {sorted(keywords)}")
    needed = [p for p in positional if p.default is p.empty]
    if len(needed) != len(encoders):
        raise ValueError(
            f"objective {name!r} trains {len(needed)} encoder(s) ({[p.name for p in needed]}), "
            f"but the recipe gives it {len(encoders)} domain(s)"
        )
    return cls(*encoders, **options)
