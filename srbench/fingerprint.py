"""Dataset fingerprints: which images, with which bytes, a cell was measured on.

A fingerprint is the sha256 of the sorted lines ``<image id> TAB <sha256 of LR> TAB <sha256 of HR or ->``.
Two cells are compared on the same images only when their fingerprints are equal.  Each cell also keeps the
per-image file hashes (``fingerprint.json``) so that a folder that changed can be described (added, removed,
modified images) and a cell resumed on it keeps the rows whose files did not change.

File hashes are cached per folder under ``<srbench cache>/fingerprints/``, keyed by each file's size,
mtime, ctime, inode and device: a rerun on an unchanged 3000-image set stats the files and reads no image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srbench.atomic import atomic_write_bytes
from srbench.paths import cache_dir

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_key(st: os.stat_result) -> list[int]:
    # ctime cannot be set back by a user (touch -m can set mtime): an edit always changes the key
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


class HashCache:
    """sha256 of files, cached per folder by their stat key."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "fingerprints"
        self._folders: dict[Path, dict[str, list[Any]]] = {}
        self._dirty: set[Path] = set()
        self.hashed = 0  # files read this session (the rest came from the cache)

    def _file(self, folder: Path) -> Path:
        return self.root / (hashlib.sha256(str(folder).encode()).hexdigest()[:24] + ".json")

    def _entries(self, folder: Path) -> dict[str, list[Any]]:
        if folder not in self._folders:
            entries: dict[str, list[Any]] = {}
            try:
                saved = json.loads(self._file(folder).read_text())
                if saved.get("folder") == str(folder) and isinstance(saved.get("files"), dict):
                    entries = saved["files"]
            except (OSError, ValueError, AttributeError):
                pass  # no cache yet, or a damaged one: hash again
            self._folders[folder] = entries
        return self._folders[folder]

    def sha256(self, path: Path) -> str:
        path = Path(path)
        folder = path.parent.resolve()
        entries = self._entries(folder)
        key = _stat_key(path.stat())
        hit = entries.get(path.name)
        if isinstance(hit, list) and hit[:-1] == key:
            return str(hit[-1])
        digest = sha256_file(path)
        self.hashed += 1
        entries[path.name] = [*key, digest]
        self._dirty.add(folder)
        return digest

    def save(self) -> None:
        for folder in sorted(self._dirty):
            body = {"folder": str(folder), "files": self._folders[folder]}
            try:
                atomic_write_bytes(self._file(folder), json.dumps(body, separators=(",", ":")).encode())
            except OSError as exc:  # a read-only cache costs time on the next run, never a result
                log.debug("fingerprint cache not written for %s: %s", folder, exc)
        self._dirty.clear()


@dataclass
class Fingerprint:
    """The digest of a dataset's images and the per-image file hashes it was computed from."""

    sha256: str
    files: dict[str, list[str | None]] = field(default_factory=dict)  # id -> [lr sha256, hr sha256 or None]

    @property
    def n_images(self) -> int:
        return len(self.files)

    def brief(self) -> dict[str, Any]:
        """What cell.json and summary.json record."""
        return {"sha256": self.sha256, "n_images": self.n_images}

    def to_json(self) -> dict[str, Any]:
        return {**self.brief(), "files": self.files}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Fingerprint:
        files = obj.get("files")
        if not isinstance(obj.get("sha256"), str) or not isinstance(files, dict):
            raise ValueError("not a fingerprint record")
        return cls(obj["sha256"], {str(k): list(v) for k, v in files.items()})


def digest(files: Mapping[str, Iterable[str | None]]) -> str:
    h = hashlib.sha256()
    for image_id in sorted(files):
        lr, hr = list(files[image_id])
        h.update(f"{image_id}\t{lr}\t{hr or '-'}\n".encode())
    return h.hexdigest()


def dataset_fingerprint(samples: Iterable[Any], cache: HashCache | None = None) -> Fingerprint:
    """Fingerprint of the samples (``id``, ``lr_path``, ``hr_path``) a cell runs on."""
    cache = cache if cache is not None else HashCache()
    files: dict[str, list[str | None]] = {}
    for s in samples:
        files[s.id] = [cache.sha256(s.lr_path), cache.sha256(s.hr_path) if s.hr_path is not None else None]
    cache.save()
    return Fingerprint(digest(files), files)


@dataclass
class Changes:
    added: list[str]
    removed: list[str]
    modified: list[str]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self, limit: int = 5) -> str:
        parts = []
        for what, ids in (("added", self.added), ("removed", self.removed), ("modified", self.modified)):
            if ids:
                shown = ", ".join(ids[:limit]) + (" ..." if len(ids) > limit else "")
                parts.append(f"{len(ids)} {what} ({shown})")
        return "; ".join(parts) or "no image changed"


def compare(old: Fingerprint, new: Fingerprint) -> Changes:
    return Changes(
        added=sorted(set(new.files) - set(old.files)),
        removed=sorted(set(old.files) - set(new.files)),
        modified=sorted(k for k in set(old.files) & set(new.files) if list(old.files[k]) != new.files[k]),
    )


def read_fingerprint(run_dir: Path) -> Fingerprint | None:
    try:
        return Fingerprint.from_json(json.loads((Path(run_dir) / FINGERPRINT_FILE).read_text()))
    except (OSError, ValueError):
        return None
