"""Device / dtype resolution and the environment block recorded in every run summary."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from srbench.interface import SRBenchError

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from srbench.config_check import check_device

    dev = torch.device(check_device(name))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SRBenchError(f"device '{name}' requested but CUDA is not available on this machine")
    return dev


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """'auto' is fp16 on CUDA and fp32 elsewhere; half precision on CPU is refused."""
    if name in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        dtype = _DTYPES[str(name)]
    except KeyError:
        raise SRBenchError(f"unknown dtype '{name}'; use one of auto, {', '.join(_DTYPES)}") from None
    if device.type == "cpu" and dtype != torch.float32:
        raise SRBenchError(f"dtype {name} is not supported on CPU in srbench; use fp32")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@cache
def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        timeout=5,
    ).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": dtype_name(dtype),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "diffusers": _pkg("diffusers"),
        "transformers": _pkg("transformers"),
        "pyiqa": _pkg("pyiqa"),
        "srbench": _pkg("srbench"),
        "git_commit": git_commit(),
        "host": platform.node(),
    }
