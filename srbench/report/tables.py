"""The paper's results table: methods x datasets x metrics, one per protocol, in markdown, LaTeX and HTML.

Rows are (method, steps) with the weights label when not ``real``; column groups are the leaderboard's tables
of that protocol (a dataset, or a dataset on another image set); columns are metrics in paper order with an
arrow for their direction.  A value is **bold** where it is the best real-weight value and significantly
better than every other row, and underlined where it is the second best and significantly better than every
row below it (the leaderboard's paired tests, :mod:`srbench.leaderboard`).  LaTeX comes from pandas'
``Styler.to_latex`` (booktabs rules), markdown from ``tabulate``, HTML from ``Styler.to_html``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tabulate import tabulate

from srbench.leaderboard import Table, metric_text
from srbench.metrics import paper_order, set_level

BOLD, SECOND = "best", "second"


@dataclass
class WideTable:
    """One protocol's table: values, marks (best / second), and what the caption states."""

    protocol: str
    values: pd.DataFrame  # index (method, steps); columns (table title, metric)
    marks: pd.DataFrame  # same shape: "best" | "second" | ""
    lower_better: dict[str, bool]
    caption: str
    tables: list[str] = field(default_factory=list)


def _arrow(m: str, lower_better: Mapping[str, bool], latex: bool = False) -> str:
    if latex:
        return f"{m.upper()} $\\{'downarrow' if lower_better[m] else 'uparrow'}$"
    return f"{m.upper()} {'↓' if lower_better[m] else '↑'}"


def _row_label(r: Mapping[str, Any]) -> str:
    label = str(r["method"])
    return label if r["weights"] == "real" else f"{label} ({r['weights']} weights)"


def _column_name(table: Table) -> str:
    return table.dataset + (f" ({table.title.split(' — ')[-1]})" if table.why_apart else "")


def wide_tables(
    board: pd.DataFrame,
    tables: Mapping[str, Table],
    lower_better: Mapping[str, bool],
    *,
    max_groups: int = 4,
) -> list[WideTable]:
    """One :class:`WideTable` per protocol (split so no table has more than ``max_groups`` datasets)."""
    done = board[board["status"] == "done"] if not board.empty else board
    if done.empty:
        return []
    metrics = paper_order([m for m in lower_better if m in done.columns])
    by_protocol: dict[str, list[str]] = {}
    for tid in sorted(
        tables, key=lambda t: (tables[t].protocol, tables[t].dataset, bool(tables[t].why_apart), t)
    ):
        by_protocol.setdefault(tables[tid].protocol, []).append(tid)
    out = []
    for protocol, tids in by_protocol.items():
        for start in range(0, len(tids), max_groups):
            out.append(_wide(done, tables, protocol, tids[start : start + max_groups], metrics, lower_better))
    return out


def _wide(
    done: pd.DataFrame,
    tables: Mapping[str, Table],
    protocol: str,
    tids: Sequence[str],
    metrics: Sequence[str],
    lower_better: Mapping[str, bool],
) -> WideTable:
    part = done[done["table"].isin(tids)]
    used = [m for m in metrics if part[m].notna().any()]
    values: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    marks: dict[tuple[str, str], dict[tuple[str, int], str]] = {}
    order: list[tuple[str, int]] = []
    for r in part.sort_values(["weights", "mean_rank", "method", "steps"], kind="stable").to_dict("records"):
        key = (_row_label(r), int(r["steps"]))
        if key not in order:
            order.append(key)
        col = _column_name(tables[r["table"]])
        for m in used:
            if not _present(r.get(m)):
                continue
            values.setdefault((col, m), {})[key] = float(r[m])
            real = r["weights"] == "real"
            mark = BOLD if real and r.get(f"{m}_best_significant") else ""
            mark = mark or (SECOND if real and r.get(f"{m}_second_significant") else "")
            marks.setdefault((col, m), {})[key] = mark
    columns = [
        (_column_name(tables[t]), m) for t in tids for m in used if (_column_name(tables[t]), m) in values
    ]
    index = pd.MultiIndex.from_tuples(order, names=["method", "steps"])
    vals = pd.DataFrame({c: values[c] for c in columns}, index=index)
    mk = pd.DataFrame({c: marks[c] for c in columns}, index=index).fillna("")
    vals.columns = mk.columns = pd.MultiIndex.from_tuples(columns, names=["dataset", "metric"])
    return WideTable(
        protocol, vals, mk, dict(lower_better), _caption(part, tables, tids, protocol), list(tids)
    )


def _present(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _caption(part: pd.DataFrame, tables: Mapping[str, Table], tids: Sequence[str], protocol: str) -> str:
    settings = json.loads(tables[tids[0]].settings) if tables[tids[0]].settings else {}
    shown = [
        f"{k}={v}"
        for k, v in settings.items()
        if k
        in ("lr_centre_crop", "crop_border", "y_channel", "quantize", "hr_mismatch", "lr_resize_short_side")
        and v is not None
    ]
    counts = []
    for t in tids:
        n = part.loc[part["table"] == t, "images"].dropna()
        counts.append(f"{_column_name(tables[t])}: {int(n.max()) if len(n) else '?'} images")
    steps = sorted({int(s) for s in part["steps"].dropna()})
    weights = sorted(set(part["weights"].dropna()))
    external = sorted(set(part.loc[part.get("source", pd.Series(dtype=str)) == "external", "label"]))
    text = (
        f"Protocol {protocol} ({', '.join(shown) or 'settings not recorded'}). {'; '.join(counts)}. "
        f"Steps per row ({', '.join(map(str, steps))}); weights: {', '.join(weights)}"
        + (" (rows not labelled are real)" if weights != ["real"] else "")
        + ". Mean over images. Bold: best, significantly better than every other row; underlined: second "
        "best, significantly better than every row below it (paired two-sided Wilcoxon signed-rank on the "
        "per-image scores, Holm-corrected, alpha = 0.05). Set-level metrics (FID) are one value per set and "
        "untested."
    )
    if external:
        text += f" Scored by srbench from released outputs: {', '.join(external)}."
    return text


def _texts(w: WideTable, bold: tuple[str, str], second: tuple[str, str]) -> pd.DataFrame:
    out = w.values.copy().astype(object)
    for c in w.values.columns:
        for i in w.values.index:
            v = w.values.at[i, c]
            text = metric_text(v) if _present(v) else "—"
            mark = w.marks.at[i, c]
            if mark == BOLD:
                text = f"{bold[0]}{text}{bold[1]}"
            elif mark == SECOND:
                text = f"{second[0]}{text}{second[1]}"
            if _present(v) and set_level(c[1]):
                text += " (set)"
            out.at[i, c] = text
    return out


def to_markdown(w: WideTable) -> str:
    texts = _texts(w, ("**", "**"), ("<u>", "</u>"))
    header = ["method", "steps"] + [f"{d}<br>{_arrow(m, w.lower_better)}" for d, m in texts.columns]
    body = [[name, str(steps), *texts.loc[(name, steps)].tolist()] for name, steps in texts.index]
    table = tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True)
    return f"**Protocol `{w.protocol}`.** {w.caption}\n\n{table}\n"


def _formatter(v: Any) -> str:
    return metric_text(v) if _present(v) else "--"


def _styler(w: WideTable, latex: bool) -> Any:
    vals = w.values.copy()
    vals.columns = pd.MultiIndex.from_tuples(
        [(d, _arrow(m, w.lower_better, latex)) for d, m in vals.columns], names=["dataset", "metric"]
    )
    styler = vals.style.format(_formatter)
    marks = w.marks.to_numpy()
    if latex:
        css = {BOLD: "textbf:--rwrap;", SECOND: "underline:--rwrap;"}
        styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1, level=0)
    else:
        css = {BOLD: "font-weight: bold;", SECOND: "text-decoration: underline;"}
    return styler.apply(lambda _: pd.DataFrame(
        [[css.get(x, "") for x in row] for row in marks], index=vals.index, columns=vals.columns
    ), axis=None)  # fmt: skip


def to_latex(w: WideTable, label: str) -> str:
    """booktabs table (``\\toprule``/``\\midrule``/``\\bottomrule``; needs ``\\usepackage{booktabs}``)."""
    caption = w.caption.replace("_", "\\_").replace("alpha", "$\\alpha$")
    return _styler(w, latex=True).to_latex(
        hrules=True,
        caption=caption,
        label=label,
        position_float="centering",
        multicol_align="c",
        column_format="ll" + "r" * w.values.shape[1],
    )


def to_html(w: WideTable) -> str:
    return _styler(w, latex=False).set_table_attributes('class="wide"').set_caption(w.caption).to_html()
