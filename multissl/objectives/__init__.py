"""Self-supervised methods, each one small module composing multissl.losses and multissl.modules.

Objectives are looked up by the name recipes use and imported only when used.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from multissl.features import Encoder
from multissl.options import build, closest, signature_dataclass
from multissl.objectives.base import Objective, ObjectiveOutput

__all__ = ["OBJECTIVES", "objective_class", "objective_options_class", "encoder_parameters", "build_objective",
           "Objective", "ObjectiveOutput"]

#: recipe name -> "module:Class"
OBJECTIVES: dict[str, str] = {
    # contrastive, joint embedding
    "simclr": "multissl.objectives.simclr:SimCLR",
    "moco_v2": "multissl.objectives.moco:MoCoV2",
    "moco_v3": "multissl.objectives.moco:MoCoV3",
    "nnclr": "multissl.objectives.nnclr:NNCLR",
    "supcon": "multissl.objectives.supcon:SupCon",
    "spectral_contrastive": "multissl.objectives.spectral_contrastive:SpectralContrastive",
    "imix": "multissl.objectives.imix:IMix",
    # non-contrastive and clustering
    "byol": "multissl.objectives.byol:BYOL",
    "simsiam": "multissl.objectives.simsiam:SimSiam",
    "barlow_twins": "multissl.objectives.barlow_twins:BarlowTwins",
    "vicreg": "multissl.objectives.vicreg:VICReg",
    "swav": "multissl.objectives.swav:SwAV",
    "deepcluster": "multissl.objectives.deepcluster:DeepCluster",
    # self-distillation
    "dino": "multissl.objectives.dino:DINO",
    "ibot": "multissl.objectives.ibot:IBOT",
    "ijepa": "multissl.objectives.ijepa:IJEPA",
    "data2vec": "multissl.objectives.data2vec:Data2Vec",
    # sequence and masked prediction
    "cpc": "multissl.objectives.cpc:CPC",
    "mae": "multissl.objectives.mae:MAE",
    "masked_frames": "multissl.objectives.masked_frames:MaskedFramePrediction",
    "hubert": "multissl.objectives.hubert:HuBERT",
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
    "siglip": "multissl.objectives.siglip:SigLIP",
    # memory-bank family (one stored feature per training sample)
    "instance_discrimination": "multissl.objectives.instance_discrimination:InstanceDiscrimination",
    "pirl": "multissl.objectives.pirl:PIRL",
    "cmc": "multissl.objectives.cmc:CMC",
}


def objective_class(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}{closest(name, OBJECTIVES)}; known objectives: {sorted(OBJECTIVES)}")
    module, cls = OBJECTIVES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def encoder_parameters(cls: type[Objective]) -> list[str]:
    """The constructor's positional parameters: the encoders it trains, one per domain it reads."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return [p.name for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty]


def objective_options_class(cls: type[Objective]) -> type:
    """The typed declaration of an objective's recipe options: a dataclass made from its
    constructor's keyword parameters (names, annotations, defaults), so they are declared once."""
    return signature_dataclass(cls.__init__, f"{cls.__name__}Options", skip=len(encoder_parameters(cls)))


def build_objective(name: str, encoders: list[Encoder], options: dict[str, Any] | None = None,
                    key: str = "options") -> Objective:
    """Build objective ``name`` around ``encoders`` (one per domain it reads, recipe order).

    ``options`` are the constructor's keyword arguments, checked against their annotations
    (:class:`~multissl.options.OptionError` naming ``key``.option on an unknown name or a wrong type).
    """
    cls = objective_class(name)
    needed = encoder_parameters(cls)
    if len(needed) != len(encoders):
        raise ValueError(
            f"objective {name!r} trains {len(needed)} encoder(s) ({needed}), "
            f"but the recipe gives it {len(encoders)} domain(s)"
        )
    options = dict(options or {})
    build(objective_options_class(cls), options, key)
    return cls(*encoders, **options)
