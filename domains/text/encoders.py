"""Text encoders: stock ``BertModel`` / ``RobertaModel`` returning :class:`Features`.

The wrapped model is what ``save_pretrained`` writes and the Hub receives, next to the tokenizer
(``encoder.processor``): ``AutoModel`` + ``AutoTokenizer`` load the folder without multissl, and
sentence embeddings are its masked mean (or [CLS]) over ``last_hidden_state``.

A folder saved here is also a sentence-transformers model (``modules.json``, ``1_Pooling/``,
``sentence_bert_config.json``, ``config_sentence_transformers.json``) whose pooling is the one
trained: ``SentenceTransformer(folder).encode(texts)`` returns ``Features.pooled``.

The pooler head of BERT/RoBERTa (a dense layer on [CLS]) is kept but frozen: no objective trains
it (a parameter without a gradient would stop DDP), and keeping it lets plain ``AutoModel`` load a
saved folder with no missing weights. ``pooling=None`` takes the pretrained model's own pooling
from its sentence-transformers config (all-MiniLM-L6-v2: mean), else "mean": [CLS] pooling on a
mean-pooled model costs points before any training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedTokenizerBase, RobertaConfig, RobertaModel

from multissl.domain import EncoderConfig
from domains.text.pretrained import resolve_pretrained
from domains.text.tokenizer import save_tokenizer
from multissl.features import Encoder, Features, masked_mean

__all__ = ["TEXT_PRESETS", "TextEncoder", "build_text_encoder", "ARCHITECTURES", "pretrained_pooling",
           "write_sentence_transformers_files"]

#: size -> (layers, hidden, heads, feed-forward); mini/small/base are Turc et al. 2019's BERT
#: miniatures and BERT-base; tiny is smaller still, for tests; cpu is named for what it is for
#: (training from scratch on a 2-core CPU in minutes): BERT-mini's 4 layers at width 256
TEXT_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256},
    "cpu": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "mini": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
    "small": {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
}
ARCHITECTURES = {"bert": (BertConfig, BertModel), "roberta": (RobertaConfig, RobertaModel)}


class TextEncoder(Encoder):
    """A transformer over tokens -> Features.

    Inputs: input_ids Long[B, T], attention_mask [B, T] (1 = token, 0 = padding or cut off).
    Features: sequence [B, T, D] (``last_hidden_state``), mask Bool[B, T] (the attention mask),
    pooled [B, D]: the masked mean over the sequence ("mean", Reimers and Gurevych 2019) or the
    first token's state ("cls", Devlin et al. 2019); hidden_states (embeddings first, then every
    layer) when ``output_hidden_states``.
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, pooling: str = "mean",
                 max_length: int = 512) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {pooling!r}; choose 'mean' or 'cls'")
        self.model = model
        self.processor = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.dim = model.config.hidden_size
        pooler = getattr(model, "pooler", None)
        if pooler is not None:
            pooler.requires_grad_(False)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> Features:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        output = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        sequence = output.last_hidden_state
        mask = attention_mask.bool()
        pooled = sequence[:, 0] if self.pooling == "cls" else masked_mean(sequence, mask)
        hidden_states = tuple(output.hidden_states) if output_hidden_states else None
        return Features(pooled=pooled, sequence=sequence, mask=mask, hidden_states=hidden_states)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> None:
        """The stock model (safetensors) and its tokenizer, loadable with transformers 4 and 5, and
        the sentence-transformers files that make the folder a ``SentenceTransformer`` embedding
        as ``Features.pooled`` does."""
        self.model.save_pretrained(folder, safe_serialization=True, **kwargs)
        if self.processor is not None:
            save_tokenizer(self.processor, folder)
        write_sentence_transformers_files(Path(folder), self.dim, self.pooling, self.max_length)


def write_sentence_transformers_files(folder: Path, dim: int, pooling: str, max_length: int) -> None:
    """sentence-transformers' folder layout (``modules.json``: a Transformer, then a Pooling with the
    trained mode), written as plain JSON: no sentence-transformers needed to save."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    pooling_config = {"word_embedding_dimension": dim, "pooling_mode_cls_token": pooling == "cls",
                      "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
                      "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                      "pooling_mode_lasttoken": False, "include_prompt": True}
    files = {"modules.json": modules, "1_Pooling/config.json": pooling_config,
             "sentence_bert_config.json": {"max_seq_length": max_length, "do_lower_case": False},
             "config_sentence_transformers.json": {"prompts": {}, "default_prompt_name": None,
                                                   "similarity_fn_name": "cosine"}}
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(content, indent=2) + "\n")


def pretrained_pooling(source: str | Path) -> str | None:
    """The pooling a sentence-transformers folder says it was trained with ("cls" or "mean"), or
    None when the folder has no pooling config (or one this encoder cannot reproduce)."""
    modules = Path(source) / "modules.json"
    if not modules.is_file():
        return None
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Pooling"):
            config_path = Path(source) / module.get("path", "") / "config.json"
            if config_path.is_file():
                config = json.loads(config_path.read_text())
                if config.get("pooling_mode_cls_token"):
                    return "cls"
                if config.get("pooling_mode_mean_tokens"):
                    return "mean"
    return None


def _set_overrides(config, overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ValueError(f"encoder override {key!r} is no field of {type(config).__name__}")
        setattr(config, key, value)


def build_text_encoder(config: EncoderConfig, tokenizer: PreTrainedTokenizerBase | None, *, max_length: int = 512) -> TextEncoder:
    """A :class:`TextEncoder` from a size preset sized to ``tokenizer`` (vocabulary, padding id,
    positions for ``max_length`` tokens) or, with ``config.name_or_path``, pretrained weights
    (``AutoModel.from_pretrained``, a local folder or a Hub id, never remote code) checked against
    ``tokenizer``'s vocabulary."""
    if config.name_or_path is not None:
        source = resolve_pretrained(config.name_or_path)
        model_config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        _set_overrides(model_config, config.overrides)
        model = AutoModel.from_pretrained(source, config=model_config, trust_remote_code=False)
        if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but {config.name_or_path!r} embeds only "
                f"{model.config.vocab_size}: use the model's own tokenizer (TextConfig.tokenizer)"
            )
        pooling = config.pooling or (pretrained_pooling(source) if Path(source).is_dir() else None) or "mean"
        return TextEncoder(model, tokenizer, pooling, max_length)

    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"text architecture {config.architecture!r} unknown; known: {list(ARCHITECTURES)}")
    if config.size not in TEXT_PRESETS:
        raise ValueError(f"text encoder size {config.size!r} unknown; presets: {list(TEXT_PRESETS)}")
    if tokenizer is None:
        raise ValueError("a text encoder built from a preset needs the tokenizer (its vocabulary sizes the embeddings)")
    config_class, model_class = ARCHITECTURES[config.architecture]
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # RoBERTa numbers positions from pad_token_id + 1 on, so it needs that many more of them
    positions = max(512, max_length) if config.architecture == "bert" else max_length + pad_token_id + 1
    model_config = config_class(
        vocab_size=len(tokenizer),
        max_position_embeddings=positions,
        pad_token_id=pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        type_vocab_size=2 if config.architecture == "bert" else 1,
        **TEXT_PRESETS[config.size],
    )
    _set_overrides(model_config, config.overrides)
    model = model_class(model_config)
    return TextEncoder(model, tokenizer, config.pooling or "mean", max_length)
