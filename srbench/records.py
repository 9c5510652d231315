"""Run records: append-only per-image log (resume point), atomic CSV/JSON outputs, summaries."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from srbench.data.images import atomic_write_bytes

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

    A crash can at worst leave a torn last line, which :meth:`rows` drops: every image whose
    line is complete is finished work that a rerun keeps.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows: list[dict[str, Any]] = []
        with self.path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if not line.endswith("\n"):
                    break  # torn write of an interrupted run
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return rows

    def repair(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite the log with exactly ``rows`` (drops a torn tail before appending)."""
        atomic_write_text(self.path, "".join(json.dumps(r, default=_json_default) + "\n" for r in rows))

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
    """Mean and the half-width of its 95 % normal-approximation confidence interval."""
    vals = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if vals.size == 0:
        return None, None
    if vals.size == 1:
        return float(vals[0]), None
    return float(vals.mean()), float(1.96 * vals.std(ddof=1) / math.sqrt(vals.size))
