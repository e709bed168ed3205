"""The ``multissl`` command.

    multissl train RECIPE [key=value ...]   run a recipe (file path or shipped recipe name); errors
                                            in the recipe or data: one line, exit code 2 (--debug:
                                            the traceback)
    multissl recipes                        list the shipped recipes, one line each
    multissl demo                           the main job: SSL on scikit-learn's digits + probe table
    multissl probe ...                      probe an encoder folder or Hub id on a dataset
    multissl push FOLDER REPO_ID            publish an encoder folder to the Hugging Face Hub

``accelerate launch -m multissl.train RECIPE [key=value ...]`` runs the same thing as
``multissl train`` on several processes or machines.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from multissl.config import recipe_help, recipes_dir

__all__ = ["main"]


_TRAIN_EPILOG = """

outputs (in output_dir; shipped recipes: runs/<recipe>): recipe.yaml (the resolved recipe), log.jsonl (scalars per
logged step), logs/ (TensorBoard), checkpoints/step-N/ (the newest checkpoint.keep), encoders/NAME/
(each encoder as a transformers folder with its model card; `multissl probe --encoder` and
`multissl push` take it).

resume: checkpoint.resume=auto (the default) continues the newest intact checkpoint in output_dir
when the recipe matches the one it was trained with; a PATH resumes that checkpoint; null starts
fresh and refuses a folder that already holds checkpoints. Changing what a run is (data, model,
objectives, batch, seed, optimiser) needs a new output_dir.

several processes: accelerate launch [flags] -m multissl.train RECIPE [key=value ...]"""


def _list_recipes() -> int:
    found = sorted(recipes_dir().glob("*.yaml"))
    if not found:
        print(f"no recipes found in {recipes_dir()}")
        return 1
    width = max(len(p.stem) for p in found)
    for path in found:
        try:
            description = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
            description = "(not valid YAML)"
        print(f"{path.stem:<{width}}  {' '.join(str(description).split())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``multissl`` command line: train, recipes, demo, probe, push."""
    parser = argparse.ArgumentParser(prog="multissl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="run a recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a recipe: a shipped one by name (`multissl recipes`) or a YAML file, with key=value overrides.",
        epilog=recipe_help() + _TRAIN_EPILOG)
    train.add_argument("recipe", help="recipe file or shipped recipe name (see `multissl recipes`)")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.max_steps=10")
    train.add_argument("--debug", action="store_true",
                       help="show the traceback of recipe, data and checkpoint errors (also MULTISSL_DEBUG=1); "
                            "without it they print one line and exit with code 2")

    commands.add_parser("recipes", help="list the shipped recipes")

    demo = commands.add_parser("demo", help="the main job on scikit-learn's digits, then a probe table")
    demo.add_argument("overrides", nargs="*", help="key=value overrides of the demo recipe")
    demo.add_argument("--output-dir", default="runs/demo-digits")

    from multissl.hub import add_push_arguments
    from multissl.probes.command import add_probe_arguments

    add_probe_arguments(commands.add_parser("probe", help="probe an encoder on a dataset"))
    add_push_arguments(commands.add_parser("push", help="push an encoder folder to the Hugging Face Hub"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "recipes":
        return _list_recipes()
    if args.command == "train":
        from multissl.train import main as train_main

        return train_main([args.recipe, *args.overrides, *(["--debug"] if args.debug else [])])
    if args.command == "demo":
        from multissl.demo import run_demo

        from multissl.errors import run_reporting

        return run_reporting(lambda: run_demo(args.overrides, args.output_dir))
    if args.command == "probe":
        from multissl.console import quiet_library_progress
        from multissl.probes.command import run_probe_command

        with quiet_library_progress():  # the table is the output, not transformers' loading bars
            return run_probe_command(args)
    from multissl.hub import run_push_command

    return run_push_command(args)


if __name__ == "__main__":
    sys.exit(main())
