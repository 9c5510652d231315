"""Leaderboard aggregation: one row per cell, arrows, best per column, protocols never mixed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from srbench.leaderboard import collect, write_leaderboard


def _summary(
    root: Path,
    method: str,
    steps: int,
    dataset: str,
    protocol: str,
    psnr: float,
    niqe: float,
    real: bool = True,
    status: str = "done",
) -> None:
    d = root / dataset / protocol / method / f"steps{steps}"
    d.mkdir(parents=True)
    s: dict[str, Any] = {
        "status": status,
        "method": method,
        "steps": steps,
        "dataset": dataset,
        "protocol": protocol,
        "weights": {"label": "real" if real else "random", "real": real},
        "n_ok": 3,
        "n_failed": 0,
        "metrics": {
            "psnr": {"mean": psnr, "ci95": 0.5, "lower_better": False},
            "niqe": {"mean": niqe, "ci95": 0.1, "lower_better": True},
        },
        "latency_s": {"total": {"median": 0.25, "p90": 0.3}},
        "environment": {"device_name": "CPU", "dtype": "fp32"},
    }
    (d / "summary.json").write_text(json.dumps(s))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _summary(root, "realesrgan", 1, "demo", "full", 24.0, 4.0)
    _summary(root, "bicubic", 1, "demo", "full", 23.0, 7.0)
    _summary(root, "invsr", 1, "demo", "full", 25.0, 3.0, real=False)  # random weights: never "best"
    _summary(root, "bicubic", 1, "demo", "crop128", 30.0, 6.0)
    _summary(root, "broken", 1, "demo", "full", 99.0, 0.0, status="failed")
    return root


def test_collect_one_row_per_cell(runs: Path) -> None:
    df, lower = collect([runs])
    assert len(df) == 4  # the failed cell is left out
    assert lower == {"psnr": False, "niqe": True}
    assert set(zip(df["method"], df["protocol"], strict=True)) == {
        ("realesrgan", "full"),
        ("bicubic", "full"),
        ("invsr", "full"),
        ("bicubic", "crop128"),
    }


def test_markdown_and_csv(runs: Path, tmp_path: Path) -> None:
    csv_path, md_path, md = write_leaderboard([runs], tmp_path / "lb")
    assert pd.read_csv(csv_path).shape[0] == 4
    assert md_path.read_text() == md
    assert "psnr ↑" in md and "niqe ↓" in md
    # protocols get separate tables; the crop128 bicubic row (30 dB) is not ranked against full-image rows
    full, crop = _section(md, "demo — protocol `full`"), _section(md, "demo — protocol `crop128`")
    assert "**24.00**" in full and "**4.0000**" in full  # best real values, not the random invsr row
    assert "25.00" in full and "**25.00**" not in full
    assert "30.00" in crop and "**30.00**" not in crop  # a single row has no "best"
    assert "random" in md and "not results" in md


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        collect([tmp_path / "nope"])


def test_pareto_front() -> None:
    from srbench.leaderboard import pareto_front

    lat = [1.0, 2.0, 3.0, 0.5, 2.5]
    psnr = [24.0, 25.0, 24.5, 20.0, 26.0]
    # (3.0, 24.5) is beaten by (2.0, 25.0); the rest trade latency for quality
    assert pareto_front(lat, psnr, lower_better=False) == [3, 0, 1, 4]
    lpips = [0.3, 0.2, 0.25, 0.5, 0.1]
    assert pareto_front(lat, lpips, lower_better=True) == [3, 0, 1, 4]


def test_ranks_and_plots(runs: Path, tmp_path: Path) -> None:
    csv_path, _, md = write_leaderboard([runs], tmp_path / "lb")
    df = pd.read_csv(csv_path)
    real_full = df[(df["protocol"] == "full") & (df["weights"] == "real")].set_index("method")
    assert real_full.loc["realesrgan", "psnr_rank"] == 1 and real_full.loc["bicubic", "niqe_rank"] == 2
    assert df.set_index("method").loc["invsr", "psnr_rank"] == 1  # ranked among random rows only
    full = _section(md, "demo — protocol `full`")
    assert full.index("| realesrgan") < full.index("| bicubic") < full.index("| invsr")  # real rows first
    assert "**24.00** ± 0.50" in full and "23.00 ± 0.50" in full
    png = tmp_path / "lb" / "plots" / "demo__full.png"
    assert png.is_file() and png.stat().st_size > 5000
    assert "![quality vs latency, demo / full](plots/demo__full.png)" in md
