"""The ``srbench`` console script.

``srbench [-m] key=value ...``            run one cell (or a sweep with -m) through Hydra
``srbench leaderboard PATH... [--out D]`` aggregate run summaries into leaderboard.csv / .md
``srbench weights list|fetch|where ...``  manage method weights
``srbench methods``                       list registered methods
``srbench train dmsr ...``                 train a method that has a trainer (DM-SR)
``srbench data list|fetch|verify|prepare`` the test sets (manifests in datasets/)
``srbench compare RUN_DIR...``             a run's numbers beside the paper's, same protocol only
``srbench bench METHOD [--dtype ...]``     latency/memory under the papers' protocol (128->512, batch 1)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from srbench.interface import SRBenchError

SUBCOMMANDS = ("leaderboard", "weights", "methods", "train", "data", "compare", "bench")


def conf_dir() -> Path:
    """The Hydra config tree: ``$SRBENCH_CONF`` or the repository's ``conf/``."""
    env = os.environ.get("SRBENCH_CONF")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "conf"
    if not (path / "config.yaml").is_file():
        raise SRBenchError(
            f"{path}: no config.yaml; install srbench editable (pip install -e .) or set SRBENCH_CONF"
        )
    return path


def _hydra_app() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from srbench.claim import CellRefused
    from srbench.interface import ConfigError
    from srbench.lock import CellBusy
    from srbench.runner import cell_dir, run_cell
    from srbench.sweep import LAST_SWEEP, record_outcome

    @hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
    def app(cfg: DictConfig) -> str:
        hc = HydraConfig.get()
        single = hc.mode == RunMode.RUN
        _assign_gpu(cfg, int(hc.job.num) if not single else 0)
        out_dir = Path(cfg.out_dir).resolve()
        run_dir, cell = None, " ".join(hc.overrides.task) or "(defaults)"  # until the cell is known
        try:
            # the cell's directory derives from its identity (srbench/identity.py); Hydra's own output
            # folder only holds its logs, so no invocation writes into a cell before run_cell claims it
            run_dir = cell_dir(cfg, out_dir)
            cell = str(run_dir.relative_to(out_dir))
            outcome = run_cell(cfg, run_dir)
            status, reason = outcome.status, outcome.reason
        except (KeyboardInterrupt, SystemExit):
            raise
        except (CellRefused, CellBusy) as exc:  # nothing was written into the cell
            status, reason = "refused", str(exc)
        except ConfigError as exc:  # a bad setting, named: nothing was written
            if single:  # srbench's one-line error
                print(f"srbench: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            status, reason = "failed", str(exc)
        except Exception as exc:  # a failed cell must not stop the sweep; run_cell recorded it if it started
            status, reason = "failed", f"{type(exc).__name__}: {exc}"
        if status == "failed":  # a refusal is the one line printed below
            logging.getLogger("srbench").error("%s", reason)
        record_outcome(cfg.out_dir, {"cell": cell, "status": status, "reason": reason})
        print(f"[{status}] {run_dir or cell}" + (f": {reason}" if reason else ""), flush=True)
        if single and status in ("failed", "refused"):
            raise SystemExit(1)
        return status

    app()
    if LAST_SWEEP.get("failed"):
        raise SystemExit(1)


def _assign_gpu(cfg: Any, job_num: int) -> None:
    """With device=auto and several GPUs, job N of a sweep takes cuda:(N mod count): with as many
    local workers as GPUs (hydra/launcher=local_workers), each worker has one GPU."""
    import torch
    from omegaconf import open_dict

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if str(cfg.get("device", "auto")) == "auto" and count > 1:
        with open_dict(cfg):
            cfg.device = f"cuda:{job_num % count}"


def _leaderboard(argv: list[str]) -> int:
    from srbench.leaderboard import write_leaderboard

    p = argparse.ArgumentParser(prog="srbench leaderboard", description="Aggregate run summaries.")
    p.add_argument("paths", nargs="+", help="run directories or summary.json files (searched recursively)")
    p.add_argument("--out", default=None, help="where to write leaderboard.csv/.md (default: the first PATH)")
    p.add_argument("--quiet", action="store_true", help="do not print the markdown table")
    args = p.parse_args(argv)
    try:
        csv_path, md_path, md = write_leaderboard(args.paths, args.out)
    except FileNotFoundError as exc:
        print(f"srbench leaderboard: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(md)
    print(f"wrote {csv_path} and {md_path}")
    return 0


def _methods(argv: list[str]) -> int:
    from srbench.registry import get_method_class, list_methods

    for name in list_methods():
        cls = get_method_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name:12s} {doc[0] if doc else ''}")
    return 0


def _weights(argv: list[str]) -> int:
    from srbench.weights import weights_cli

    return weights_cli(argv)


def _data(argv: list[str]) -> int:
    from srbench.data.cli import data_cli

    return data_cli(argv)


def _compare(argv: list[str]) -> int:
    from srbench.reference.compare import compare_cli

    return compare_cli(argv)


def _train(argv: list[str]) -> int:
    trainers = {"dmsr": "methods.dmsr.train"}
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: srbench train METHOD [args...]   (trainers: {', '.join(trainers)})")
        return 0 if argv else 2
    if argv[0] not in trainers:
        print(f"srbench train: no trainer for '{argv[0]}' (trainers: {', '.join(trainers)})", file=sys.stderr)
        return 2
    import importlib

    return int(importlib.import_module(trainers[argv[0]]).train_cli(argv[1:]))


def _bench(argv: list[str]) -> int:
    from srbench.bench import bench_cli

    return bench_cli(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        cmd, rest = argv[0], argv[1:]
        try:
            handlers = {
                "leaderboard": _leaderboard,
                "weights": _weights,
                "methods": _methods,
                "train": _train,
                "data": _data,
                "compare": _compare,
                "bench": _bench,
            }
            return handlers[cmd](rest)
        except SRBenchError as exc:
            print(f"srbench {cmd}: {exc}", file=sys.stderr)
            return 1
    _hydra_app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
