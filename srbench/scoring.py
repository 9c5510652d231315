"""Scores as a record of their own: per-metric statistics, set-level metrics, and which metric set made
each score.

A cell's outputs (its SR images, kept under ``images/``) and its scores are separate records: the metric set
is not part of the cell's identity (:mod:`srbench.identity`), a cell holds the union of every metric set it
was scored with (``cell.json`` ``scoring.metrics``), and each pass that added metrics is kept in order
(``scoring.sets`` and the summary's ``metric_sets``: which metrics, how — ``run`` or ``rescore`` — when, with
which pyiqa).  Each metric's statistics name the pass that made them (``set``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from srbench.data.images import save_png
from srbench.metrics import MetricSuite, paper_order
from srbench.stats import t_interval

log = logging.getLogger("srbench")

IMAGES = "images"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def metric_stat(rows: Iterable[Mapping[str, Any]], name: str, lower_better: bool) -> dict[str, Any] | None:
    """Mean, Student-t half-width and counts of one per-image metric over the ok rows (None when no row
    has a finite value)."""
    values = [r.get(name) for r in rows if r.get("status") == "ok"]
    mean, ci, n = t_interval(values)  # n: finite values only
    if n == 0:
        return None
    return {
        "mean": mean,
        "ci95": ci,
        "ci_method": "student-t",
        "n": n,
        "n_not_finite": sum(v is not None for v in values) - n,
        "lower_better": lower_better,
    }


def set_stat(value: float, n: int, lower_better: bool) -> dict[str, Any]:
    """A set-level metric: one value for the cell, no per-image interval and no paired test."""
    return {
        "mean": value,
        "ci95": None,
        "ci_method": "set-level",
        "level": "set",
        "n": n,
        "lower_better": lower_better,
    }


def stored_sets(record: Mapping[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric names, metric sets) a stored ``cell.json`` says the cell was scored with."""
    scoring = (record or {}).get("scoring") or {}
    names = sorted({str(m) for m in scoring.get("metrics") or []})
    sets = [dict(s) for s in scoring.get("sets") or [] if isinstance(s, Mapping)]
    if names and not sets:  # a cell from before scores were a separate record: its one run
        sets = [{"metrics": names, "how": "run"}]
    return names, sets


def add_set(sets: list[dict[str, Any]], names: Sequence[str], how: str, suite: MetricSuite | None) -> None:
    if names:
        sets.append(
            {
                "metrics": sorted(names),
                "how": how,
                "at": now(),
                "pyiqa": getattr(suite, "pyiqa_version", None),
            }
        )


def set_index(sets: Sequence[Mapping[str, Any]], name: str) -> int | None:
    """The pass that first scored ``name``."""
    return next((i for i, s in enumerate(sets) if name in (s.get("metrics") or [])), None)


def missing_images(run_dir: Path, rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of finished (ok) rows whose SR image is not under ``images/``."""
    return [
        str(r["id"])
        for r in rows
        if r.get("status") == "ok" and not (Path(run_dir) / IMAGES / f"{r['id']}.png").is_file()
    ]


def float_scores_refusal(run_dir: Path, protocol: Mapping[str, Any]) -> str | None:
    """Why scores cannot be added from ``images/`` of a cell whose protocol (its config dict) has ``quantize:
    none``: its scores are of the float SR, the saved PNGs are 8-bit, so the two would be mixed; else None."""
    from srbench.protocol import Protocol

    if not protocol or "name" not in protocol:  # a legacy record without its protocol
        return None
    proto = Protocol.from_config(dict(protocol))
    if proto.quantize != "none":
        return None
    return (
        f"{run_dir}: protocol '{proto.name}' has quantize none: its scores are of the float SR output but "
        "images/ holds 8-bit PNGs, so metrics added from them would not match; nothing was written (rerun "
        "the cell: overwrite=true, with every metric you need)"
    )


def score_set_level(
    suite: MetricSuite,
    run_dir: Path,
    ids: Sequence[str],
    dataset: Any,
    protocol: Any,
    scale: int,
) -> tuple[dict[str, float], dict[str, str]]:
    """The suite's set-level metrics over the saved SR images of ``ids`` against their HR images as the
    protocol crops them; returns (values, reasons a metric was not computed)."""
    names = suite.set_level
    if not names:
        return {}, {}
    if not dataset.has_hr:
        return {}, {n: "needs HR images (a full-reference set metric); this dataset has none" for n in names}
    sr_files = [Path(run_dir) / IMAGES / f"{i}.png" for i in ids]
    absent = [p.name for p in sr_files if not p.is_file()]
    if absent:
        why = (
            f"needs every SR image under images/ ({len(absent)} missing, e.g. {absent[0]}): run with "
            "save_images=true"
        )
        return {}, dict.fromkeys(names, why)
    if len(ids) < 2:
        return {}, dict.fromkeys(names, "needs at least 2 images")
    by_id = {s.id: s for s in dataset}
    with tempfile.TemporaryDirectory(prefix="srbench-hr-") as tmp:
        hr_files = []
        for i in ids:
            sample = by_id[i]
            lr, hr = dataset.load(sample)
            _, hr_kept = protocol.prepare(lr, hr, scale)
            if hr_kept.shape == hr.shape and sample.hr_path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                hr_files.append(sample.hr_path)  # what the protocol scores is the whole file
            else:
                path = Path(tmp) / f"{len(hr_files):06d}.png"
                save_png(hr_kept, path)
                hr_files.append(path)
        values = suite.score_set(sr_files, hr_files)
    return values, dict(suite.errors)


def ordered(names: Iterable[str]) -> list[str]:
    return paper_order(list(names))
