"""Scores are a record of their own: new metrics are added from the saved SR images (the model is not run
again), old scores are kept, and each score names the metric set (pass) that made it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from srbench.claim import CellRefused
from srbench.records import PerImageLog
from srbench.rescore import rescore_cli
from srbench.runner import _METHODS, cell_dir, run_cell
from srbench.score import compose
from tests.paired_photos import write_photo_pairs


@pytest.fixture(autouse=True)
def _fresh_methods() -> None:
    _METHODS.clear()


def _data(root: Path, size: int = 96) -> Path:
    return write_photo_pairs(root, size)


def _cfg(tmp: Path, runs: Path, metrics: str, *extra: str):
    data = tmp / "data"
    return compose(
        [
            "method=bicubic",
            "method.name=slow_nearest",
            "plugins=[tests.sweep_plugins]",
            f"+method.started={tmp / 'upscaled'}",  # touched by every upscale() call
            "dataset=paired",
            f"dataset.lr_dir={data / 'LR'}",
            f"dataset.hr_dir={data / 'HR'}",
            f"metrics.names=[{metrics}]",
            f"out_dir={runs}",
            "warmup=0",
            *extra,
        ]
    )


def _mtimes(folder: Path) -> dict[str, int]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in files}


def test_a_new_metric_set_is_added_from_the_saved_images_and_old_scores_are_kept(tmp_path: Path) -> None:
    _data(tmp_path / "data")
    runs = tmp_path / "runs"
    first = _cfg(tmp_path, runs, "psnr")
    cell = cell_dir(first, runs)
    assert run_cell(first, cell).status == "done"
    psnr_before = pd.read_csv(cell / "per_image.csv")["psnr"].tolist()
    images = _mtimes(cell / "images")
    (tmp_path / "upscaled").unlink()

    out = run_cell(_cfg(tmp_path, runs, "psnr,ssim"), cell)  # another metric set: same cell, ssim added
    assert out.status == "done" and "added ssim from the saved images" in out.reason
    assert not (tmp_path / "upscaled").exists()  # the model never ran
    assert _mtimes(cell / "images") == images
    rows = pd.read_csv(cell / "per_image.csv")
    assert rows["psnr"].tolist() == psnr_before  # kept, not recomputed
    s = json.loads((cell / "summary.json").read_text())
    assert [m["metrics"] for m in s["metric_sets"]] == [["psnr"], ["ssim"]]
    assert [m["how"] for m in s["metric_sets"]] == ["run", "run"]
    assert s["metrics"]["psnr"]["set"] == 0 and s["metrics"]["ssim"]["set"] == 1
    assert json.loads((cell / "cell.json").read_text())["scoring"]["metrics"] == ["psnr", "ssim"]
    assert all("ssim" in r for r in PerImageLog(cell / "per_image.jsonl").rows())

    # the same scores as a cell scored with both from the start (bit for bit)
    fresh_runs = tmp_path / "fresh"
    fresh = _cfg(tmp_path, fresh_runs, "psnr,ssim")
    assert run_cell(fresh, cell_dir(fresh, fresh_runs)).status == "done"
    fresh_rows = pd.read_csv(cell_dir(fresh, fresh_runs) / "per_image.csv")
    assert rows["ssim"].tolist() == fresh_rows["ssim"].tolist()
    assert (
        s["metrics"]["ssim"]["mean"]
        == json.loads((cell_dir(fresh, fresh_runs) / "summary.json").read_text())["metrics"]["ssim"]["mean"]
    )

    # a subset of what the cell holds: nothing to do, nothing written
    snapshot = _mtimes(cell)
    assert run_cell(_cfg(tmp_path, runs, "ssim"), cell).status == "already_done"
    assert _mtimes(cell) == snapshot

    # srbench rescore over the results tree: niqe added by a "rescore" pass, psnr kept as stored (never
    # recomputed: a stored value the images would not give survives); then nothing left to add
    plog = PerImageLog(cell / "per_image.jsonl")
    stored = plog.rows()
    stored[0]["psnr"] = 99.0
    plog.repair(stored)
    psnr_before[0] = 99.0
    assert rescore_cli([str(runs), "--metrics", "niqe,psnr"]) == 0
    s = json.loads((cell / "summary.json").read_text())
    assert s["metric_sets"][-1]["metrics"] == ["niqe"] and s["metric_sets"][-1]["how"] == "rescore"
    assert s["metrics"]["niqe"]["set"] == 2 and "niqe" in pd.read_csv(cell / "per_image.csv")
    assert pd.read_csv(cell / "per_image.csv")["psnr"].tolist() == psnr_before
    snapshot = _mtimes(cell)
    assert rescore_cli([str(cell), "--metrics", "niqe"]) == 0
    assert _mtimes(cell) == snapshot


def test_a_partial_cell_gets_new_metrics_on_finished_images_then_runs_the_rest(tmp_path: Path) -> None:
    _data(tmp_path / "data")
    runs = tmp_path / "runs"
    first = _cfg(tmp_path, runs, "psnr")
    cell = cell_dir(first, runs)
    assert run_cell(first, cell).status == "done"
    plog = PerImageLog(cell / "per_image.jsonl")
    plog.repair(plog.rows()[:2])  # as if killed after two images
    (cell / "summary.json").unlink()
    (tmp_path / "upscaled").unlink()

    assert run_cell(_cfg(tmp_path, runs, "psnr,ssim"), cell).status == "done"
    rows = pd.read_csv(cell / "per_image.csv")
    assert rows["ssim"].notna().all() and len(rows) == 4
    assert (tmp_path / "upscaled").exists()  # the two unfinished images did run
    fresh_runs = tmp_path / "fresh"
    fresh = _cfg(tmp_path, fresh_runs, "psnr,ssim")
    assert run_cell(fresh, cell_dir(fresh, fresh_runs)).status == "done"
    fresh_rows = pd.read_csv(cell_dir(fresh, fresh_runs) / "per_image.csv")
    assert rows.set_index("id")["ssim"].to_dict() == fresh_rows.set_index("id")["ssim"].to_dict()


def test_rescore_refuses_cells_without_images_or_on_a_changed_dataset(tmp_path: Path, capsys) -> None:
    data = _data(tmp_path / "data")
    runs = tmp_path / "runs"
    first = _cfg(tmp_path, runs, "psnr", "save_images=false")
    cell = cell_dir(first, runs)
    assert run_cell(first, cell).status == "done"
    snapshot = _mtimes(cell)
    assert rescore_cli([str(cell), "--metrics", "ssim"]) == 1
    assert "not under images/" in capsys.readouterr().out and _mtimes(cell) == snapshot

    saved = _cfg(tmp_path, tmp_path / "saved", "psnr")
    cell = cell_dir(saved, tmp_path / "saved")
    assert run_cell(saved, cell).status == "done"
    Image.new("RGB", (96, 96)).save(data / "HR" / "coffee.png")  # the HR changed since the cell ran
    snapshot = _mtimes(cell)
    assert rescore_cli([str(cell), "--metrics", "ssim"]) == 1
    assert "changed since this cell ran" in capsys.readouterr().out and _mtimes(cell) == snapshot


def test_a_quantize_none_cell_is_never_rescored_from_its_8bit_pngs(tmp_path: Path, capsys) -> None:
    """quantize none scores the float SR; the saved PNGs are 8-bit: scores added from them would not match."""
    _data(tmp_path / "data")
    runs = tmp_path / "runs"
    cfg = _cfg(tmp_path, runs, "psnr", "protocol.quantize=none")
    cell = cell_dir(cfg, runs)
    assert run_cell(cfg, cell).status == "done"
    assert (cell / "images" / "astronaut.png").is_file()
    snapshot = _mtimes(cell)
    assert rescore_cli([str(cell), "--metrics", "ssim"]) == 1
    out = capsys.readouterr().out
    refused = [line for line in out.splitlines() if line.startswith("[refused]")]
    assert len(refused) == 1 and str(cell) in refused[0] and "quantize none" in refused[0]
    assert _mtimes(cell) == snapshot
    # a run asking the cell for a new metric is refused the same way, nothing written, the model not run
    again = _cfg(tmp_path, runs, "psnr,ssim", "protocol.quantize=none")
    with pytest.raises(CellRefused, match="has quantize none") as refusal:
        run_cell(again, cell)
    assert str(cell) in str(refusal.value) and "\n" not in str(refusal.value)
    assert _mtimes(cell) == snapshot
    # the same cell under a rounding protocol is rescored from its PNGs
    rounded = _cfg(tmp_path, tmp_path / "round", "psnr")
    cell = cell_dir(rounded, tmp_path / "round")
    assert run_cell(rounded, cell).status == "done"
    assert rescore_cli([str(cell), "--metrics", "ssim"]) == 0
