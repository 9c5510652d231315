"""Sweep bookkeeping: every cell of a Hydra multirun reports its outcome; the sweep ends with a
summary of done / skipped / failed cells (Hydra itself only reports errors at the end, anchors.md §0.8).

The callback runs in the launching process. It gives the sweep an id (``SRBENCH_SWEEP_ID``) and a
folder, Hydra's ``hydra.sweep.dir`` (``SRBENCH_SWEEP_DIR``; both inherited by joblib / submitit workers):
everything of one sweep is there, by default ``<out_dir>/sweeps/<time>/`` — Hydra's ``multirun.yaml`` and
job logs, ``sweep.json`` (id, start, overrides), ``sweep.jsonl`` (one line per cell, appended by the
workers), ``sweep.txt`` (the summary) and the sweep's leaderboard.  A folder reused for a second sweep keeps
the first one's files under ``earlier/<id>/``.  With several local workers on the CPU, the sweep warns that
they share the cores while latencies are timed, and every cell records ``parallel_workers``.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from srbench.records import atomic_write_text, write_json

log = logging.getLogger("srbench")

SWEEP_ENV = "SRBENCH_SWEEP_ID"
SWEEP_DIR_ENV = "SRBENCH_SWEEP_DIR"
#: local workers sharing this machine's CPU while cells are timed (set for joblib sweeps on the CPU)
PARALLEL_ENV = "SRBENCH_PARALLEL_WORKERS"
#: what srbench and Hydra write at the top of a sweep folder (moved to earlier/<id>/ when it is reused)
SWEEP_FILES = (
    "multirun.yaml",
    "sweep.json",
    "sweep.jsonl",
    "sweep.txt",
    "leaderboard.md",
    "leaderboard.csv",
    "plots",
)
#: set by the callback when a sweep ends with failed cells; the CLI turns it into exit code 1
LAST_SWEEP: dict[str, Any] = {}


def sweep_id() -> str | None:
    return os.environ.get(SWEEP_ENV)


def sweep_folder(out_dir: str | Path, sid: str) -> Path:
    """The running sweep's folder (``hydra.sweep.dir``), else ``<out_dir>/sweeps/<id>``."""
    env = os.environ.get(SWEEP_DIR_ENV)
    if env:
        return Path(env)
    from srbench.names import safe_name  # the id becomes a path: no separators, no ..

    return Path(out_dir) / "sweeps" / safe_name(sid, SWEEP_ENV)


def sweep_log(out_dir: str | Path, sid: str) -> Path:
    return sweep_folder(out_dir, sid) / "sweep.jsonl"


def parallel_workers() -> int:
    """How many local workers shared the CPU while this process timed its cells (1: none)."""
    try:
        return max(1, int(os.environ.get(PARALLEL_ENV, "1")))
    except ValueError:
        return 1


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
        folder = Path(str(config.hydra.sweep.dir)).resolve()
        self._saved_env = {k: os.environ.get(k) for k in (SWEEP_ENV, SWEEP_DIR_ENV, PARALLEL_ENV)}
        os.environ[SWEEP_ENV] = sid
        os.environ[SWEEP_DIR_ENV] = str(folder)
        LAST_SWEEP.clear()
        LAST_SWEEP.update(id=sid, out_dir=str(config.out_dir), folder=str(folder))
        _keep_earlier_sweep(folder)
        write_json(
            folder / "sweep.json",
            {
                "id": sid,
                "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "overrides": list(config.hydra.overrides.task),
            },
        )
        _warn_shared_cpu(config)
        self._launcher_pid, self._cells, self._cells_total = os.getpid(), None, _count_cells(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A bar over the sweep's cells, in the launching process (cells run in it with the basic
        launcher; joblib/SLURM workers print their own [status] lines)."""
        if getattr(self, "_launcher_pid", None) == os.getpid() and self._cells is None:
            from srbench.progress import progress

            self._cells = progress(total=self._cells_total, desc="sweep", unit="cell")
            if not self._cells.disable:  # Hydra's and srbench's log lines print above the bar
                from tqdm.contrib.logging import logging_redirect_tqdm

                self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
                self._redirect.__enter__()

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if getattr(self, "_cells", None) is not None and self._launcher_pid == os.getpid():
            self._cells.update(1)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "_cells", None) is not None:
            self._cells.close()
            self._cells = None
        if getattr(self, "_redirect", None) is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        sid = LAST_SWEEP.get("id") or sweep_id()
        if not sid:
            return
        try:
            self._end(config, sid)
        finally:  # a later run in this process (Python API, tests) is not part of this sweep
            for key, value in getattr(self, "_saved_env", {}).items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _end(self, config: DictConfig, sid: str) -> None:
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
            self._sweep_leaderboard(config, sid, sorted(set(cells)), extra, path.parent)

    @staticmethod
    def _sweep_leaderboard(
        config: DictConfig, sid: str, cells: list[Path], extra: list[dict[str, Any]], out: Path
    ) -> None:
        """This sweep's own leaderboard (in the sweep's folder, and a wandb table when enabled)."""
        from srbench.leaderboard import collect, write_leaderboard

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


def _keep_earlier_sweep(folder: Path) -> None:
    """A sweep folder reused (``hydra.sweep.dir=X`` twice): the earlier sweep's records and Hydra's
    ``multirun.yaml`` move to ``earlier/<its id>/`` instead of being overwritten (job log folders stay)."""
    info = folder / "sweep.json"
    if not info.is_file():
        return
    try:
        old = str(json.loads(info.read_text()).get("id") or "")
    except (OSError, ValueError, AttributeError):
        old = ""
    dest = (
        folder
        / "earlier"
        / (old or _dt.datetime.fromtimestamp(info.stat().st_mtime).strftime("%Y%m%d-%H%M%S"))
    )
    dest.mkdir(parents=True, exist_ok=True)
    for name in SWEEP_FILES:
        if (folder / name).exists():
            shutil.move(str(folder / name), str(dest / name))


def _warn_shared_cpu(config: DictConfig) -> None:
    """Several local (joblib) workers timing cells on the CPU compete for its cores: say so once, and let
    every cell record it (``parallel_workers`` in its summary)."""
    launcher = config.hydra.get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n_jobs = int(launcher.get("n_jobs") or 1)
    workers = cores if n_jobs < 0 else n_jobs  # joblib: -1 = one per core
    if workers <= 1 or not _on_cpu(str(config.get("device", "auto"))):
        return
    os.environ[PARALLEL_ENV] = str(workers)
    log.warning(
        "%d local workers share %d CPU cores: latencies are timed while the other workers compute, so they "
        "are not one job's latency (recorded as parallel_workers in each summary); time CPU latency with "
        "hydra.launcher.n_jobs=1 or `srbench bench`",
        workers,
        cores,
    )


def _on_cpu(device: str) -> bool:
    if device.startswith("cpu"):
        return True
    if device not in ("auto", "", "None"):
        return False
    import torch

    return not torch.cuda.is_available()


def _count_cells(config: DictConfig) -> int | None:
    """How many jobs the sweep's overrides make (Hydra's basic sweeper's split), None when unknown."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))
    except Exception:  # another sweeper's syntax (ranges, optimisers): a bar without a total
        return None
