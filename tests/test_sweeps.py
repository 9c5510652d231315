"""Sweeps: skipped and failed cells do not stop a sweep, model reuse, kill + resume, joblib launcher."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from srbench.records import PerImageLog
from tests.sweep_cli import REPO
from tests.sweep_cli import run_srbench as _run
from tests.sweep_cli import srbench_env as _env
from tests.sweep_cli import sweep_command as _cmd
from tests.sweep_cli import toy_pairs as _data


def test_sweep_goes_on_past_skipped_and_failed_cells_and_reuses_the_model(tmp_path: Path) -> None:
    _data(tmp_path / "data", 2)
    log = tmp_path / "loads.txt"
    res = _run(
        _cmd(
            tmp_path,
            "method.name=slow_nearest",
            f"+method.load_log={log}",
            "steps=1,2,4",
            "+method.fail_load=false,true",
            "run_name=slow-fail${method.fail_load}",
        )
    )
    out = res.stdout + res.stderr
    assert res.returncode == 1, out  # a failed cell makes the sweep's exit code non-zero ...
    assert "sweep: 6 cells — 2 done, 0 already done, 2 skipped, 2 failed" in out  # ... after every cell ran
    assert "weights are corrupt (simulated)" in out and "cannot run steps=4" in out
    # two cells ran with fail_load=false, and the method was loaded once for both step counts
    assert log.read_text().splitlines() == [log.read_text().splitlines()[0]]
    failed = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("summary.json")]
    assert sorted(s["status"] for s in failed) == ["done", "done", "failed", "failed", "skipped", "skipped"]


def test_wandb_offline_sweep_logs_cells_and_leaderboard(tmp_path: Path) -> None:
    _data(tmp_path / "data", 2)
    env = {**_env(), "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    cmd = _cmd(
        tmp_path, "method.name=slow_nearest", "steps=1,2", "wandb.enabled=true", "sweep_name=test-sweep"
    )
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cell_runs = list((tmp_path / "runs" / "toy").rglob("offline-run-*"))
    board_runs = list((tmp_path / "runs" / "sweeps").rglob("offline-run-*"))
    assert len(cell_runs) == 2 and len(board_runs) == 1


def test_killed_sweep_resumes_without_losing_or_duplicating_rows(tmp_path: Path) -> None:
    _data(tmp_path / "data", 4)
    cmd = _cmd(tmp_path, "method.name=slow_nearest", "+method.delay=0.4", "steps=1,2,3")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    cell2 = tmp_path / "nowhere"
    while time.time() < deadline and len(PerImageLog(cell2 / "per_image.jsonl").rows()) < 2:
        cell2 = next(iter((tmp_path / "runs").glob("toy/full/slow_nearest-*/steps2")), cell2)
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = PerImageLog(cell2 / "per_image.jsonl").rows()
    assert 2 <= len(before) < 4, "the kill should land inside the second cell"
    assert json.loads((cell2.parent / "steps1/summary.json").read_text())["status"] == "done"

    res = _run(cmd)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sweep: 3 cells — 2 done, 1 already done, 0 skipped, 0 failed" in res.stdout
    rows = PerImageLog(cell2 / "per_image.jsonl").rows()
    assert [r["id"] for r in rows] == ["im0", "im1", "im2", "im3"]  # none lost, none twice
    assert rows[: len(before)] == before


def test_joblib_launcher_sweep(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    _data(tmp_path / "data", 2)
    res = _run(
        _cmd(
            tmp_path,
            "hydra/launcher=local_workers",
            "hydra.launcher.n_jobs=2",
            "method.name=slow_nearest",
            "steps=1,2,3",
        )
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sweep: 3 cells — 3 done" in res.stdout
    (board,) = (tmp_path / "runs" / "sweeps").glob("*/leaderboard.md")
    assert re.sub(r" {2,}", " ", board.read_text()).count("| slow_nearest (warmup=0) |") == 3
    (cell,) = (tmp_path / "runs").glob("toy/full/slow_nearest-*")
    for steps in (1, 2, 3):
        s = json.loads((cell / f"steps{steps}/summary.json").read_text())
        assert s["status"] == "done" and s["n_ok"] == 2
