"""A paired LR/HR folder of real photos for tests that score external or saved SR images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from srbench.data.demo import centre_crop, load_photo

PHOTOS = ("astronaut", "chelsea", "coffee", "camera")


def write_photo_pairs(root: Path, size: int) -> Path:
    """``root/HR``: centre crops of ``size`` px; ``root/LR``: PIL bicubic x1/4 of each."""
    for sub in ("LR", "HR"):
        (root / sub).mkdir(parents=True)
    for name in PHOTOS:
        hr = Image.fromarray(centre_crop(load_photo(name), size))
        hr.save(root / "HR" / f"{name}.png")
        hr.resize((size // 4, size // 4), Image.BICUBIC).save(root / "LR" / f"{name}.png")
    return root
