"""Recipe parsing: typed fields, overrides, and errors that name the key and the file."""

from __future__ import annotations

import pytest
import yaml

from multissl.config import RecipeError, load_recipe, parse_recipe, recipe_to_dict

MINIMAL = {
    "data": {"path": "sklearn:digits", "columns": {"image": "image", "label": "label"}},
    "domains": {"image": {"encoder": {"architecture": "resnet", "size": "tiny"}, "options": {"image_size": 16}}},
    "objectives": [{"name": "simclr", "domains": ["image"], "options": {"temperature": 0.2}}],
    "train": {"batch_size": 8, "max_steps": 3},
}


def write(tmp_path, data, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_minimal_recipe_fills_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL))
    assert recipe.train.batch_size == 8 and recipe.train.max_steps == 3
    assert recipe.optimizer.name == "adamw" and recipe.checkpoint.resume == "auto"
    assert recipe.domains["image"].encoder.size == "tiny"
    assert recipe.objectives[0].options == {"temperature": 0.2}
    # the resolved form parses back to the same recipe
    assert parse_recipe(recipe_to_dict(recipe)) == recipe


def test_overrides_set_nested_fields_and_list_items(tmp_path):
    recipe = load_recipe(
        write(tmp_path, MINIMAL),
        ["train.batch_size=4", "objectives.0.options.temperature=0.1", "domains.image.encoder.size=small",
         "optimizer.betas=[0.8, 0.9]", "train.precision=bf16"],
    )
    assert recipe.train.batch_size == 4
    assert recipe.objectives[0].options["temperature"] == 0.1
    assert recipe.domains["image"].encoder.size == "small"
    assert recipe.optimizer.betas == (0.8, 0.9)
    assert recipe.train.precision == "bf16"


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.batch_sise=4", "unknown key 'train.batch_sise'"),
        ("bogus=1", "unknown key 'bogus'"),
        ("train.batch_size=many", "key 'train.batch_size' expects an integer"),
        ("train.batch_size=true", "key 'train.batch_size' expects an integer"),
        ("train.precision=fp8", "key 'train.precision' expects one of"),
        ("optimizer.lr=fast", "key 'optimizer.lr' expects a number"),
        ("objectives.3.weight=2", "override key 'objectives.3' needs an index below 1"),
        ("train.batch_size=0", "key 'train.batch_size' must be at least 1"),
        ("objectives.0.domains=[audio]", "key 'objectives[0].domains' names domain 'audio'"),
        ("train.epochs=2", "set exactly one of 'train.max_steps' and 'train.epochs'"),
        ("data.path=./no/such/folder", "key 'data.path' names './no/such/folder', which does not exist"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path, override, fragment):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(RecipeError) as error:
        load_recipe(path, [override])
    assert fragment in str(error.value)
    assert str(path) in str(error.value)


def test_missing_required_key_and_missing_file(tmp_path):
    data = {k: v for k, v in MINIMAL.items() if k != "objectives"}
    with pytest.raises(RecipeError, match="missing required key 'objectives'"):
        load_recipe(write(tmp_path, data))
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_hub_ids_are_not_checked_as_local_paths(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), ["data.path=uoft-cs/cifar10"])
    assert recipe.data.path == "uoft-cs/cifar10"


def test_existing_local_glob_passes(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    recipe = load_recipe(write(tmp_path, MINIMAL), [f"data.path={tmp_path}/*.parquet"])
    assert recipe.data.path.endswith("*.parquet")
