"""Publish an encoder: a folder ``transformers`` loads on its own, its model card, and the Hub push.

``save_encoder`` writes the stock model (safetensors) and its processor with ``save_pretrained``, a
README.md model card (recipe, data, steps, hardware, how to load it, probe results as a table and
as ``model-index`` metadata), ``probe_results.json`` and ``multissl.json`` (pooling, domain: what
multissl needs to rebuild the same :class:`~multissl.features.Encoder`), and, for an encoder trained
with a cross-modal objective, ``joint_projection.safetensors`` (its [P, D] map into the joint space,
read back by :func:`load_joint_projection`). Loading needs no multissl::

    from transformers import AutoModel
    model = AutoModel.from_pretrained("user/encoder")

``push_to_hub`` uploads such a folder with ``huggingface_hub``. The token comes from the argument,
``HF_TOKEN`` or the saved login (``hf auth login``); it is never printed, logged or echoed in an
error message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from multissl.probes.report import ProbeResult, load_results, results_table, save_results

if TYPE_CHECKING:
    from multissl.features import Encoder

__all__ = [
    "ModelCardInfo",
    "HubPushError",
    "save_encoder",
    "render_model_card",
    "loading_snippet",
    "update_model_card",
    "push_to_hub",
    "read_encoder_metadata",
    "load_joint_projection",
    "ENCODER_METADATA_FILE",
    "JOINT_PROJECTION_FILE",
    "PROBE_RESULTS_FILE",
    "add_push_arguments",
    "run_push_command",
]

ENCODER_METADATA_FILE = "multissl.json"
PROBE_RESULTS_FILE = "probe_results.json"
JOINT_PROJECTION_FILE = "joint_projection.safetensors"


@dataclass
class ModelCardInfo:
    """What the model card says. Every field is optional; the card leaves out what is unknown.

    recipe:    the run's recipe as YAML text (shown verbatim).
    datasets:  training data: Hub ids (also listed in the card metadata) or local names.
    results:   probe results (``multissl.probes.report.ProbeResult``), table + model-index.
    repo_id:   the Hub id used in the loading snippet (else "<path or repo id>").
    """

    model_name: str | None = None
    description: str | None = None
    domain: str | None = None
    objective: str | None = None
    architecture: str | None = None
    encoder_size: str | None = None
    parameters: int | None = None
    recipe: str | None = None
    datasets: list[str] = field(default_factory=list)
    data_split: str | None = None
    data_rows: int | None = None
    steps: int | None = None
    batch_size: int | None = None
    hardware: str | None = None
    license: str | None = "apache-2.0"
    tags: list[str] = field(default_factory=list)
    repo_id: str | None = None
    results: list[ProbeResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("results")
        return data


class HubPushError(RuntimeError):
    """A push that failed; the message says why and that the local folder is unchanged."""


# ----------------------------------------------------------------------------------------------
# the card


def _processor_kind(processor: Any) -> str | None:
    """"tokenizer", "image", "audio", "processor" or None, from the processor's base classes."""
    if processor is None:
        return None
    names = {cls.__name__ for cls in type(processor).__mro__}
    if "PreTrainedTokenizerBase" in names:
        return "tokenizer"
    if "ProcessorMixin" in names:
        return "processor"
    if names & {"BaseImageProcessor", "ImageProcessingMixin", "BaseImageProcessorFast"}:
        return "image"
    if names & {"SequenceFeatureExtractor", "FeatureExtractionMixin"}:
        return "audio"
    return None


#: processor kind -> (Auto class, variable name, the embed function's argument, its input line, an example call)
_LOADERS = {
    "tokenizer": ("AutoTokenizer", "tokenizer", "texts",
                  'inputs = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")',
                  '# embeddings = embed(["A man is playing a guitar.", "A woman is slicing an onion."])'),
    "image": ("AutoImageProcessor", "processor", "images",
              'inputs = processor(images=images, return_tensors="pt")',
              '# embeddings = embed([PIL.Image.open("photo.jpg").convert("RGB")])'),
    "audio": ("AutoFeatureExtractor", "feature_extractor", "waveform",
              'inputs = feature_extractor(waveform, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")',
              '# embeddings = embed(soundfile.read("speech.wav")[0])  # one mono clip at the model\'s rate'),
    "processor": ("AutoProcessor", "processor", "**raw", 'inputs = processor(**raw, return_tensors="pt")', ""),
}

#: architectures whose embedding is the model's own pooler output (global average pool of the last stage)
_POOLER_MODELS = ("resnet", "convnext", "convnextv2", "regnet", "bit", "efficientnet", "mobilenet_v1", "mobilenet_v2")


def _pooling_lines(encoder: "Encoder", kind: str | None) -> list[str]:
    """How ``embed`` turns the model output into ``Features.pooled``, following the domains'
    encoders: the CLS token; the masked token mean for text; the patch-token mean without CLS for
    ViTs; the pooler output for convnets; the frame mean of one audio clip."""
    model_type = getattr(getattr(encoder.model, "config", None), "model_type", "")
    if model_type in _POOLER_MODELS:
        return ["    return output.pooler_output.flatten(1)  # global average pool of the last stage"]
    lines = ["    hidden = output.last_hidden_state"]
    if encoder.pooling == "cls":
        return lines + ["    return hidden[:, 0]  # the CLS token"]
    if kind == "tokenizer":
        return lines + ['    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)',
                        "    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)  # mean over real tokens"]
    if kind == "image":
        return lines + ["    return hidden[:, 1:].mean(dim=1)  # mean over patch tokens (CLS excluded)"]
    return lines + ["    return hidden.mean(dim=1)  # mean over frames"]


def loading_snippet(encoder: "Encoder", name_or_path: str) -> str:
    """Python code that loads the encoder with plain ``transformers`` and defines ``embed(...)``
    returning the same [B, D] embeddings as ``encoder(...).pooled`` (the tests execute it).

    An encoder whose pooling follows none of the conventions of :func:`_pooling_lines` supplies
    its own: ``encoder.loading_snippet(name_or_path) -> str``.
    """
    custom = getattr(encoder, "loading_snippet", None)
    if callable(custom):
        return custom(name_or_path)
    kind = _processor_kind(encoder.processor)
    where = json.dumps(name_or_path)
    if kind is None:
        return (f"import torch\nfrom transformers import AutoModel\n\nmodel = AutoModel.from_pretrained({where}).eval()\n"
                f"# embedding: model(**inputs), pooled as in training ({encoder.pooling})")
    auto_class, variable, argument, make_inputs, example = _LOADERS[kind]
    lines = [
        "import torch",
        f"from transformers import AutoModel, {auto_class}",
        "",
        f"model = AutoModel.from_pretrained({where}).eval()",
        f"{variable} = {auto_class}.from_pretrained({where})",
        "",
        "",
        f"def embed({argument}):",
        f"    {make_inputs}",
        "    with torch.no_grad():",
        "        output = model(**inputs)",
        *_pooling_lines(encoder, kind),
    ]
    return "\n".join(lines + (["", "", example] if example else []))


_TASK_TYPES = {"image": "image-classification", "audio": "audio-classification", "text": "text-classification"}


def _task_type(result: ProbeResult, domain: str | None) -> str:
    if result.probe == "sts":
        return "sentence-similarity"
    if result.probe == "retrieval":
        return "image-text-retrieval"
    if result.probe == "zeroshot":
        return "zero-shot-image-classification"
    if result.probe.startswith("senteval"):
        return "text-classification"
    if result.probe == "frames":
        return "audio-frame-classification"
    if result.probe == "health":
        return "representation-health"
    return _TASK_TYPES.get(domain or "", "feature-extraction")


def _metric_type(metric: str) -> str:
    if metric.startswith("spearman"):
        return "spearmanr"
    if "recall" in metric:
        return "recall"
    if metric.startswith("f1"):
        return "f1"
    if "accuracy" in metric:
        return "accuracy"
    return metric


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _card_metadata(info: ModelCardInfo, model_name: str):
    from huggingface_hub import EvalResult, ModelCardData

    eval_results = [
        EvalResult(
            task_type=_task_type(r, info.domain),
            task_name=r.probe,
            dataset_type=r.dataset,
            dataset_name=r.dataset,
            dataset_split=r.split,
            metric_type=_metric_type(r.metric),
            metric_name=f"{r.probe} {r.metric}",
            metric_value=r.value,
        )
        for r in info.results
    ]
    hub_datasets = [d for d in info.datasets if _HUB_ID.match(d) and not os.path.exists(d)]
    tags = ["multissl", "self-supervised"] + [t for t in (info.domain, info.objective) if t] + list(info.tags)
    pipeline = {"image": "image-feature-extraction"}.get(info.domain or "", "feature-extraction")
    return ModelCardData(
        library_name="transformers",
        license=info.license,
        tags=tags,
        datasets=hub_datasets or None,
        pipeline_tag=pipeline,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def _data_fact(info: ModelCardInfo) -> str | None:
    if not info.datasets:
        return None
    extra = [f"split {info.data_split}" if info.data_split else "", f"{info.data_rows:,} rows" if info.data_rows else ""]
    extra = [e for e in extra if e]
    return ", ".join(info.datasets) + (f" ({', '.join(extra)})" if extra else "")


def _run_description(info: ModelCardInfo) -> str:
    """One sentence on the run that made this encoder, from what the run recorded (never the
    recipe's prose, which describes the data and size the recipe was written for)."""
    what = " ".join(p for p in (info.architecture, "encoder") if p)
    size = f" ({info.encoder_size}" + (f", {info.parameters / 1e6:.2f}M parameters)" if info.parameters else ")") \
        if info.encoder_size else ""
    how = f", trained self-supervised with {info.objective}" if info.objective else ", trained self-supervised"
    on = f" on {_data_fact(info)}" if info.datasets else (f" on {info.domain} data" if info.domain else "")
    steps = f" for {info.steps} steps" + (f" of {info.batch_size} examples" if info.batch_size else "") \
        if info.steps is not None else ""
    where = f" on {info.hardware}" if info.hardware else ""
    return f"A {what}{size}{how}{on}{steps}{where}, with multissl."


def render_model_card(info: ModelCardInfo, encoder: "Encoder") -> str:
    """The README.md text: YAML metadata (model-index from ``info.results``) + markdown body."""
    from huggingface_hub import ModelCard

    model_name = info.model_name or (info.repo_id.split("/")[-1] if info.repo_id else "multissl-encoder")
    lines = [f"# {model_name}", "", info.description or _run_description(info), ""]
    lines += ["## How to load", "", "Plain `transformers`, no multissl needed:", "", "```python",
              loading_snippet(encoder, info.repo_id or "<path or repo id>"), "```", ""]
    if getattr(encoder, "joint_projection", None) is not None:
        rows, columns = encoder.joint_projection.shape
        lines += [f"Cross-modal (joint) embeddings: `{JOINT_PROJECTION_FILE}` holds the [{rows}, {columns}] linear map "
                  "(no bias) the cross-modal objective trained; multiply `embed(...)` by its transpose and "
                  "L2-normalise to compare with the other modality's encoder:", "", "```python",
                  "from safetensors.torch import load_file",
                  f'projection = load_file("{JOINT_PROJECTION_FILE}")["weight"]  # hf_hub_download it from a Hub repo',
                  "joint = torch.nn.functional.normalize(embed(...) @ projection.T, dim=-1)", "```", ""]
    facts = [("Objective", info.objective), ("Domain", info.domain), ("Architecture", info.architecture),
             ("Size", info.encoder_size),
             ("Parameters", f"{info.parameters:,}" if info.parameters is not None else None),
             ("Embedding", f"{encoder.dim}-d, {encoder.pooling} pooling"),
             ("Training data", _data_fact(info)),
             ("Steps", str(info.steps) if info.steps is not None else None),
             ("Global batch", str(info.batch_size) if info.batch_size is not None else None),
             ("Hardware", info.hardware)]
    lines += ["## Training", ""] + [f"- **{k}**: {v}" for k, v in facts if v] + [""]
    if info.recipe:
        lines += ["### Recipe", "", "```yaml", info.recipe.rstrip(), "```", ""]
    if info.results:
        lines += ["## Probe results", "",
                  "Frozen-encoder probes (`multissl probe`); accuracies and recalls are fractions, `_x100` metrics "
                  "are x 100. Full details in `probe_results.json`.", "",
                  results_table(info.results), ""]
    metadata = _card_metadata(info, model_name)
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines)).content


# ----------------------------------------------------------------------------------------------
# saving


def save_encoder(encoder: "Encoder", folder: str | Path, card: ModelCardInfo | None = None,
                 preprocessing: dict[str, Any] | None = None) -> Path:
    """Write ``folder``: ``save_pretrained`` model (safetensors) + processor, README.md,
    ``probe_results.json`` (when there are results) and ``multissl.json``, which records the
    domain's ``preprocessing`` options the encoder was trained with (``Domain.preprocessing``), so
    ``multissl probe`` feeds it what it saw in training. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = card or ModelCardInfo()
    encoder.save_pretrained(str(folder))
    model_type = getattr(getattr(encoder.model, "config", None), "model_type", None)
    metadata = {
        "format_version": 1,
        "domain": card.domain,
        "architecture": card.architecture or model_type,
        "model_type": model_type,
        "pooling": encoder.pooling,
        "dim": encoder.dim,
        "preprocessing": dict(preprocessing or {}),
        "card": card.to_dict(),
    }
    if getattr(encoder, "joint_projection", None) is not None:
        from safetensors.torch import save_file

        weight = encoder.joint_projection.detach().to("cpu", torch.float32).contiguous()
        save_file({"weight": weight}, str(folder / JOINT_PROJECTION_FILE))
        metadata["joint_projection"] = {"file": JOINT_PROJECTION_FILE, "shape": list(weight.shape)}
    (folder / ENCODER_METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if card.results:
        save_results(folder / PROBE_RESULTS_FILE, card.results, {"model_name": card.model_name})
    (folder / "README.md").write_text(render_model_card(card, encoder), encoding="utf-8")
    return folder


def read_encoder_metadata(folder: str | Path) -> dict[str, Any]:
    """``multissl.json`` of a saved encoder folder ({} when absent: a plain transformers model)."""
    path = Path(folder) / ENCODER_METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def load_joint_projection(name_or_path: str | Path) -> torch.Tensor | None:
    """The [P, D] joint-space projection saved beside an encoder (a local folder, or a Hub repo
    when no such folder exists), or None when the encoder has none (or, offline, when the Hub
    repo's file is not in the local cache: the encoder itself then came from a local copy)."""
    from safetensors.torch import load_file

    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / JOINT_PROJECTION_FILE
        return load_file(str(path))["weight"] if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return load_file(hf_hub_download(str(name_or_path), JOINT_PROJECTION_FILE))["weight"]
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None


def update_model_card(folder: str | Path, encoder: "Encoder", results: list[ProbeResult]) -> Path:
    """Merge new probe results into a saved folder's ``probe_results.json`` (same probe, dataset,
    split and metric: the new value wins) and re-render its README.md."""
    folder = Path(folder)
    metadata = read_encoder_metadata(folder)
    known = {f.name for f in dataclasses.fields(ModelCardInfo)} - {"results"}
    card = ModelCardInfo(**{k: v for k, v in metadata.get("card", {}).items() if k in known})
    previous = load_results(folder / PROBE_RESULTS_FILE)[0] if (folder / PROBE_RESULTS_FILE).is_file() else []
    key = lambda r: (r.probe, r.dataset, r.split, r.metric)
    merged = {key(r): r for r in previous}
    merged.update({key(r): r for r in results})
    card.results = list(merged.values())
    save_results(folder / PROBE_RESULTS_FILE, card.results, {"model_name": card.model_name})
    (folder / "README.md").write_text(render_model_card(card, encoder), encoding="utf-8")
    return folder


# ----------------------------------------------------------------------------------------------
# pushing


def _scrub(text: str, token: str | None) -> str:
    """The message with any token-looking string masked (the token we know, and hf_... patterns)."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{8,}", "hf_***", text)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str = "Upload encoder trained with multissl",
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it (branch ``revision`` if given).

    Token: ``token``, else ``HF_TOKEN``, else the saved login. Returns the commit URL. Any failure
    (offline mode, no network, bad token, missing rights) raises :class:`HubPushError` saying
    what went wrong; the token never appears in it and the local folder is not touched.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import OfflineModeIsEnabled

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise HubPushError(f"{folder} is not a saved encoder folder (no config.json); save it with save_encoder first")
    if not any(folder.glob("model*.safetensors")):
        raise HubPushError(f"{folder} holds no .safetensors weights; save it with save_encoder first")
    if not re.match(r"^[\w.-]+/[\w.-]+$", repo_id):
        raise HubPushError(f"repo_id {repo_id!r} must look like 'user-or-org/name'")
    token = token or get_token()  # get_token reads HF_TOKEN, then the saved login
    if not token:
        raise HubPushError("no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass a token; nothing was uploaded")
    where = f"{repo_id}" + (f"@{revision}" if revision else "")
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                   revision=revision, commit_message=commit_message)
    except OfflineModeIsEnabled:
        raise HubPushError(f"cannot push to {where}: HF_HUB_OFFLINE is set (offline mode). Unset it to push; "
                           f"the local folder {folder} is unchanged") from None
    except Exception as error:  # network, HTTP and auth errors alike: one clear message, token scrubbed
        reason = _scrub(f"{type(error).__name__}: {error}", token)
        raise HubPushError(f"could not push {folder} to {where}: {reason}. The local folder is unchanged") from None
    return str(getattr(commit, "commit_url", commit))


# ----------------------------------------------------------------------------------------------
# the ``multissl push`` command (wired by multissl.cli)


def add_push_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``multissl push FOLDER REPO_ID``."""
    parser.add_argument("folder", help="encoder folder written by save_encoder (a run's encoder/ folder)")
    parser.add_argument("repo_id", help="Hub repository, user-or-org/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", help="branch to push to (created if missing)")
    parser.add_argument("--commit-message", default="Upload encoder trained with multissl")
    parser.add_argument("--token", help="Hub token; prefer HF_TOKEN or `hf auth login` (a flag shows in the process list)")
    return parser


def run_push_command(args: argparse.Namespace) -> int:
    """Run ``multissl push``; prints the commit URL. Returns 0, or 1 with a message on failure."""
    try:
        url = push_to_hub(args.folder, args.repo_id, private=args.private, revision=args.revision,
                          token=args.token, commit_message=args.commit_message)
    except HubPushError as error:
        print(f"multissl push: {error}", file=sys.stderr)
        return 1
    print(url)
    return 0
