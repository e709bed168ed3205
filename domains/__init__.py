"""Modality adapters: rows -> views + encoders. The contract (``Domain``, ``DataConfig``, ...) is
the core's: ``multissl.domain``; domains import only the core's contracts.

Domains are looked up by name; each lives in its own subpackage and is imported only when used,
so a text-only run never imports torchaudio.
"""

from __future__ import annotations

import importlib
from typing import Any

from multissl.domain import DataConfig, Domain, EncoderConfig
from multissl.options import build, closest

__all__ = ["DOMAINS", "domain_class", "domain_config_class", "build_domain", "DataConfig", "EncoderConfig", "Domain"]

#: registry name -> "module:Class"
DOMAINS: dict[str, str] = {
    "image": "domains.image:ImageDomain",
    "audio": "domains.audio:AudioDomain",
    "text": "domains.text:TextDomain",
}


def domain_class(name: str) -> type[Domain]:
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}{closest(name, DOMAINS)}; known domains: {sorted(DOMAINS)}")
    module, cls = DOMAINS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def domain_config_class(name: str) -> type:
    """The typed config dataclass of domain ``name`` (what a recipe's ``domains.X.options`` fill)."""
    return domain_class(name).config_class


def build_domain(name: str, options: dict[str, Any] | None = None, key: str | None = None) -> Domain:
    """Build domain ``name`` from a dict of its config fields, checked against its config dataclass
    (:class:`~multissl.options.OptionError` naming ``key``.field on an unknown key or a wrong type)."""
    cls = domain_class(name)
    return cls(build(cls.config_class, dict(options or {}), key or f"domains.{name}.options"))
