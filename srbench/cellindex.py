"""A cache of what the leaderboard reads from each cell: its parsed summary and its per-image scores.

A results tree of 10,000 cells would otherwise cost 10,000 JSON parses and up to 10,000 CSV parses per
leaderboard.  Each entry is keyed by the cell directory and the (size, mtime_ns, ctime_ns, inode) of the
file it was read from, so any rewrite of ``summary.json`` or ``per_image.csv`` (a rerun, a rescore) is read
again; an unchanged cell costs one ``stat``.  The cache is one SQLite file under the srbench cache
(``<cache>/leaderboard/index.sqlite``), never in the results tree; it holds JSON text and float64 arrays
(never pickles).  If it cannot be opened or written, everything is read from the cells as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from srbench.paths import cache_dir

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (run_dir TEXT PRIMARY KEY, stat TEXT NOT NULL, parsed TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scores (run_dir TEXT PRIMARY KEY, stat TEXT NOT NULL, ids TEXT NOT NULL,
                                   metrics TEXT NOT NULL, vals BLOB NOT NULL);
"""
_VERSION = 3  # bump when what is stored changes: older entries are then ignored
_CHUNK = 500  # SQLite's parameter limit is 999 (older builds)


def stat_key(path: Path) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return f"{_VERSION}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


@dataclass
class Scores:
    """Per-image scores of a cell: image ids and one float64 array per metric."""

    ids: tuple[str, ...]
    values: dict[str, np.ndarray]


class CellIndex:
    """Parsed summaries and per-image scores by cell directory, valid while their files are unchanged."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "leaderboard" / "index.sqlite"
        self._db: sqlite3.Connection | None = None
        self.read = 0  # files parsed this session (the rest came from the index)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=10)
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:  # no cache: slower, never wrong
            log.debug("leaderboard index unavailable (%s): reading every cell", exc)
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _select(self, table: str, cols: str, keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
        out: dict[str, tuple[Any, ...]] = {}
        if self._db is None or not keys:
            return out
        try:
            for i in range(0, len(keys), _CHUNK):
                part = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                query = f"SELECT run_dir, {cols} FROM {table} WHERE run_dir IN ({marks})"
                for row in self._db.execute(query, part):
                    out[row[0]] = row[1:]
        except sqlite3.Error as exc:
            log.debug("leaderboard index read failed: %s", exc)
        return out

    def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        if self._db is None or not rows:
            return
        try:
            with self._db:
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:  # read-only cache, disk full: the next run reads the cells again
            log.debug("leaderboard index not updated: %s", exc)

    def summaries(
        self, paths: Sequence[Path], parse: Callable[[Path], dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """``parse(summary.json)`` of each path (JSON-able), from the index where the file is unchanged."""
        keys = [str(p.parent) for p in paths]
        stats = [stat_key(p) for p in paths]
        known = self._select("summaries", "stat, parsed", keys)
        out: list[dict[str, Any]] = []
        fresh: list[tuple[Any, ...]] = []
        for path, key, st in zip(paths, keys, stats, strict=True):
            hit = known.get(key)
            if st is not None and hit is not None and hit[0] == st:
                out.append(json.loads(hit[1]))
                continue
            parsed = parse(path)
            self.read += 1
            out.append(parsed)
            if st is not None:
                fresh.append((key, st, json.dumps(parsed)))
        self._write("INSERT OR REPLACE INTO summaries VALUES (?, ?, ?)", fresh)
        return out

    def scores(
        self, run_dirs: Iterable[str], read: Callable[[Path], Scores | None], file_name: str
    ) -> dict[str, Scores | None]:
        """``read(run_dir)`` of each cell's per-image table, from the index where the file is unchanged."""
        dirs = list(dict.fromkeys(run_dirs))
        stats = {d: stat_key(Path(d) / file_name) for d in dirs}
        known = self._select("scores", "stat, ids, metrics, vals", dirs)
        out: dict[str, Scores | None] = {}
        fresh: list[tuple[Any, ...]] = []
        for d in dirs:
            st, hit = stats[d], known.get(d)
            if st is None:
                out[d] = None
                continue
            if hit is not None and hit[0] == st:
                ids, metrics = json.loads(hit[1]), json.loads(hit[2])
                flat = np.frombuffer(hit[3], dtype=np.float64)
                n = len(ids)
                out[d] = Scores(tuple(ids), {m: flat[k * n : (k + 1) * n] for k, m in enumerate(metrics)})
                continue
            s = read(Path(d))
            self.read += 1
            out[d] = s
            if s is not None:
                metrics = list(s.values)
                blob = (
                    np.concatenate([s.values[m] for m in metrics]).astype(np.float64).tobytes()
                    if metrics
                    else b""
                )
                fresh.append((d, st, json.dumps(list(s.ids)), json.dumps(metrics), blob))
        self._write("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?)", fresh)
        return out


@contextlib.contextmanager
def opened(path: Path | None = None) -> Any:
    index = CellIndex(path)
    try:
        yield index
    finally:
        index.close()
