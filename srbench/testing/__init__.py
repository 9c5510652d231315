"""Helpers for tests and demos that need models without downloads.

Random-weights convention (so numbers from them are always labelled ``weights: random``):
a builder that writes random weights also writes a marker JSON file

- into a model *folder* as ``<folder>/srbench_random_weights.json``, or
- beside a single weights *file* ``x.pth`` as ``x.pth.srbench_random_weights.json``.

Plugins call :func:`is_random_weights` on every path they load and report ``real=False`` if any is
marked.  The tiny SD builders live in :mod:`srbench.testing.tiny_sd` (imports diffusers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RANDOM_WEIGHTS_MARKER = "srbench_random_weights.json"


def random_marker_path(path: str | Path) -> Path:
    """Where the marker for ``path`` (a folder or a file) lives."""
    p = Path(path)
    if p.is_dir():
        return p / RANDOM_WEIGHTS_MARKER
    return p.with_name(f"{p.name}.{RANDOM_WEIGHTS_MARKER}")


def mark_random_weights(path: str | Path, **info: Any) -> Path:
    """Write the marker for ``path`` (which must exist) with ``info`` (builder, seed, ...)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(p)
    marker = random_marker_path(p)
    marker.write_text(json.dumps({"random": True, **info}, indent=2, sort_keys=True, default=str) + "\n")
    return marker


def random_weights_info(path: str | Path) -> dict[str, Any] | None:
    """The marker's content if ``path`` holds random (test) weights, else None."""
    marker = random_marker_path(path)
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return {"random": True, "marker": str(marker), "note": "unreadable marker"}
    return data if isinstance(data, dict) else {"random": True}


def is_random_weights(path: str | Path) -> bool:
    return random_weights_info(path) is not None


__all__ = [
    "RANDOM_WEIGHTS_MARKER",
    "install_in_hf_cache",
    "is_random_weights",
    "mark_random_weights",
    "random_marker_path",
    "random_weights_info",
]


def install_in_hf_cache(
    source: str | Path,
    repo_id: str,
    *,
    revision: str = "main",
    commit: str = "0" * 40,
    cache_dir: str | Path | None = None,
) -> Path:
    """Copy a local folder (or one file) into the Hugging Face cache as if ``repo_id`` had been
    downloaded, so code that loads by repo id runs offline.  Returns the snapshot folder.

    Layout (huggingface_hub's): ``<cache>/models--org--name/refs/<revision>`` holds ``commit``;
    files go to ``<cache>/models--org--name/snapshots/<commit>/``.  ``cache_dir`` defaults to
    ``huggingface_hub.constants.HF_HUB_CACHE`` (set by HF_HOME / HF_HUB_CACHE).
    """
    import shutil

    if cache_dir is None:
        from huggingface_hub import constants

        cache_dir = constants.HF_HUB_CACHE
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    src = Path(source)
    if src.is_dir():
        shutil.copytree(src, snapshot, dirs_exist_ok=True)
    else:
        shutil.copy2(src, snapshot / src.name)
    return snapshot
