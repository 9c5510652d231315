"""Sweep bookkeeping: every cell of a Hydra multirun reports its outcome; the sweep ends with a
summary of done / skipped / failed cells (Hydra itself only reports errors at the end, anchors.md §0.8).

The callback runs in the launching process. It gives the sweep an id (``SRBENCH_SWEEP_ID``, inherited
by joblib / submitit workers) and each cell appends one line to ``<out_dir>/sweeps/<id>.jsonl``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from srbench.records import atomic_write_text

log = logging.getLogger("srbench")

SWEEP_ENV = "SRBENCH_SWEEP_ID"
#: set by the callback when a sweep ends with failed cells; the CLI turns it into exit code 1
LAST_SWEEP: dict[str, Any] = {}


def sweep_id() -> str | None:
    return os.environ.get(SWEEP_ENV)


def sweep_log(out_dir: str | Path, sid: str) -> Path:
    from srbench.names import safe_name

    return Path(out_dir) / "sweeps" / f"{safe_name(sid, SWEEP_ENV)}.jsonl"


def record_outcome(out_dir: str | Path, outcome: dict[str, Any]) -> None:
    """Append this cell's outcome to the running sweep's log (no-op outside a sweep)."""
    sid = sweep_id()
    if not sid:
        return
    path = sweep_log(out_dir, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(outcome, default=str) + "\n"
    # one write() of a short line in O_APPEND mode: concurrent workers do not interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # umask applies
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_outcomes(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def format_summary(outcomes: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o["status"]] = counts.get(o["status"], 0) + 1
    order = ["done", "already_done", "skipped", "failed"] + (["refused"] if counts.get("refused") else [])
    head = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in order)
    lines = [f"sweep: {len(outcomes)} cells — {head}"]
    for o in outcomes:
        if o["status"] in ("skipped", "failed", "refused"):
            lines.append(f"  {o['status']:8s} {o['cell']}: {o.get('reason', '')}")
    return "\n".join(lines)


class SweepCallback(Callback):
    """Hydra callback (configured in conf/config.yaml) that prints the end-of-sweep summary."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sid = os.environ.get(SWEEP_ENV) or _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        os.environ[SWEEP_ENV] = sid
        LAST_SWEEP.clear()
        LAST_SWEEP.update(id=sid, out_dir=str(config.out_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sid = LAST_SWEEP.get("id") or sweep_id()
        if not sid:
            return
        path = sweep_log(config.out_dir, sid)
        outcomes = read_outcomes(path)
        text = format_summary(outcomes)
        atomic_write_text(path.with_suffix(".txt"), text + "\n")
        print(text, flush=True)
        LAST_SWEEP["failed"] = sum(o["status"] in ("failed", "refused") for o in outcomes)
        LAST_SWEEP["outcomes"] = outcomes
        # every cell of the sweep: finished, skipped and failed ones from their summaries; those refused or
        # failed before they started (nothing written) from the sweep log
        cells, extra = [], []
        for o in outcomes:
            cell = Path(config.out_dir) / o["cell"]
            if (cell / "summary.json").is_file():
                cells.append(cell)
            else:
                where = str(cell) if cell.is_dir() else o["cell"]  # a config error: the job's overrides
                extra.append({"status": o["status"], "reason": o.get("reason", ""), "run_dir": where})
        if cells or extra:
            self._sweep_leaderboard(config, sid, sorted(set(cells)), extra)

    @staticmethod
    def _sweep_leaderboard(
        config: DictConfig, sid: str, cells: list[Path], extra: list[dict[str, Any]]
    ) -> None:
        """This sweep's own leaderboard (files next to the sweep log, and a wandb table when enabled)."""
        from srbench.leaderboard import collect, write_leaderboard

        out = Path(config.out_dir) / "sweeps" / sid
        _, md_path, _ = write_leaderboard(cells, out, extra=extra)
        print(f"sweep leaderboard: {md_path}", flush=True)
        wb = config.get("wandb") or {}
        if not wb.get("enabled", False):
            return
        import wandb

        df, _ = collect(cells)
        df = df[df["status"] == "done"] if not df.empty else df
        run = wandb.init(
            project=wb.get("project") or "srbench",
            entity=wb.get("entity"),
            mode=wb.get("mode") or "offline",
            group=str(config.get("sweep_name") or sid),
            name=f"leaderboard-{sid}",
            job_type="leaderboard",
            dir=str(out),
            reinit="finish_previous",
        )
        run.log({"leaderboard": wandb.Table(dataframe=df.drop(columns=["run_dir"], errors="ignore"))})
        run.finish()
