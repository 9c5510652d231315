"""``srbench report RESULTS... --out DIR``: what goes into a paper, from the same cells as the leaderboard.

Writes into ``DIR``:

* ``report.md`` — the results tables (one per protocol, methods x datasets x metrics, arrows, best and second
  best marked only where significant; :mod:`srbench.report.tables`) with captions, then the figures;
* ``tables.tex`` — the same tables for LaTeX (booktabs, ``Styler.to_latex``);
* ``plots/steps__*.png`` — quality against sampling steps per method with 95 % bands;
* ``plots/*.png`` — quality against latency (labels moved apart where points overlap);
* ``grids/*.png`` — visual comparisons LR | methods | HR with the same zoomed crop;
* ``report.html`` — one self-contained page (tables, figures as data URIs, a sortable per-image table) that
  opens offline.

The report covers the ``--max-tables`` largest leaderboard tables (default 4, a paper's datasets; every
table is in ``srbench leaderboard``'s output), so a report on a tree of 10,000 cells stays fast and readable.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from srbench.cellindex import opened
from srbench.leaderboard import (
    PER_IMAGE_CSV,
    Table,
    _per_image,
    build_board,
    collect,
    plot_quality_vs_latency,
)
from srbench.metrics import paper_order, set_level
from srbench.records import atomic_write_text
from srbench.report.grids import Column, comparison_grid, discriminative
from srbench.report.plots import plot_quality_vs_steps
from srbench.report.tables import to_html, to_latex, to_markdown, wide_tables

log = logging.getLogger("srbench")

PER_IMAGE_ROWS = 5000  # the HTML page's per-image table stops here (the CSVs have every row)


@dataclass
class Report:
    out: Path
    markdown: Path
    latex: Path
    html: Path
    steps_plots: list[Path] = field(default_factory=list)
    latency_plots: list[Path] = field(default_factory=list)
    grids: list[Path] = field(default_factory=list)
    tables_left_out: int = 0


def _uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _largest(board: pd.DataFrame, tables: dict[str, Table], k: int) -> list[str]:
    done = board[board["status"] == "done"] if not board.empty else board
    sizes = done.groupby("table").size().to_dict() if not done.empty else {}
    return sorted(tables, key=lambda t: (-sizes.get(t, 0), t))[:k]


def _columns(board: pd.DataFrame, tid: str, limit: int = 8) -> list[Column]:
    """The methods shown in a table's grids: real-weight rows first, by mean rank (the first seed's cell)."""
    g = board[(board["status"] == "done") & (board["table"] == tid)]
    g = g.assign(_random=g["weights"] != "real").sort_values(["_random", "mean_rank", "method", "steps"])
    cols = []
    for r in g.head(limit).to_dict("records"):
        title = f"{r['method']} ({int(r['steps'])} st.)" + ("" if r["weights"] == "real" else " random")
        cols.append(Column(title, Path(str(r["run_dir"]).split(";")[0])))
    return cols


def write_report(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    images: Sequence[str] = (),
    n_images: int = 2,
    max_tables: int = 4,
    max_groups: int = 4,
) -> Report:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with opened() as index:
        cells, lower = collect(paths, index=index)
        board, tables = build_board(cells, lower, index=index)
        metrics = paper_order([m for m in lower if m in board.columns]) if not board.empty else []
        chosen = _largest(board, tables, max_tables)
        wide = wide_tables(board, {t: tables[t] for t in chosen}, lower, max_groups=max_groups)
        rep = Report(out, out / "report.md", out / "tables.tex", out / "report.html")
        rep.tables_left_out = max(0, len(tables) - len(chosen))
        for tid in chosen:
            path = plot_quality_vs_steps(
                board, tables[tid], metrics, lower, out / "plots" / f"steps__{tables[tid].plot_name}.png"
            )
            if path is not None:
                rep.steps_plots.append(path)
        rep.latency_plots = list(
            plot_quality_vs_latency(board, tables, lower, out, metrics, only=chosen).values()
        )
        per_image_frames = []
        for tid in chosen:
            columns = _columns(board, tid)
            scores = {
                str(c.run_dir): s
                for c in columns
                if (s := index.scores([str(c.run_dir)], _per_image, PER_IMAGE_CSV)[str(c.run_dir)])
                is not None
            }
            ids = [i for i in images if any(i in s.ids for s in scores.values())] or discriminative(
                scores, metrics, n_images
            )
            for image_id in ids:
                grid = comparison_grid(
                    image_id,
                    columns,
                    tables[tid].title.replace("`", ""),
                    out / "grids" / f"{tables[tid].plot_name}__{image_id}.png",
                )
                if grid is not None:
                    rep.grids.append(grid)
            for c in columns:
                s = scores.get(str(c.run_dir))
                if s is not None:
                    frame = pd.DataFrame({m: v for m, v in s.values.items() if not set_level(m)})
                    frame.insert(0, "image", list(s.ids))
                    frame.insert(0, "method", c.title)
                    frame.insert(0, "table", tables[tid].title.replace("`", ""))
                    per_image_frames.append(frame)
    md = ["# srbench report", ""]
    for w in wide:
        md += [to_markdown(w), ""]
    latex = [to_latex(w, f"tab:srbench-{k}") for k, w in enumerate(wide)]
    for title, files in (
        ("Quality against steps", rep.steps_plots),
        ("Quality against latency", rep.latency_plots),
    ):
        if files:
            md += (
                [f"## {title}", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in files] + [""]
            )
    if rep.grids:
        md += ["## Visual comparisons", ""] + [
            f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in rep.grids
        ]
    note = (
        f"This report covers the {len(chosen)} largest of {len(tables)} leaderboard tables (--max-tables); "
        "srbench leaderboard lists them all."
        if rep.tables_left_out
        else ""
    )
    if note:
        md += ["", f"_{note}_"]
    atomic_write_text(rep.markdown, "\n".join(md) + "\n")
    atomic_write_text(
        rep.latex,
        "% srbench report: needs \\usepackage{booktabs}\n" + "\n".join(latex),
    )
    atomic_write_text(rep.html, _html(rep, wide, per_image_frames, note))
    return rep


def _html(rep: Report, wide: list[Any], frames: list[pd.DataFrame], note: str) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("srbench.report", "."),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )
    per_image = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    shown = per_image.head(PER_IMAGE_ROWS)
    per_image_note = (
        f"First {PER_IMAGE_ROWS} of {len(per_image)} rows (per_image.csv of each cell has all)."
        if len(per_image) > PER_IMAGE_ROWS
        else f"{len(per_image)} rows."
    )
    table_html = (
        shown.to_html(
            index=False, classes="sortable", float_format=lambda v: f"{v:.4f}", na_rep="—", border=0
        )
        if not shown.empty
        else "<p>No per-image scores.</p>"
    )
    return env.get_template("report.html.j2").render(
        title="srbench report",
        generated=f"Generated {_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} by srbench",
        note=note,
        wide=[{"html": to_html(w)} for w in wide],
        steps_plots=[{"title": p.stem, "uri": _uri(p)} for p in rep.steps_plots],
        latency_plots=[{"title": p.stem, "uri": _uri(p)} for p in rep.latency_plots],
        grids=[{"title": p.stem, "uri": _uri(p)} for p in rep.grids],
        grids_note="Top row: full images, the zoomed region in red; bottom row: that region enlarged.",
        per_image=table_html,
        per_image_note=per_image_note,
    )


def report_cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="srbench report",
        description="Paper tables (markdown, LaTeX), plots, visual comparisons and one HTML page.",
    )
    p.add_argument("paths", nargs="+", help="results trees or cell directories")
    p.add_argument(
        "--out", required=True, help="folder for report.md, tables.tex, report.html, plots/, grids/"
    )
    p.add_argument("--images", default="", help="comma-separated image ids for the visual comparisons")
    p.add_argument(
        "--n-images", type=int, default=2, help="images chosen automatically per table (default 2)"
    )
    p.add_argument("--max-tables", type=int, default=4, help="tables with figures (the largest; default 4)")
    p.add_argument(
        "--datasets-per-table", type=int, default=4, help="dataset column groups per results table"
    )
    args = p.parse_args(list(argv))
    try:
        rep = write_report(
            args.paths,
            args.out,
            images=[i for i in args.images.split(",") if i],
            n_images=args.n_images,
            max_tables=args.max_tables,
            max_groups=args.datasets_per_table,
        )
    except FileNotFoundError as exc:
        print(f"srbench report: {exc}")
        return 2
    print(f"wrote {rep.markdown}, {rep.latex}, {rep.html}")
    print(
        f"  {len(rep.steps_plots)} steps plot(s), {len(rep.latency_plots)} latency plot(s), "
        f"{len(rep.grids)} comparison grid(s)"
        + (
            f"; figures for the largest tables only ({rep.tables_left_out} left out)"
            if rep.tables_left_out
            else ""
        )
    )
    return 0
