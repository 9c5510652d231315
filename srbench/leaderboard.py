"""Aggregate run summaries into leaderboard.csv and leaderboard.md (pandas, scipy).

* Every cell found is listed: finished cells are ranked; skipped and failed cells appear with their reason;
  a summary that cannot be read (not JSON, or JSON of the wrong shape) is listed as unreadable.
* Two cells share a table only when their dataset, dataset fingerprint (the same image files) and protocol
  (name and settings) agree; a table that is split off says why.
* A row is one (method label, variant, steps, weights) of a table; cells that differ only in their seed are
  one row: the mean over seeds, the per-image Student-t interval of the seed-averaged scores, and the
  standard deviation across seeds.
* Each row is tested against the best row of its column (paired Wilcoxon signed-rank on per-image scores,
  Holm-corrected over the rows, :mod:`srbench.stats`); the best value is bold only where it is
  significantly better than every other row (and the second best, for the report, only where it is
  significantly better than every row below it).
* Set-level metrics (FID) have one value per cell: no interval and no paired test ("set-level").
* Cells scored from outputs made elsewhere (``source: external``) are ranked like the others and marked.
* Speed: summaries and per-image scores are read through :mod:`srbench.cellindex` (unchanged cells cost a
  ``stat``), the tree walk skips ``images/`` folders, the paired tests of all tables run in a few
  vectorised calls, and the per-row work is plain Python over records, not per-row pandas.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from srbench.cellindex import CellIndex, Scores, opened
from srbench.metrics import PAPER_ORDER, metric_specs, paper_order, set_level
from srbench.names import name_problem
from srbench.protocol import current_settings
from srbench.records import PER_IMAGE_CSV, SUMMARY, atomic_write_text
from srbench.stats import ALPHA, holm, seed_sd, t_interval, wilcoxon_rows

log = logging.getLogger(__name__)

KEY = ["dataset", "protocol", "method", "steps"]
#: column order of the metrics, as the papers' tables (one list: :data:`srbench.metrics.PAPER_ORDER`):
#: full-reference first (PSNR, SSIM, LPIPS, ..., FID), then no-reference; every name of
#: srbench.metrics.metric_specs() is here (tests check), others go last, sorted
METRIC_ORDER = PAPER_ORDER
STATUSES = ("done", "skipped", "failed")


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``summary.json`` under ``paths`` (files or folders); a cell's own sub-folders (``images/``) and
    hidden folders are not searched."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == SUMMARY:
            found.append(p)
        elif p.is_dir():
            hits = []
            for root, dirs, files in os.walk(p):
                if SUMMARY in files:
                    hits.append(os.path.join(root, SUMMARY))
                    dirs[:] = []  # a cell: its sub-folders hold images, never another cell
                else:
                    dirs[:] = [d for d in dirs if not d.startswith(".") and d != "images"]
            found.extend(Path(h) for h in sorted(hits, key=lambda h: h.split(os.sep)))
        else:
            raise FileNotFoundError(f"{p}: neither a run directory nor a {SUMMARY}")
    return found


# ------------------------------------------------------------------------------------ reading summaries


class _Shape(ValueError):
    """A summary that is JSON but not a summary."""


def _get(s: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], required: bool = True) -> Any:
    value = s.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise _Shape(f"'{key}' is {value!r}, not {getattr(kinds, '__name__', kinds)}")
    if not isinstance(value, kinds):
        raise _Shape(f"'{key}' is {type(value).__name__} {value!r:.60}, expected {_kind_name(kinds)}")
    return value


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Shape(f"{what} is {value!r:.60}, not a number")
    return float(value)


def _parse(s: Any) -> tuple[dict[str, Any], dict[str, bool]]:
    """One leaderboard cell from a summary; raises :class:`_Shape` naming what is wrong."""
    if not isinstance(s, dict):
        raise _Shape(f"not a JSON object but {type(s).__name__}")
    status = _get(s, "status", str)
    if status not in STATUSES:
        raise _Shape(f"unknown status {status!r}")
    done = status == "done"
    row: dict[str, Any] = {
        "status": status,
        "reason": s.get("reason") or s.get("error") or "",
        "dataset": _get(s, "dataset", str, done),
        "protocol": _get(s, "protocol", str, done),
        "label": _get(s, "method", str, done),
        "method_name": s.get("method_name") if isinstance(s.get("method_name"), str) else None,
        "variant": _get(s, "variant", str, False) or "",
        "steps": _get(s, "steps", int, done),
        "seed": _get(s, "seed", int, False),
        "source": s.get("source") if s.get("source") == "external" else "srbench",
    }
    options = _get(s, "options", dict, False) or {}
    row["options"] = json.dumps(options, sort_keys=True, default=str) if options else ""
    settings = _get(s, "protocol_settings", dict, False)
    settings = current_settings(settings) if settings else settings  # quantize True = round
    row["protocol_settings"] = json.dumps(settings, sort_keys=True, default=str) if settings else ""
    # every method was x4 before the scale was recorded (issue 20 added StableSR's `upscale`)
    row["scale"] = _get(s, "scale", int, False) or 4
    fp = _get(s, "dataset_fingerprint", dict, False) or {}
    row["fingerprint"] = fp.get("sha256") if isinstance(fp.get("sha256"), str) else ""
    row["n_set"] = fp.get("n_images") if isinstance(fp.get("n_images"), int) else None
    weights = _get(s, "weights", dict, False) or {}
    row["weights"] = str(weights.get("label", "?")) if weights else ("?" if done else "")
    lower_better: dict[str, bool] = {}
    if not done:
        return row, lower_better
    row["images"] = _get(s, "n_ok", int, False)
    row["failed"] = _get(s, "n_failed", int, False)
    lat = (_get(s, "latency_s", dict, False) or {}).get("total") or {}
    if not isinstance(lat, dict):
        raise _Shape("'latency_s.total' is not an object")
    row["latency_median_s"] = _number(lat.get("median"), "latency_s.total.median")
    row["latency_p90_s"] = _number(lat.get("p90"), "latency_s.total.p90")
    row["peak_mem_mb"] = _number(s.get("peak_mem_mb"), "peak_mem_mb")
    env = _get(s, "environment", dict, False) or {}
    row["device"], row["dtype"] = env.get("device_name"), env.get("dtype")
    for name, st in _get(s, "metrics", dict).items():
        if not isinstance(st, dict):
            raise _Shape(f"metrics.{name} is not an object")
        row[name] = _number(st.get("mean"), f"metrics.{name}.mean")
        row[f"{name}_ci95"] = _number(st.get("ci95"), f"metrics.{name}.ci95")
        row[f"{name}_n"] = _number(st.get("n"), f"metrics.{name}.n")
        lower_better[name] = bool(st.get("lower_better"))
    return row, lower_better


def _parse_file(path: Path) -> dict[str, Any]:
    """What the index keeps of one summary: the parsed cell, or why it cannot be read."""
    try:
        row, lower = _parse(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:  # _Shape is a ValueError, as is a JSON decode error
        return {"error": f"{path.name}: {exc}"}
    return {"row": row, "lower": lower}


def collect(
    paths: Iterable[str | Path], extra: Sequence[Mapping[str, Any]] = (), *, index: CellIndex | None = None
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """A frame of every cell found (any status; ``unreadable`` for a bad summary) and each metric's direction
    (True = lower is better).  ``extra``: cells known without a summary (a sweep's refusals)."""
    rows: list[dict[str, Any]] = []
    lower_better: dict[str, bool] = {}
    summaries = find_summaries(paths)
    with contextlib.ExitStack() as stack:
        idx = index if index is not None else stack.enter_context(opened())
        parsed = idx.summaries(summaries, _parse_file)
    for path, got in zip(summaries, parsed, strict=True):
        base = {"run_dir": str(path.parent)}
        if "error" in got:
            log.warning("%s: unreadable summary (%s)", path, got["error"])
            rows.append({**base, "status": "unreadable", "reason": got["error"]})
            continue
        rows.append({**base, **got["row"]})
        lower_better.update(got["lower"])
    rows.extend(dict(e) for e in extra)
    lower_better = {m: lower_better[m] for m in ordered_metrics(lower_better)}
    df = pd.DataFrame(rows)
    if df.empty:
        return df, lower_better
    for col in (
        "status",
        "reason",
        "dataset",
        "protocol",
        "label",
        "variant",
        "options",
        "weights",
        "source",
    ):
        if col not in df:
            df[col] = None
    df["method"] = df["label"]
    return df.reset_index(drop=True), lower_better


def ordered_metrics(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`METRIC_ORDER` (the papers' column order), unknown ones last, sorted."""
    return paper_order(sorted(dict.fromkeys(names)))


# ------------------------------------------------------------------------------------ tables and rows


@dataclass
class Table:
    id: str
    title: str
    dataset: str
    protocol: str
    fingerprint: str
    settings: str
    why_apart: list[str] = field(default_factory=list)
    plot_name: str = ""


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _settings_diff(a: str, b: str) -> str:
    da, db = (json.loads(x) if x else {} for x in (a, b))
    keys = sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))
    return ", ".join(f"{k} {da.get(k)!r} vs {db.get(k)!r}" for k in keys[:4]) or "settings not recorded"


def _tables(done: list[dict[str, Any]]) -> tuple[list[str], dict[str, Table]]:
    """The table of each finished cell: one per (dataset, protocol, fingerprint, protocol settings, scale)."""
    families: dict[tuple[str, str], dict[tuple[str, str, int], list[int]]] = {}
    for i, r in enumerate(done):
        fam = families.setdefault((str(r["dataset"]), str(r["protocol"])), {})
        fam.setdefault((r["fingerprint"], r["protocol_settings"], int(r.get("scale") or 4)), []).append(i)
    tables: dict[str, Table] = {}
    assign = [""] * len(done)
    for (dataset, protocol), parts in sorted(families.items()):
        main = min(parts, key=lambda k: (-len(parts[k]), k))
        main_fp, main_settings, main_scale = main
        n_main = next((done[i]["n_set"] for i in parts[main]), None)
        for (fp, settings, scale), members in sorted(parts.items()):
            title = f"{dataset} — protocol `{protocol}`"
            tid = f"{dataset}/{protocol}"
            why: list[str] = []
            if (fp, settings, scale) != main:
                quals = []
                if fp != main_fp:
                    quals.append(f"images {fp[:8] or 'unrecorded'}")
                    n_this = done[members[0]]["n_set"]
                    why.append(
                        "a different image set: "
                        + (
                            f"fingerprint {fp[:8]} ({_n(n_this)} images)"
                            if fp
                            else "not recorded (older summary)"
                        )
                        + " vs "
                        + (f"{main_fp[:8]} ({_n(n_main)} images)" if main_fp else "not recorded")
                    )
                if settings != main_settings:
                    quals.append(f"settings {_short_hash(settings)}")
                    why.append(f"protocol settings differ ({_settings_diff(settings, main_settings)})")
                if scale != main_scale:
                    quals.append(f"x{scale}")
                    why.append(f"another scale: x{scale} vs x{main_scale}")
                title += " — " + ", ".join(quals)
                tid += "/" + "/".join(quals).replace(" ", "-")
            plot = f"{dataset}__{protocol}" + ("" if not why else "__" + _short_hash(tid))
            if name_problem(plot):  # names read from a summary.json never choose where a plot is written
                plot = f"table__{_short_hash(tid)}"
            tables[tid] = Table(tid, title, str(dataset), str(protocol), str(fp), str(settings), why, plot)
            for i in members:
                assign[i] = tid
    return assign, tables


def _n(value: Any) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _display(label: str, options: str, source: str | None = None) -> str:
    """``label (opt=value, ...)`` for the options that change the method, its precision or its speed;
    ``[external]`` for outputs made outside srbench."""
    try:
        opts = json.loads(options) if isinstance(options, str) and options else {}
    except ValueError:
        opts = {}
    shown = []
    for key, value in opts.items():
        short = key.split(".", 1)[1] if key.startswith(("method.", "speed.")) else key
        if key in ("method.name", "method.dir") or key.startswith(("dataset.", "protocol.")):
            continue
        text = str(value)
        if "/" in text:
            text = text.rstrip("/").rsplit("/", 1)[-1]
        shown.append(f"{short}={text[:24]}")
    out = label + (f" ({', '.join(shown)})" if shown else "")
    return out + (" [external]" if source == "external" else "")


_Scores = Scores


def _per_image(run_dir: str | Path, metrics: Sequence[str] | None = None) -> Scores | None:
    """The ok rows of a cell's per_image.csv: every metric column (or only ``metrics``); None when absent or
    unreadable."""
    wanted_names = set(metric_specs()) if metrics is None else set(metrics)
    try:
        with open(Path(run_dir) / PER_IMAGE_CSV, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            head = next(reader)
            at = {c: i for i, c in enumerate(head)}
            if "id" not in at:
                return None
            ok = at.get("status")
            wanted = [(m, at[m]) for m in head if m in wanted_names]
            rows = [r for r in reader if len(r) == len(head) and (ok is None or r[ok] == "ok")]
    except (OSError, StopIteration, UnicodeDecodeError, csv.Error):
        return None
    ids = [r[at["id"]] for r in rows]
    values = {}
    for m, j in wanted:
        try:
            values[m] = np.array([r[j] or "nan" for r in rows], dtype=np.float64)
        except ValueError:  # a stray non-number: that image counts as missing
            values[m] = pd.to_numeric(pd.Series([r[j] for r in rows]), errors="coerce").to_numpy(np.float64)
    if len(set(ids)) != len(ids):  # a damaged table: the first row of each image
        first = sorted({i: k for k, i in reversed(list(enumerate(ids)))}.values())
        ids = [ids[k] for k in first]
        values = {m: v[first] for m, v in values.items()}
    return Scores(tuple(ids), values)


def _aligned(scores: Sequence[Scores], m: str) -> np.ndarray:
    """(len(scores), images) matrix of metric ``m`` on the union of image ids (NaN where one is missing)."""
    if all(s.ids == scores[0].ids for s in scores[1:]):
        return np.vstack([s.values[m] for s in scores])
    ids = list(dict.fromkeys(i for s in scores for i in s.ids))
    pos = {i: k for k, i in enumerate(ids)}
    out = np.full((len(scores), len(ids)), np.nan)
    for r, s in enumerate(scores):
        out[r, [pos[i] for i in s.ids]] = s.values[m]
    return out


def build_board(
    cells: pd.DataFrame, lower_better: dict[str, bool], *, index: CellIndex | None = None
) -> tuple[pd.DataFrame, dict[str, Table]]:
    """The leaderboard rows (finished cells grouped over seeds, tested, ranked), then every other cell."""
    if cells.empty or "status" not in cells:
        return pd.DataFrame(), {}
    metrics = [m for m in lower_better if m in cells.columns]
    is_done = (cells["status"] == "done").to_numpy()
    done = cells[is_done].to_dict("records")
    for r in done:
        for col in ("fingerprint", "protocol_settings", "variant", "options"):
            v = r.get(col)
            r[col] = "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        r.setdefault("n_set", None)
        r.setdefault("seed", None)
    tables: dict[str, Table] = {}
    rows: list[dict[str, Any]] = []
    if done:
        assign, tables = _tables(done)
        last: dict[tuple[Any, ...], dict[str, Any]] = {}
        for tid, r in zip(assign, done, strict=True):
            r["table"] = tid
            seed = r["seed"] if _present(r["seed"]) else None
            last[(tid, r["label"], r["variant"], r["steps"], r["weights"], seed)] = r
        if len(last) < len(done):
            log.warning(
                "%d duplicate cell(s) found (copied run dirs?); keeping the last of each",
                len(done) - len(last),
            )
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for key, r in last.items():
            groups.setdefault(key[:5], []).append(r)
        rows = [_row(g, metrics) for g in groups.values()]
    board = pd.DataFrame(rows)
    if not board.empty:
        with contextlib.ExitStack() as stack:
            idx = index if index is not None else stack.enter_context(opened())
            board = _test_and_rank(board, metrics, lower_better, idx)
    rest = cells[~is_done].copy()
    if not rest.empty:
        rest["options"] = rest["options"].where(rest["options"].notna(), "")
        rest["label"] = rest["label"].where(rest["label"].notna(), "")
        rest["method"] = [
            _display(str(lb or ""), str(o or ""), src)
            for lb, o, src in zip(rest["label"], rest["options"], rest["source"], strict=True)
        ]
        if "seed" in rest:
            rest["seeds"] = [_n(v) if _present(v) else "" for v in rest["seed"]]
        rest = rest.drop(columns=["seed", "protocol_settings", "method_name"], errors="ignore")
        board = pd.concat([board, rest], ignore_index=True)
    for col in ("steps", "images", "failed", "n_seeds", "n_set"):
        if col in board:
            board[col] = pd.to_numeric(board[col], errors="coerce").astype("Int64")
    return board, tables


def _num(values: Iterable[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _row(cells: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """One leaderboard row from the cells of one (table, label, variant, steps, weights), one per seed."""
    if len(cells) > 1:
        cells = sorted(cells, key=lambda c: (not _present(c.get("seed")), c.get("seed") or 0))
    first = cells[0]
    seeds = [c.get("seed") for c in cells]
    row: dict[str, Any] = {
        "table": first["table"],
        "status": "done",
        "reason": "",
        "dataset": first["dataset"],
        "protocol": first["protocol"],
        "method": _display(str(first["label"]), str(first["options"]), first.get("source")),
        "label": first["label"],
        "variant": first["variant"],
        "options": first["options"],
        "source": first.get("source") or "srbench",
        "steps": int(first["steps"]),
        "seeds": ",".join(_n(s) for s in seeds) if any(_present(s) for s in seeds) else "",
        "n_seeds": len(cells),
        "weights": first["weights"],
        "device": first.get("device"),
        "dtype": first.get("dtype"),
        "fingerprint": first["fingerprint"],
        "n_set": first.get("n_set"),
        "run_dir": ";".join(c["run_dir"] for c in cells),
        "_run_dirs": [c["run_dir"] for c in cells],
    }
    if len(cells) == 1:  # the common case: no arrays to build
        for k in ("images", "failed"):
            v = first.get(k)
            row[k] = int(v) if _present(v) else None
        for k in ("latency_median_s", "latency_p90_s", "peak_mem_mb"):
            v = first.get(k)
            row[k] = float(v) if _present(v) else np.nan
        for m in metrics:
            v = first.get(m)
            row[m] = float(v) if _present(v) else np.nan
            row[f"{m}_ci95"], row[f"{m}_n"] = first.get(f"{m}_ci95"), first.get(f"{m}_n")
            row[f"{m}_seed_sd"] = None
        return row
    images, failed = _num(c.get("images") for c in cells), _num(c.get("failed") for c in cells)
    row["images"] = int(np.nanmin(images)) if np.isfinite(images).any() else None
    row["failed"] = int(np.nanmax(failed)) if np.isfinite(failed).any() else None
    row["latency_median_s"] = _nanstat(np.nanmedian, [c.get("latency_median_s") for c in cells])
    row["latency_p90_s"] = _nanstat(np.nanmedian, [c.get("latency_p90_s") for c in cells])
    row["peak_mem_mb"] = _nanstat(np.nanmax, [c.get("peak_mem_mb") for c in cells])
    for m in metrics:
        means = _num(c.get(m) for c in cells)
        row[m] = _nanstat(np.nanmean, means)
        row[f"{m}_ci95"] = row[f"{m}_n"] = None  # from the per-image seed means (_test_and_rank)
        row[f"{m}_seed_sd"] = seed_sd(means.tolist())
    return row


def _nanstat(fn: Any, values: Iterable[Any]) -> float:
    arr = _num(values)
    return float(fn(arr)) if np.isfinite(arr).any() else np.nan


def _seed_mean(found: list[Scores], metrics: list[str]) -> Scores:
    """Per-image scores averaged over a row's seeds (an image no seed scored stays NaN)."""
    if len(found) == 1:
        return found[0]
    same = all(f.ids == found[0].ids for f in found)
    ids = found[0].ids if same else tuple(dict.fromkeys(i for f in found for i in f.ids))
    shared = [m for m in metrics if all(m in f.values for f in found)]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = {m: np.nanmean(_aligned(found, m), axis=0) for m in shared}
    return Scores(ids, values)


@dataclass
class _Comparison:
    """Rows of one table column tested against one reference row (the best, or the second best)."""

    group: int
    metric: str
    ref: int  # board position
    others: list[int]
    diff: np.ndarray  # (len(others), images): other - reference


def _comparison(
    group: int, m: str, ref: int, others: list[int], scores: dict[int, Scores | None]
) -> _Comparison:
    have = [o for o in others if (s := scores.get(o)) is not None and m in s.values]
    b = scores.get(ref)
    if b is None or m not in b.values or not have:
        return _Comparison(group, m, ref, others, np.full((len(others), 0), np.nan))
    matrix = _aligned([b, *(scores[o] for o in have)], m)  # type: ignore[misc]
    diff = np.full((len(others), matrix.shape[1]), np.nan)
    diff[[others.index(o) for o in have]] = matrix[1:] - matrix[0][None, :]
    return _Comparison(group, m, ref, others, diff)


def _raw_pvalues(comparisons: list[_Comparison]) -> list[np.ndarray]:
    """Each comparison's raw p-values, from one vectorised Wilcoxon call per image count (not per table)."""
    out = [np.full(len(c.others), np.nan) for c in comparisons]
    by_n: dict[int, list[int]] = {}
    for k, c in enumerate(comparisons):
        if c.diff.shape[1]:
            by_n.setdefault(c.diff.shape[1], []).append(k)
    for ks in by_n.values():
        p = wilcoxon_rows(np.vstack([comparisons[k].diff for k in ks]))
        at = 0
        for k in ks:
            n = len(comparisons[k].others)
            out[k] = p[at : at + n]
            at += n
    return out


def _test_and_rank(
    board: pd.DataFrame, metrics: list[str], lower_better: dict[str, bool], index: CellIndex
) -> pd.DataFrame:
    board = board.reset_index(drop=True)
    n_rows = len(board)
    tested = [m for m in metrics if not set_level(m)]
    cols: dict[str, np.ndarray] = {}
    for m in metrics:
        for c in (f"{m}_ci95", f"{m}_n"):
            cols[c] = pd.to_numeric(board[c], errors="coerce").to_numpy(np.float64, copy=True)
        cols[f"{m}_p"] = np.full(n_rows, np.nan)
        cols[f"{m}_p_raw"] = np.full(n_rows, np.nan)
        cols[f"{m}_best_significant"] = np.zeros(n_rows, dtype=bool)
        cols[f"{m}_second_significant"] = np.zeros(n_rows, dtype=bool)
    values = {m: board[m].to_numpy(np.float64) for m in metrics}
    n_seeds = board["n_seeds"].to_numpy()
    run_dirs = board["_run_dirs"].tolist()
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(board["table"], board["weights"], strict=True)):
        groups.setdefault(key, []).append(i)
    need = [g for g in groups.values() if len(g) > 1 or n_seeds[g[0]] > 1]
    per_image = index.scores((d for g in need for i in g for d in run_dirs[i]), _per_image, PER_IMAGE_CSV)
    scores: dict[int, Scores | None] = {}
    for g in need:
        for i in g:
            found = [per_image.get(d) for d in run_dirs[i]]
            scores[i] = None if any(f is None for f in found) else _seed_mean(found, metrics)  # type: ignore[arg-type]
            if n_seeds[i] > 1 and scores[i] is not None:  # several seeds: the interval of the seed means
                for m in metrics:
                    if m in scores[i].values:  # type: ignore[union-attr]
                        _, half, n = t_interval(scores[i].values[m])  # type: ignore[union-attr]
                        cols[f"{m}_ci95"][i], cols[f"{m}_n"][i] = np.nan if half is None else half, n
    firsts: list[_Comparison] = []
    seconds: list[_Comparison] = []
    for gi, g in enumerate(need):
        for m in tested:
            valid = [i for i in g if math.isfinite(values[m][i])]
            if len(valid) < 2:
                continue
            order = sorted(valid, key=lambda i: (values[m][i] if lower_better[m] else -values[m][i], i))
            best = order[0]
            firsts.append(_comparison(gi, m, best, [i for i in valid if i != best], scores))
            if len(order) >= 3:  # the second best is marked only where it beats every row below it
                seconds.append(_comparison(gi, m, order[1], order[2:], scores))
    for c, raw in zip(firsts, _raw_pvalues(firsts), strict=True):
        adjusted = holm(raw)
        cols[f"{c.metric}_p_raw"][c.others] = raw
        cols[f"{c.metric}_p"][c.others] = adjusted
        cols[f"{c.metric}_best_significant"][c.ref] = bool(np.all(np.nan_to_num(adjusted, nan=1.0) < ALPHA))
    best_of = {(c.group, c.metric): c.ref for c in firsts}
    for c, raw in zip(seconds, _raw_pvalues(seconds), strict=True):
        ok = bool(np.all(np.nan_to_num(holm(raw), nan=1.0) < ALPHA))
        best_ok = bool(cols[f"{c.metric}_best_significant"][best_of[(c.group, c.metric)]])
        cols[f"{c.metric}_second_significant"][c.ref] = ok and best_ok
    board = board.assign(**cols)
    board = add_ranks(board, lower_better)
    board["_random"] = board["weights"] != "real"
    board = board.sort_values(["table", "_random", "mean_rank", "method", "steps"], kind="stable")
    return board.drop(columns=["_run_dirs", "_random"]).reset_index(drop=True)


def add_ranks(df: pd.DataFrame, lower_better: dict[str, bool]) -> pd.DataFrame:
    """Per (table, weights label): ``<metric>_rank`` per metric (1 = best) and their mean."""
    df = df.copy()
    metrics = [m for m in lower_better if m in df.columns]
    # random-weight rows are ranked among themselves, never against real results
    keys = ["table", "weights"] if "table" in df else ["dataset", "protocol", "weights"]
    groups = df.groupby(keys, sort=False)
    ranks = {f"{m}_rank": groups[m].rank(ascending=lower_better[m], method="min") for m in metrics}
    df = df.assign(**ranks)
    df["mean_rank"] = df[list(ranks)].mean(axis=1) if ranks else float("nan")
    return df


# ------------------------------------------------------------------------------------ output


def _fmt(value: Any, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "—"
    if name in ("steps", "images", "failed", "n_seeds") and isinstance(value, (int, float, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        if name.startswith("latency"):
            return f"{value:.3f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _present(value: Any) -> bool:
    return value is not None and value is not pd.NA and not (isinstance(value, float) and math.isnan(value))


def metric_text(
    value: float, ci: Any = None, sd: Any = None, *, level_set: bool = False, mark: str = ""
) -> str:
    """A metric cell: ``mean ± half-width`` (4 decimals below 10, 2 above), ``(set-level)`` for set
    metrics, ``(seed sd …)`` over seeds; ``mark`` wraps the mean (``**`` for bold in markdown)."""
    if not _present(value):
        return "—"
    digits = 4 if abs(float(value)) < 10 else 2
    text = f"{mark}{float(value):.{digits}f}{mark}"
    if level_set:
        return text + " (set-level)"
    if _present(ci):
        text += f" ± {float(ci):.{digits}f}"
    if _present(sd):
        text += f" (seed sd {float(sd):.{digits}f})"
    return text


def to_markdown(
    df: pd.DataFrame,
    lower_better: dict[str, bool],
    plots: dict[str, Path] | None = None,
    relative_to: Path | None = None,
    *,
    board: tuple[pd.DataFrame, dict[str, Table]] | None = None,
) -> str:
    """Markdown with one table per (dataset, fingerprint, protocol): mean ± 95 % CI per metric, arrows for
    direction, the best real-weight value in bold where it is significantly best, rows by mean rank; then
    the cells that were not ranked, with their status and reason (tables by ``tabulate``)."""
    if df.empty:
        return "_No runs found._\n"
    rows, tables = board if board is not None else build_board(df, lower_better)
    done = rows[rows["status"] == "done"] if not rows.empty else rows
    metrics = [m for m in lower_better if m in rows.columns]
    parts: list[str] = ["# srbench leaderboard", ""]
    if not done.empty and (done["weights"] != "real").any():
        parts += [
            "> Rows labelled `random` come from randomly initialised weights (tests/plumbing): "
            "they are not results.",
            "",
        ]
    if not done.empty and (done.get("source") == "external").any():
        parts += [
            "> Rows marked `[external]` were scored by srbench from SR images made elsewhere "
            "(`srbench score` / `method=precomputed`): no latency is measured for them.",
            "",
        ]
    texts = _cell_texts(done, metrics, lower_better) if not done.empty else {}
    by_table: dict[str, list[int]] = {}
    for pos, tid in enumerate(done["table"].tolist() if not done.empty else []):
        by_table.setdefault(tid, []).append(pos)
    for tid in sorted(
        tables, key=lambda t: (tables[t].dataset, tables[t].protocol, bool(tables[t].why_apart), t)
    ):
        table = tables[tid]
        members = by_table.get(tid, [])
        parts += [f"## {table.title}", ""]
        if table.why_apart:
            parts += [
                f"Not ranked with `{table.dataset}` / `{table.protocol}` above: "
                f"{'; '.join(table.why_apart)}.",
                "",
            ]
        seeds = bool((done["n_seeds"].to_numpy()[members] > 1).any()) if members else False
        cols = ["method", "steps", "weights", *(["seeds"] if seeds else [])]
        present = [m for m in metrics if any(_present(done[m].iat[p]) for p in members)] if members else []
        cols += [*present, "latency_median_s", "mean_rank", "images"]
        header = [_header(c, lower_better) for c in cols]
        body = [[texts[c][p] for c in cols] for p in members]
        parts += [tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True), ""]
        if plots and tid in plots:
            png = plots[tid]
            rel = png.relative_to(relative_to) if relative_to and png.is_relative_to(relative_to) else png
            parts += [f"![quality vs latency, {table.title.replace('`', '')}]({rel.as_posix()})", ""]
    parts += _not_ranked(rows)
    parts.append(
        "Means over images ± half-width of the 95 % Student-t confidence interval (over the per-image "
        "scores; for several seeds, over the per-image means across seeds, with the standard deviation "
        "of the seed means as `seed sd`). A value is **bold** where that row is the best real-weight row and "
        "better than every other row by a two-sided paired Wilcoxon signed-rank test on the per-image "
        "scores, Holm-corrected over the rows of the table (α = 0.05); the p-values are in leaderboard.csv "
        "(`<metric>_p`). Set-level metrics (FID) are one value per cell: no interval, no test. Mean rank "
        "over the metric columns (1 = best). Latency: median total `upscale()` time per image after warm-up."
    )
    return "\n".join(parts) + "\n"


def _header(col: str, lower_better: Mapping[str, bool]) -> str:
    if col in lower_better:
        return f"{col} {'↓' if lower_better[col] else '↑'}"
    return {"latency_median_s": "latency s (median) ↓", "mean_rank": "mean rank"}.get(col, col)


def _cell_texts(
    done: pd.DataFrame, metrics: list[str], lower_better: Mapping[str, bool]
) -> dict[str, list[str]]:
    """Every displayed cell of the finished rows as text, built column by column (no per-row pandas)."""
    out: dict[str, list[str]] = {}
    for c in ("method", "steps", "weights", "seeds", "latency_median_s", "images"):
        if c in done:
            out[c] = [_fmt(v, c) for v in done[c].tolist()]
    out["mean_rank"] = [f"{v:.1f}" if _present(v) else "—" for v in done["mean_rank"].tolist()]
    real = (done["weights"] == "real").tolist()
    n_seeds = done["n_seeds"].tolist()
    for m in metrics:
        bold = (
            done[f"{m}_best_significant"].tolist() if f"{m}_best_significant" in done else [False] * len(done)
        )
        sds = done[f"{m}_seed_sd"].tolist() if f"{m}_seed_sd" in done else [None] * len(done)
        out[m] = [
            metric_text(
                v,
                ci,
                sd if ns > 1 else None,
                level_set=set_level(m),
                mark="**" if r and b else "",
            )
            for v, ci, sd, ns, r, b in zip(
                done[m].tolist(), done[f"{m}_ci95"].tolist(), sds, n_seeds, real, bold, strict=True
            )
        ]
    return out


def _not_ranked(rows: pd.DataFrame) -> list[str]:
    rest = rows[rows["status"] != "done"] if not rows.empty else rows
    if rest.empty:
        return []
    body = []
    for r in rest.sort_values(["status", "run_dir"], kind="stable", na_position="last").to_dict("records"):
        reason = " ".join(str(r.get("reason") or "").split())
        reason = (reason[:237] + "...") if len(reason) > 240 else reason
        cells = [_fmt(r.get(c), c) for c in ("dataset", "protocol", "method", "steps", "status")]
        body.append([*cells, reason.replace("|", "\\|"), str(r.get("run_dir") or "")])
    head = ["dataset", "protocol", "method", "steps", "status", "reason", "run dir"]
    return [
        "## Cells not ranked",
        "",
        tabulate(body, headers=head, tablefmt="pipe", disable_numparse=True),
        "",
    ]


def pareto_front(latency: Sequence[float], quality: Sequence[float], lower_better: bool) -> list[int]:
    """Indices of the points no other point beats in both latency (lower) and quality."""
    pts = list(zip(latency, quality, strict=True))
    front = []
    for i, (li, qi) in enumerate(pts):
        dominated = False
        for j, (lj, qj) in enumerate(pts):
            if j == i:
                continue
            better_q = qj <= qi if lower_better else qj >= qi
            strictly = lj < li or (qj < qi if lower_better else qj > qi)
            if lj <= li and better_q and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda k: pts[k][0])


def place_labels(ax: Any, texts: list[Any], x: Sequence[float], y: Sequence[float]) -> None:
    """Move point labels apart so that overlapping points stay readable (adjustText: labels repelled from
    each other and from the points, joined to their point by a thin line)."""
    if len(texts) < 2:
        return
    from adjustText import adjust_text

    adjust_text(
        texts,
        x=list(x),
        y=list(y),
        ax=ax,
        arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5},
        expand=(1.05, 1.2),
    )


def plot_quality_vs_latency(
    rows: pd.DataFrame,
    tables: dict[str, Table],
    lower_better: dict[str, bool],
    out_dir: Path,
    metrics: Sequence[str] | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, Path]:
    """One PNG per table (or per table of ``only``): a panel per metric, quality vs median latency, Pareto
    front marked, labels moved apart where points overlap."""
    only = None if only is None else set(only)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, Path] = {}
    if rows.empty or "latency_median_s" not in rows:
        return written
    done = rows[rows["status"] == "done"]
    wanted = [m for m in (metrics or lower_better) if m in rows.columns]
    for tid, table in tables.items():
        if only is not None and tid not in only:
            continue
        group = done[done["table"] == tid].dropna(subset=["latency_median_s"])
        panels = [m for m in wanted if group[m].notna().any()]
        if group.empty or not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
        for ax, m in zip(axes[0], panels, strict=True):
            g = group.dropna(subset=[m])
            lat, q = g["latency_median_s"].tolist(), g[m].tolist()
            labels = [
                f"{r.method}-{r.steps}" + ("" if r.weights == "real" else " (random)") for r in g.itertuples()
            ]
            real = [r.weights == "real" for r in g.itertuples()]
            colours = ["tab:blue" if ok else "tab:gray" for ok in real]
            ax.scatter(lat, q, s=28, c=colours, zorder=3)
            texts = [ax.text(x, y, t, fontsize=7) for x, y, t in zip(lat, q, labels, strict=True)]
            # the front is drawn over real-weight rows only (over all rows when none is real)
            pool = [i for i, ok in enumerate(real) if ok] or list(range(len(real)))
            sub = pareto_front([lat[i] for i in pool], [q[i] for i in pool], lower_better[m])
            front = [pool[i] for i in sub]
            ax.plot(
                [lat[i] for i in front],
                [q[i] for i in front],
                "--",
                color="tab:red",
                lw=1.2,
                marker="o",
                mfc="none",
                ms=9,
                label="Pareto front",
                zorder=2,
            )
            ax.set_xscale("log")
            ax.set_xlabel("latency per image, s (median, log)")
            ax.set_ylabel(f"{m} {'↓' if lower_better[m] else '↑'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            place_labels(ax, texts, lat, q)
        fig.suptitle(table.title.replace("`", ""), fontsize=10)
        fig.tight_layout()
        path = out_dir / "plots" / f"{table.plot_name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[tid] = path
    return written


CSV_FIRST = [
    "table",
    "status",
    "reason",
    "dataset",
    "protocol",
    "method",
    "label",
    "variant",
    "options",
    "steps",
    "seeds",
    "n_seeds",
    "weights",
    "source",
    "images",
    "failed",
]


def write_leaderboard(
    paths: Sequence[str | Path],
    out_dir: str | Path | None = None,
    *,
    plots: bool = True,
    extra: Sequence[Mapping[str, Any]] = (),
) -> tuple[Path, Path, str]:
    """Write leaderboard.csv, leaderboard.md (with quality-vs-latency plots under plots/)."""
    cells, lower_better = collect(paths, extra)
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "leaderboard.csv", out / "leaderboard.md"
    rows, tables = build_board(cells, lower_better)
    if not rows.empty:
        first = [c for c in CSV_FIRST if c in rows]
        rows_out = rows[first + [c for c in rows.columns if c not in first and not c.startswith("_")]]
        for m in (
            m for m in lower_better if set_level(m) and m in rows_out
        ):  # one value per cell: no CI, no test
            where = rows_out[m].notna()
            rows_out = rows_out.astype({f"{m}_ci95": object, f"{m}_p": object, f"{m}_p_raw": object})
            rows_out.loc[where, [f"{m}_ci95", f"{m}_p", f"{m}_p_raw"]] = "set-level"
    else:
        rows_out = rows
    atomic_write_text(csv_path, rows_out.to_csv(index=False))
    pngs = plot_quality_vs_latency(rows, tables, lower_better, out) if plots else {}
    md = to_markdown(cells, lower_better, pngs, relative_to=out, board=(rows, tables))
    atomic_write_text(md_path, md)
    return csv_path, md_path, md
