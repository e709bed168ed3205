"""``multissl probe`` and ``multissl push``: argument definitions and runners the CLI wires in.

    multissl probe --domain image --encoder runs/simclr/encoder --data ../shared/data/image/cifar10 \\
        --data-format parquet --columns image=img,label=label --test-split test --probe linear,knn
    multissl probe --domain text --encoder user/encoder --probe sts --test-data sts-dev.csv
    multissl push runs/simclr/encoder user/simclr-cifar10 --private

``probe`` builds the domain the encoder folder records (``multissl.json``), with the preprocessing
it was trained with (image size, channels, normalisation, sample rate, front end, sequence length;
for a plain ``transformers`` folder, what its processor files say), so it measures the pipeline
that was trained: its embeddings equal ``AutoModel`` + the saved processor's. ``--domain-option``
overrides a setting, with a warning. The encoder comes from
``domain.build_encoder(EncoderConfig(architecture=..., name_or_path=...))`` (architecture from the
folder's config.json ``model_type`` when not given, pooling from its ``multissl.json``); then
:func:`multissl.probes.suite.run_probes` runs, a table is printed and JSON written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["add_probe_arguments", "run_probe_command", "add_push_arguments", "run_push_command",
           "parse_columns", "parse_key_values"]


def parse_columns(text: str | None) -> dict[str, str]:
    """"image=img,label=label" -> {"image": "img", "label": "label"}; errors name the bad item."""
    if not text:
        return {}
    columns = {}
    for item in text.split(","):
        role, sep, column = item.partition("=")
        if not sep or not role.strip() or not column.strip():
            raise ValueError(f"--columns item {item!r} must be role=column (e.g. image=img)")
        columns[role.strip()] = column.strip()
    return columns


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """["a=1", "b=[0.1, 0.2]"] -> {"a": 1, "b": [0.1, 0.2]}; values are parsed as YAML."""
    parsed = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} {item!r} must be key=value")
        parsed[key] = yaml.safe_load(value)
    return parsed


def add_probe_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``multissl probe`` (see the module docstring)."""
    from multissl.probes.suite import PROBES

    parser.add_argument("--domain", help="domain name: image, audio, text (default: the one the encoder folder records)")
    parser.add_argument("--encoder", required=True, help="encoder folder (save_encoder / save_pretrained) or Hub id")
    parser.add_argument("--architecture", help="domain's architecture name; default: config.json model_type")
    parser.add_argument("--pooling", choices=("cls", "mean"), help="default: the folder's multissl.json, else mean")
    parser.add_argument("--probe", default="linear,knn", help=f"comma-separated, from {', '.join(PROBES)}")
    parser.add_argument("--data", help="train data: local path/glob or Hub dataset id")
    parser.add_argument("--data-format", help="datasets builder for local data (parquet, csv, imagefolder, ...)")
    parser.add_argument("--subset", help="Hub dataset configuration")
    parser.add_argument("--split", default="train", help="train split (default: train)")
    parser.add_argument("--columns", help="role=column pairs, e.g. image=img,label=label")
    parser.add_argument("--test-data", help="test data path or id (default: --data)")
    parser.add_argument("--test-data-format", help="builder for --test-data (default: --data-format)")
    parser.add_argument("--test-split", help="test split of --test-data / --data (default: test)")
    parser.add_argument("--limit", type=int, help="use only the first N train rows")
    parser.add_argument("--test-limit", type=int, help="use only the first N test rows")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error")
    parser.add_argument("--encoding", default="utf-8", help="encoding of text/csv/json data (default: utf-8)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of data and argument errors")
    parser.add_argument("--domain-option", action="append", metavar="KEY=VALUE",
                        help="domain config field (repeatable); preprocessing comes from the encoder folder "
                             "(what it was trained with), and a flag that differs overrides it with a warning")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE", help="probe option, see ProbeOptions (repeatable)")
    parser.add_argument("--layers", help="None (pooled), weighted, mean, or a layer index")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--text-domain", help="text domain for retrieval / zero-shot (default: text)")
    parser.add_argument("--text-encoder", help="text encoder folder or Hub id for retrieval / zero-shot")
    parser.add_argument("--text-columns", help="role=column pairs the text side reads (retrieval), e.g. text=caption")
    parser.add_argument("--output", default="probe_results.json", help="JSON file for the results")
    parser.add_argument("--map", metavar="PNG", help="also write a 2-D map of the test embeddings coloured by label "
                                                     "(PCA; --option map_method=tsne for t-SNE); adds the health probe")
    parser.add_argument("--update-card", action="store_true",
                        help="also merge the results into the encoder folder's probe_results.json and README.md")
    return parser


def _encoder_config(name_or_path: str, architecture: str | None, pooling: str | None):
    from multissl.domain import EncoderConfig
    from multissl.hub import read_encoder_metadata

    local = Path(name_or_path).expanduser()
    if not local.exists() and (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1):
        raise FileNotFoundError(f"encoder folder {name_or_path} does not exist (and it is not a Hub id)")
    metadata = read_encoder_metadata(local) if local.is_dir() else {}
    if architecture is None:
        architecture = metadata.get("architecture")
    if architecture is None:
        from transformers import AutoConfig

        architecture = AutoConfig.from_pretrained(name_or_path).model_type  # local config.json or the Hub's
    return EncoderConfig(architecture=architecture, name_or_path=name_or_path,
                         pooling=pooling or metadata.get("pooling", "mean"))


def _saved_domain(encoder: str) -> str:
    from multissl.hub import read_encoder_metadata

    local = Path(encoder).expanduser()
    domain = read_encoder_metadata(local).get("domain") if local.is_dir() else None
    if not domain:
        raise ValueError(f"--domain is needed: {encoder} records no domain (no multissl.json)")
    return domain


def trained_preprocessing(encoder: str, domain: str, given: dict[str, Any]) -> dict[str, Any]:
    """The domain options an encoder folder was trained with (``multissl.json``'s preprocessing, or
    what a plain ``transformers`` folder's processor files say), with ``given`` on top. A given
    value that differs from the trained one wins, and a warning says so: the probe then measures
    another pipeline than the one trained."""
    from domains import domain_class
    from multissl.hub import read_encoder_metadata

    local = Path(encoder).expanduser()
    saved: dict[str, Any] = {}
    if local.is_dir():
        saved = read_encoder_metadata(local).get("preprocessing") or domain_class(domain).preprocessing_of_pretrained(str(local))
    for key, value in given.items():
        if key in saved and saved[key] != value:
            print(f"multissl probe: warning: --domain-option {key}={value!r} overrides the {key}={saved[key]!r} "
                  f"{encoder} was trained with", file=sys.stderr)
    return {**saved, **given}


def run_probe_command(args: argparse.Namespace) -> int:
    """Run ``multissl probe``; returns the exit code: 0 on success, 2 with a one-line message for
    a user error (bad argument, missing file or model, bad data, no network); ``--debug`` or
    ``MULTISSL_DEBUG=1`` shows its traceback instead."""
    from multissl.errors import EXIT_USER_ERROR, debug_enabled, describe, one_line

    try:
        return _run_probe(args)
    except Exception as error:  # noqa: BLE001 - what is not a user error is re-raised
        if debug_enabled(getattr(args, "debug", False)):
            raise
        line = describe(error)
        if line is None and isinstance(error, (ValueError, OSError)):
            line = f"error: {one_line(str(error)) or type(error).__name__}"
        if line is None:
            raise
        print(f"multissl probe: {line}", file=sys.stderr)
        return EXIT_USER_ERROR


def _run_probe(args: argparse.Namespace) -> int:
    import torch

    from domains import build_domain
    from multissl.domain import DataConfig
    from multissl.hub import update_model_card
    from multissl.probes.report import results_table, save_results
    from multissl.probes.suite import run_probes

    probes = [p.strip() for p in args.probe.split(",") if p.strip()]
    columns = parse_columns(args.columns)
    options = parse_key_values(args.option, "--option")
    if args.map:
        options["map_path"] = args.map
        probes += [] if "health" in probes else ["health"]
    options.setdefault("batch_size", args.batch_size)
    if args.text_columns:
        options["text_columns"] = parse_columns(args.text_columns)
    if args.layers is not None:
        options["layers"] = int(args.layers) if args.layers.lstrip("-").isdigit() else (None if args.layers == "None" else args.layers)

    train_data = None
    if args.data:
        train_data = DataConfig(path=args.data, format=args.data_format, subset=args.subset, split=args.split,
                                columns=columns, limit=args.limit, on_bad_sample=args.on_bad_sample,
                                encoding=getattr(args, "encoding", "utf-8"))
    test_path = args.test_data or args.data
    test_data = None
    if test_path:
        test_data = DataConfig(path=test_path, format=args.test_data_format or args.data_format,
                               subset=args.subset, split=args.test_split or "test", columns=columns,
                               limit=args.test_limit, on_bad_sample=args.on_bad_sample,
                               encoding=getattr(args, "encoding", "utf-8"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    domain_name = args.domain or _saved_domain(args.encoder)
    domain_options = trained_preprocessing(args.encoder, domain_name, parse_key_values(args.domain_option, "--domain-option"))
    domain = build_domain(domain_name, domain_options, key="--domain-option")
    encoder = domain.build_encoder(_encoder_config(args.encoder, args.architecture, args.pooling)).to(device)
    text_encoder = text_domain = None
    if args.text_encoder:
        from multissl.hub import load_joint_projection

        text_domain_name = args.text_domain or "text"
        text_domain = build_domain(text_domain_name, trained_preprocessing(args.text_encoder, text_domain_name, {}))
        text_encoder = text_domain.build_encoder(_encoder_config(args.text_encoder, None, None)).to(device)
        # a CLIP run's encoders compare in the joint space it trained, saved beside each of them
        encoder.joint_projection = load_joint_projection(args.encoder)
        text_encoder.joint_projection = load_joint_projection(args.text_encoder)

    results = run_probes(probes, encoder, domain, train_data, test_data, options, device=device,
                         text_encoder=text_encoder, text_domain=text_domain)
    print(results_table(results))
    meta = {"encoder": args.encoder, "domain": args.domain, "probes": probes,
            "train_data": args.data, "test_data": test_path, "options": options}
    path = save_results(args.output, results, meta)
    print(f"\nwrote {path}", file=sys.stderr)
    if args.update_card:
        if not Path(args.encoder).is_dir():
            raise ValueError("--update-card needs a local encoder folder")
        update_model_card(args.encoder, encoder, results)
        print(f"updated the model card in {args.encoder}", file=sys.stderr)
    return 0


# ``multissl push`` lives with the Hub code; re-exported so both import paths work
from multissl.hub import add_push_arguments, run_push_command  # noqa: E402
