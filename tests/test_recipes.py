"""Every shipped recipe parses, and runs 2 steps on local data with a tiny config override.

Recipes point at Hub datasets by default; here their data is swapped for stand-ins from the
synthetic tree laid out as ../shared/data (the ``data_root`` fixture, tests/fixture_data.py),
chosen by which domains the recipe uses, and every encoder becomes the tiny preset.
A recipe that needs other stand-in data names it in ``SPECIAL_DATA`` below.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
import yaml

from multissl.config import recipes_dir
from multissl.config import load_recipe
from multissl.hub import load_joint_projection, read_encoder_metadata

RECIPES = sorted(recipes_dir().glob("*.yaml"))


def _stand_in_data(domain_types: frozenset[str], shared: Path) -> tuple[list[str], dict[str, dict]]:
    """(data overrides, per-domain-type option overrides) for a set of domain types."""
    image = {"image_size": 16}
    audio = {"sample_rate": 8000, "crop_seconds": 0.5, "sequence_seconds": 0.5, "max_seconds": 1.0,
             "filename_pattern": r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<take>\d+)\.wav$"}
    text = {"tokenizer": "train", "vocab_size": 300, "max_length": 32}
    if domain_types == {"image"}:
        data = {"path": f"{shared}/image/cifar10/train-00000-of-00004.parquet", "columns": {"image": "img", "label": "label"}}
    elif domain_types == {"audio"}:
        data = {"path": f"{shared}/audio/fsdd/recordings", "columns": {"label": "label"}}
    elif domain_types == {"text"}:
        data = {"path": f"{shared}/text/corpus/multi30k_captions.txt", "columns": {}}
    elif domain_types == {"image", "audio"}:  # paired by label: the image domain's data leads
        data = {"path": f"{shared}/image/mnist/t10k-images-idx3-ubyte.gz", "columns": {"image": "image", "label": "label"}}
    elif domain_types == {"image", "text"}:
        data = {"path": f"{shared}/pairs/flickr8k_1k/captions.csv", "columns": {"image": "image", "text": "caption"}}
        image = {**image, "image_root": f"{shared}/pairs/flickr8k_1k/images"}  # the CSV names files in images/
    else:
        pytest.skip(f"no stand-in data for domains {sorted(domain_types)} yet")
    return data, {"image": image, "audio": audio, "text": text}


#: recipe stem -> data mapping to use instead of the generic stand-in (e.g. labelled pairs); "{root}"
#: in a path is the data folder
SPECIAL_DATA: dict[str, dict] = {
    "simcse-text-supervised": {"path": "{root}/text/stsb/sts-train.csv",
                               "columns": {"text": "sentence1", "text_pair": "sentence2"}},
}


#: recipe stem -> "module:function" preparing what a recipe needs beside data (e.g. a distillation
#: teacher); called with (the data folder, a scratch folder), it returns extra overrides
SPECIAL_SETUP: dict[str, str] = {
    "distillation-image": "tests.test_objective_distillation:recipe_teacher_overrides",
}


def _tiny_overrides(path: Path, shared: Path, output_dir: Path) -> list[str]:
    raw = yaml.safe_load(path.read_text())
    types = frozenset((spec or {}).get("type") or name for name, spec in raw["domains"].items())
    data, options = _stand_in_data(types, shared)
    if path.stem in SPECIAL_DATA:
        data = {**SPECIAL_DATA[path.stem], "path": SPECIAL_DATA[path.stem]["path"].format(root=shared)}
    overrides = [
        f"data.path={data['path']}",
        f"data.columns={yaml.safe_dump(data['columns'], default_flow_style=True).strip()}",
        "data.format=null", "data.subset=null", "data.split=train", "data.limit=32", "data.streaming=false",
        "train.max_steps=2", "train.epochs=null", "train.batch_size=8", "train.precision=fp32",
        "train.num_workers=0", "train.compile=false",
        "checkpoint.every=2", "checkpoint.resume=null", f"output_dir={output_dir}",
        "logging.trackers=[]", "logging.progress_bar=false", "logging.health_every=1",
        "probes=[]", "hub.push=false",
    ]
    for name, spec in raw["domains"].items():
        kind = (spec or {}).get("type") or name
        overrides += [f"domains.{name}.encoder.size=tiny", f"domains.{name}.encoder.name_or_path=null"]
        if (spec or {}).get("data"):  # a domain reading its own dataset gets its own stand-in
            own, _ = _stand_in_data(frozenset({kind}), shared)
            overrides += [f"domains.{name}.data.path={own['path']}", f"domains.{name}.data.limit=null",
                          f"domains.{name}.data.columns={yaml.safe_dump(own['columns'], default_flow_style=True).strip()}"]
        for key, value in options[kind].items():
            overrides.append(f"domains.{name}.options.{key}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    return overrides


def test_recipes_exist():
    assert RECIPES, f"no recipes in {recipes_dir()}"


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_parses_as_shipped(path):
    recipe = load_recipe(path, check_paths=False)
    assert recipe.description, f"{path.name} needs a one-line description (shown by `multissl recipes`)"
    assert "CPU" in recipe.description or "GPU" in recipe.description, \
        f"{path.name}: the description must say what hardware the recipe is sized for"
    assert path.stem.split("-")[0].replace("_", "") in "".join(o.name.replace("_", "") for o in recipe.objectives) \
        or len(recipe.objectives) > 1, f"{path.name}: the file name should start with its method"


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_two_tiny_steps(path, data_root, tmp_path):
    from multissl.train import train

    overrides = _tiny_overrides(path, data_root, tmp_path / "run")
    if path.stem in SPECIAL_SETUP:
        module, function = SPECIAL_SETUP[path.stem].split(":")
        overrides += getattr(importlib.import_module(module), function)(data_root, tmp_path / "setup")
    recipe = load_recipe(path, overrides)
    result = train(recipe, str(path))
    assert result.steps == 2
    assert all(l == l and abs(l) != float("inf") for l in result.losses), result.losses
    cross_modal = {domain for o in recipe.objectives if o.name in ("clip", "siglip") for domain in o.domains}
    for name, folder in result.encoder_dirs.items():
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        # a CLIP- or SigLIP-trained encoder keeps its map into the joint space beside the transformers weights
        projection = load_joint_projection(folder)
        assert (projection is not None) == (name in cross_modal), (name, cross_modal)
        if projection is not None:
            metadata = read_encoder_metadata(folder)
            assert list(projection.shape) == metadata["joint_projection"]["shape"]
            assert projection.shape[1] == metadata["dim"] and torch.isfinite(projection).all()
