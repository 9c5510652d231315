"""srbench: diffusion-prior image super-resolution methods benchmarked side by side.

    import srbench
    sr = srbench.load("invsr", steps=1, device="cuda")   # a ready method (weights loaded)
    out = sr("photo.png")                                 # path / PIL / numpy / tensor in, same kind out

The names below are imported on first use, so ``srbench --help`` and shell completion do not pay for
importing torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

# Before torch loads OpenMP: idle worker threads sleep instead of spinning.  With any other load on
# the CPU, spinning threads made Real-ESRGAN on a 64x64 image take 22.9 s instead of 2.5 s (2 cores).
# Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

# Libraries' chatter that is not an event of the run: pyiqa/basicsr log "Network [PSNR] is created" per
# metric at INFO, bitsandbytes warns about an optional 4-bit CPU kernel srbench never uses.  Levels the
# user set stay.
for _name, _level in (
    ("pyiqa", logging.WARNING),
    ("basicsr", logging.WARNING),
    ("bitsandbytes", logging.ERROR),
):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)


# diffusers passes huggingface_hub an argument it deprecated: a warning per config read, nothing to act on
warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)


class _FunctionalTensorAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Plain PyPI basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, removed in
    torchvision 0.17; basicsr-fixed does not need it, but a user who installed plain basicsr is rescued
    (env.md, section 3).  Last on ``sys.meta_path``, so a torchvision that has the module wins, and
    nothing is imported until someone asks for it."""

    NAME = "torchvision.transforms.functional_tensor"

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(fullname, self) if fullname == self.NAME else None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        functional = importlib.import_module("torchvision.transforms.functional")
        module.__dict__.update({k: v for k, v in vars(functional).items() if not k.startswith("__")})


if not any(isinstance(f, _FunctionalTensorAlias) for f in sys.meta_path):
    sys.meta_path.append(_FunctionalTensorAlias())

_LAZY = {
    "SRBenchError": "srbench.interface",
    "SRMethod": "srbench.interface",
    "UnsupportedSteps": "srbench.interface",
    "WeightsInfo": "srbench.interface",
    "WeightsMissing": "srbench.interface",
    "create_method": "srbench.registry",
    "list_methods": "srbench.registry",
    "register_method": "srbench.registry",
    "load": "srbench.api",
    "evaluate": "srbench.api",
}

if TYPE_CHECKING:
    from srbench.api import evaluate, load
    from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps, WeightsInfo, WeightsMissing
    from srbench.registry import create_method, list_methods, register_method


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'srbench' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "SRBenchError",
    "SRMethod",
    "UnsupportedSteps",
    "WeightsInfo",
    "WeightsMissing",
    "__version__",
    "create_method",
    "evaluate",
    "list_methods",
    "load",
    "register_method",
]
