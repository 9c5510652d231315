"""What a run shows and keeps: one line per event (failures, skipped metrics), progress bars on a terminal,
memory per call, a sweep's files in its own folder, leaderboard columns in the papers' order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from srbench import progress, runner, sweep
from srbench.cli import main
from srbench.leaderboard import METRIC_ORDER, write_leaderboard
from srbench.metrics import metric_specs
from srbench.timing import MemoryProbe
from tests.fake_terminal import FakeTerminal


def _data(root: Path, n: int = 2, lr_only: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("LR",) if lr_only else ("LR", "HR"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        hr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
        Image.fromarray(np.ascontiguousarray(hr[::4, ::4])).save(root / "LR" / f"im{i}.png")
        if not lr_only:
            Image.fromarray(hr).save(root / "HR" / f"im{i}.png")
    return root


def _cfg(data: Path, **over: Any) -> dict[str, Any]:
    return {
        "method": {"name": "bicubic"},
        "steps": 1,
        "seed": 0,
        "device": "cpu",
        "warmup": 0,
        "dataset": {"name": "toy", "kind": "paired", "lr_dir": str(data / "LR"), "hr_dir": str(data / "HR")},
        "protocol": {"name": "full", "crop_border": 0, "y_channel": True},
        "metrics": {"names": ["psnr"], "on_missing": "skip"},
        **over,
    }


def _srbench(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capfd.readouterr()
    return rc, out + err


def _common(tmp: Path, data: Path, *more: str) -> list[str]:
    return [
        f"out_dir={tmp / 'runs'}",
        "dataset=paired",
        "dataset.name=toy",
        f"dataset.lr_dir={data / 'LR'}",
        f"dataset.hr_dir={data / 'HR'}",
        "warmup=0",
        *more,
    ]


# ---- one line per event ------------------------------------------------------------------------------
def test_a_failed_cell_is_one_line_and_once_in_the_sweep_summary(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path / "data")
    # invsr without its weights (HF_HUB_OFFLINE, empty caches): a cell that fails
    rc, out = _srbench(["method=invsr", *_common(tmp_path, data, "metrics=fast")], capfd)
    assert rc == 1 and out.count("noise_predictor_sd_turbo_v5.pth' (hf://") == 1, out
    assert "Traceback" not in out
    rc, out = _srbench(["-m", "method=bicubic,invsr", *_common(tmp_path, data, "metrics=fast")], capfd)
    assert rc == 1 and out.count("noise_predictor_sd_turbo_v5.pth' (hf://") == 2  # the event + the summary
    assert "sweep: 2 cells — 1 done" in out


def test_every_image_failing_gives_the_cell_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from srbench import registry
    from srbench.interface import SRMethod, WeightsInfo

    class Broken(SRMethod):
        name = "broken"

        def load(self, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> None:
            self._mark_loaded(device, dtype)

        def weights_info(self) -> WeightsInfo:
            return WeightsInfo("none", real=False)

        def _upscale(self, lr: torch.Tensor, steps: int, generator: Any) -> torch.Tensor:
            raise RuntimeError("no luck")

    monkeypatch.setitem(registry._REGISTRY, "broken", Broken)
    data = _data(tmp_path / "data")
    cfg = {**_cfg(data), "method": {"name": "broken"}}
    out = runner.run_cell(cfg, tmp_path / "cell")
    assert out.status == "failed" and out.reason.startswith(
        "every image failed (2); first: im0: RuntimeError"
    )


def test_skipped_metrics_are_said_once_and_not_on_lr_only_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LPIPS without its AlexNet file (offline caches): one warning for the sweep, however many cells;
    on LR-only data no full-reference metric is built, so nothing to warn about."""
    monkeypatch.setattr(runner, "_METRICS", {})
    data = _data(tmp_path / "data")
    base = _cfg(data, metrics={"names": ["psnr", "lpips"], "on_missing": "skip"})
    with caplog.at_level("WARNING"):
        runner.run_cell(base, tmp_path / "a")
        runner.run_cell({**base, "seed": 1}, tmp_path / "b")
    assert sum("lpips" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    lr_only = {**base, "dataset": {"name": "toy-lr", "kind": "lr_only", "lr_dir": str(data / "LR")}}
    with caplog.at_level("WARNING"):
        out = runner.run_cell(lr_only, tmp_path / "c")
    assert not [r for r in caplog.records if "lpips" in r.getMessage()]
    assert out.summary["metrics_skipped"]["lpips"] == runner.NO_HR
    assert out.summary["metrics_skipped"]["psnr"] == runner.NO_HR


def test_library_chatter_is_off() -> None:
    """pyiqa/basicsr's 'Network [PSNR] is created' and bitsandbytes' kernel warning do not reach a run."""
    code = (
        "import srbench, logging, sys, warnings; logging.basicConfig(level=logging.INFO, stream=sys.stdout)\n"
        "from srbench.metrics import MetricSuite; MetricSuite(['psnr', 'ssim'])\n"
        "import bitsandbytes  # noqa: its CPU backend warns about an optional kernel on import\n"
        "warnings.warn('The `local_dir_use_symlinks` argument is deprecated', UserWarning)  # diffusers'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = res.stdout + res.stderr
    assert "is created" not in out and "gemm_4bit" not in out and "local_dir_use_symlinks" not in out, out


# ---- progress -------------------------------------------------------------------------------------------
def test_images_of_a_cell_show_a_bar_on_a_terminal_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path / "data", n=3)
    cfg = _cfg(data)
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    runner.run_cell(cfg, tmp_path / "a")
    assert "bicubic steps=1" in terminal.text and "/3 [" in terminal.text and "img" in terminal.text
    log = open(os.devnull, "w")  # noqa: SIM115 - a log file, CI, SLURM: no bar
    monkeypatch.setattr(sys, "stderr", log)
    terminal.text = ""
    runner.run_cell({**cfg, "seed": 1}, tmp_path / "b")
    assert terminal.text == ""


def test_a_sweep_shows_a_bar_over_its_cells(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    data = _data(tmp_path / "data", n=1)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    rc, out = _srbench(
        ["-m", "method=bicubic", "seed=0,1,2", *_common(tmp_path, data, "metrics=fast")], capfd
    )
    assert rc == 0 and "sweep: 3 cells" in out
    assert "sweep" in terminal.text and "3/3" in terminal.text and "cell" in terminal.text
    assert out.count("[done]") == 3  # the cell lines print above the bar


# ---- memory per call --------------------------------------------------------------------------------------
def test_memory_is_the_call_s_increase_not_the_process(tmp_path: Path) -> None:
    import torch

    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    peak, held = probe.stop()
    del block
    assert peak is not None and 60 <= peak < 200 and held > 100  # held: the interpreter, torch, ...

    data = _data(tmp_path / "data")
    s = runner.run_cell(_cfg(data), tmp_path / "cell").summary
    assert s["memory_kind"] == "process_rss_peak_above_held"
    assert s["peak_mem_mb"] < 50 < s["held_mem_mb"]  # bicubic on 4x4 px: next to nothing per call


def test_local_workers_sharing_the_cpu_are_warned_about_and_recorded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(sweep.PARALLEL_ENV, raising=False)
    cfg = OmegaConf.create(
        {"device": "cpu", "hydra": {"launcher": {"_target_": "hydra_plugins.JoblibLauncher", "n_jobs": 2}}}
    )
    with caplog.at_level("WARNING"):
        sweep._warn_shared_cpu(cfg)
    assert "2 local workers share" in caplog.text and sweep.parallel_workers() == 2
    monkeypatch.delenv(sweep.PARALLEL_ENV)
    caplog.clear()
    one = {"hydra": {"launcher": {"n_jobs": 1}}}
    for other in ({"device": "cuda"}, {"hydra": {"launcher": {"_target_": "BasicLauncher"}}}, one):
        sweep._warn_shared_cpu(OmegaConf.merge(cfg, other))
    assert not caplog.text and sweep.parallel_workers() == 1


# ---- a sweep's folder ------------------------------------------------------------------------------------
def test_a_sweep_keeps_everything_in_its_folder(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path / "data")
    x = tmp_path / "my-sweep"
    args = [
        "-m",
        "method=bicubic",
        "seed=0,1",
        *_common(tmp_path, data, "metrics=fast"),
        f"hydra.sweep.dir={x}",
    ]
    rc, out = _srbench(args, capfd)
    assert rc == 0, out
    names = {p.name for p in x.iterdir()}
    assert {"multirun.yaml", "sweep.json", "sweep.jsonl", "sweep.txt", "leaderboard.md", "0", "1"} <= names
    assert not (tmp_path / "runs" / "sweeps").exists()  # not somewhere else
    assert "seed=0,1" in (x / "multirun.yaml").read_text()
    first = json.loads((x / "sweep.json").read_text())["id"]
    assert len(sweep.read_outcomes(x / "sweep.jsonl")) == 2
    assert os.environ.get(sweep.SWEEP_DIR_ENV) is None  # the sweep's settings end with it

    rc, out = _srbench([*args[:2], "seed=2", *args[3:]], capfd)  # the same folder again
    assert rc == 0, out
    earlier = x / "earlier" / first
    assert "seed=0,1" in (earlier / "multirun.yaml").read_text()  # the first sweep's, not overwritten
    assert len(sweep.read_outcomes(earlier / "sweep.jsonl")) == 2 and (earlier / "leaderboard.md").is_file()
    assert "seed=2" in (x / "multirun.yaml").read_text() and len(sweep.read_outcomes(x / "sweep.jsonl")) == 1


def test_default_sweep_folder_is_per_sweep(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _data(tmp_path / "data", n=1)
    args = ["-m", "method=bicubic", *_common(tmp_path, data, "metrics=fast")]
    assert _srbench(args, capfd)[0] == 0 and _srbench([*args, "seed=1"], capfd)[0] == 0
    folders = sorted((tmp_path / "runs" / "sweeps").iterdir())
    assert len(folders) == 2 and all((f / "multirun.yaml").is_file() for f in folders)
    assert all((f / "leaderboard.md").is_file() and (f / "sweep.txt").is_file() for f in folders)


# ---- leaderboard columns ----------------------------------------------------------------------------------
def _cell(root: Path, dataset: str, method: str, metrics: dict[str, float], has_hr: bool = True) -> None:
    d = root / dataset / method
    d.mkdir(parents=True)
    lower = {m: metric_specs()[m].lower_better for m in metrics}
    summary = {
        "status": "done",
        "method": method,
        "steps": 1,
        "seed": 0,
        "dataset": dataset,
        "protocol": "full",
        "has_hr": has_hr,
        "weights": {"label": "real", "real": True},
        "n_ok": 4,
        "metrics": {
            m: {"mean": v, "ci95": 0.1, "lower_better": lower[m]} for m, v in sorted(metrics.items())
        },
        "latency_s": {"total": {"median": 0.1, "p90": 0.1}},
        "environment": {"device_name": "CPU", "dtype": "fp32"},
    }
    (d / "summary.json").write_text(json.dumps(summary))


def test_leaderboard_columns_in_paper_order_and_lr_only_without_full_reference(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    paired = {"psnr": 24.0, "ssim": 0.7, "lpips": 0.3, "niqe": 5.0, "musiq": 60.0, "clipiqa": 0.5}
    _cell(runs, "demo", "a", paired)
    _cell(runs, "demo", "b", {k: v * 1.01 for k, v in paired.items()})
    _cell(runs, "realset80", "a", {"niqe": 5.0, "musiq": 60.0}, has_hr=False)
    _, _, md = write_leaderboard([runs], tmp_path / "out", plots=False)
    headers = [line for line in md.splitlines() if line.startswith("| method")]
    demo, lr_only = headers
    cols = [c.split()[0] for c in demo.strip("|").split("|")]
    assert cols[3:9] == ["psnr", "ssim", "lpips", "niqe", "clipiqa", "musiq"]  # not alphabetical
    lr_cols = [c.split()[0] for c in lr_only.strip("|").split("|")]
    assert "psnr" not in lr_cols and "lpips" not in lr_cols and lr_cols[3:5] == ["niqe", "musiq"]


def test_metric_order_covers_every_metric_full_reference_first() -> None:
    specs = metric_specs()
    assert set(specs) <= set(METRIC_ORDER)
    # set-level FID compares against the HR set: it counts as full-reference here
    kinds = [specs[m].kind.replace("set", "fr") for m in METRIC_ORDER if m in specs]
    assert kinds == sorted(kinds)  # "fr" < "nr": every full-reference metric before the no-reference ones


@pytest.mark.parametrize(("name", "desc"), [("stablesr", "stablesr ddpm"), ("dossr", "dossr")])
def test_long_samplers_show_their_steps(name: str, desc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import srbench

    method = srbench.load(name, tiny=True, device="cpu")
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    lr = torch.rand(1, 3, 16, 16)
    method.upscale(lr, steps=progress.MIN_SAMPLER_STEPS, generator=torch.Generator().manual_seed(0))
    assert desc in terminal.text and f"/{progress.MIN_SAMPLER_STEPS} [" in terminal.text
    terminal.text = ""
    method.upscale(lr, steps=4, generator=torch.Generator().manual_seed(0))  # short: no bar of its own
    assert terminal.text == ""
