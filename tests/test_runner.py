"""The runner: records, skip of finished cells, resume after an interruption, per-file errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srbench import SRMethod
from srbench import registry as reg
from srbench.interface import SRBenchError, WeightsInfo
from srbench.records import PER_IMAGE_LOG, PerImageLog
from srbench.runner import _METHODS, image_seed, run_cell
from srbench.testing.run_config import run_config


class Counting(SRMethod):
    """Nearest-neighbour x4 that counts calls and can be told to die on the n-th image."""

    stages = ("work",)
    calls = 0
    die_on: int | None = None

    def load(self, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo("test-nearest", real=False)

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        Counting.calls += 1
        if Counting.die_on is not None and Counting.calls == Counting.die_on:
            raise KeyboardInterrupt  # a kill in the middle of the cell
        with self.stage("work"):
            return F.interpolate(lr, scale_factor=4, mode="nearest")


@pytest.fixture(autouse=True)
def _counting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(reg._REGISTRY, "counting", Counting)
    Counting.name = "counting"
    Counting.calls, Counting.die_on = 0, None
    _METHODS.clear()


def _dataset(root: Path, n: int = 5) -> Path:
    """n random 32x32 HR images and their 8x8 LR (every 4th pixel)."""
    (root / "HR").mkdir(parents=True)
    (root / "LR").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        hr = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
        Image.fromarray(hr).save(root / "HR" / f"img{i}.png")
        Image.fromarray(np.ascontiguousarray(hr[::4, ::4])).save(root / "LR" / f"img{i}.png")
    return root


def _cfg(data: Path, method: str = "counting", **over: Any) -> dict[str, Any]:
    paired = {"name": "toy", "kind": "paired", "lr_dir": str(data / "LR"), "hr_dir": str(data / "HR")}
    return run_config(paired, method=method, metric_names=("psnr", "ssim"), **over)


def test_cell_writes_records(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    out = run_cell(_cfg(data, warmup=1), tmp_path / "run")
    assert out.status == "done"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["n_ok"] == 5 and s["n_failed"] == 0
    assert s["weights"] == {"id": "test-nearest", "real": False, "label": "random", "detail": ""}
    assert set(s["metrics"]) == {"psnr", "ssim"} and not s["metrics"]["psnr"]["lower_better"]
    assert set(s["latency_s"]) == {"total", "work"}
    assert s["latency_s"]["total"]["median"] >= s["latency_s"]["work"]["median"] > 0
    assert s["environment"]["torch"] == torch.__version__ and s["environment"]["dtype"] == "fp32"
    table = pd.read_csv(tmp_path / "run" / "per_image.csv")
    assert list(table["id"]) == [f"img{i}" for i in range(5)]
    assert {"psnr", "ssim", "latency_total_s", "latency_work_s", "peak_mem_mb"} <= set(table.columns)
    # mean in the summary is the mean of the per-image rows
    assert s["metrics"]["psnr"]["mean"] == pytest.approx(table["psnr"].mean())
    assert sorted(p.name for p in (tmp_path / "run" / "images").iterdir()) == [
        f"img{i}.png" for i in range(5)
    ]
    assert Counting.calls == 6  # one warm-up + five images


def test_finished_cell_is_skipped(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    run_cell(_cfg(data), tmp_path / "run")
    calls = Counting.calls
    again = run_cell(_cfg(data), tmp_path / "run")
    assert again.status == "already_done" and Counting.calls == calls


def test_interrupted_cell_resumes_without_losing_or_duplicating_rows(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    Counting.die_on = 4  # dies on the 4th image: three are finished
    with pytest.raises(KeyboardInterrupt):
        run_cell(_cfg(data), tmp_path / "run")
    log = tmp_path / "run" / PER_IMAGE_LOG
    first = PerImageLog(log).rows()
    assert [r["id"] for r in first] == ["img0", "img1", "img2"]
    assert not (tmp_path / "run" / "summary.json").exists()
    # a torn half-line from the kill must not cost the finished rows
    with log.open("a") as fh:
        fh.write('{"id": "img3", "status": "o')
    Counting.die_on, Counting.calls = None, 0
    out = run_cell(_cfg(data), tmp_path / "run")
    assert out.status == "done"
    assert Counting.calls == 2  # only img3 and img4 ran again
    rows = PerImageLog(log).rows()
    assert [r["id"] for r in rows] == [f"img{i}" for i in range(5)]
    assert rows[:3] == first  # finished rows untouched
    assert out.summary is not None and out.summary["n_ok"] == 5


def test_unreadable_image_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    (data / "LR" / "img2.png").write_bytes(b"garbage")
    out = run_cell(_cfg(data), tmp_path / "run")
    assert out.status == "done" and out.summary is not None
    assert out.summary["n_ok"] == 4 and out.summary["n_failed"] == 1
    (failure,) = out.summary["failures"]
    assert failure["id"] == "img2" and failure["stage"] == "read" and "img2.png" in failure["error"]


def test_unsupported_steps_cell_is_recorded_as_skipped(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    out = run_cell(_cfg(data, method="bicubic", steps=4), tmp_path / "run")
    assert out.status == "skipped" and "cannot run steps=4" in out.reason
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "skipped"


def test_a_different_cell_in_the_same_dir_is_refused(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    run_cell(_cfg(data), tmp_path / "run")
    with pytest.raises(SRBenchError, match=r"different cell.*seed"):
        run_cell(_cfg(data, seed=1), tmp_path / "run")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "done"  # untouched
    out = run_cell(_cfg(data, seed=1, overwrite=True), tmp_path / "run")
    cell = json.loads((tmp_path / "run" / "cell.json").read_text())
    assert out.status == "done" and cell["outputs"]["seed"] == 1


def test_protocol_centre_crop_and_lr_only(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    cfg = _cfg(data, protocol={"name": "crop4", "lr_centre_crop": 4, "crop_border": 0, "y_channel": True})
    out = run_cell(cfg, tmp_path / "crop")
    table = pd.read_csv(tmp_path / "crop" / "per_image.csv")
    assert (table["lr_h"] == 4).all() and out.summary is not None and out.summary["protocol"] == "crop4"
    lr_only = _cfg(data, dataset={"name": "toy-lr", "kind": "lr_only", "lr_dir": str(data / "LR")})
    out = run_cell(lr_only, tmp_path / "lronly")
    assert out.summary is not None and out.summary["metrics"] == {}  # psnr/ssim need HR
    assert out.summary["has_hr"] is False and out.summary["n_ok"] == 5


def test_image_seed_is_order_independent() -> None:
    assert image_seed(0, "a") == image_seed(0, "a") != image_seed(0, "b")
    assert image_seed(1, "a") != image_seed(0, "a")


def test_lr_tile_and_speed_settings_reach_the_method_and_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srbench import allocator

    calls: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    data = _dataset(tmp_path / "data", n=2)
    speed = {
        "attention": "math",
        "channels_last": True,
        "compile": False,
        "compile_mode": None,
        "keep_freed_memory": True,
    }
    out = run_cell(_cfg(data, method="bicubic", lr_tile=4, lr_tile_overlap=2, speed=speed), tmp_path / "run")
    assert out.status == "done"
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["speed"] == speed
    assert calls == [1]  # the allocator setting was applied before scoring
    cell = json.loads((tmp_path / "run" / "cell.json").read_text())
    method = cell["outputs"]["method"]
    assert method["lr_tile"] == 4 and method["lr_tile_overlap"] == 2  # part of the identity
    # the same cell without tiling is a different cell: refused rather than mixed
    with pytest.raises(Exception, match="different"):
        run_cell(_cfg(data, method="bicubic"), tmp_path / "run")
