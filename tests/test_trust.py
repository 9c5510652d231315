"""Issue 14's four numbered items, end to end: refusals never write, one cell per identity, one process
per cell, datasets fingerprinted, honest statistics."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srbench.records import PerImageLog
from tests.sweep_cli import REPO
from tests.sweep_cli import run_srbench as _run
from tests.sweep_cli import srbench_env as _env
from tests.sweep_cli import sweep_command as _cmd
from tests.sweep_cli import toy_pairs as _data


def _cells(runs: Path) -> list[Path]:
    return sorted(p.parent for p in runs.rglob("summary.json"))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash and mtime: what a refusal must not change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------- 1. refusals write nothing; no collisions


def test_a_sweep_over_seeds_and_a_method_option_gives_one_finished_cell_each(tmp_path: Path) -> None:
    _data(tmp_path / "data", 2)
    res = _run(_cmd(tmp_path, "method.name=slow_nearest", "seed=0,1", "+method.delay=0.0,0.001"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summaries = [json.loads((c / "summary.json").read_text()) for c in _cells(tmp_path / "runs")]
    assert sorted((s["seed"], s["options"].get("method.delay")) for s in summaries) == [
        (0, 0.0),
        (0, 0.001),
        (1, 0.0),
        (1, 0.001),
    ]
    assert [s["status"] for s in summaries] == ["done"] * 4


def test_a_refused_rerun_writes_nothing_into_the_cell(tmp_path: Path) -> None:
    _data(tmp_path / "data", 2)
    assert _run(_cmd(tmp_path, multirun=False)).returncode == 0
    (cell,) = _cells(tmp_path / "runs")
    before = _snapshot(cell)
    # the same cell scored with another metric set: refused, and the finished cell is untouched
    res = _run(_cmd(tmp_path, "metrics.names=[psnr,ssim]", multirun=False))
    assert res.returncode == 1
    assert "metric" in (res.stdout + res.stderr).lower()
    assert _snapshot(cell) == before
    assert json.loads((cell / "summary.json").read_text())["status"] == "done"


# ---------------------------------------------------------------- 2. one process per cell


def test_a_second_process_on_a_running_cell_is_refused_or_waits(tmp_path: Path) -> None:
    _data(tmp_path / "data", 4)
    started, hold = tmp_path / "started", tmp_path / "hold"
    hold.touch()  # the first process holds its cell until the test removes this file
    over = ("method.name=slow_nearest", f"+method.started={started}", f"+method.hold={hold}")
    cmd = _cmd(tmp_path, *over, multirun=False)  # single runs: all three processes ask for the same cell
    first = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    waiter = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not started.exists() and first.poll() is None:
            time.sleep(0.05)
        assert started.exists(), "the first process never started its cell"
        second = _run(cmd)
        out = second.stdout + second.stderr
        assert second.returncode == 1, out[-2000:]
        assert f"pid {first.pid}" in out  # the refusal names the holder
        assert len([ln for ln in second.stdout.splitlines() if ln.startswith("[refused]")]) == 1
        # with wait_for_lock=true a third process waits for the first, then finds the cell finished
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
        waiter = subprocess.Popen([*cmd, "wait_for_lock=true"], cwd=REPO, env=_env(), **pipe)
        time.sleep(1.0)
        assert waiter.poll() is None
    finally:
        hold.unlink(missing_ok=True)
        first_out = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 0, first_out[-2000:]
    waited = waiter.communicate(timeout=120)[0].decode()
    assert waiter.returncode == 0 and "[already_done]" in waited, waited[-2000:]
    (log,) = (tmp_path / "runs").rglob("per_image.jsonl")
    assert [r["id"] for r in PerImageLog(log).rows()] == ["im0", "im1", "im2", "im3"]
    assert json.loads((log.parent / "summary.json").read_text())["n_ok"] == 4


# ---------------------------------------------------------------- 3. datasets are fingerprinted


def test_a_changed_dataset_folder_is_detected_and_valid_rows_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from srbench.runner import run_cell
    from tests.test_runner import _cfg

    data = _data(tmp_path / "data", 4)
    cfg, cell = _cfg(data, method="bicubic", metrics={"names": ["psnr"]}), tmp_path / "cell"
    assert run_cell(cfg, cell).status == "done"
    old = {r["id"]: r for r in PerImageLog(cell / "per_image.jsonl").rows()}
    old_summary = json.loads((cell / "summary.json").read_text())
    # im0 removed, im1 modified (new HR and LR), im9 added
    for sub in ("LR", "HR"):
        (data / sub / "im0.png").unlink()
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    for name in ("im1", "im9"):
        Image.fromarray(hr).save(data / "HR" / f"{name}.png")
        Image.fromarray(np.ascontiguousarray(hr[::4, ::4])).save(data / "LR" / f"{name}.png")
    with caplog.at_level(logging.WARNING, logger="srbench"):
        out = run_cell(cfg, cell)
    assert out.status == "done"  # not "already_done" with the old images
    assert "1 added (im9); 1 removed (im0); 1 modified (im1)" in caplog.text
    rows = {r["id"]: r for r in PerImageLog(cell / "per_image.jsonl").rows()}
    assert sorted(rows) == ["im1", "im2", "im3", "im9"]
    assert rows["im2"] == old["im2"] and rows["im3"] == old["im3"]  # still valid: kept, not recomputed
    assert rows["im1"]["psnr"] != old["im1"]["psnr"]
    assert sorted(p.name for p in (cell / "images").iterdir()) == ["im1.png", "im2.png", "im3.png", "im9.png"]
    summary = json.loads((cell / "summary.json").read_text())
    assert summary["dataset_fingerprint"]["sha256"] != old_summary["dataset_fingerprint"]["sha256"]
    assert summary["dataset_fingerprint"]["n_images"] == 4 and summary["n_ok"] == 4
    change = summary["dataset_changes"][-1]
    assert (change["added"], change["removed"], change["modified"]) == (["im9"], ["im0"], ["im1"])


# ---------------------------------------------------------------- 4. statistics


def test_summary_intervals_are_student_t_and_n_counts_finite_values() -> None:
    from scipy import stats as st

    from srbench.runner import _aggregate

    class _Suite:
        available = ("psnr",)

        @staticmethod
        def lower_better(name: str) -> bool:
            return False

    values = [20.0, 21.0, 23.0, 24.5, 26.0]
    rows = [{"id": f"i{i}", "status": "ok", "psnr": v} for i, v in enumerate(values)]
    rows.append({"id": "nan", "status": "ok", "psnr": float("nan")})
    psnr = _aggregate(rows, _Suite())["metrics"]["psnr"]
    assert psnr["n"] == 5
    half = st.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert psnr["ci95"] == pytest.approx(half)
    assert psnr["mean"] == pytest.approx(np.mean(values))


# ---------------------------------------------------------------- kill -9 anywhere


def test_kill_9_at_random_points_of_a_sweep_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """A bounded loop of SIGKILLs at random moments of a real sweep (bicubic and Real-ESRGAN, two seeds
    each), then one run to the end: every cell holds each image exactly once."""
    import random
    import signal

    n = 5
    _data(tmp_path / "data", n)
    cmd = [c for c in _cmd(tmp_path, "seed=0,1", "save_images=true") if c != "method=bicubic"]
    cmd.insert(4, "method=bicubic,realesrgan")
    rng = random.Random(14)

    def rows() -> int:
        return sum(len(PerImageLog(p).rows()) for p in (tmp_path / "runs").rglob("per_image.jsonl"))

    kills = 0
    for _ in range(3):
        target = rows() + rng.randint(1, 6)
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 180
        while proc.poll() is None and rows() < target and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the sweep ended before it could be killed"
    final = _run(cmd)
    assert final.returncode == 0, (final.stdout + final.stderr)[-3000:]
    cells = _cells(tmp_path / "runs")
    assert len(cells) == 4
    for cell in cells:
        summary = json.loads((cell / "summary.json").read_text())
        assert summary["status"] == "done" and summary["n_ok"] == n, cell
        ids = [r["id"] for r in PerImageLog(cell / "per_image.jsonl").rows()]
        assert sorted(ids) == [f"im{i}" for i in range(n)], (cell, ids)  # none lost, none twice
        assert len((cell / "per_image.jsonl").read_text().splitlines()) == n  # no torn or extra line kept
        assert sorted(p.name for p in (cell / "images").iterdir()) == [f"im{i}.png" for i in range(n)]
        assert not list(cell.glob(".*")), list(cell.glob(".*"))  # no lock, no temp file left
    from srbench.leaderboard import write_leaderboard

    _, _, md = write_leaderboard([tmp_path / "runs"], plots=False)
    # bicubic and realesrgan, each over both seeds (tabulate pads columns)
    assert re.sub(r" {2,}", " ", md).count("| 0,1 |") == 2
