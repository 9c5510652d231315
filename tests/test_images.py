"""Image reading: RGB float out of grayscale, RGBA, 16-bit, EXIF-rotated and broken files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from srbench.data.images import ImageReadError, read_image, save_png, to_uint8


def _rgb(h: int = 6, w: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path: Path) -> None:
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (3, 6, 10) and img.dtype == torch.float32
    assert np.array_equal(to_uint8(img), arr)
    save_png(img, tmp_path / "b.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), arr)


def test_grayscale_is_repeated_to_three_channels(tmp_path: Path) -> None:
    g = _rgb()[..., 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (3, 6, 10)
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert np.allclose(img[0].numpy() * 255, g)


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    img = read_image(tmp_path / "t.png")
    assert torch.allclose(img[:, :2], torch.tensor([200 / 255, 0, 0]).view(3, 1, 1).expand(3, 2, 4))
    assert torch.allclose(img[:, 2:], torch.ones(3, 2, 4))


def test_16bit_png_keeps_precision(tmp_path: Path) -> None:
    arr16 = np.random.default_rng(1).integers(0, 65536, size=(5, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), arr16[..., ::-1])  # OpenCV writes BGR
    img = read_image(tmp_path / "d.png")
    assert np.allclose(img.permute(1, 2, 0).numpy(), arr16 / 65535.0, atol=1e-6)
    gray16 = arr16[..., 0]
    Image.fromarray(gray16.astype(np.uint16)).save(tmp_path / "g16.png")
    g = read_image(tmp_path / "g16.png")
    assert np.allclose(g[0].numpy(), gray16 / 65535.0, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = _rgb(4, 8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=100)
    img = read_image(tmp_path / "r.jpg")
    assert img.shape == (3, 8, 4)  # displayed portrait


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"not an image at all", "cannot read image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "cannot read image"),
    ],
)
def test_unreadable_file_names_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(bad)
    assert str(bad) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_truncated_png_is_an_error(tmp_path: Path) -> None:
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")
