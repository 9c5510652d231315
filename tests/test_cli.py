"""End to end through the console script: a Hydra multirun, then the leaderboard."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def _srbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "srbench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


def test_multirun_then_leaderboard(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for sub in ("LR", "HR"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        hr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(hr).save(tmp_path / "data" / "HR" / f"x{i}.png")
        Image.fromarray(np.ascontiguousarray(hr[::4, ::4])).save(tmp_path / "data" / "LR" / f"x{i}.png")
    runs = tmp_path / "runs"
    common = [
        f"out_dir={runs}",
        "dataset=paired",
        "dataset.name=toy",
        f"dataset.lr_dir={tmp_path / 'data/LR'}",
        f"dataset.hr_dir={tmp_path / 'data/HR'}",
        "metrics.names=[psnr,ssim]",
    ]
    res = _srbench("-m", "method=bicubic", "steps=1,2", *common, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[done]" in res.stdout and "[skipped]" in res.stdout  # bicubic has no steps=2
    # the data folders differ from conf/dataset/paired.yaml, so the label carries their hash
    (cell,) = runs.glob("toy/full/bicubic-*")
    summary = json.loads((cell / "steps1/summary.json").read_text())
    assert summary["status"] == "done" and summary["n_ok"] == 2
    assert summary["options"] == {
        "dataset.hr_dir": str(tmp_path / "data/HR"),
        "dataset.lr_dir": str(tmp_path / "data/LR"),
    }
    assert json.loads((cell / "steps2/summary.json").read_text())["status"] == "skipped"
    assert not (runs / "toy/full/bicubic-*/.hydra").exists() and list(runs.glob("sweeps/*/0/.hydra"))

    lb = _srbench("leaderboard", str(runs), cwd=tmp_path)
    assert lb.returncode == 0, lb.stderr
    squeezed = re.sub(r" {2,}", " ", lb.stdout)  # tabulate pads columns
    assert "| bicubic | 1 | real |" in squeezed and (runs / "leaderboard.csv").is_file()

    # a single run with a bad dataset path fails cleanly, naming the folder, with exit code 1
    bad = _srbench(
        "method=bicubic", f"out_dir={runs}", "dataset=lr_only", "dataset.lr_dir=/no/such/dir", cwd=tmp_path
    )
    assert bad.returncode == 1 and "/no/such/dir: folder not found" in bad.stderr + bad.stdout


def test_methods_listing(tmp_path: Path) -> None:
    res = _srbench("methods", cwd=tmp_path)
    assert res.returncode == 0 and "bicubic" in res.stdout and "realesrgan" in res.stdout
