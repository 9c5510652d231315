"""``srbench data prepare``: synthesize a paired test set from any folder of HR images.

For each HR image: optional HR shaping (``hr_size``: shortest side to ``hr_size`` with OpenCV INTER_AREA,
then a centre crop, as ResShift/InvSR's ``SmallestMaxSize`` + ``CenterCrop``; otherwise a top-left crop to
a multiple of the scale), then one of the degradation pipelines of :mod:`srbench.data.degradations` with a
per-image seed derived from the global seed and the image id (order-independent, so a resumed or partial
run draws the same LR).  Output::

    OUT/HR/<id>.png   OUT/LR/<id>.png   OUT/params.jsonl (every random draw per image)   OUT/prepare.json

which ``srbench dataset=paired dataset.lr_dir=OUT/LR dataset.hr_dir=OUT/HR dataset.name=NAME`` evaluates.
``preset=imagenet_test`` rebuilds an ImageNet-Test-style set (InvSR §4.1) from ImageNet-val images: the same
pipeline and sizes as the released set, not the same random draws (see :mod:`srbench.data.degradations`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import random
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from srbench.data.degradations import DegradationPipeline, degrade, get_pipeline
from srbench.data.images import IMAGE_EXTENSIONS, read_image, save_png
from srbench.interface import SRBenchError

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "imagenet_test": {
        "pipeline": "resshift_test",
        "hr_size": 512,
        "description": "InvSR's ImageNet-Test: HR 512 (SmallestMaxSize + centre crop), ResShift one-order "
        "degradation -> LR 128",
    },
    "imagenet_test_resshift": {
        "pipeline": "resshift_test",
        "hr_size": 256,
        "description": "ResShift's ImageNet-Test: HR 256, the same degradation -> LR 64",
    },
    "realesrgan": {
        "pipeline": "realesrgan",
        "hr_size": None,
        "description": "Real-ESRGAN x4plus two-order degradation of the HR as it is",
    },
}


class PrepareError(SRBenchError):
    pass


def image_seed(seed: int, image_id: str) -> int:
    """Per-image seed from the global seed and the image id, independent of order."""
    return (int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63


def list_hr_images(hr_dir: Path) -> dict[str, Path]:
    """Image files under ``hr_dir`` (recursively), keyed by file stem; two files with one stem is an error."""
    if not hr_dir.is_dir():
        raise PrepareError(f"{hr_dir}: folder not found")
    found: dict[str, Path] = {}
    for p in sorted(hr_dir.rglob("*")):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            if p.stem in found:
                raise PrepareError(f"two HR images share the id '{p.stem}': {found[p.stem]} and {p}")
            found[p.stem] = p
    if not found:
        raise PrepareError(f"{hr_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return found


def select(ids: list[str], num: int | None, select_seed: int) -> list[str]:
    """``num`` ids picked as ResShift's script does: sort, shuffle with ``random.seed(select_seed)``, take the
    first ``num`` (its seed was 10000)."""
    ids = sorted(ids)
    if num is None or num >= len(ids):
        return ids
    random.Random(select_seed).shuffle(ids)
    return sorted(ids[:num])


def shape_hr(img: torch.Tensor, hr_size: int | None, scale: int) -> torch.Tensor:
    """(3,H,W) float HR: short side to ``hr_size`` (INTER_AREA) + centre crop, or crop to a multiple of sf."""
    _, h, w = img.shape
    if hr_size is None:
        h2, w2 = h - h % scale, w - w % scale
        if h2 == 0 or w2 == 0:
            raise PrepareError(f"HR {w}x{h} is smaller than the scale {scale}")
        return img[:, :h2, :w2]
    if hr_size % scale:
        raise PrepareError(f"hr_size {hr_size} is not a multiple of the scale {scale}")
    import cv2

    s = hr_size / min(h, w)
    if s != 1.0:  # albumentations SmallestMaxSize: round(dim * scale), cv2.resize
        nh, nw = max(hr_size, round(h * s)), max(hr_size, round(w * s))
        arr = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        arr = cv2.resize(arr, (nw, nh), interpolation=cv2.INTER_AREA)
        img = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)
        h, w = nh, nw
    top, left = (h - hr_size) // 2, (w - hr_size) // 2
    return img[:, top : top + hr_size, left : left + hr_size].clamp(0, 1)


@dataclass
class PrepareResult:
    out_dir: Path
    n_total: int
    n_done: int = 0
    n_skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)


def prepare_folder(
    hr_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    preset: str | None = None,
    pipeline: str | DegradationPipeline | Mapping[str, Any] | None = None,
    hr_size: int | None = None,
    seed: int = 0,
    num: int | None = None,
    select_seed: int = 10000,
    jpeg: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareResult:
    """Build OUT/HR and OUT/LR from the images under ``hr_dir`` (see the module docstring).

    ``preset`` sets ``pipeline`` and ``hr_size`` (explicit arguments win).  A rerun with the same settings
    skips finished images; different settings in an existing OUT are refused unless ``overwrite``.
    """
    from srbench.progress import progress as progress_bar

    hr_dir, out_dir = Path(hr_dir).expanduser(), Path(out_dir).expanduser()
    base = PRESETS.get(preset or "", {}) if preset else {}
    if preset and preset not in PRESETS:
        raise PrepareError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    pipe = get_pipeline(pipeline if pipeline is not None else base.get("pipeline", "resshift_test"))
    if jpeg is not None:
        pipe = replace(pipe, jpeg=jpeg)  # type: ignore[arg-type]
    if hr_size is None:
        hr_size = base.get("hr_size")
    images = list_hr_images(hr_dir)
    ids = select(list(images), num, select_seed)
    if limit is not None:
        ids = ids[: int(limit)]
    settings = {
        "preset": preset,
        "pipeline": pipe.as_dict(),
        "hr_size": hr_size,
        "seed": int(seed),
        "num": num,
        "select_seed": select_seed,
        "hr_dir": str(hr_dir),
    }
    settings_path, params_path = out_dir / "prepare.json", out_dir / "params.jsonl"
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        same = {k: old.get(k) for k in settings} == json.loads(json.dumps(settings))
        if not same and not overwrite:
            raise PrepareError(
                f"{out_dir} was prepared with other settings (see {settings_path}); pass overwrite=True "
                "(--overwrite) to rebuild it, or choose another output folder"
            )
        if not same or overwrite:
            for sub in ("HR", "LR"):
                for p in (out_dir / sub).glob("*.png"):
                    p.unlink()
            params_path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        **settings,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **_versions(),
    }
    settings_path.write_text(json.dumps(record, indent=1))
    done = set()
    if params_path.is_file():
        for line in params_path.read_text().splitlines():
            try:
                done.add(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError):
                continue  # a torn last line from a kill
    result = PrepareResult(out_dir, len(ids))
    with open(params_path, "a") as plog:
        for image_id in progress_bar(ids, desc="prepare", unit="img", disable_if=not progress):
            lr_path, hr_path = out_dir / "LR" / f"{image_id}.png", out_dir / "HR" / f"{image_id}.png"
            if image_id in done and lr_path.is_file() and hr_path.is_file():
                result.n_skipped += 1
                continue
            try:
                hr = shape_hr(read_image(images[image_id]), hr_size, pipe.sf)
                s = image_seed(seed, image_id)
                lr, params = degrade(hr, s, pipe)
            except Exception as exc:  # one bad file must not cost the others
                result.failures[image_id] = f"{images[image_id]}: {type(exc).__name__}: {exc}"
                log.warning("prepare: %s", result.failures[image_id])
                continue
            save_png(hr, hr_path)
            save_png(lr, lr_path)  # type: ignore[arg-type]
            plog.write(
                json.dumps({"id": image_id, "source": str(images[image_id]), "seed": s, "params": params})
                + "\n"
            )
            plog.flush()
            result.n_done += 1
    return result


def _versions() -> dict[str, Any]:
    from importlib import metadata

    out: dict[str, Any] = {"torch": torch.__version__}
    for pkg in ("srbench", "basicsr-fixed", "basicsr", "opencv-python", "opencv-python-headless"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out
