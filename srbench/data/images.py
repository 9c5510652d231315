"""Image I/O: any common file in, RGB float32 (3,H,W) in [0,1] out; 8-bit PNG out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from srbench.atomic import atomic_write_bytes  # re-exported: written files keep the umask's mode

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the problem."""


def _to_float_rgb(img: Image.Image, path: Path) -> np.ndarray:
    img = ImageOps.exif_transpose(img)  # honour the EXIF orientation tag
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit int) grayscale
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.repeat((arr / peak)[..., None], 3, axis=2)
    elif mode == "F":
        arr = np.repeat(np.clip(np.asarray(img, dtype=np.float64), 0, 1)[..., None], 3, axis=2)
    else:
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            # composite on white: transparent pixels carry no content to super-resolve
            rgba = img.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, rgba)
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: unexpected image layout {arr.shape}")
    return arr.astype(np.float32)


def _read_16bit_png(path: Path) -> np.ndarray | None:
    """16-bit RGB(A) PNGs: PIL reduces them to 8 bits, so read them with OpenCV when available."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a dependency of pyiqa/basicsr
        return None
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    rgb = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 65535.0
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 65535.0
        rgb = rgb * alpha + (1.0 - alpha)
    return rgb


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as an RGB float32 tensor (3,H,W) in [0,1].

    Grayscale is repeated to 3 channels, alpha is composited on white, 16-bit files keep
    their precision, and the EXIF orientation is applied.  Any failure raises
    :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            arr = None
            if img.format == "PNG" and img.mode in ("RGB", "RGBA") and img.info.get("bitdepth", 8) == 16:
                arr = _read_16bit_png(path)
            if arr is None and img.format == "PNG" and img.mode in ("RGB", "RGBA"):
                arr = _read_16bit_png(path)  # PIL hides 16-bit RGB; returns None for 8-bit
            if arr is None:
                arr = _to_float_rgb(img, path)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if not np.isfinite(arr).all():
        raise ImageReadError(f"{path}: image contains non-finite values")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(3,H,W) float in [0,1] -> (H,W,3) uint8, rounding as skimage.img_as_ubyte does."""
    return img.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as saving to PNG and reading back would."""
    return img.clamp(0, 1).mul(255.0).round().div(255.0)


def save_png(img: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Save (3,H,W) float in [0,1] as an 8-bit PNG, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())
