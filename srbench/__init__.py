"""srbench: diffusion-prior image super-resolution methods benchmarked side by side."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _torchvision_shim() -> None:
    # Plain PyPI basicsr 1.4.2 imports a module torchvision removed in 0.17; basicsr-fixed does
    # not need this, but a user who installed plain basicsr is rescued by it (env.md, section 3).
    try:
        import torchvision.transforms.functional as tvf
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return
    sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)


_torchvision_shim()

from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps, WeightsInfo, WeightsMissing  # noqa: E402
from srbench.registry import create_method, list_methods, register_method  # noqa: E402

__all__ = [
    "SRBenchError",
    "SRMethod",
    "UnsupportedSteps",
    "WeightsInfo",
    "WeightsMissing",
    "create_method",
    "list_methods",
    "register_method",
]
