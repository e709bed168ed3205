"""Text encoders: stock ``BertModel`` / ``RobertaModel`` returning :class:`Features`.

The wrapped model is what ``save_pretrained`` writes and the Hub receives, next to the tokenizer
(``encoder.processor``): ``AutoModel`` + ``AutoTokenizer`` load the folder without multissl, and
sentence embeddings are its masked mean (or [CLS]) over ``last_hidden_state``.

The pooler head of BERT/RoBERTa is left out (``add_pooling_layer=False``): no objective trains
it, and parameters that get no gradient stop DDP. A folder saved here therefore reloads in
``AutoModel`` with a freshly initialised pooler (a warning), which ``last_hidden_state`` ignores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, BertConfig, BertModel, PreTrainedTokenizerBase, RobertaConfig, RobertaModel

from multissl.domain import EncoderConfig
from domains.text.pretrained import resolve_pretrained
from domains.text.tokenizer import save_tokenizer
from multissl.features import Encoder, Features, masked_mean

__all__ = ["TEXT_PRESETS", "TextEncoder", "build_text_encoder", "ARCHITECTURES"]

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
_POOLER_MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "camembert")


class TextEncoder(Encoder):
    """A transformer over tokens -> Features.

    Inputs: input_ids Long[B, T], attention_mask [B, T] (1 = token, 0 = padding or cut off).
    Features: sequence [B, T, D] (``last_hidden_state``), mask Bool[B, T] (the attention mask),
    pooled [B, D]: the masked mean over the sequence ("mean", Reimers and Gurevych 2019) or the
    first token's state ("cls", Devlin et al. 2019); hidden_states (embeddings first, then every
    layer) when ``output_hidden_states``.
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase | None = None, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling {pooling!r}; choose 'mean' or 'cls'")
        self.model = model
        self.processor = tokenizer
        self.pooling = pooling
        self.dim = model.config.hidden_size

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
        """The stock model (safetensors) and its tokenizer, loadable with transformers 4 and 5."""
        self.model.save_pretrained(folder, safe_serialization=True, **kwargs)
        if self.processor is not None:
            save_tokenizer(self.processor, folder)


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
        extra = {"add_pooling_layer": False} if model_config.model_type in _POOLER_MODEL_TYPES else {}
        model = AutoModel.from_pretrained(source, config=model_config, trust_remote_code=False, **extra)
        if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but {config.name_or_path!r} embeds only "
                f"{model.config.vocab_size}: use the model's own tokenizer (TextConfig.tokenizer)"
            )
        return TextEncoder(model, tokenizer, config.pooling)

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
    model = model_class(model_config, add_pooling_layer=False)
    return TextEncoder(model, tokenizer, config.pooling)
