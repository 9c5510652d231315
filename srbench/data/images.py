"""Image I/O: any common file in, RGB float32 (3,H,W) in [0,1] out; 8-bit PNG out.

Size limit: PIL refuses images over ~179 MP as possible decompression bombs, with an exception that names
no file.  srbench reads with its own limit instead, ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`,
16384x16384), checked on the header before any pixel is decoded; an image over it is an
:class:`ImageReadError` naming the file and its size (a per-image error: the run goes on).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from srbench.atomic import atomic_write_bytes  # re-exported: written files keep the umask's mode

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: the most pixels srbench reads from one file, and the most an SR output may have (``max_pixels``):
#: 16384^2, above a 3000x4000 photo's x4 (192 MP), below what one float32 copy of which fits in 4 GB
DEFAULT_MAX_PIXELS = 16384 * 16384


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the problem."""


_PIL_LIMIT = threading.Lock()


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check off while srbench applies ``max_pixels`` itself (restored after)."""
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _megapixels(w: int, h: int) -> str:
    return f"{w}x{h} ({w * h / 1e6:.1f} MP)"


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(width, height)`` from the file's header, no pixel decoded; ImageReadError naming the file."""
    path = Path(path)
    try:
        with _own_pixel_limit():
            opened = Image.open(path)
        with opened as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc


def check_pixels(path: Path, size: tuple[int, int], max_pixels: int, what: str = "") -> None:
    """ImageReadError when an image of ``size`` (w, h) has more than ``max_pixels`` pixels."""
    w, h = size
    if w * h > max_pixels:
        limit = f"max_pixels={max_pixels} ({max_pixels / 1e6:.1f} MP)"
        raise ImageReadError(
            f"{path}: {what or 'image'} {_megapixels(w, h)} is over {limit}: not read (a decompression bomb, "
            "or a photo larger than this run allows: raise max_pixels to process it)"
        )


def _chw_uint8(rgb: Image.Image) -> np.ndarray:
    """An RGB image's bytes as a (3,H,W) uint8 array, copied in bands of rows: ``np.asarray`` of the whole
    image would hold two more full-size copies on the way (PIL's ``tobytes`` chunks and their join)."""
    w, h = rgb.size
    out = np.empty((3, h, w), dtype=np.uint8)
    rows = max(1, (1 << 22) // max(1, w))  # ~4 M pixels per band
    for top in range(0, h, rows):
        band = np.asarray(rgb.crop((0, top, w, min(h, top + rows))), dtype=np.uint8)
        out[:, top : top + band.shape[0]] = band.transpose(2, 0, 1)
    return out


def _to_float_rgb(img: Image.Image, path: Path, eight_bit: bool = False) -> np.ndarray:
    ImageOps.exif_transpose(img, in_place=True)  # honour the EXIF orientation tag (no copy without one)
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
        rgb = img if img.mode == "RGB" else img.convert("RGB")  # no copy of an RGB image
        del img
        chw = _chw_uint8(rgb)
        del rgb
        if eight_bit:
            return chw
        # float32(k) / 255 in float32 is the correctly rounded k/255, the same value as the float64
        # division rounded to float32 (checked for every k in tests): no float64 copy of a large image
        return np.divide(chw, np.float32(255.0), dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{path}: unexpected image layout {arr.shape}")
    return np.ascontiguousarray(arr.astype(np.float32).transpose(2, 0, 1))


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
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS, eight_bit: bool = False
) -> torch.Tensor:
    """Read an image file as an RGB float32 tensor (3,H,W) in [0,1].

    Grayscale is repeated to 3 channels, alpha is composited on white, 16-bit files keep
    their precision, and the EXIF orientation is applied.  An image with more than ``max_pixels``
    pixels is refused from its header.  Any failure raises :class:`ImageReadError` naming the file.
    ``eight_bit=True`` returns an 8-bit file as its uint8 (3,H,W) values ``k`` (``k/255`` is exactly the
    float the default gives) at a quarter of the memory; 16-bit and float files stay float32.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    try:
        with _own_pixel_limit():  # PIL checks sizes only while opening
            opened = Image.open(path)
        with opened as img:
            check_pixels(path, img.size, max_pixels)
            # PIL decodes 16-bit RGB(A) PNGs to 8 bits; its raw mode (e.g. "RGB;16B") says so before decoding
            deep = img.format == "PNG" and any(";16" in str(t[3]) for t in img.tile if len(t) > 3)
            arr = _read_16bit_png(path) if deep and img.mode in ("RGB", "RGBA") else None
            if arr is None:
                img.load()
                arr = _to_float_rgb(img, path, eight_bit)
    except ImageReadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr)
    if not np.isfinite(arr.sum(dtype=np.float64)):  # NaN/Inf somewhere iff in the sum of [0,1] values
        raise ImageReadError(f"{path}: image contains non-finite values")
    return torch.from_numpy(arr)


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
