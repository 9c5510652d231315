"""``srbench compare RUN_DIR...``: a run's numbers beside the papers' (same method, dataset, protocol).

The papers' tables are data (``srbench/reference/tables/*.csv``, one number per row: paper, table, method,
steps, dataset, protocol, setting, metric, value, note).  A run is matched on the registry method name
(``method_name`` in its summary, or its label), its dataset, its step count (a table row without steps
matches any) and, strictly, its protocol: numbers measured under another protocol are never shown beside
it; the output names the protocols that do have references so the run can be repeated under one of them.
``setting`` is empty for a paper's default configuration and describes ablation rows (e.g. InvSR's
timestep sets); ``--setting '*'`` shows them all.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TABLES_DIR = Path(__file__).resolve().parent / "tables"
COLUMNS = ("paper", "table", "method", "steps", "dataset", "protocol", "setting", "metric", "value", "note")
EXTRA_DIRECTIONS = {"fid": True}  # metrics the papers report that srbench does not compute (lower is better)


@dataclass(frozen=True)
class RefRow:
    paper: str
    table: str
    method: str
    steps: int | None
    dataset: str
    protocol: str
    setting: str
    metric: str
    value: float
    note: str
    source: str  # the CSV file


def lower_better(metric: str) -> bool | None:
    from srbench.metrics import metric_specs

    spec = metric_specs().get(metric)
    return spec.lower_better if spec is not None else EXTRA_DIRECTIONS.get(metric)


def _read_csv(path: Path) -> list[RefRow]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ValueError(f"{path}: columns must be {','.join(COLUMNS)}, got {reader.fieldnames}")
    rows = []
    for i, r in enumerate(reader, start=2):
        try:
            value = float(r["value"])
            steps = int(r["steps"]) if r["steps"].strip() else None
        except ValueError as exc:
            raise ValueError(f"{path}: data row {i}: {exc}") from exc
        rows.append(
            RefRow(
                r["paper"],
                r["table"],
                r["method"],
                steps,
                r["dataset"],
                r["protocol"],
                r["setting"],
                r["metric"],
                value,
                r["note"],
                path.name,
            )
        )
    return rows


def load_reference(extra: Iterable[str | Path] = ()) -> list[RefRow]:
    """Every row of the bundled tables, plus extra CSV files or folders of them."""
    paths = sorted(TABLES_DIR.glob("*.csv"))
    for e in map(Path, extra):
        paths += sorted(e.glob("*.csv")) if e.is_dir() else [e]
    rows: list[RefRow] = []
    for p in paths:
        rows += _read_csv(p)
    return rows


@dataclass
class Line:
    metric: str
    ours: float | None
    ci95: float | None
    paper_value: float
    delta: float | None
    rel_pct: float | None
    verdict: str  # better | worse | equal | n/a
    paper: str
    table: str
    setting: str
    note: str


@dataclass
class Comparison:
    run_dir: str
    method: str
    method_name: str
    steps: int
    dataset: str
    protocol: str
    weights: str
    lines: list[Line] = field(default_factory=list)
    run_only: list[str] = field(default_factory=list)  # metrics of the run no reference has
    other_protocols: list[str] = field(default_factory=list)
    other_steps: list[int] = field(default_factory=list)
    message: str = ""


def compare_summary(
    summary: dict[str, Any],
    refs: Sequence[RefRow],
    *,
    run_dir: str = "",
    method: str | None = None,
    setting: str = "",
) -> Comparison:
    """Match one run summary against the reference rows (see the module docstring)."""
    names = [method] if method else [n for n in (summary.get("method_name"), summary.get("method")) if n]
    steps = int(summary.get("steps", 0))
    dataset, protocol = summary.get("dataset"), summary.get("protocol")
    weights = (summary.get("weights") or {}).get("label", "?")
    c = Comparison(
        run_dir,
        str(summary.get("method")),
        str(summary.get("method_name")),
        steps,
        str(dataset),
        str(protocol),
        str(weights),
    )
    cands = [r for r in refs if r.method in names and r.dataset == dataset]
    same = [r for r in cands if r.protocol == protocol]
    # the method's own paper first (invsr -> invsr_paper), then the others
    c.other_protocols = sorted(
        {r.protocol for r in cands if r.protocol != protocol},
        key=lambda p: (p not in {f"{n}_paper" for n in names}, p),
    )
    hits = [
        r for r in same if (r.steps is None or r.steps == steps) and (setting == "*" or r.setting == setting)
    ]
    c.other_steps = sorted({r.steps for r in same if r.steps is not None and r.steps != steps})
    metrics = summary.get("metrics") or {}
    for r in hits:
        st = metrics.get(r.metric) or {}
        ours = st.get("mean")
        ours = float(ours) if isinstance(ours, int | float) and not math.isnan(float(ours)) else None
        delta = None if ours is None else ours - r.value
        rel = None if delta is None or r.value == 0 else 100.0 * delta / abs(r.value)
        lb = lower_better(r.metric)
        if delta is None or lb is None:
            verdict = "n/a"
        elif delta == 0:
            verdict = "equal"
        else:
            verdict = "better" if (delta < 0) == lb else "worse"
        ci = st.get("ci95")
        c.lines.append(
            Line(
                r.metric,
                ours,
                float(ci) if isinstance(ci, int | float) else None,
                r.value,
                delta,
                rel,
                verdict,
                r.paper,
                r.table,
                r.setting,
                r.note,
            )
        )
    c.run_only = sorted(set(metrics) - {r.metric for r in hits})
    if not hits:
        parts = [f"no paper numbers for {'/'.join(names)} on {dataset} under protocol {protocol}"]
        if c.other_steps:
            parts.append(f"references under this protocol exist for steps {c.other_steps}")
        if c.other_protocols:
            parts.append(
                f"references exist under protocol(s) {', '.join(c.other_protocols)}: rerun with "
                f"protocol={c.other_protocols[0]} to compare "
                "(numbers of different protocols are never compared)"
            )
        c.message = "; ".join(parts)
    return c


def _f(v: float | None, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def format_markdown(c: Comparison) -> str:
    head = f"## {c.method} ({c.method_name}), {c.steps} step(s) — {c.dataset} / protocol `{c.protocol}`"
    out = [head, ""]
    if c.run_dir:
        out += [f"run: `{c.run_dir}`", ""]
    if c.weights != "real":
        out += [f"> weights: `{c.weights}` — these numbers are NOT results (random or stand-in weights).", ""]
    if not c.lines:
        out += [f"_{c.message}_", ""]
        return "\n".join(out)
    out.append("| metric | ours | paper | Δ (ours − paper) | Δ % | | source | setting | note |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for ln in c.lines:
        arrow = {True: "↓", False: "↑", None: ""}[lower_better(ln.metric)]
        d = 4 if abs(ln.paper_value) < 10 else 2  # the precision the papers print
        ours = _f(ln.ours, d) + (
            f" ± {_f(ln.ci95, d)}" if ln.ci95 is not None and ln.ours is not None else ""
        )
        delta = "—" if ln.delta is None else f"{ln.delta:+.{d}f}"
        rel = "—" if ln.rel_pct is None else f"{ln.rel_pct:+.1f}%"
        out.append(
            f"| {ln.metric} {arrow} | {ours} | {_f(ln.paper_value, d)} | {delta} | {rel} | {ln.verdict} | "
            f"{ln.paper} {ln.table} | {ln.setting or 'default'} | {ln.note} |"
        )
    missing = [ln.metric for ln in c.lines if ln.ours is None]
    if missing:
        out += ["", f"not measured in this run: {', '.join(missing)}"]
    if c.run_only:
        out += ["", f"measured but not in the paper's table: {', '.join(c.run_only)}"]
    return "\n".join(out) + "\n"


def to_records(comparisons: Iterable[Comparison]) -> list[dict[str, Any]]:
    recs = []
    for c in comparisons:
        for ln in c.lines:
            recs.append(
                {
                    "run_dir": c.run_dir,
                    "method": c.method,
                    "method_name": c.method_name,
                    "steps": c.steps,
                    "dataset": c.dataset,
                    "protocol": c.protocol,
                    "weights": c.weights,
                    **asdict(ln),
                }
            )
    return recs


def compare_cli(argv: list[str]) -> int:
    """``srbench compare RUN_DIR...``; 0 when at least one run had paper numbers to compare, 1 when none
    had, 2 on bad arguments."""
    from srbench.leaderboard import find_summaries

    p = argparse.ArgumentParser(prog="srbench compare", description="Compare runs with the papers' tables.")
    p.add_argument("paths", nargs="+", help="run directories or summary.json files (searched recursively)")
    p.add_argument("--reference", action="append", default=[], help="extra reference CSV file or folder")
    p.add_argument("--method", default=None, help="compare as this method name (default: the run's)")
    p.add_argument("--setting", default="", help="paper setting to compare with ('' = default, '*' = all)")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        summaries = find_summaries(args.paths)
        refs = load_reference(args.reference)
    except (FileNotFoundError, ValueError) as exc:
        print(f"srbench compare: {exc}", file=sys.stderr)
        return 2
    comps = []
    for path in summaries:
        try:
            s = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            print(f"srbench compare: {path}: unreadable summary ({exc})", file=sys.stderr)
            continue
        if s.get("status") != "done":
            continue
        comps.append(
            compare_summary(s, refs, run_dir=str(path.parent), method=args.method, setting=args.setting)
        )
    if not comps:
        print("srbench compare: no finished run found under " + ", ".join(args.paths), file=sys.stderr)
        return 1
    if args.format == "md":
        print("\n".join(format_markdown(c) for c in comps))
    elif args.format == "json":
        print(json.dumps(to_records(comps), indent=1))
    else:
        recs = to_records(comps)
        buf = io.StringIO()
        if recs:
            w = csv.DictWriter(buf, list(recs[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(recs)
        print(buf.getvalue(), end="")
    return 0 if any(c.lines for c in comps) else 1
