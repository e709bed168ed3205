"""multissl.hub: a saved encoder loads with plain transformers (no multissl) and embeds the same;
the model card's table and model-index equal the probe JSON; a push without network fails fast,
clearly, without echoing the token, and leaves the folder intact."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from transformers import BertConfig, BertModel, BertTokenizer, ViTConfig, ViTImageProcessor, ViTModel

from multissl.features import Encoder, Features, masked_mean
from multissl.hub import HubPushError, ModelCardInfo, push_to_hub, save_encoder, update_model_card
from multissl.probes.report import ProbeResult, load_results

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = "a man is playing guitar woman slicing an onion the dog runs in park child climbs stairs".split()


class TinyTextEncoder(Encoder):
    """Minimal Encoder around a BertModel (the real text domain's encoder comes later)."""

    def __init__(self, model: BertModel, tokenizer: BertTokenizer, pooling: str) -> None:
        super().__init__()
        self.model, self.processor, self.pooling, self.dim = model, tokenizer, pooling, model.config.hidden_size

    def forward(self, input_ids, attention_mask, token_type_ids=None, output_hidden_states=False) -> Features:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         output_hidden_states=output_hidden_states)
        hidden, mask = out.last_hidden_state, attention_mask.bool()
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, mask)
        return Features(pooled, hidden, mask, out.hidden_states)


class TinyImageEncoder(Encoder):
    def __init__(self, model: ViTModel, processor: ViTImageProcessor, pooling: str) -> None:
        super().__init__()
        self.model, self.processor, self.pooling, self.dim = model, processor, pooling, model.config.hidden_size

    def forward(self, pixel_values, output_hidden_states=False) -> Features:
        out = self.model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        hidden = out.last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else hidden[:, 1:].mean(dim=1)  # patch mean, CLS excluded
        return Features(pooled, hidden, None, out.hidden_states)


def tiny_text_encoder(pooling: str) -> TinyTextEncoder:
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS)}
    tokenizer = BertTokenizer(vocab=vocab)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    return TinyTextEncoder(BertModel(config, add_pooling_layer=False).eval(), tokenizer, pooling)


def tiny_image_encoder(pooling: str) -> TinyImageEncoder:
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=37)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return TinyImageEncoder(ViTModel(config, add_pooling_layer=False).eval(), processor, pooling)


def card_snippet(folder: Path) -> str:
    """The python block of the card's 'How to load' section, pointed at the local folder."""
    readme = (folder / "README.md").read_text()
    block = re.search(r"## How to load.*?```python\n(.*?)```", readme, re.S)
    assert block, "the model card has no python loading snippet"
    return block.group(1).replace("<path or repo id>", str(folder))


def run_without_multissl(script: str, cwd: Path) -> dict:
    """Run ``script`` in a fresh interpreter that never imports multissl; it prints one JSON line."""
    guard = "\nimport sys\nassert not [m for m in sys.modules if m.split('.')[0] in ('multissl', 'domains')], 'multissl was imported'\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    done = subprocess.run([sys.executable, "-c", script + guard + "print('__JSON__' + json.dumps(result))"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("__JSON__")][-1]
    return json.loads(line[len("__JSON__"):])


SENTENCES = ["a man is playing guitar", "the dog runs", "a child climbs the stairs in the park"]


def real_images(data_root, folder: Path, count: int = 3) -> list[str]:
    """A few CIFAR-10-like photos written as PNG files (both processes read the same pixels)."""
    import datasets

    shard = data_root / "image/cifar10/train-00000-of-00004.parquet"
    rows = datasets.load_dataset("parquet", data_files=str(shard), split=f"train[:{count}]")
    paths = []
    for i, row in enumerate(rows):
        paths.append(str(folder / f"photo{i}.png"))
        row["img"].convert("RGB").save(paths[-1])
    return paths


def domain_cases(data_root, root: Path, image_paths: list[str]):
    """(name, encoder, kind, embeddings through the domain's own pipeline) for every real domain
    that is importable: proves the card's snippet reproduces what the probes measured."""
    from domains import build_domain
    from multissl.domain import DataConfig, EncoderConfig
    from multissl.probes.extract import embed_texts, extract_features

    cases = []
    try:
        image = build_domain("image", {"image_size": 32})
    except ImportError:
        image = None
    if image is not None:
        table = root / "images.csv"
        table.write_text("image\n" + "\n".join(image_paths) + "\n")
        for name, architecture, pooling in (("domain-vit-mean", "vit", "mean"), ("domain-vit-cls", "vit", "cls"),
                                            ("domain-resnet", "resnet", "mean")):
            encoder = image.build_encoder(EncoderConfig(architecture=architecture, size="tiny", pooling=pooling)).eval()
            pooled = extract_features(encoder, image, DataConfig(path=str(table), columns={"image": "image"})).pooled
            cases.append((name, encoder, "image", pooled))
    try:
        text = build_domain("text", {"vocab_size": 300})
    except ImportError:
        text = None
    if text is not None:
        text.load(DataConfig(path=str(data_root / "text/corpus/tinyshakespeare.txt"), limit=1000))  # learns a tokenizer
        for pooling in ("mean", "cls"):
            encoder = text.build_encoder(EncoderConfig(architecture="bert", size="tiny", pooling=pooling)).eval()
            cases.append((f"domain-bert-{pooling}", encoder, "text", embed_texts(encoder, text, SENTENCES)))
    try:
        audio = build_domain("audio", {"max_seconds": None})
    except ImportError:
        audio = None
    if audio is not None:
        clip_folder = root / "clip"
        clip_folder.mkdir()
        source = data_root / "audio/librispeech_mini/test_db/6476/57446/6476-57446-0019.flac"
        (clip_folder / source.name).write_bytes(source.read_bytes())
        encoder = audio.build_encoder(EncoderConfig(architecture="wav2vec2", size="tiny")).eval()
        pooled = extract_features(encoder, audio, DataConfig(path=str(clip_folder))).pooled
        cases.append(("domain-wav2vec2", encoder, "audio", pooled))
    return cases


@pytest.fixture(scope="module")
def fresh_process_embeddings(tmp_path_factory, data_root):
    """Save encoders (tiny test wrappers, and the real domains' encoders where importable), then
    embed with each in ONE fresh interpreter that never imports multissl, using only transformers
    and the card's own loading snippet. Returns, per case, the embeddings multissl gave and those
    the fresh process gave."""
    root = tmp_path_factory.mktemp("hub_round_trip")
    image_paths = real_images(data_root, root)
    audio_path = str(data_root / "audio/librispeech_mini/test_db/6476/57446/6476-57446-0019.flac")

    def reference(encoder, kind):
        with torch.no_grad():
            if kind == "text":
                inputs = encoder.processor(SENTENCES, padding=True, return_tensors="pt")
            else:
                inputs = encoder.processor(images=[Image.open(p).convert("RGB") for p in image_paths], return_tensors="pt")
            return encoder(**inputs).pooled

    built = [(name, encoder, kind, reference(encoder, kind)) for name, encoder, kind in (
        ("text-cls", tiny_text_encoder("cls"), "text"), ("text-mean", tiny_text_encoder("mean"), "text"),
        ("image-mean", tiny_image_encoder("mean"), "image"), ("image-cls", tiny_image_encoder("cls"), "image"))]
    built += domain_cases(data_root, root, image_paths)

    cases, expected = {}, {}
    for name, encoder, kind, pooled in built:
        folder = save_encoder(encoder, root / name, ModelCardInfo(domain=kind))
        assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
        expected[name] = pooled
        cases[name] = {"folder": str(folder), "snippet": card_snippet(folder), "kind": kind}

    script = textwrap.dedent(f"""
        import json
        import soundfile
        from PIL import Image
        from transformers import AutoModel
        cases = json.loads({json.dumps(cases)!r})
        result = {{}}
        for name, case in cases.items():
            namespace = {{}}
            exec(case["snippet"], namespace)  # the model card's own loading code
            if case["kind"] == "text":
                embeddings = namespace["embed"]({SENTENCES!r})
            elif case["kind"] == "image":
                embeddings = namespace["embed"]([Image.open(p).convert("RGB") for p in {image_paths!r}])
            else:
                waveform, rate = soundfile.read({audio_path!r}, dtype="float32")
                embeddings = namespace["embed"](waveform)
            processor = next(namespace[k] for k in ("tokenizer", "processor", "feature_extractor") if k in namespace)
            result[name] = {{"model": type(AutoModel.from_pretrained(case["folder"])).__name__,
                            "processor": type(processor).__name__, "embeddings": embeddings.tolist()}}
    """)
    fresh = run_without_multissl(script, root)
    return {name: (expected[name], fresh[name]) for name in cases}


TINY_CASES = [("text-cls", "BertModel", "BertTokenizer"), ("text-mean", "BertModel", "BertTokenizer"),
              ("image-mean", "ViTModel", "ViTImageProcessor"), ("image-cls", "ViTModel", "ViTImageProcessor")]
DOMAIN_CASES = [("domain-vit-mean", "ViTModel", "ViTImageProcessor"), ("domain-vit-cls", "ViTModel", "ViTImageProcessor"),
                ("domain-resnet", "ResNetModel", "ViTImageProcessor"), ("domain-bert-mean", "BertModel", ""),
                ("domain-bert-cls", "BertModel", ""), ("domain-wav2vec2", "Wav2Vec2Model", "Wav2Vec2FeatureExtractor")]


@pytest.mark.parametrize("case, model, processor", TINY_CASES + DOMAIN_CASES)
def test_saved_encoder_embeds_the_same_in_a_fresh_process_without_multissl(fresh_process_embeddings, case, model, processor):
    if case not in fresh_process_embeddings:
        pytest.skip(f"{case}: its domain is not importable in this checkout")
    expected, fresh = fresh_process_embeddings[case]
    assert fresh["model"] == model
    assert fresh["processor"].startswith(processor)
    torch.testing.assert_close(torch.tensor(fresh["embeddings"]), expected, atol=1e-4, rtol=1e-4)


def parse_markdown_table(readme: str, heading: str) -> list[dict[str, str]]:
    section = readme.split(heading, 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    return [dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")))) for row in rows[2:]]


SAMPLE_RESULTS = [
    ProbeResult("linear", "cifar10", "accuracy", 0.8123456, "test", {"weight_decay": 1e-4}),
    ProbeResult("knn (k=20)", "cifar10", "accuracy", 0.7712345, "test"),
    ProbeResult("knn (k=200)", "cifar10", "accuracy", 0.7598765, "test"),
    ProbeResult("sts", "sts-dev.csv", "spearman_x100", 81.23456, "dev"),
]


def test_model_card_table_and_model_index_equal_the_probe_json(tmp_path):
    encoder = tiny_text_encoder("mean")
    recipe = "objectives:\n  - {name: simcse}\ntrain: {batch_size: 64, max_steps: 1000}\n"
    info = ModelCardInfo(model_name="tiny-simcse", domain="text", objective="simcse", architecture="bert",
                         recipe=recipe, datasets=["wikitext", "../shared/data/text/corpus"], steps=1000,
                         hardware="1x CPU", results=SAMPLE_RESULTS)
    folder = save_encoder(encoder, tmp_path / "encoder", info)
    readme = (folder / "README.md").read_text()
    results, _ = load_results(folder / "probe_results.json")
    assert len(results) == len(SAMPLE_RESULTS)

    table = parse_markdown_table(readme, "## Probe results")
    assert len(table) == len(results)
    for row, result in zip(table, results):
        assert (row["probe"], row["dataset"], row["split"], row["metric"]) == (result.probe, result.dataset, result.split, result.metric)
        decimals = len(row["value"].split(".")[1])
        assert abs(float(row["value"]) - result.value) <= 0.5 * 10 ** -decimals + 1e-12

    metadata = yaml.safe_load(readme.split("---")[1])
    assert metadata["library_name"] == "transformers"
    assert metadata["datasets"] == ["wikitext"]  # local paths are not Hub dataset ids
    reported = {(entry["dataset"]["name"], entry["dataset"]["split"], metric["name"]): metric["value"]
                for entry in metadata["model-index"][0]["results"] for metric in entry["metrics"]}
    assert reported == {(r.dataset, r.split, f"{r.probe} {r.metric}"): r.value for r in results}
    assert recipe.strip() in readme and "1000" in readme and "1x CPU" in readme
    assert "AutoModel.from_pretrained" in readme


def test_update_model_card_merges_new_results(tmp_path):
    encoder = tiny_text_encoder("mean")
    folder = save_encoder(encoder, tmp_path / "encoder", ModelCardInfo(model_name="m", results=SAMPLE_RESULTS[:2]))
    newer = ProbeResult("linear", "cifar10", "accuracy", 0.9, "test")
    update_model_card(folder, encoder, [newer, SAMPLE_RESULTS[3]])
    results, _ = load_results(folder / "probe_results.json")
    by_probe = {r.probe: r.value for r in results}
    assert by_probe == {"linear": 0.9, "knn (k=20)": SAMPLE_RESULTS[1].value, "sts": SAMPLE_RESULTS[3].value}
    table = parse_markdown_table((folder / "README.md").read_text(), "## Probe results")
    assert [row["probe"] for row in table] == [r.probe for r in results]


# ----------------------------------------------------------------------------------------------
# pushing without a network

SECRET = "hf_" + "SeCrEt" * 6


def folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def push_in_subprocess(folder: Path, env_extra: dict[str, str]) -> tuple[dict, str]:
    script = textwrap.dedent(f"""
        import json, time
        from multissl.hub import HubPushError, push_to_hub
        start = time.perf_counter()
        try:
            push_to_hub({str(folder)!r}, "someone/tiny-encoder", private=True)
            outcome = {{"error": None}}
        except HubPushError as error:
            outcome = {{"error": str(error)}}
        outcome["seconds"] = time.perf_counter() - start
        print("__JSON__" + json.dumps(outcome))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update({"HF_TOKEN": SECRET, "HF_HOME": str(folder.parent / "hf_home"), **env_extra})
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [l for l in done.stdout.splitlines() if l.startswith("__JSON__")][-1]
    return json.loads(line[len("__JSON__"):]), done.stdout + done.stderr


@pytest.mark.parametrize(
    "env_extra, expected",
    [({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
     ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "could not push")],  # port 9 (discard) is closed here
    ids=["offline-mode", "connection-refused"],
)
def test_push_without_network_fails_fast_and_keeps_the_folder(tmp_path, env_extra, expected):
    folder = save_encoder(tiny_text_encoder("cls"), tmp_path / "encoder", ModelCardInfo(results=SAMPLE_RESULTS))
    before = folder_digest(folder)
    outcome, output = push_in_subprocess(folder, env_extra)
    assert outcome["error"] is not None and expected in outcome["error"]
    assert "unchanged" in outcome["error"]
    assert outcome["seconds"] < 5.0
    assert SECRET not in output
    assert folder_digest(folder) == before


def test_push_refuses_a_folder_that_is_not_an_encoder_and_a_bad_repo_id(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubPushError, match="config.json"):
        push_to_hub(tmp_path / "empty", "someone/x")
    folder = save_encoder(tiny_text_encoder("cls"), tmp_path / "encoder")
    with pytest.raises(HubPushError, match="user-or-org/name"):
        push_to_hub(folder, "no-owner")
