"""Loading PyTorch weight files without running code from them.

A ``.pth``/``.pt``/``.bin``/``.ckpt`` file is a pickle: unpickling it without restrictions can run any code
the file names.  srbench reads such files only with torch's weights-only unpickler (tensors, plain
containers, numbers, strings) through :func:`load_tensors`, or with the restricted Lightning unpickler of
:mod:`srbench.diffusion.checkpoints`.  A file that needs more is refused with :class:`WeightsFileRefused`,
whose message names the file and what it holds, and never suggests turning the safety off (torch's own
message advises ``weights_only=False``; srbench drops it).

:func:`check_tensors_only` is the same load, memoised, for files a third-party loader will unpickle later
(pyiqa and torchvision call ``torch.load(weights_only=False)``): a file that passes holds nothing a
weights-only load would refuse, so the later full unpickling of the same bytes runs no code either.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from srbench.interface import WeightsMissing

#: file suffixes torch.load reads (pickles, or zip archives holding one)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".tar")

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand (\d+)")


class WeightsFileRefused(WeightsMissing):
    """A weights file srbench will not load (it holds more than tensors, or is not a PyTorch file)."""


def refusal_message(path: str | os.PathLike[str], exc: BaseException) -> str:
    """srbench's words for a file torch's weights-only unpickler refused: what the file holds, no advice
    to load it unsafely."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError):
        name, op = _GLOBAL.search(text), _OPERAND.search(text)
        detail = (
            f"it names the Python object {name.group(1)!r}"
            if name
            else f"pickle opcode {op.group(1)} is not allowed"
            if op
            else "it is not a plain weights pickle"
        )
        return (
            f"{path}: refused: the file holds more than tensors ({detail}); srbench loads weights only with "
            "a weights-only unpickler and never runs code from a weights file. Replace it with the "
            "published file (check where it came from and its sha256)."
        )
    first = next((ln for ln in text.splitlines() if ln.strip() and "weights_only" not in ln), "")
    return f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {first[:200]})"


def _is_zip(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def load_tensors(path: str | os.PathLike[str], *, map_location: Any = "cpu", mmap: bool | None = None) -> Any:
    """``torch.load(path, weights_only=True)``; memory-mapped for zip-format files unless ``mmap=False``.

    Any refusal or read error is a :class:`WeightsFileRefused` naming the file (torch's exception is not
    chained: its text advises ``weights_only=False``).
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsMissing(f"weights file not found: {p}")
    use_mmap = _is_zip(p) if mmap is None else (mmap and _is_zip(p))
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=use_mmap)
    except Exception as exc:
        message = refusal_message(p, exc)
    raise WeightsFileRefused(message)


_CHECKED: dict[tuple[str, int, int], str | None] = {}


def check_tensors_only(path: str | os.PathLike[str]) -> str | None:
    """None when ``path`` loads with the weights-only unpickler, else why not (memoised per size/mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        try:
            load_tensors(p, map_location="cpu")
            _CHECKED[key] = None
        except WeightsFileRefused as exc:
            _CHECKED[key] = str(exc)
    return _CHECKED[key]
