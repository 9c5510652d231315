"""Run records: append-only per-image log (resume point), atomic CSV/JSON outputs, summaries."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srbench.atomic import atomic_write_bytes
from srbench.stats import t_interval

log = logging.getLogger("srbench")

PER_IMAGE_LOG = "per_image.jsonl"
PER_IMAGE_CSV = "per_image.csv"
SUMMARY = "summary.json"
CONFIG = "config.yaml"


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class PerImageLog:
    """One JSON object per finished image, appended and fsync'ed.

    A crash can at worst leave a torn last line, which :meth:`rows` drops: every image whose line is
    complete is finished work that a rerun keeps.  A damaged line elsewhere (not JSON, not a record with an
    ``id``, or a second row for an image) is skipped with a warning naming its line number, and every valid
    row after it is kept; :meth:`repair` sets such lines aside in ``per_image.rejected.jsonl``.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rejected: list[dict[str, Any]] = []  # {"line": n, "reason": ..., "text": ...}
        self.torn = False
        self._warned: set[int] = set()

    def rows(self) -> list[dict[str, Any]]:
        self.rejected, self.torn = [], False
        if not self.path.is_file():
            return []
        lines = self.path.read_bytes().decode("utf-8", errors="replace").split("\n")
        self.torn = lines[-1] != ""  # no newline at the end: the write of an interrupted run
        rows: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for number, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                reason = "" if isinstance(row, dict) and isinstance(row.get("id"), str) else "no image id"
            except json.JSONDecodeError as exc:
                row, reason = None, f"not JSON ({exc.msg})"
            if not reason and row["id"] in seen:
                reason = f"a second row for image {row['id']!r} (first on line {seen[row['id']]})"
            if reason:
                self.rejected.append({"line": number, "reason": reason, "text": line[:2000]})
                if number not in self._warned:
                    self._warned.add(number)
                    log.warning("%s line %d: %s; skipped, the other rows are kept", self.path, number, reason)
                continue
            seen[row["id"]] = number
            rows.append(row)
        return rows

    def repair(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite the log with exactly ``rows`` (drops a torn tail before appending); rejected lines are
        kept aside in ``<name>.rejected.jsonl`` rather than lost."""
        if self.rejected:
            aside = self.path.with_name(self.path.stem + ".rejected.jsonl")
            with aside.open("a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in self.rejected)
            self.rejected = []
        atomic_write_text(self.path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
        self.torn = False

    def needs_repair(self) -> bool:
        return self.torn or bool(self.rejected)

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, default=_json_default) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def write_table(path: Path, rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    atomic_write_text(path, df.to_csv(index=False))
    return df


def percentile(values: list[float], q: float) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.percentile(vals, q)) if vals else None


def mean_ci95(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its 95 % Student-t confidence interval over the finite values."""
    mean, half, _ = t_interval(values)
    return mean, half
