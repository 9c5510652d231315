"""One sample in and its SR image out, under the run's size limit (``max_pixels``).

:func:`read_sample` reads a dataset sample's LR (and HR), refusing from the file headers, before a pixel is
decoded, any image with more than ``max_pixels`` pixels and any LR whose SR output (``scale``² times its
pixels, after the protocol's crop) would have more.  Each refusal is an
:class:`~srbench.data.images.ImageReadError` naming the file and its size: a per-image error, the run goes
on.  An 8-bit HR is kept as uint8 (the metrics read ``k`` as ``k/255``, bit-identical).
:func:`save_sr_png` writes an SR image given as 8-bit (what :meth:`SRMethod.upscale_uint8` returns) or as
float, atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from srbench.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    atomic_write_bytes,
    check_pixels,
    image_size,
    read_image,
    save_png,
)
from srbench.protocol import Protocol


def _check_sr_size(path: Path, lr_w: int, lr_h: int, scale: int, max_pixels: int) -> None:
    w, h = lr_w * scale, lr_h * scale
    if w * h > max_pixels:
        raise ImageReadError(
            f"{path}: LR {lr_w}x{lr_h} would give a x{scale} SR image of {w}x{h} ({w * h / 1e6:.1f} MP), "
            f"over max_pixels={max_pixels} ({max_pixels / 1e6:.1f} MP): not processed (raise max_pixels, "
            "and turn on lr_tile, for photos this large)"
        )


def read_sample(
    sample: Any, protocol: Protocol, scale: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(lr, hr)`` of ``sample`` (``lr_path``, ``hr_path``) after ``protocol.prepare``, size-checked."""
    lr_w, lr_h = image_size(sample.lr_path)
    check_pixels(Path(sample.lr_path), (lr_w, lr_h), max_pixels, "LR")
    if protocol.lr_centre_crop is None and protocol.lr_resize_short_side is None:  # nothing shrinks it
        _check_sr_size(Path(sample.lr_path), lr_w, lr_h, scale, max_pixels)
    if sample.hr_path is not None:
        check_pixels(Path(sample.hr_path), image_size(sample.hr_path), max_pixels, "HR")
    lr = read_image(sample.lr_path, max_pixels=max_pixels)
    # HR only feeds the metrics, which take uint8 exactly: an 8-bit HR stays 8-bit (1/4 of float32)
    hr = None if sample.hr_path is None else read_image(sample.hr_path, max_pixels=max_pixels, eight_bit=True)
    lr, hr = protocol.prepare(lr, hr, scale)
    _check_sr_size(Path(sample.lr_path), int(lr.shape[-1]), int(lr.shape[-2]), scale, max_pixels)
    return lr, hr


def save_sr_png(sr: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write (3,H,W) SR as an 8-bit PNG, atomically: uint8 as it is, float through :func:`save_png`."""
    if sr.is_floating_point():
        save_png(sr, path)
        return
    if sr.dtype != torch.uint8 or sr.ndim != 3 or sr.shape[0] != 3:
        raise ValueError(f"expected a (3,H,W) uint8 or float image, got {sr.dtype} {tuple(sr.shape)}")
    buf = io.BytesIO()
    Image.fromarray(sr.permute(1, 2, 0).contiguous().cpu().numpy()).save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getbuffer())  # type: ignore[arg-type]  # a view: no second copy
