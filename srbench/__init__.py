"""srbench: diffusion-prior image super-resolution methods benchmarked side by side."""

from __future__ import annotations

import os
import sys

# Before torch loads OpenMP: idle worker threads sleep instead of spinning.  With any other load on
# the CPU, spinning threads made Real-ESRGAN on a 64x64 image take 22.9 s instead of 2.5 s (2 cores).
# Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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
