"""Names that become file or folder names (dataset, variant, method, run name, protocol, image id).

Every such name passes :func:`safe_name` where it turns into a path, so a manifest variant called
``../../victim`` or a ``run_name=../../x`` override is a clear error instead of a folder written (or
deleted) outside srbench's own.  A safe name is one path component: not empty, not ``.`` or ``..``, no
``/``, ``\\``, NUL or other control character, at most 255 bytes, and (unless ``hidden_ok``) not starting
with ``.`` (srbench keeps its staging folders and records under hidden names).

A cell's directory is built from names too (:func:`srbench.runner.cell_dir`): every part is checked by
:func:`srbench.config_check.validate_run_config` before the path exists.
"""

from __future__ import annotations

import re
from typing import Any

from srbench.interface import ConfigError

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/\\]")
MAX_BYTES = 255  # NAME_MAX of common Linux/macOS file systems


class UnsafeName(ConfigError):
    """A name cannot be used as a file or folder name; the message says which name and why."""


def name_problem(value: Any, *, hidden_ok: bool = False) -> str | None:
    """Why ``value`` is not a safe single path component, or None when it is."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return f"must be a string, got {type(value).__name__}"
    value = str(value)
    if not value:
        return "is empty"
    if value in (".", ".."):
        return "is a relative folder reference"
    bad = _FORBIDDEN.search(value)
    if bad:
        return f"contains {bad.group()!r} (no '/', '\\' or control characters)"
    if value.startswith(".") and not hidden_ok:
        return "starts with '.' (hidden names are reserved for srbench's own files)"
    if len(value.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        return f"is longer than {MAX_BYTES} bytes"
    return None


def safe_name(value: Any, what: str, *, hidden_ok: bool = False) -> str:
    """``value`` (as a string) when it is one safe path component, else :class:`UnsafeName` naming
    ``what``; an integer is taken as its decimal string (``run_name=5``)."""
    problem = name_problem(value, hidden_ok=hidden_ok)
    if problem:
        raise UnsafeName(f"{what} {value!r} cannot be used as a file or folder name: it {problem}")
    return str(value)
