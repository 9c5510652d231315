"""Decompression bombs and genuinely large photos: a per-image error naming the file and its size, or bounded
memory (8-bit SR canvas built band by band, PSNR/SSIM in tiles).  Memory is checked as a mechanism on small
sizes: the largest float tensor storage an operation creates; benchmarks/large_image_memory.py measures
the real 3000x4000 case."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from srbench import metrics as metrics_mod
from srbench.data.images import ImageReadError, image_size, read_image, to_uint8
from srbench.diffusion.tiling import TileAccumulator, gaussian_weights_cv2, tile_grid, tiled_map
from srbench.metrics import MetricSuite
from srbench.registry import create_method
from srbench.runner import _METHODS, run_cell
from srbench.testing.run_config import run_config


class LargestFloatStorage(TorchDispatchMode):
    """Records the largest storage (bytes) of any floating-point tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in _pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def _photo(h: int, w: int) -> torch.Tensor:
    img = skimage.data.astronaut()[:h, :w]
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0


# ------------------------------------------------------------------------------------------- reading


def _bomb(path: Path, side: int = 14000) -> Path:
    """A bilevel PNG of side x side pixels: ~24 KB on disk, 196 MP (588 MB as RGB bytes) when decoded."""
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def test_a_png_bomb_is_refused_from_its_header_naming_file_and_size(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 40_000 and image_size(bomb) == (14000, 14000)
    with pytest.raises(
        ImageReadError, match=r"bomb\.png: image 14000x14000 \(196\.0 MP\) is over max_pixels="
    ):
        read_image(bomb, max_pixels=10**8)
    assert Image.MAX_IMAGE_PIXELS == 89478485  # PIL's own limit is restored after each read


def test_pil_limit_is_not_what_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A genuine image over PIL's decompression-bomb limit (here lowered to 1000 px) is read: srbench's own
    max_pixels decides, and PIL's setting is left as it was."""
    p = tmp_path / "photo.png"
    Image.fromarray(skimage.data.astronaut()[:64, :64]).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(Image.DecompressionBombError):
        Image.open(p)
    assert read_image(p).shape == (3, 64, 64) and image_size(p) == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_eight_bit_reads_match_the_float64_formula_for_every_level(tmp_path: Path) -> None:
    """read_image divides in float32 (no float64 copy): the same values as float64 k/255 rounded."""
    levels = np.arange(256, dtype=np.uint8)
    assert np.array_equal(
        np.divide(levels, np.float32(255.0), dtype=np.float32), (levels / 255.0).astype(np.float32)
    )
    p = tmp_path / "levels.png"
    Image.fromarray(np.stack([levels.reshape(16, 16)] * 3, axis=-1)).save(p)
    got = read_image(p)
    assert torch.equal(got[0], torch.from_numpy((levels.reshape(16, 16) / 255.0).astype(np.float32)))
    raw = read_image(p, eight_bit=True)  # what the runner keeps for an HR: k, read by metrics as k/255
    assert raw.dtype == torch.uint8 and torch.equal(raw[0], torch.from_numpy(levels.reshape(16, 16)))
    assert torch.equal(raw.to(torch.float32).div(255.0), got)
    sixteen = tmp_path / "deep.png"
    Image.fromarray(levels.reshape(16, 16).astype(np.uint16) * 257).save(sixteen)
    assert read_image(sixteen, eight_bit=True).dtype == torch.float32  # 16 bits keep their precision


# ------------------------------------------------------------------------------- 8-bit SR, band by band


def test_tiled_map_band_by_band_equals_the_whole_canvas_accumulator() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 37, 53, generator=g, dtype=torch.float64)

    def fn(t: torch.Tensor, _boxes: Any) -> torch.Tensor:
        return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False) * 1.5 - 0.2

    for tile, stride, per_batch in ((16, 12, 1), (16, 12, 3), (20, 8, 2), (53, 53, 1)):
        ref = TileAccumulator((2, 3, 74, 106), dtype=torch.float64)  # the whole-canvas way
        for box in tile_grid(37, 53, tile, stride):
            piece = fn(x[:, :, box.slices()[0], box.slices()[1]], [box])
            ref.add(piece, box.top * 2, box.left * 2, gaussian_weights_cv2(*piece.shape[-2:]))
        got = tiled_map(x, fn, tile=tile, stride=stride, scale=2, tiles_per_batch=per_batch)
        expected = ref.result() if len(tile_grid(37, 53, tile, stride)) > 1 else fn(x, [])
        assert torch.equal(got, expected), (tile, stride, per_batch)


@pytest.mark.parametrize("lr_tile", [None, 24])
def test_upscale_uint8_is_the_rounded_upscale(lr_tile: int | None) -> None:
    m = create_method({"name": "bicubic", "lr_tile": lr_tile, "lr_tile_overlap": 8})
    m.load("cpu")
    lr = _photo(60, 90)[None]
    u8 = m.upscale_uint8(lr)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 240, 360)
    assert np.array_equal(u8[0].permute(1, 2, 0).numpy(), to_uint8(m.upscale(lr)[0]))
    bad = create_method({"name": "bicubic", "lr_tile": lr_tile, "lr_tile_overlap": 8})
    bad.load("cpu")
    bad._upscale = lambda t, s, g: torch.full((t.shape[0], 3, t.shape[2] * 4, t.shape[3] * 4), math.nan)
    with pytest.raises(Exception, match="NaN or Inf"):
        bad.upscale_uint8(lr)


@pytest.mark.parametrize("lr_tile", [None, 24])
def test_upscale_uint8_floor_truncates_as_the_authors_astype(lr_tile: int | None) -> None:
    """protocol quantize=floor (StableSR, DoSSR): ``(255 * clip(x, 0, 1)).astype(np.uint8)``, tiled or not."""
    m = create_method({"name": "bicubic", "lr_tile": lr_tile, "lr_tile_overlap": 8})
    m.load("cpu")
    lr = _photo(60, 90)[None]
    sr = m.upscale(lr)[0].permute(1, 2, 0).numpy()
    floor = m.upscale_uint8(lr, mode="floor")[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(floor, (255.0 * np.clip(sr, 0, 1)).astype(np.uint8))
    assert (floor != m.upscale_uint8(lr, mode="round")[0].permute(1, 2, 0).numpy()).any()
    with pytest.raises(ValueError, match="round or floor"):
        m.upscale_uint8(lr, mode="none")


def test_tiled_upscale_uint8_never_holds_a_full_size_float_image() -> None:
    """Bicubic x4 of a 256x64 LR with lr_tile=32: the float canvas would be 1024x256x3 fp32 (3.1 MB);
    upscale_uint8 keeps only bands about one tile (128 rows) high, upscale() holds the whole canvas."""
    m = create_method({"name": "bicubic", "lr_tile": 32, "lr_tile_overlap": 8})
    m.load("cpu")
    lr = _photo(256, 64)[None]
    canvas = 3 * 1024 * 256 * 4
    with LargestFloatStorage() as uint8_way:
        m.upscale_uint8(lr)
    with LargestFloatStorage() as float_way:
        m.upscale(lr)
    assert float_way.largest >= canvas  # the float path (bench) keeps its output canvas
    assert uint8_way.largest < canvas / 4, (uint8_way.largest, canvas)


# ------------------------------------------------------------------------- metrics on large images


def test_large_images_get_exact_tiled_psnr_ssim_and_nan_with_reason_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hr = _photo(300, 260)
    sr = (hr * 0.9 + 0.05 + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    sr_u8 = sr.mul(255).round().to(torch.uint8)
    monkeypatch.setattr(metrics_mod, "PIXEL_TILE", 64)  # many blocks, ragged last ones
    for crop, y in ((0, True), (4, True), (4, False)):
        names = ["psnr", "psnr-rgb", "ssim", "niqe"]
        whole = MetricSuite(names, crop_border=crop, y_channel=y).score(sr_u8, hr)
        tiled_suite = MetricSuite(names, crop_border=crop, y_channel=y, max_pixels=50_000)
        with LargestFloatStorage() as seen:
            tiled = tiled_suite.score(sr_u8, hr)
        for k in ("psnr", "psnr-rgb", "ssim"):
            assert tiled[k] == pytest.approx(whole[k], rel=1e-13, abs=1e-13), (k, crop, y)
        assert math.isfinite(whole["niqe"]) and math.isnan(tiled["niqe"])
        assert "over metrics.max_pixels=50000" in tiled_suite.errors["niqe"]
        # float64 blocks of at most (64+10)^2 px x 3 channels (+ SSIM's unfolded window), never the image
        assert seen.largest < 300 * 260 * 3 * 8, seen.largest
    # uint8 SR (and HR) score exactly as the quantized float images do
    q = sr.clamp(0, 1).mul(255.0).round().div(255.0)
    pix = MetricSuite(["psnr", "ssim"])
    hr_u8 = hr.mul(255.0).round().to(torch.uint8)
    assert pix.score(q, hr) == pix.score(sr_u8, hr)
    assert pix.score(sr_u8, hr_u8.float().div(255.0)) == pix.score(sr_u8, hr_u8)


# --------------------------------------------------------------------------------- through the runner


def _cfg(data: Path, **over: Any) -> dict[str, Any]:
    lr_only = {"name": "big", "kind": "lr_only", "lr_dir": str(data)}
    return run_config(lr_only, metric_names=("psnr", "niqe"), **{"warmup": 1, **over})


def test_a_bomb_in_a_dataset_is_a_per_image_error_and_the_run_goes_on(tmp_path: Path) -> None:
    """The issue's 24 KB 14000x14000 PNG among LR images: refused from its header (its x4 SR would have
    3136 MP, over the default max_pixels), named with its size; the other image is processed."""
    _METHODS.clear()
    data = tmp_path / "lr"
    data.mkdir()
    _bomb(data / "a_bomb.png")
    Image.fromarray(skimage.data.astronaut()[:128, :128]).save(data / "b_photo.png")
    out = run_cell(_cfg(data), tmp_path / "run")
    assert out.status == "done"
    rows = {
        r["id"]: r for r in map(json.loads, (tmp_path / "run" / "per_image.jsonl").read_text().splitlines())
    }
    bad = rows["a_bomb"]
    assert bad["status"] == "error" and bad["stage"] == "read"
    assert "a_bomb.png: LR 14000x14000 would give a x4 SR image of 56000x56000 (3136.0 MP)" in bad["error"]
    assert rows["b_photo"]["status"] == "ok" and math.isfinite(rows["b_photo"]["niqe"])
    assert (tmp_path / "run" / "images" / "b_photo.png").is_file()
    assert not (tmp_path / "run" / "images" / "a_bomb.png").exists()


def test_a_genuine_large_pair_is_processed_and_max_pixels_is_a_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A paired image whose HR is over PIL's limit (lowered here to 5000 px so the test stays small) is
    processed through LR tiling; with a max_pixels below its SR size it is a per-image error instead."""
    _METHODS.clear()
    (tmp_path / "LR").mkdir()
    (tmp_path / "HR").mkdir()
    hr = skimage.data.astronaut()[:160, :240]
    Image.fromarray(hr).save(tmp_path / "HR" / "x.png")
    Image.fromarray(np.asarray(Image.fromarray(hr).resize((60, 40), Image.Resampling.BICUBIC))).save(
        tmp_path / "LR" / "x.png"
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    paired = {"name": "big", "kind": "paired", "lr_dir": str(tmp_path / "LR"), "hr_dir": str(tmp_path / "HR")}
    cfg = _cfg(tmp_path, dataset=paired, lr_tile=16, lr_tile_overlap=4, metrics={"names": ["psnr", "ssim"]})
    out = run_cell(cfg, tmp_path / "ok")
    assert out.status == "done" and out.summary["n_ok"] == 1, out.summary
    assert out.summary["metrics"]["psnr"]["mean"] > 20
    assert image_size(tmp_path / "ok" / "images" / "x.png") == (240, 160)
    run_cell({**cfg, "max_pixels": 30_000}, tmp_path / "refused")
    (row,) = map(json.loads, (tmp_path / "refused" / "per_image.jsonl").read_text().splitlines())
    assert (
        row["status"] == "error" and "x4 SR image of 240x160 (0.0 MP), over max_pixels=30000" in row["error"]
    )
    assert "LR/x.png" in row["error"]


def test_an_image_id_that_is_a_path_is_a_per_image_error(tmp_path: Path) -> None:
    from srbench.data.folders import Sample, SRDataset
    from srbench.protocol import Protocol
    from srbench.runner import _process
    from srbench.timing import StageTimer

    p = tmp_path / "x.png"
    Image.fromarray(skimage.data.astronaut()[:32, :32]).save(p)
    m = create_method({"name": "bicubic"})
    m.load("cpu")
    ds = SRDataset("d", [Sample("../../escape", p)])
    images = tmp_path / "run" / "images"
    row, sr, _ = _process(
        ds.samples[0], ds, m, MetricSuite([]), Protocol(), 1, 0, torch.device("cpu"), StageTimer(), images
    )
    assert (
        row["status"] == "error" and "image id '../../escape' cannot be used" in row["error"] and sr is None
    )
    assert not list(tmp_path.rglob("escape*"))
