"""Atomic file writes that keep the user's umask.

``tempfile.mkstemp`` creates its file ``-rw-------`` whatever the umask says; renamed into place, every result
and checkpoint would stay unreadable to colleagues on a shared cluster.  Each temp file srbench renames into
place is therefore given the mode a plain ``open(path, "w")`` would have created: ``0o666 & ~umask``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it: set it straight back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    return 0o666 & ~current_umask()


def follow_umask(fd: int) -> None:
    """Give a file created by ``mkstemp`` (mode 0600) the umask's mode instead."""
    os.fchmod(fd, file_mode())


def temp_file_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """``mkstemp`` in ``path``'s folder (so the rename is atomic), with the umask's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    follow_umask(fd)
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, and rename it over ``path``."""
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
