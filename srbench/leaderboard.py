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
  significantly better than every other row.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srbench.names import name_problem
from srbench.records import PER_IMAGE_CSV, SUMMARY, atomic_write_text
from srbench.stats import ALPHA, holm, paired_pvalues, seed_sd, t_interval

log = logging.getLogger(__name__)

KEY = ["dataset", "protocol", "method", "steps"]
#: column order of the metrics, as the papers' tables: full-reference first (PSNR, SSIM, LPIPS, ...), then
#: no-reference; every name of srbench.metrics.metric_specs() is here (tests check), others go last, sorted
METRIC_ORDER = (
    *("psnr", "psnr-rgb", "ssim", "lpips", "lpips-vgg", "dists", "topiq_fr", "fid"),
    *("niqe", "pi", "brisque", "clipiqa", "musiq", "maniqa", "maniqa-pipal", "topiq_nr", "liqe", "nima"),
)
STATUSES = ("done", "skipped", "failed")


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file() and p.name == SUMMARY:
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob(SUMMARY)))
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
    }
    options = _get(s, "options", dict, False) or {}
    row["options"] = json.dumps(options, sort_keys=True, default=str) if options else ""
    settings = _get(s, "protocol_settings", dict, False)
    row["protocol_settings"] = json.dumps(settings, sort_keys=True, default=str) if settings else ""
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


def collect(
    paths: Iterable[str | Path], extra: Sequence[Mapping[str, Any]] = ()
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """A frame of every cell found (any status; ``unreadable`` for a bad summary) and each metric's direction
    (True = lower is better).  ``extra``: cells known without a summary (a sweep's refusals)."""
    rows: list[dict[str, Any]] = []
    lower_better: dict[str, bool] = {}
    for path in find_summaries(paths):
        base = {"run_dir": str(path.parent)}
        try:
            row, lower = _parse(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:  # _Shape is a ValueError, as is a JSON decode error
            log.warning("%s: unreadable summary (%s)", path, exc)
            rows.append({**base, "status": "unreadable", "reason": f"{path.name}: {exc}"})
            continue
        rows.append({**base, **row})
        lower_better.update(lower)
    rows.extend(dict(e) for e in extra)
    lower_better = {m: lower_better[m] for m in ordered_metrics(lower_better)}
    df = pd.DataFrame(rows)
    if df.empty:
        return df, lower_better
    for col in ("status", "reason", "dataset", "protocol", "label", "variant", "options", "weights"):
        if col not in df:
            df[col] = None
    df["method"] = df["label"]
    return df.reset_index(drop=True), lower_better


def ordered_metrics(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`METRIC_ORDER` (the papers' column order), unknown ones last, sorted."""
    rank = {m: i for i, m in enumerate(METRIC_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda m: (rank.get(m, len(rank)), m))


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


def _tables(done: pd.DataFrame) -> tuple[pd.Series, dict[str, Table]]:
    """The table of each finished cell: one per (dataset, protocol, fingerprint, protocol settings)."""
    tables: dict[str, Table] = {}
    assign = pd.Series("", index=done.index, dtype=object)
    fam_cols = ["dataset", "protocol"]
    for (dataset, protocol), fam in done.groupby(fam_cols, sort=True, dropna=False):
        parts = fam.groupby(["fingerprint", "protocol_settings"], sort=True, dropna=False)
        sizes = sorted(((len(g), k) for k, g in parts), key=lambda t: (-t[0], t[1]))
        main_fp, main_settings = sizes[0][1]
        for (fp, settings), g in parts:
            title = f"{dataset} — protocol `{protocol}`"
            tid = f"{dataset}/{protocol}"
            why: list[str] = []
            if (fp, settings) != (main_fp, main_settings):
                quals = []
                if fp != main_fp:
                    quals.append(f"images {fp[:8] or 'unrecorded'}")
                    n_this, n_main = g["n_set"].iloc[0], fam[fam["fingerprint"] == main_fp]["n_set"].iloc[0]
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
                title += " — " + ", ".join(quals)
                tid += "/" + "/".join(quals).replace(" ", "-")
            plot = f"{dataset}__{protocol}" + ("" if not why else "__" + _short_hash(tid))
            if name_problem(plot):  # names read from a summary.json never choose where a plot is written
                plot = f"table__{_short_hash(tid)}"
            tables[tid] = Table(tid, title, str(dataset), str(protocol), str(fp), str(settings), why, plot)
            assign.loc[g.index] = tid
    return assign, tables


def _n(value: Any) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _display(label: str, options: str) -> str:
    """``label (opt=value, ...)`` for the options that change the method, its precision or its speed."""
    try:
        opts = json.loads(options) if isinstance(options, str) and options else {}
    except ValueError:
        opts = {}
    shown = []
    for key, value in opts.items():
        short = key.split(".", 1)[1] if key.startswith(("method.", "speed.")) else key
        if key == "method.name" or key.startswith(("dataset.", "protocol.")):
            continue
        text = str(value)
        if "/" in text:
            text = text.rstrip("/").rsplit("/", 1)[-1]
        shown.append(f"{short}={text[:24]}")
    return label + (f" ({', '.join(shown)})" if shown else "")


@dataclass
class _Scores:
    """Per-image scores of a cell (or a row's seed means): image ids and one float array per metric."""

    ids: tuple[str, ...]
    values: dict[str, np.ndarray]


def _per_image(run_dir: str, metrics: Sequence[str]) -> _Scores | None:
    """The ok rows of a cell's per_image.csv, only the wanted columns (None when absent or unreadable)."""
    try:
        with open(Path(run_dir) / PER_IMAGE_CSV, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            head = next(reader)
            at = {c: i for i, c in enumerate(head)}
            if "id" not in at:
                return None
            ok = at.get("status")
            wanted = [(m, at[m]) for m in metrics if m in at]
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
    return _Scores(tuple(ids), values)


def _aligned(scores: Sequence[_Scores], m: str) -> np.ndarray:
    """(len(scores), images) matrix of metric ``m`` on the union of image ids (NaN where one is missing)."""
    if all(s.ids == scores[0].ids for s in scores[1:]):
        return np.vstack([s.values[m] for s in scores])
    ids = list(dict.fromkeys(i for s in scores for i in s.ids))
    pos = {i: k for k, i in enumerate(ids)}
    out = np.full((len(scores), len(ids)), np.nan)
    for r, s in enumerate(scores):
        out[r, [pos[i] for i in s.ids]] = s.values[m]
    return out


def build_board(cells: pd.DataFrame, lower_better: dict[str, bool]) -> tuple[pd.DataFrame, dict[str, Table]]:
    """The leaderboard rows (finished cells grouped over seeds, tested, ranked), then every other cell."""
    if cells.empty or "status" not in cells:
        return pd.DataFrame(), {}
    metrics = [m for m in lower_better if m in cells.columns]
    done = cells[cells["status"] == "done"].copy()
    for col in ("fingerprint", "protocol_settings", "variant", "options"):
        done[col] = done[col].fillna("") if col in done else ""
    if "n_set" not in done:
        done["n_set"] = None
    rows: list[dict[str, Any]] = []
    tables: dict[str, Table] = {}
    if not done.empty:
        done["table"], tables = _tables(done)
        if "seed" not in done:
            done["seed"] = None
        dup = done.duplicated(["table", "label", "variant", "steps", "weights", "seed"], keep="last")
        if dup.any():
            log.warning(
                "%d duplicate cell(s) found (copied run dirs?); keeping the last of each", int(dup.sum())
            )
            done = done[~dup]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for rec in done.to_dict("records"):
            key = tuple(rec[k] for k in ("table", "label", "variant", "steps", "weights"))
            groups.setdefault(key, []).append(rec)
        rows = [_row(g, metrics) for g in groups.values()]
    board = pd.DataFrame(rows)
    if not board.empty:
        board = _test_and_rank(board, metrics, lower_better)
    rest = cells[cells["status"] != "done"].copy()
    if not rest.empty:
        rest["options"] = rest["options"].where(rest["options"].notna(), "")
        rest["label"] = rest["label"].where(rest["label"].notna(), "")
        rest["method"] = [
            _display(str(lb or ""), str(o or ""))
            for lb, o in zip(rest["label"], rest["options"], strict=True)
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
    cells = sorted(cells, key=lambda c: (not _present(c.get("seed")), c.get("seed") or 0))
    first = cells[0]
    seeds = [c.get("seed") for c in cells]
    images, failed = _num(c.get("images") for c in cells), _num(c.get("failed") for c in cells)
    row: dict[str, Any] = {
        "table": first["table"],
        "status": "done",
        "reason": "",
        "dataset": first["dataset"],
        "protocol": first["protocol"],
        "method": _display(str(first["label"]), str(first["options"])),
        "label": first["label"],
        "variant": first["variant"],
        "options": first["options"],
        "steps": int(first["steps"]),
        "seeds": ",".join(_n(s) for s in seeds) if any(_present(s) for s in seeds) else "",
        "n_seeds": len(cells),
        "weights": first["weights"],
        "images": int(np.nanmin(images)) if np.isfinite(images).any() else None,
        "failed": int(np.nanmax(failed)) if np.isfinite(failed).any() else None,
        "latency_median_s": _nanstat(np.nanmedian, [c.get("latency_median_s") for c in cells]),
        "latency_p90_s": _nanstat(np.nanmedian, [c.get("latency_p90_s") for c in cells]),
        "peak_mem_mb": _nanstat(np.nanmax, [c.get("peak_mem_mb") for c in cells]),
        "device": first.get("device"),
        "dtype": first.get("dtype"),
        "fingerprint": first["fingerprint"],
        "n_set": first.get("n_set"),
        "run_dir": ";".join(c["run_dir"] for c in cells),
        "_run_dirs": [c["run_dir"] for c in cells],
    }
    for m in metrics:
        means = _num(c.get(m) for c in cells)
        row[m] = _nanstat(np.nanmean, means)
        if len(cells) == 1:
            row[f"{m}_ci95"], row[f"{m}_n"] = first.get(f"{m}_ci95"), first.get(f"{m}_n")
        row[f"{m}_seed_sd"] = seed_sd(means.tolist())
    return row


def _nanstat(fn: Any, values: Iterable[Any]) -> float:
    arr = _num(values)
    return float(fn(arr)) if np.isfinite(arr).any() else np.nan


def _scores(row: pd.Series, metrics: list[str], cache: dict[str, _Scores | None]) -> _Scores | None:
    """Per-image scores of a row, averaged over its seeds (None when a cell has no per-image table)."""
    found = []
    for d in row["_run_dirs"]:
        if d not in cache:
            cache[d] = _per_image(d, metrics)
        if cache[d] is None:
            return None
        found.append(cache[d])
    if len(found) == 1:
        return found[0]
    same = all(f.ids == found[0].ids for f in found)
    ids = found[0].ids if same else tuple(dict.fromkeys(i for f in found for i in f.ids))
    shared = [m for m in metrics if all(m in f.values for f in found)]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an image no seed scored stays NaN
        values = {m: np.nanmean(_aligned(found, m), axis=0) for m in shared}
    return _Scores(ids, values)


def _pvalues(m: str, best: Any, others: list[Any], scores: Mapping[Any, _Scores | None]) -> np.ndarray:
    """Raw paired p-values of ``others`` against ``best`` on metric ``m``, aligned by image id (one
    vectorised test; NaN where a row has no per-image scores)."""
    raw = np.full(len(others), np.nan)
    b = scores.get(best)
    have = [k for k, i in enumerate(others) if (o := scores.get(i)) is not None and m in o.values]
    if b is None or m not in b.values or not have:
        return raw
    matrix = _aligned([b, *(scores[others[k]] for k in have)], m)  # type: ignore[misc]
    raw[have] = paired_pvalues(matrix[0], matrix[1:])
    return raw


def _test_and_rank(board: pd.DataFrame, metrics: list[str], lower_better: dict[str, bool]) -> pd.DataFrame:
    board = board.copy()
    cache: dict[str, _Scores | None] = {}
    for m in metrics:
        for col in (f"{m}_ci95", f"{m}_n", f"{m}_p", f"{m}_p_raw"):
            if col not in board:
                board[col] = np.nan
        board[f"{m}_best_significant"] = False
    for _, idx in board.groupby(["table", "weights"], sort=False).groups.items():
        group = board.loc[idx]
        scores = (
            {i: _scores(group.loc[i], metrics, cache) for i in group.index}
            if len(group) > 1 or (group["n_seeds"] > 1).any()
            else {}
        )
        for i in group.index:  # several seeds: the interval of the per-image seed means
            if group.loc[i, "n_seeds"] > 1 and scores.get(i) is not None:
                for m in metrics:
                    if m in scores[i].values:
                        _, half, n = t_interval(scores[i].values[m])
                        board.loc[i, f"{m}_ci95"], board.loc[i, f"{m}_n"] = half, n
        for m in metrics:
            valid = group[m].dropna() if m in group else pd.Series(dtype=float)
            if len(valid) < 2:
                continue
            best = valid.idxmin() if lower_better[m] else valid.idxmax()
            others = [i for i in valid.index if i != best]
            raw = _pvalues(m, best, others, scores)
            adjusted = holm(raw)
            board.loc[others, f"{m}_p_raw"] = raw
            board.loc[others, f"{m}_p"] = adjusted
            board.loc[best, f"{m}_best_significant"] = bool(np.all(np.nan_to_num(adjusted, nan=1.0) < ALPHA))
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
    for m in metrics:
        df[f"{m}_rank"] = groups[m].rank(ascending=lower_better[m], method="min")
    rank_cols = [f"{m}_rank" for m in metrics]
    df["mean_rank"] = df[rank_cols].mean(axis=1) if rank_cols else float("nan")
    return df


# ------------------------------------------------------------------------------------ output


def _fmt(value: Any, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if name in ("steps", "images", "failed", "n_seeds") and isinstance(value, (int, float)):
        return str(int(value))
    if isinstance(value, float):
        if name.startswith("latency"):
            return f"{value:.3f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


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
    the cells that were not ranked, with their status and reason."""
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
    multi_seed = False
    for tid in sorted(
        tables, key=lambda t: (tables[t].dataset, tables[t].protocol, bool(tables[t].why_apart), t)
    ):
        table = tables[tid]
        group = done[done["table"] == tid]
        group = group.assign(_random=group["weights"] != "real").sort_values(
            ["_random", "mean_rank", "method", "steps"], kind="stable"
        )
        parts += [f"## {table.title}", ""]
        if table.why_apart:
            parts += [
                f"Not ranked with `{table.dataset}` / `{table.protocol}` above: "
                f"{'; '.join(table.why_apart)}.",
                "",
            ]
        seeds = bool((group["n_seeds"] > 1).any())
        multi_seed |= seeds
        # only the metrics this table has values of: an LR-only table has no full-reference columns
        shown = [m for m in metrics if group[m].notna().any()]
        cols = ["method", "steps", "weights", *(["seeds"] if seeds else []), *shown, "latency_median_s"]
        cols += ["mean_rank", "images"]
        header = [f"{c} {'↓' if lower_better[c] else '↑'}" if c in lower_better else c for c in cols]
        header = [
            h.replace("latency_median_s", "latency s (median) ↓").replace("mean_rank", "mean rank")
            for h in header
        ]
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join("---" for _ in cols) + "|")
        for _, r in group.iterrows():
            cells = []
            for c in cols:
                text = _fmt(r.get(c), c) if c != "mean_rank" else f"{r[c]:.1f}"
                if c in lower_better:
                    if r["weights"] == "real" and bool(r.get(f"{c}_best_significant")):
                        text = f"**{text}**"
                    ci = r.get(f"{c}_ci95")
                    if _present(ci) and _present(r.get(c)):
                        digits = 4 if abs(float(r[c])) < 10 else 2
                        text += f" ± {float(ci):.{digits}f}"
                    sd = r.get(f"{c}_seed_sd")
                    if r["n_seeds"] > 1 and _present(sd):
                        text += f" (seed sd {float(sd):.{4 if abs(float(r[c])) < 10 else 2}f})"
                cells.append(text)
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
        if plots and tid in plots:
            png = plots[tid]
            rel = png.relative_to(relative_to) if relative_to and png.is_relative_to(relative_to) else png
            parts += [f"![quality vs latency, {table.title.replace('`', '')}]({rel.as_posix()})", ""]
    parts += _not_ranked(rows)
    parts.append(
        "Means over images ± half-width of the 95 % Student-t confidence interval (over the per-image "
        "scores; for several seeds, over the per-image means across seeds, with the standard deviation "
        "of the "
        "seed means as `seed sd`). A value is **bold** where that row is the best real-weight row and "
        "better than every other row by a two-sided paired Wilcoxon signed-rank test on the per-image "
        "scores, Holm-corrected over the rows of the table (α = 0.05); the p-values are in leaderboard.csv "
        "(`<metric>_p`). Mean rank over the metric columns (1 = best). Latency: median total `upscale()` "
        "time per image after warm-up."
    )
    return "\n".join(parts) + "\n"


def _not_ranked(rows: pd.DataFrame) -> list[str]:
    rest = rows[rows["status"] != "done"] if not rows.empty else rows
    if rest.empty:
        return []
    parts = ["## Cells not ranked", "", "| dataset | protocol | method | steps | status | reason | run dir |"]
    parts.append("|---|---|---|---|---|---|---|")
    for _, r in rest.sort_values(["status", "run_dir"], kind="stable", na_position="last").iterrows():
        reason = " ".join(str(r.get("reason") or "").split())
        reason = (reason[:237] + "...") if len(reason) > 240 else reason
        cells = [_fmt(r.get(c), c) for c in ("dataset", "protocol", "method", "steps", "status")]
        parts.append(
            "| " + " | ".join([*cells, reason.replace("|", "\\|"), str(r.get("run_dir") or "")]) + " |"
        )
    return [*parts, ""]


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


def plot_quality_vs_latency(
    rows: pd.DataFrame,
    tables: dict[str, Table],
    lower_better: dict[str, bool],
    out_dir: Path,
    metrics: Sequence[str] | None = None,
) -> dict[str, Path]:
    """One PNG per table: a panel per metric, quality vs median latency, Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[str, Path] = {}
    if rows.empty or "latency_median_s" not in rows:
        return written
    done = rows[rows["status"] == "done"]
    wanted = [m for m in (metrics or lower_better) if m in rows.columns]
    for tid, table in tables.items():
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
            for x, y, t in zip(lat, q, labels, strict=True):
                ax.annotate(t, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
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
    else:
        rows_out = rows
    atomic_write_text(csv_path, rows_out.to_csv(index=False))
    pngs = plot_quality_vs_latency(rows, tables, lower_better, out) if plots else {}
    md = to_markdown(cells, lower_better, pngs, relative_to=out, board=(rows, tables))
    atomic_write_text(md_path, md)
    return csv_path, md_path, md
