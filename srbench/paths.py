"""Where srbench keeps things on disk: caches for converted weights and data, never in git."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """srbench's own cache (converted weights, metric parameter files): ``$SRBENCH_CACHE``,
    else ``$XDG_CACHE_HOME/srbench``, else ``~/.cache/srbench``."""
    env = os.environ.get("SRBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "srbench"


def data_dir() -> Path:
    """Test-set cache: ``$SRBENCH_DATA``, else ``<cache_dir>/data``."""
    env = os.environ.get("SRBENCH_DATA")
    return Path(env).expanduser() if env else cache_dir() / "data"


def weights_dir() -> Path:
    """Converted / downloaded method weights srbench manages itself: ``<cache_dir>/weights``."""
    return cache_dir() / "weights"
