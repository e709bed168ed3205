"""How the command line reports what the user can fix: one line, exit code 2.

Known kinds (a bad recipe key, a bad sample, a missing file, too little data, a damaged or unsafe
checkpoint, no network, a non-finite loss) print ``error: <what, naming the file/row/key>; <the
fix>`` and exit 2. Anything else is a bug and keeps its traceback. ``--debug`` or the
environment variable ``MULTISSL_DEBUG=1`` shows the traceback of known kinds too.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

__all__ = ["DataError", "LaunchError", "EXIT_USER_ERROR", "debug_enabled", "describe", "one_line", "report", "run_reporting"]

EXIT_USER_ERROR = 2


class LaunchError(RuntimeError):
    """The processes a launcher started do not form the run it asked for; the message says how to
    launch it."""


class DataError(ValueError):
    """The data could not be loaded as the recipe describes it; the message names the domain, the
    path and what is wrong."""


def debug_enabled(flag: bool = False) -> bool:
    return flag or os.environ.get("MULTISSL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _network_errors() -> tuple[type, ...]:
    kinds: list[type] = [ConnectionError, TimeoutError]
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

        kinds += [LocalEntryNotFoundError, OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - older huggingface_hub
        pass
    try:
        import httpx

        kinds += [httpx.TransportError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import requests

        kinds += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover
        pass
    return tuple(kinds)


def one_line(text: str) -> str:
    """The message of an error, on one line. A DataLoader worker's error carries the worker's
    traceback in its message; its last line is the original ``Type: message``."""
    text = text.strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = re.sub(r"^[\w.]+(Error|Exception|Warning)?: ", "", last)
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def describe(error: BaseException) -> str | None:
    """``error: ...; fix`` for a known kind of error, or None for anything else (a bug)."""
    from multissl.checkpoint import CheckpointError
    from multissl.config import RecipeError
    from multissl.domain import BadSampleError

    message = one_line(str(error)) or type(error).__name__
    if isinstance(error, BadSampleError):
        if "on_bad_sample" in message:  # the message gives its own fix
            return f"error: bad sample: {message}"
        return (f"error: bad sample: {message}; fix or remove it, or set data.on_bad_sample=skip to skip bad "
                "samples (each is named in log.jsonl and counted)")
    if isinstance(error, (RecipeError, CheckpointError, DataError, LaunchError)):
        return f"error: {message}"
    if type(error).__name__ == "NonFiniteLossError":
        return f"error: {message}"
    if isinstance(error, _network_errors()):
        cached = "" if debug_enabled() or os.environ.get("HF_HUB_OFFLINE") else ", or set HF_HUB_OFFLINE=1 to use what is cached"
        return (f"error: no network: {message}; download the dataset or model while online (or copy it) and "
                f"point the recipe at the local path{cached}")
    if isinstance(error, FileNotFoundError):
        return f"error: file not found: {message}; check the path in the recipe or on the command line"
    if isinstance(error, UnicodeDecodeError):
        return f"error: {message}; set data.encoding to the file's encoding (e.g. latin-1)"
    return None


def report(error: BaseException, prefix: str = "") -> int | None:
    """Print a known error on one line to stderr and return the exit code 2; None otherwise."""
    line = describe(error)
    if line is None:
        return None
    print(f"{prefix}{line}", file=sys.stderr)
    return EXIT_USER_ERROR


def run_reporting(function: Callable[[], int], debug: bool = False, prefix: str = "") -> int:
    """``function()``'s exit code; a known error becomes one line and exit code 2 (unless
    debugging, when it propagates with its traceback)."""
    try:
        return function()
    except Exception as error:  # noqa: BLE001 - unknown kinds are re-raised below
        if debug_enabled(debug):
            raise
        code = report(error, prefix)
        if code is None:
            raise
        return code
