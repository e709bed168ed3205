"""README.md cannot drift: every shell command in its ```bash blocks is read from the file and
checked against the code it names. Recipes resolve and every override key exists (the recipe loads
with it), `multissl` sub-commands parse with the real CLI parser, `accelerate launch` lines parse
with accelerate's own parser and name a recipe that loads, `make` targets exist. A command the
test does not recognise fails it, so a new kind of command needs a check here.

The own-data commands are also run as written (tests/test_user_path.py), and the demo's table is
checked against the shape `multissl demo` prints (multissl.demo.format_table)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from multissl.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def shell_commands() -> list[list[str]]:
    """Every command of the README's bash blocks: continuation lines joined, comments and leading
    environment assignments (OMP_NUM_THREADS=1 ...) dropped, split as a shell would."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            if words:
                commands.append(words)
    return commands


COMMANDS = shell_commands()


def _id(words: list[str]) -> str:
    return " ".join(words)[:70]


def _check_recipe(name: str, overrides: list[str]) -> None:
    from multissl.train import read_recipe

    # paths in the README are the user's (./my_photos): every key and value is checked, not the files
    read_recipe(name, overrides, check_paths=False)


def test_the_readme_has_the_two_newcomer_commands_first():
    first = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    assert [shlex.split(line, comments=True) for line in first.splitlines()] == [["make", "demo"], ["make", "test"]]


@pytest.mark.parametrize("words", COMMANDS, ids=_id)
def test_every_readme_command_names_what_exists(words):
    program, arguments = words[0], words[1:]
    if program == "make":
        targets = re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M)
        assert set(arguments) <= set(targets), f"Makefile has no target {set(arguments) - set(targets)}"
    elif program == ".":
        assert arguments == [".venv/bin/activate"]
    elif program == "multissl":
        if arguments[:1] == ["train"] and "--help" not in arguments:
            _check_recipe(arguments[1], arguments[2:])
        else:
            try:
                build_parser().parse_args(arguments)
            except SystemExit as stop:  # --help exits 0 after printing; anything else is a bad line
                assert stop.code == 0 and "--help" in arguments, f"multissl {' '.join(arguments)}: exit {stop.code}"
    elif program == "accelerate":
        from accelerate.commands.launch import launch_command_parser

        assert arguments[0] == "launch"
        launched = launch_command_parser().parse_args(arguments[1:])
        assert launched.module and launched.training_script == "multissl.train", arguments
        # a recipe name, not a path relative to the clone: the command works from any folder
        assert not launched.training_script_args[0].endswith(".yaml"), launched.training_script_args
        _check_recipe(launched.training_script_args[0], launched.training_script_args[1:])
    else:
        pytest.fail(f"README command {' '.join(words)!r}: no check for {program!r} in tests/test_readme.py")


def test_the_readme_shows_every_kind_of_command():
    programs = {words[0] for words in COMMANDS}
    assert {"make", "multissl", "accelerate"} <= programs
    subcommands = {words[1] for words in COMMANDS if words[0] == "multissl"}
    assert {"train", "probe", "push", "recipes"} <= subcommands
    assert any("--map" in words for words in COMMANDS), "the README shows the embedding map"


def test_the_demo_table_has_the_shape_the_demo_prints():
    from multissl.demo import format_table

    block = re.search(r"<!-- demo-table:[^>]*-->\s*```\n(.*?)```", README, re.S)
    assert block, "README.md lost the demo's table (the <!-- demo-table: ... --> marker before a ``` block)"
    printed = block.group(1).rstrip("\n")
    header = re.match(r"held-out accuracy \((\d+) digits never seen in training; probes fit on (\d+)\)", printed)
    assert header, printed.splitlines()[0]
    results = {}
    for line in printed.splitlines()[2:5]:
        label, linear, knn, few = re.fullmatch(r"(.+?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line).groups()
        results[label] = {"linear": float(linear), "knn": float(knn), "few_labels": float(few)}
    assert list(results) == ["learned encoder", "random init", "raw pixels"]
    # the numbers are the README's; the layout, rows and notes must be exactly what the demo prints
    assert format_table(results, int(header.group(2)), int(header.group(1))) == printed
