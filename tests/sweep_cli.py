"""srbench as a subprocess on a toy paired set: the command lines of the sweep and records tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def toy_pairs(root: Path, n: int, size: int = 16) -> Path:
    """``n`` random HR images of ``size`` px under ``root/HR``, their every-4th-pixel LR under ``root/LR``."""
    for sub in ("LR", "HR"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        hr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(hr).save(root / "HR" / f"im{i}.png")
        Image.fromarray(np.ascontiguousarray(hr[::4, ::4])).save(root / "LR" / f"im{i}.png")
    return root


def sweep_command(tmp: Path, *over: str, multirun: bool = True) -> list[str]:
    """``srbench [-m]`` with the test plugins: bicubic on ``tmp/data`` (PSNR), into ``tmp/runs``."""
    data = tmp / "data"
    return [
        sys.executable,
        "-m",
        "srbench.cli",
        *(["-m"] if multirun else []),
        "plugins=[tests.sweep_plugins]",
        f"out_dir={tmp / 'runs'}",
        "method=bicubic",
        "dataset=paired",
        "dataset.name=toy",
        f"dataset.lr_dir={data / 'LR'}",
        f"dataset.hr_dir={data / 'HR'}",
        "metrics.names=[psnr]",
        "warmup=0",
        "save_images=false",
        *over,
    ]


def srbench_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_srbench(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=srbench_env(), timeout=300)
