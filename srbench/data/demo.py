"""The built-in ``demo`` dataset: real photographs shipped inside installed wheels, degraded x4.

Degradation (deterministic, documented in the README), applied to each HR photo:

1. HR  = centre crop of ``hr_size`` x ``hr_size`` px (default 256) of the 8-bit RGB photo.
2. blur: isotropic Gaussian, sigma = 1.0 HR px (scipy.ndimage, 'reflect' borders), per channel.
3. down: x1/4 with PIL's antialiased bicubic (the MATLAB ``imresize`` convention).
4. noise: additive Gaussian, sigma = 5/255, from ``numpy.random.default_rng(seed + index)``.
5. JPEG: quality 75 (PIL, 4:2:0), decoded again; the LR is stored as a lossless PNG.

No network is needed: the photos come from scikit-image's and matplotlib's installed wheels.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from srbench.data.images import atomic_write_bytes

#: (id, loader): photographs that ship inside installed wheels (scikit-image's skimage/data, and
#: matplotlib's sample data), so no download is needed.  Chosen by one rule: a natural photo whose
#: 256-px centre crop is textured enough for no-reference metrics (HR NIQE < 6); rocket (sky, 14.7),
#: coffee (8.1), hubble and retina (black backgrounds, 8.1 / 7.4) fail it.  camera and gravel are
#: grayscale photos, stored as RGB.
DEMO_PHOTOS: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut"),
    ("chelsea", "chelsea"),
    ("immunohistochemistry", "immunohistochemistry"),
    ("motorcycle", "stereo_motorcycle"),
    ("grace_hopper", "matplotlib:grace_hopper.jpg"),
    ("camera", "camera"),
    ("gravel", "gravel"),
)

DEGRADATION = {"hr_size": 256, "blur_sigma": 1.0, "scale": 4, "noise_sigma": 5 / 255, "jpeg_quality": 75}
DEMO_VERSION = 2  # bump when the recipe changes: the cache is rebuilt


def load_photo(loader: str) -> np.ndarray:
    """An RGB uint8 photo from data bundled in installed wheels (no download).

    ``loader`` is a ``skimage.data`` function name, or ``matplotlib:<file>`` for matplotlib's sample data.
    """
    if loader.startswith("matplotlib:"):
        import matplotlib.cbook

        with Image.open(matplotlib.cbook.get_sample_data(loader.split(":", 1)[1])) as im:
            img = np.asarray(im.convert("RGB"))
    else:
        import skimage.data

        img = getattr(skimage.data, loader)()
        if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
            img = img[0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    size = min(size, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return img[top : top + size, left : left + size]


def degrade(
    hr: np.ndarray,
    seed: int,
    *,
    blur_sigma: float = DEGRADATION["blur_sigma"],
    scale: int = DEGRADATION["scale"],
    noise_sigma: float = DEGRADATION["noise_sigma"],
    jpeg_quality: int = DEGRADATION["jpeg_quality"],
) -> np.ndarray:
    """HR uint8 (H,W,3) -> LR uint8 (H/scale, W/scale, 3); deterministic for a given seed."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {w}x{h} is not a multiple of the scale {scale}")
    x = hr.astype(np.float64) / 255.0
    x = np.stack([gaussian_filter(x[..., c], blur_sigma, mode="reflect") for c in range(3)], axis=2)
    small = Image.fromarray(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))
    small = small.resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    y = np.asarray(small, dtype=np.float64) / 255.0
    y = y + np.random.default_rng(seed).normal(0.0, noise_sigma, size=y.shape)
    noisy = Image.fromarray(np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format="JPEG", quality=int(jpeg_quality))
    buf.seek(0)
    with Image.open(buf) as jpg:
        return np.asarray(jpg.convert("RGB"), dtype=np.uint8).copy()


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def build_demo(root: Path, *, seed: int = 0, limit: int | None = None) -> Path:
    """Write the demo set under ``root`` (``HR/`` and ``LR/`` PNG folders); reuse it if current."""
    root = Path(root)
    stamp = root / "demo.json"
    recipe = {"version": DEMO_VERSION, "seed": seed, "degradation": DEGRADATION, "limit": limit}
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return root
    photos = DEMO_PHOTOS if limit is None else DEMO_PHOTOS[:limit]
    for sub in ("HR", "LR"):  # a different recipe: start from empty folders (no stale images)
        shutil.rmtree(root / sub, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    for index, (name, loader) in enumerate(photos):
        hr = centre_crop(load_photo(loader), DEGRADATION["hr_size"])
        lr = degrade(hr, seed + index)
        atomic_write_bytes(root / "HR" / f"{name}.png", _png_bytes(hr))
        atomic_write_bytes(root / "LR" / f"{name}.png", _png_bytes(lr))
    atomic_write_bytes(stamp, json.dumps(recipe, indent=2).encode())
    return root
