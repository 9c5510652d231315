"""Claiming a run directory: whose cell it is (``cell.json``), and what happens when its images changed.

:func:`check_claim` only reads: a directory holding another cell is refused before anything is written, so a
refusal can never damage the cell it refuses.  :func:`reconcile_dataset` runs under the cell's lock when the
dataset fingerprint changed: it keeps the rows whose image files did not change and drops the others (with
their SR images and the now stale summary) before the cell resumes on the new image set.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from srbench.fingerprint import FINGERPRINT_FILE, Changes, Fingerprint, compare, read_fingerprint
from srbench.identity import CellIdentity, differences, from_legacy
from srbench.interface import SRBenchError
from srbench.protocol import current_settings
from srbench.records import CONFIG, PER_IMAGE_CSV, PER_IMAGE_LOG, SUMMARY, PerImageLog, write_json
from srbench.scoring import float_scores_refusal, missing_images, stored_sets

log = logging.getLogger("srbench")

CELL = "cell.json"
#: what ``overwrite=true`` removes (with ``images/``)
RECORDS = (PER_IMAGE_LOG, PER_IMAGE_CSV, SUMMARY, CELL, FINGERPRINT_FILE, CONFIG, "per_image.rejected.jsonl")


class CellRefused(SRBenchError):
    """The run directory holds another cell; nothing was written."""


def read_cell(run_dir: Path) -> dict[str, Any] | None:
    """The stored cell record in today's layout, or None when the directory holds no cell yet."""
    path = Path(run_dir) / CELL
    if not path.is_file():
        if (Path(run_dir) / PER_IMAGE_LOG).is_file():
            raise CellRefused(
                f"{run_dir}: holds per-image records but no {CELL}, so they cannot be matched to a cell; "
                "move them away or pass overwrite=true"
            )
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CellRefused(
            f"{path}: unreadable ({exc}); pass overwrite=true to start this cell again"
        ) from None
    if not isinstance(stored, dict):
        raise CellRefused(f"{path}: not a cell record; pass overwrite=true to start this cell again")
    if "format" not in stored:
        return from_legacy(stored)
    outputs = stored.get("outputs")
    if isinstance(outputs, dict) and isinstance(outputs.get("protocol"), dict):
        outputs["protocol"] = current_settings(outputs["protocol"])
    return stored


def check_claim(run_dir: Path, ident: CellIdentity) -> dict[str, Any] | None:
    """Raise :class:`CellRefused` when ``run_dir`` holds a different cell; return its record otherwise.

    The metric set is not part of a cell (:mod:`srbench.scoring`): metrics the cell lacks are added from
    its saved SR images, so a run asking for them is refused only when those images were not saved."""
    stored = read_cell(run_dir)
    if stored is None:
        return None
    current = ident.record()
    diff = [
        d
        for section in ("label", "outputs", "measurement", "runtime")
        for d in differences(stored, current, section)
    ]
    if diff:
        shown = "; ".join(diff[:4]) + (f"; ... ({len(diff)} in all)" if len(diff) > 4 else "")
        raise CellRefused(
            f"{run_dir}: this directory holds a different cell ({shown}); nothing was written. "
            "Pass overwrite=true to replace it, or run_name=<label> to keep both."
        )
    added = sorted(set(current["scoring"]["metrics"]) - set(stored_sets(stored)[0]))
    if added:  # scores are a separate record: new metrics are added from the saved SR images
        refusal = float_scores_refusal(run_dir, (current.get("outputs") or {}).get("protocol") or {})
        if refusal:
            raise CellRefused(refusal)
        rows = PerImageLog(Path(run_dir) / PER_IMAGE_LOG).rows()
        absent = missing_images(run_dir, rows)
        if absent:
            raise CellRefused(
                f"{run_dir}: this cell was scored with metrics {stored_sets(stored)[0]}; adding "
                f"{', '.join(added)} needs its SR images, and {len(absent)} of them are not under images/ "
                f"(e.g. images/{absent[0]}.png; run with save_images=false?), so the model would have to run "
                "again; nothing was written. Pass overwrite=true to rerun it, or run_name=<label> for a "
                "separate cell. (Where the images were saved, this run or `srbench rescore` adds metrics "
                "without running the model.)"
            )
    return stored


def write_cell(run_dir: Path, record: dict[str, Any]) -> None:
    write_json(Path(run_dir) / CELL, record)


def reconcile_dataset(
    run_dir: Path, stored: dict[str, Any] | None, fingerprint: Fingerprint, plog: PerImageLog
) -> dict[str, Any] | None:
    """Bring the cell's records in line with the dataset as it is now; return the change record (or None).

    Safe to interrupt: the old fingerprint stays in ``cell.json`` until the very end, so a rerun redoes
    whatever step was cut off.
    """
    if stored is None:
        return None
    recorded = stored.get("dataset_fingerprint")
    if isinstance(recorded, dict) and recorded.get("sha256") == fingerprint.sha256:
        return None
    old = read_fingerprint(run_dir)
    rows = plog.rows()
    if not isinstance(recorded, dict):  # a cell from before fingerprints: its images were not recorded
        changes = Changes([], sorted({r["id"] for r in rows} - set(fingerprint.files)), [])
        log.warning(
            "%s: this cell's image set was not recorded (an older srbench); keeping the rows of images that "
            "still exist, from now on it is fingerprinted",
            run_dir,
        )
    elif old is None or old.sha256 != recorded.get("sha256"):
        changes = Changes([], sorted({r["id"] for r in rows}), [])
        log.warning("%s: the per-image file hashes are missing, so no earlier row can be trusted", run_dir)
    else:
        changes = compare(old, fingerprint)
        log.warning(
            "%s: the dataset changed since this cell ran: %s; keeping the rows of unchanged images",
            run_dir,
            changes.describe(),
        )
    stale = set(changes.removed) | set(changes.modified)
    kept = [r for r in rows if r["id"] not in stale]
    if len(kept) != len(rows) or plog.rejected:
        plog.repair(kept)
    for image_id in stale:
        (Path(run_dir) / "images" / f"{image_id}.png").unlink(missing_ok=True)
    for name in (SUMMARY, PER_IMAGE_CSV):
        (Path(run_dir) / name).unlink(missing_ok=True)
    return {
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "from": recorded.get("sha256") if isinstance(recorded, dict) else None,
        "to": fingerprint.sha256,
        "added": changes.added,
        "removed": changes.removed,
        "modified": changes.modified,
        "rows_kept": len(kept),
        "rows_dropped": len(rows) - len(kept),
    }
