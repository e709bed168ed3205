"""Modality adapters: rows -> views + encoders. See ``domains.base`` for the contract.

Domains are looked up by name; each lives in its own subpackage and is imported only when used,
so a text-only run never imports torchaudio.
"""

from __future__ import annotations

import importlib
from typing import Any

from domains.base import DataConfig, Domain, EncoderConfig

__all__ = ["DOMAINS", "domain_class", "build_domain", "DataConfig", "EncoderConfig", "Domain"]

#: registry name -> "module:Class"
DOMAINS: dict[str, str] = {
    "image": "domains.image:ImageDomain",
    "audio": "domains.audio:AudioDomain",
    "text": "domains.text:TextDomain",
}


def domain_class(name: str) -> type[Domain]:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; known domains: {sorted(DOMAINS)}")
    module, cls = DOMAINS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_domain(name: str, options: dict[str, Any] | None = None) -> Domain:
    """Build domain ``name`` from a dict of its config fields; unknown fields are errors naming them."""
    cls = domain_class(name)
    config_cls = cls.config_class
    options = dict(options or {})
    known = {f for f in getattr(config_cls, "__dataclass_fields__", {})}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for domain {name!r}; known: {sorted(known)}")
    return cls(config_cls(**options))
