"""The main job (``make demo`` / ``multissl demo``): self-supervised learning you can watch work.

1. Train SimCLR on scikit-learn's handwritten digits (shipped with scikit-learn, so no network),
   80% of the rows, labels unused (recipe ``recipes/simclr-digits.yaml``).
2. Probe on the held-out 20%: a linear probe (learning rate / weight decay chosen on a validation
   split carved from the training rows), a cosine kNN, and the linear probe trained on only 10
   labelled digits per class (the mean over 5 seeded draws: where self-supervision should pay), for
   - the learned encoder, loaded back from its Hugging Face folder,
   - the same encoder at random initialisation (the run's seed, so the very weights training
     started from),
   - the raw pixels.
3. Print the table, write it as JSON beside the run, and say where the encoder was saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from accelerate.utils import set_seed

from domains import build_domain
from multissl.domain import Domain
from multissl.config import Recipe, RecipeError, resolve_recipe
from multissl.console import quiet_library_progress
from multissl.features import Encoder
from multissl.views import ViewRequest
from multissl.probes.extract import extract_from_dataset
from multissl.probes.classification import linear_probe
from multissl.probes.knn import knn_classify

__all__ = ["run_demo", "evaluate_digits"]

DEMO_RECIPE = "simclr-digits"
HELD_OUT = "train[80%:]"
KNN_K = 20
FEW_LABELS_PER_CLASS = 10
FEW_LABEL_DRAWS = 5


def _pixels(domain: Domain, rows) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw pixel vectors (the normalised plain view, flattened) and labels."""
    batch = domain.collate([rows[i] for i in range(len(rows))])
    view = domain.make_views(batch, ViewRequest("plain"), torch.Generator())
    return view["inputs"]["pixel_values"].flatten(1), batch["labels"]


def _features(encoder: Encoder, domain: Domain, rows) -> tuple[torch.Tensor, torch.Tensor]:
    extracted = extract_from_dataset(encoder, domain, rows, batch_size=256)
    return extracted.pooled, extracted.labels


def few_labels(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted row indices of ``per_class`` rows of every class, drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for value in torch.unique(labels):
        rows = (labels == value).nonzero().flatten()
        chosen.append(rows[torch.randperm(len(rows), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def _scores(train: tuple, test: tuple) -> dict[str, float]:
    (train_x, train_y), (test_x, test_y) = train, test
    linear = linear_probe(train_x, train_y, test_x, test_y)
    knn = knn_classify(train_x, train_y, test_x, test_y, ks=(KNN_K,))
    few = []
    for seed in range(FEW_LABEL_DRAWS):
        rows = few_labels(train_y, FEW_LABELS_PER_CLASS, seed)
        few.append(linear_probe(train_x[rows], train_y[rows], test_x, test_y, seed=seed).accuracy)
    return {"linear": linear.accuracy, "knn": knn[KNN_K], "few_labels": sum(few) / len(few)}


def evaluate_digits(recipe: Recipe, encoder_dir: Path) -> tuple[dict[str, dict[str, float]], int, int]:
    """Probe accuracies on the held-out rows for the learned encoder, random init and raw pixels,
    with the numbers of training and held-out rows."""
    name, spec = next(iter(recipe.domains.items()))
    domain = build_domain(spec.type or name, spec.options)
    train_rows = domain.load(recipe.data)
    test_rows = domain.load(dataclasses.replace(recipe.data, split=HELD_OUT))

    learned = domain.build_encoder(dataclasses.replace(spec.encoder, name_or_path=str(encoder_dir)))
    set_seed(recipe.train.seed)  # the seed training started from: the very initial weights
    random_init = domain.build_encoder(spec.encoder)
    results = {}
    for label, encoder in (("learned encoder", learned), ("random init", random_init)):
        results[label] = _scores(_features(encoder, domain, train_rows), _features(encoder, domain, test_rows))
    results["raw pixels"] = _scores(_pixels(domain, train_rows), _pixels(domain, test_rows))
    return results, len(train_rows), len(test_rows)


def format_table(results: dict[str, dict[str, float]], num_train: int, num_test: int) -> str:
    lines = [f"held-out accuracy ({num_test} digits never seen in training; probes fit on {num_train})",
             f"{'':<18}{'linear probe':>14}{f'kNN (k={KNN_K})':>14}{f'{FEW_LABELS_PER_CLASS} labels/class':>17}"]
    for label, scores in results.items():
        lines.append(f"{label:<18}{scores['linear']:>14.3f}{scores['knn']:>14.3f}{scores['few_labels']:>17.3f}")
    lines.append(f"({FEW_LABELS_PER_CLASS} labels/class: the linear probe fit on {FEW_LABELS_PER_CLASS} labelled digits "
                 f"of each class, mean of {FEW_LABEL_DRAWS} draws)")
    return "\n".join(lines)


def run_demo(overrides: list[str] | None = None, output_dir: str = "runs/simclr-digits") -> int:
    from multissl.train import read_recipe, train

    path = resolve_recipe(DEMO_RECIPE)
    try:
        recipe = read_recipe(path, [f"output_dir={output_dir}", *(overrides or [])])
    except RecipeError as error:
        print(f"error: {error}")
        return 2
    # One thread unless OMP_NUM_THREADS says otherwise: on a busy 2-core machine torch's default two
    # threads ran 5x slower than one. The table depends on the count (float sums in another order
    # move the training a little; README gives both), so the README's is for one thread.
    threads = int(os.environ.get("OMP_NUM_THREADS") or 1)
    torch.set_num_threads(threads)
    print(f"multissl demo: SimCLR on scikit-learn's digits ({path}), {threads} torch thread(s)")
    result = train(recipe, path)
    encoder_dir = result.encoder_dirs[next(iter(recipe.domains))]
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; probing ...")
    with quiet_library_progress():
        results, num_train, num_test = evaluate_digits(recipe, encoder_dir)
    table = format_table(results, num_train, num_test)
    print()
    print(table)
    print()
    gain = results["learned encoder"]["knn"] - results["random init"]["knn"]
    print(f"kNN accuracy gained by self-supervised training over random init: {gain:+.3f}")
    print(f"encoder saved to {encoder_dir} (load it with transformers.AutoModel.from_pretrained)")
    print(f"curves (loss, online kNN on the held-out digits): {Path(result.run_dir) / 'curves.png'}")
    (Path(result.run_dir) / "demo_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0

