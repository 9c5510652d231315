"""Names that become file or folder names (dataset, variant, method, run name, protocol, image id).

Every such name passes :func:`safe_name` where it turns into a path, so a manifest variant called
``../../victim`` or a ``run_name=../../x`` override is a clear error instead of a folder written (or
deleted) outside srbench's own.  A safe name is one path component: not empty, not ``.`` or ``..``, no
``/``, ``\\``, NUL or other control character, at most 255 bytes, and (unless ``hidden_ok``) not starting
with ``.`` (srbench keeps its staging folders and records under hidden names).

The Hydra run directory is built from names too (``conf/config.yaml``), before any srbench code runs:
the ``srbench_cell`` resolver registered here checks dataset, protocol, run name and steps there.
"""

from __future__ import annotations

import re
import sys
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


#: set by the ``srbench`` console script: a bad name in the run directory then ends the process with
#: srbench's one-line message (Hydra would print OmegaConf's traceback around it)
EXIT_ON_BAD_CELL = False


def cell_subdir(dataset: Any, protocol: Any, run_name: Any, steps: Any) -> str:
    """``<dataset>/<protocol>/<run_name>/steps<N>``, every part checked (the Hydra run directory)."""
    from srbench.config_check import check_steps

    try:
        parts = [
            safe_name(dataset, "dataset.name"),
            safe_name(protocol, "protocol.name"),
            safe_name(run_name, "run_name"),
            f"steps{check_steps(steps)}",
        ]
    except ConfigError as exc:
        if EXIT_ON_BAD_CELL:
            print(f"srbench: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        raise
    return "/".join(parts)


def _register_resolver() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("srbench_cell"):
        OmegaConf.register_new_resolver("srbench_cell", cell_subdir)


_register_resolver()
