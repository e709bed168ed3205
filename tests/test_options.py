"""Typed options at every seam: a recipe's objective, domain and probe options are checked against
their declarations when the recipe loads, before any data is read, with one line naming the file
and the full key, and the close matches suggested; YAML 1.1's float quirks do not bite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from multissl.config import RecipeError, load_recipe
from multissl.objectives import objective_class, objective_options_class
from multissl.options import OptionError, PositiveInt, build, load_yaml, signature_dataclass
from multissl.train import read_recipe

RECIPE = {
    # a Hub id that cannot be reached here: a check that ran after loading data would fail on it
    "data": {"path": "someone/unreachable-dataset", "columns": {"image": "img"}},
    "domains": {"image": {"encoder": {"architecture": "resnet", "size": "tiny"}, "options": {"image_size": 16}}},
    "objectives": [{"name": "simclr", "domains": ["image"], "options": {"temperature": 0.2}}],
    "train": {"batch_size": 8, "max_steps": 3},
}


@pytest.fixture
def recipe_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    return path


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("objectives.0.options.temprature=0.1",
         ["unknown key 'objectives[0].options.temprature'", "did you mean 'temperature'"]),
        ("objectives[0].options.temperature='0.2'",
         ["key 'objectives[0].options.temperature' expects a number, got '0.2'", "without quotes"]),
        ("objectives.0.options.head_layers=two", ["key 'objectives[0].options.head_layers' expects an integer"]),
        ("objectives.0.name=simclrr", ["key 'objectives[0].name' names no objective 'simclrr'", "did you mean 'simclr'"]),
        ("domains.image.options.image_size='32'", ["key 'domains.image.options.image_size' expects an integer"]),
        ("domains.image.options.imgae_size=32", ["unknown key 'domains.image.options.imgae_size'",
                                                 "did you mean 'image_size'"]),
        ("domains.image.options.augment.jiter_strength=0.5", ["unknown key 'domains.image.options.augment.jiter_strength'"]),
        ("domains.image.options.resize=squash", ["key 'domains.image.options.resize' expects one of"]),
        ("domains.image.options.channels=2", ["key 'domains.image.options.channels' expects one of 1, 3"]),
        ("domains.image.options.mask_ratio=1.5", ["key 'domains.image.options'", "mask_ratio must be in [0, 1)"]),
        ("train.batch_size=0", ["key 'train.batch_size' must be at least 1"]),
        ("data.limit=-3", ["key 'data.limit' must be at least 1"]),
        ("train.epochs=-1", ["set exactly one of"]),
        ("optimizer.nme=sgd", ["unknown key 'optimizer.nme'", "did you mean 'name'"]),
    ],
)
def test_a_wrong_option_is_one_line_naming_the_file_and_the_full_key(recipe_file, override, fragments):
    with pytest.raises(RecipeError) as error:
        read_recipe(str(recipe_file), [override])
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(recipe_file)), message
    for fragment in fragments:
        assert fragment in message, message


def test_negative_epochs_are_refused_when_they_are_the_length(recipe_file):
    with pytest.raises(RecipeError, match="key 'train.epochs' must be greater than 0"):
        read_recipe(str(recipe_file), ["train.max_steps=null", "train.epochs=-1"])


def test_floats_in_every_python_spelling_are_numbers(tmp_path):
    text = yaml.safe_dump(RECIPE).replace("batch_size: 8", "batch_size: 8\n  grad_clip: 1.0e12") + \
        "optimizer: {lr: 3e-4, weight_decay: 1E-6}\n"
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    recipe = read_recipe(str(path), ["objectives.0.options.temperature=5e-2"])
    assert recipe.optimizer.lr == 3e-4 and recipe.optimizer.weight_decay == 1e-6
    assert recipe.train.grad_clip == 1e12 and recipe.objectives[0].options["temperature"] == 0.05
    assert load_yaml("a: 1e5\nb: '3e-4'\nc: v1.0e2\nd: 10") == {"a": 1e5, "b": "3e-4", "c": "v1.0e2", "d": 10}


def test_max_steps_alone_replaces_the_files_epochs(tmp_path):
    data = {**RECIPE, "train": {"batch_size": 8, "epochs": 100}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path, ["train.max_steps=20"])
    assert recipe.train.max_steps == 20 and recipe.train.epochs is None


def test_options_are_stored_converted_and_whole_numbers_accepted_for_ints(recipe_file):
    recipe = read_recipe(str(recipe_file), ["objectives.0.options.projection_dim=1.28e2"])
    assert recipe.objectives[0].options["projection_dim"] == 128
    assert isinstance(recipe.objectives[0].options["projection_dim"], int)


def test_every_registered_objective_declares_typed_options():
    from multissl.objectives import OBJECTIVES

    for name in OBJECTIVES:
        declaration = objective_options_class(objective_class(name))
        assert declaration.__dataclass_fields__, name


@dataclass
class Inner:
    rate: float = 0.1


@dataclass
class Outer:
    inner: Inner


def test_signature_dataclass_and_build_check_literals_ranges_and_nesting():
    def method(encoder, *, context: Literal["gru", "transformer"] = "gru", steps: PositiveInt = 3):
        return context, steps

    declaration = signature_dataclass(method, "MethodOptions", skip=1)
    assert build(declaration, {"context": "transformer"}).steps == 3
    with pytest.raises(OptionError, match="key 'options.context' expects one of 'gru', 'transformer'"):
        build(declaration, {"context": "lstm"}, "options")
    with pytest.raises(OptionError, match="key 'options.steps' must be at least 1"):
        build(declaration, {"steps": 0}, "options")

    assert build(Outer, {"inner": {"rate": 1}}).inner.rate == 1.0
    with pytest.raises(OptionError, match="missing required key 'outer.inner'"):
        build(Outer, {}, "outer")
