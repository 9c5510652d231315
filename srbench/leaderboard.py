"""Aggregate run summaries into leaderboard.csv and leaderboard.md (pandas).

One row per (method, steps, dataset, protocol). Markdown tables are written per (dataset,
protocol), so rows measured under different protocols are never ranked together.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from srbench.records import SUMMARY, atomic_write_text

log = logging.getLogger(__name__)

KEY = ["dataset", "protocol", "method", "steps"]


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


def collect(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, dict[str, bool]]:
    """A frame of finished cells and each metric's direction (True = lower is better)."""
    rows: list[dict[str, Any]] = []
    lower_better: dict[str, bool] = {}
    for path in find_summaries(paths):
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable summary, left out (%s)", path, exc)
            continue
        if s.get("status") != "done":
            continue
        env = s.get("environment", {})
        lat = s.get("latency_s", {}).get("total", {})
        row: dict[str, Any] = {
            "dataset": s["dataset"],
            "protocol": s["protocol"],
            "method": s["method"],
            "steps": s["steps"],
            "weights": (s.get("weights") or {}).get("label", "?"),
            "images": s.get("n_ok"),
            "failed": s.get("n_failed"),
            "latency_median_s": lat.get("median"),
            "latency_p90_s": lat.get("p90"),
            "peak_mem_mb": s.get("peak_mem_mb"),
            "device": env.get("device_name"),
            "dtype": env.get("dtype"),
            "run_dir": str(path.parent),
        }
        for name, st in s.get("metrics", {}).items():
            row[name] = st.get("mean")
            row[f"{name}_ci95"] = st.get("ci95")
            lower_better[name] = bool(st.get("lower_better"))
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df, lower_better
    # a cell found twice (e.g. copied run dirs): keep the last one found, and say so
    dup = df.duplicated(KEY, keep="last")
    if dup.any():
        log.warning("%d duplicate cell(s) found; keeping the last of each", int(dup.sum()))
        df = df[~dup]
    return df.sort_values(KEY, kind="stable").reset_index(drop=True), lower_better


def _fmt(value: Any, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        if name.startswith("latency"):
            return f"{value:.3f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def add_ranks(df: pd.DataFrame, lower_better: dict[str, bool]) -> pd.DataFrame:
    """Per (dataset, protocol, weights label): ``<metric>_rank`` per metric (1 = best) and their mean."""
    df = df.copy()
    metrics = [m for m in lower_better if m in df.columns]
    # random-weight rows are ranked among themselves, never against real results
    groups = df.groupby(["dataset", "protocol", "weights"], sort=False)
    for m in metrics:
        df[f"{m}_rank"] = groups[m].rank(ascending=lower_better[m], method="min")
    rank_cols = [f"{m}_rank" for m in metrics]
    df["mean_rank"] = df[rank_cols].mean(axis=1) if rank_cols else float("nan")
    return df


def to_markdown(
    df: pd.DataFrame,
    lower_better: dict[str, bool],
    plots: dict[tuple[str, str], Path] | None = None,
    relative_to: Path | None = None,
) -> str:
    """Markdown with one table per (dataset, protocol): mean ± 95 % CI per metric, arrows for direction,
    best real-weight value per column in bold, rows ordered by mean rank over the metrics."""
    if df.empty:
        return "_No finished runs found._\n"
    metrics = [m for m in lower_better if m in df.columns]
    df = add_ranks(df, lower_better)
    parts: list[str] = ["# srbench leaderboard", ""]
    if (df["weights"] != "real").any():
        parts += [
            "> Rows labelled `random` come from randomly initialised weights (tests/plumbing): "
            "they are not results.",
            "",
        ]
    for (dataset, protocol), group in df.groupby(["dataset", "protocol"], sort=True):
        group = group.assign(_random=group["weights"] != "real").sort_values(
            ["_random", "mean_rank", "method", "steps"], kind="stable"
        )
        parts += [f"## {dataset} — protocol `{protocol}`", ""]
        cols = ["method", "steps", "weights", *metrics, "latency_median_s", "mean_rank", "images"]
        header = [f"{c} {'↓' if lower_better[c] else '↑'}" if c in lower_better else c for c in cols]
        header = [
            h.replace("latency_median_s", "latency s (median) ↓").replace("mean_rank", "mean rank")
            for h in header
        ]
        best: dict[str, Any] = {}
        real = group[group["weights"] == "real"]
        for c in [*metrics, "latency_median_s"]:
            vals = real[c].dropna() if c in real else pd.Series(dtype=float)
            if len(vals) > 1:
                best[c] = vals.min() if lower_better.get(c, True) else vals.max()
        parts.append("| " + " | ".join(header) + " |")
        parts.append("|" + "|".join("---" for _ in cols) + "|")
        for _, r in group.iterrows():
            cells = []
            for c in cols:
                text = _fmt(r.get(c), c) if c != "mean_rank" else f"{r[c]:.1f}"
                if c in best and r["weights"] == "real" and r.get(c) == best[c]:
                    text = f"**{text}**"
                ci = r.get(f"{c}_ci95") if c in lower_better else None
                if ci is not None and not (isinstance(ci, float) and math.isnan(ci)):
                    digits = 4 if abs(float(r[c])) < 10 else 2
                    text += f" ± {float(ci):.{digits}f}"
                cells.append(text)
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
        if plots and (dataset, protocol) in plots:
            png = plots[(dataset, protocol)]
            rel = png.relative_to(relative_to) if relative_to and png.is_relative_to(relative_to) else png
            parts += [f"![quality vs latency, {dataset} / {protocol}]({rel.as_posix()})", ""]
    parts.append(
        "Means over images ± half-width of the 95 % confidence interval; best real-weight value per "
        "column in **bold**; mean rank over the metric columns (1 = best). Latency: median total "
        "`upscale()` time per image after warm-up."
    )
    return "\n".join(parts) + "\n"


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
    df: pd.DataFrame, lower_better: dict[str, bool], out_dir: Path, metrics: Sequence[str] | None = None
) -> dict[tuple[str, str], Path]:
    """One PNG per (dataset, protocol): a panel per metric, quality vs median latency, Pareto front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: dict[tuple[str, str], Path] = {}
    if df.empty or "latency_median_s" not in df:
        return written
    wanted = [m for m in (metrics or lower_better) if m in df.columns]
    for (dataset, protocol), group in df.groupby(["dataset", "protocol"], sort=True):
        group = group.dropna(subset=["latency_median_s"])
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
        fig.suptitle(f"{dataset} — protocol {protocol}", fontsize=10)
        fig.tight_layout()
        path = out_dir / "plots" / f"{dataset}__{protocol}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[(dataset, protocol)] = path
    return written


def write_leaderboard(
    paths: Sequence[str | Path], out_dir: str | Path | None = None, *, plots: bool = True
) -> tuple[Path, Path, str]:
    """Write leaderboard.csv, leaderboard.md (with quality-vs-latency plots under plots/)."""
    df, lower_better = collect(paths)
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "leaderboard.csv", out / "leaderboard.md"
    ranked = add_ranks(df, lower_better) if not df.empty else df
    atomic_write_text(csv_path, ranked.to_csv(index=False))
    pngs = plot_quality_vs_latency(df, lower_better, out) if plots else {}
    md = to_markdown(df, lower_better, pngs, relative_to=out)
    atomic_write_text(md_path, md)
    return csv_path, md_path, md
