"""``srbench rescore``: add metrics to finished cells from their saved SR images, without running the model.

    srbench rescore results/runs/demo/full/realesrgan/steps1 --metrics lpips,fid
    srbench rescore results/runs --metrics-preset paper          # every finished cell under a results tree

The cell's own config (``config.yaml``) gives its dataset and protocol; the dataset must still be the one the
cell ran on (same fingerprint), else the cell is left alone with a message.  Metrics the cell already holds
are kept as they are (never recomputed); the new ones are added to every row (``per_image.jsonl``/``.csv``)
and to the summary, and the pass is recorded (:mod:`srbench.scoring`).  The cell is locked while it is
rescored, like a run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from srbench.claim import CELL, read_cell, write_cell
from srbench.data.folders import SRDataset, build_dataset
from srbench.data.images import read_image
from srbench.fingerprint import dataset_fingerprint
from srbench.interface import SRBenchError
from srbench.lock import CellLock
from srbench.metrics import MetricSuite, metric_specs, set_level
from srbench.protocol import Protocol
from srbench.records import (
    CONFIG,
    PER_IMAGE_CSV,
    PER_IMAGE_LOG,
    SUMMARY,
    PerImageLog,
    write_json,
    write_table,
)
from srbench.scoring import (
    IMAGES,
    add_set,
    float_scores_refusal,
    metric_stat,
    missing_images,
    ordered,
    score_set_level,
    set_index,
    set_stat,
    stored_sets,
)

log = logging.getLogger("srbench")


@dataclass
class Rescored:
    run_dir: Path
    status: str  # rescored | unchanged | refused | failed
    added: list[str]
    reason: str = ""


def metric_names(names: str | None, preset: str | None) -> list[str]:
    """Metric names from ``--metrics a,b`` or ``--metrics-preset NAME`` (conf/metrics/NAME.yaml)."""
    if bool(names) == bool(preset):
        raise SRBenchError("give --metrics a,b,... or --metrics-preset NAME (one of them)")
    if preset:
        from srbench.cli import conf_dir

        path = conf_dir() / "metrics" / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in (conf_dir() / "metrics").glob("*.yaml"))
            raise SRBenchError(f"no metric preset '{preset}' ({path}); presets: {', '.join(known)}")
        out = [str(n) for n in (yaml.safe_load(path.read_text()) or {}).get("names") or []]
    else:
        out = [n.strip() for n in str(names).split(",") if n.strip()]
    unknown = [n for n in out if n not in metric_specs()]
    if unknown:
        raise SRBenchError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(metric_specs())}")
    return out


def score_rows(
    rows: list[dict[str, Any]],
    suite: MetricSuite,
    run_dir: Path,
    dataset: SRDataset,
    protocol: Protocol,
    scale: int,
) -> None:
    """Add the suite's per-image metrics to each ok row that lacks them, from ``images/<id>.png`` and the
    HR as the protocol prepares it (rows keep every score they have)."""
    names = [n for n in suite.available if not set_level(n)]
    if not names:
        return
    by_id = {s.id: s for s in dataset}
    for row in rows:
        todo = [n for n in names if n not in row]
        if row.get("status") != "ok" or not todo:
            continue
        sample = by_id.get(row["id"])
        if sample is None:
            raise SRBenchError(f"{run_dir}: image '{row['id']}' is not in dataset {dataset.name} any more")
        lr, hr = dataset.load(sample)
        _, hr = protocol.prepare(lr, hr, scale)
        sr = read_image(Path(run_dir) / IMAGES / f"{row['id']}.png")
        scores = suite.score(sr, hr)
        row.update({n: scores[n] for n in todo if n in scores})
        if suite.errors:
            row["metric_errors"] = {**(row.get("metric_errors") or {}), **suite.errors}


def rescore_claimed(
    run_dir: Path,
    added: Sequence[str],
    *,
    dataset: SRDataset,
    protocol: Protocol,
    scale: int,
    device: torch.device,
    on_missing: str,
    how: str,
) -> list[str]:
    """Add ``added`` to a cell this process holds (locked): rows, per_image.csv, cell.json and, for a
    finished cell, its summary.  Returns the metrics that were added (built and scored)."""
    run_dir = Path(run_dir)
    record = read_cell(run_dir) or {}
    before, sets = stored_sets(record)
    suite = MetricSuite(
        list(added),
        device=device,
        crop_border=protocol.crop_border,
        y_channel=protocol.y_channel,
        on_missing=on_missing,  # type: ignore[arg-type]
    )
    plog = PerImageLog(run_dir / PER_IMAGE_LOG)
    rows = plog.rows()
    score_rows(rows, suite, run_dir, dataset, protocol, scale)
    done = [n for n in suite.available if not set_level(n)]
    summary = _read_summary(run_dir)
    finished = summary is not None and summary.get("status") == "done"
    set_values: dict[str, float] = {}
    set_why: dict[str, str] = {}
    if finished:
        ok = [r["id"] for r in rows if r.get("status") == "ok"]
        set_values, set_why = score_set_level(suite, run_dir, ok, dataset, protocol, scale)
    done += [n for n, v in set_values.items() if not math.isnan(v)]
    add_set(sets, done, how, suite)
    names = sorted(set(before) | set(added))
    if done:
        plog.repair(rows)  # atomic rewrite: every row keeps its earlier scores, new columns added
    record["scoring"] = {"metrics": names, "sets": sets}
    write_cell(run_dir, record)
    if not finished:
        return done
    write_table(run_dir / PER_IMAGE_CSV, rows)
    stats = dict(summary.get("metrics") or {})
    ok_rows = [r for r in rows if r.get("status") == "ok"]
    for n in done:
        if n in set_values:
            stat = set_stat(set_values[n], len(ok_rows), suite.lower_better(n))
        else:
            stat = metric_stat(ok_rows, n, suite.lower_better(n))
        if stat is not None:
            stats[n] = {**stat, "set": set_index(sets, n)}
    summary["metrics"] = {n: stats[n] for n in ordered(stats)}
    summary["metric_set"] = names
    summary["metric_sets"] = sets
    skipped = {**(summary.get("metrics_skipped") or {}), **suite.skipped, **set_why}
    summary["metrics_skipped"] = {k: v for k, v in skipped.items() if k not in stats}
    for key, new in (
        ("metric_notes", suite.notes),
        ("metric_options", suite.options),
        ("metric_weights_verified", suite.weights_verified),
    ):
        summary[key] = {**(summary.get(key) or {}), **{k: v for k, v in new.items() if k in done}}
    write_json(run_dir / SUMMARY, summary)
    return done


def _read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        s = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return s if isinstance(s, dict) else None


def rescore_cell(
    run_dir: str | Path,
    names: Sequence[str],
    *,
    device: str = "auto",
    on_missing: str = "skip",
    wait_for_lock: bool = False,
) -> Rescored:
    """Add ``names`` (those the cell lacks) to one finished cell; never runs its model."""
    from srbench.environment import resolve_device
    from srbench.registry import create_method
    from srbench.runner import import_plugins

    run_dir = Path(run_dir)
    summary = _read_summary(run_dir)
    if summary is None or summary.get("status") != "done":
        state = "no readable summary" if summary is None else f"status {summary.get('status')!r}"
        why = f"not a finished cell ({state}): finish it with its run first"
        return Rescored(run_dir, "refused", [], why)
    record = read_cell(run_dir)
    if record is None or not (run_dir / CONFIG).is_file():
        return Rescored(run_dir, "refused", [], f"no {CELL} or {CONFIG}: not a cell srbench wrote")
    before, _ = stored_sets(record)
    present = set(before) | set(summary.get("metrics") or {})
    added = [n for n in names if n not in present]
    if not added:
        return Rescored(run_dir, "unchanged", [], "already scored with " + ", ".join(names))
    plain = yaml.safe_load((run_dir / CONFIG).read_text())
    import_plugins(plain.get("plugins"))
    dataset = build_dataset(plain["dataset"])
    fp = dataset_fingerprint(dataset.samples)
    recorded = (record.get("dataset_fingerprint") or {}).get("sha256")
    if recorded and recorded != fp.sha256:
        return Rescored(
            run_dir,
            "refused",
            [],
            f"dataset {dataset.name} changed since this cell ran (fingerprint {recorded[:8]} -> "
            f"{fp.sha256[:8]}): rerun the cell (it keeps the rows of unchanged images) instead",
        )
    refusal = float_scores_refusal(run_dir, plain["protocol"])
    if refusal:
        return Rescored(run_dir, "refused", [], refusal)
    protocol = Protocol.from_config(plain["protocol"])
    scale = int(create_method(dict(plain["method"])).scale)
    with CellLock(run_dir, wait=wait_for_lock):
        rows = PerImageLog(run_dir / PER_IMAGE_LOG).rows()
        absent = missing_images(run_dir, rows)
        if absent:
            return Rescored(
                run_dir,
                "refused",
                [],
                f"{len(absent)} SR image(s) are not under images/ (e.g. {absent[0]}.png; was it run with "
                "save_images=false?): rescoring needs them; rerun the cell with overwrite=true instead",
            )
        done = rescore_claimed(
            run_dir,
            added,
            dataset=dataset,
            protocol=protocol,
            scale=scale,
            device=resolve_device(device),
            on_missing=on_missing,
            how="rescore",
        )
    if not done:
        return Rescored(run_dir, "unchanged", [], "no metric could be built (see the log)")
    return Rescored(run_dir, "rescored", done)


def find_cells(paths: Sequence[str | Path]) -> list[Path]:
    """Cell directories under ``paths`` (a cell dir itself, or a results tree)."""
    from srbench.leaderboard import find_summaries

    return sorted({p.parent for p in find_summaries(paths) if (p.parent / CELL).is_file()})


def rescore_cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="srbench rescore",
        description="Add metrics to finished cells from their saved SR images (the model is not run).",
    )
    p.add_argument("paths", nargs="+", help="cell directories or results trees (searched recursively)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--metrics", help="comma-separated metric names, e.g. lpips,fid")
    g.add_argument("--metrics-preset", help="a conf/metrics preset: default, fast, paper")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--on-missing", choices=("skip", "error"), default="skip", help="a metric without weights")
    p.add_argument("--wait-for-lock", action="store_true", help="wait for a process holding a cell")
    args = p.parse_args(list(argv))
    names = metric_names(args.metrics, args.metrics_preset)
    try:
        cells = find_cells(args.paths)
    except FileNotFoundError as exc:
        raise SRBenchError(str(exc)) from None
    if not cells:
        print(f"srbench rescore: no cells under {' '.join(args.paths)}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for cell in cells:
        try:
            res = rescore_cell(
                cell, names, device=args.device, on_missing=args.on_missing, wait_for_lock=args.wait_for_lock
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # one bad cell must not stop a tree-wide rescore
            res = Rescored(cell, "failed", [], f"{type(exc).__name__}: {exc}")
        counts[res.status] = counts.get(res.status, 0) + 1
        what = ", ".join(res.added) if res.added else res.reason
        print(f"[{res.status}] {cell}: {what}", flush=True)
    print("rescore: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 1 if counts.get("failed") or counts.get("refused") else 0
