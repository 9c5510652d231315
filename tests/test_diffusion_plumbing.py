"""Shared SD plumbing (srbench.diffusion, srbench.weights, srbench.testing) on a tiny random SD folder."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srbench.diffusion import color, schedules, tiling
from srbench.diffusion.prompts import PromptEmbeddingCache
from srbench.diffusion.sd import load_sd_components, pick_dtype
from srbench.diffusion.vae import from_vae_range, latent_scale, to_vae_range, vae_decode, vae_encode
from srbench.interface import SRBenchError, WeightsMissing
from srbench.testing import RANDOM_WEIGHTS_MARKER, install_in_hf_cache, is_random_weights, mark_random_weights


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srbench.testing.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd", seed=0)


@pytest.fixture(scope="module")
def sd(tiny_sd_dir: Path):
    return load_sd_components(tiny_sd_dir, dtype=torch.float32, device="cpu")


# ---- dtype ------------------------------------------------------------------------------------
def test_pick_dtype_half_only_on_gpu() -> None:
    assert pick_dtype("cpu", torch.float16) == torch.float32
    assert pick_dtype("cpu", "bf16") == torch.float32
    assert pick_dtype("cpu", None) == torch.float32
    assert pick_dtype("cuda", None) == torch.float16
    assert pick_dtype("cuda", "auto") == torch.float16
    assert pick_dtype("cuda", "bf16") == torch.bfloat16
    assert pick_dtype("cuda", "fp32") == torch.float32
    assert pick_dtype(torch.device("cuda:0"), torch.float16) == torch.float16
    with pytest.raises(SRBenchError, match="unknown dtype"):
        pick_dtype("cuda", "fp8")


# ---- schedules --------------------------------------------------------------------------------
def test_schedule_tables_match_diffusers_and_the_brief() -> None:
    from diffusers import EulerDiscreteScheduler

    from srbench.testing.tiny_sd import SD_TURBO_SCHEDULER

    sched = EulerDiscreteScheduler.from_config(SD_TURBO_SCHEDULER)
    ac = schedules.scaled_linear_alphas_cumprod()
    assert torch.equal(ac, schedules.alphas_cumprod_of(sched))
    sig = schedules.ve_sigmas(ac)
    # InvSR caches scheduler.sigmas.flip(0)[1:] of an untouched EulerDiscreteScheduler (invsr.md §2.2)
    assert torch.allclose(sig, sched.sigmas.flip(0)[1:].float(), rtol=1e-6, atol=0)
    expected = {249: 0.6932, 199: 0.5693, 149: 0.4538, 99: 0.3417, 49: 0.2230}
    for t, s in expected.items():
        assert abs(float(sig[t]) - s) < 1e-4, (t, float(sig[t]))
    assert abs(float(ac[249]) - 0.6754) < 1e-4 and abs(float(ac[999]) - 0.004660) < 1e-5


def test_ancestral_step_sigmas() -> None:
    down, up = schedules.ancestral_step_sigmas(0.5693, 0.3417)
    assert down**2 + up**2 == pytest.approx(0.3417**2)
    assert 0 < down < 0.3417 and 0 < up < 0.3417
    assert schedules.ancestral_step_sigmas(0.5693, 0.0) == (0.0, 0.0)
    assert schedules.ancestral_step_sigmas(0.5, 0.3, eta=0.0) == (pytest.approx(0.3), 0.0)


# ---- tiling -----------------------------------------------------------------------------------
def _stablesr_offsets(length: int, tile: int, overlap: int) -> list[int]:
    # StableSR brief §2.6: n = smallest k+1 with k*(T-O)+T >= L; offsets j*(T-O), last = L-T
    if length <= tile:
        return [0]
    k = 0
    while k * (tile - overlap) + tile < length:
        k += 1
    return [j * (tile - overlap) for j in range(k)] + [length - tile]


def test_tile_starts_invsr_examples_and_stablesr_equivalence() -> None:
    assert tiling.tile_starts(128, 128, 64) == [0]
    assert tiling.tile_starts(100, 128, 64) == [0]
    assert tiling.tile_starts(256, 128, 64) == [0, 64, 128]
    assert tiling.tile_starts(208, 128, 64) == [0, 64, 80]
    assert tiling.tile_starts(128, 64, 32) == [0, 32, 64]  # StableSR brief example
    for length in range(1, 300, 7):
        for tile, overlap in ((64, 32), (96, 48), (64, 16)):
            assert tiling.tile_starts(length, tile, tile - overlap) == _stablesr_offsets(
                length, tile, overlap
            )
    with pytest.raises(ValueError, match="gaps"):
        tiling.tile_starts(100, 16, 32)


def test_tile_grid_is_row_major_and_clamped() -> None:
    boxes = tiling.tile_grid(100, 40, 64, 32)
    assert [(b.top, b.left) for b in boxes] == [(0, 0), (32, 0), (36, 0)]
    assert all((b.height, b.width) == (64, 40) for b in boxes)


@pytest.mark.parametrize("size", [7, 64, 512, 129])
def test_gaussian_weights_equal_opencv(size: int) -> None:
    w = tiling.gaussian_weights_cv2(size, size)
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    k = (
        cv2.getGaussianKernel(size + 1, sigma, cv2.CV_64F)[1:]
        if size % 2 == 0
        else cv2.getGaussianKernel(size, sigma, cv2.CV_64F)
    )
    ref = torch.from_numpy(np.matmul(k.reshape(-1, 1), k.reshape(1, -1)))
    assert w.dtype == torch.float64 and torch.allclose(w, ref, rtol=1e-12, atol=1e-15)


def test_gaussian_weights_mixture_formula() -> None:
    h, w = 64, 48
    wt = tiling.gaussian_weights_mixture(h, w)
    y, x = 10, 30
    fx = math.exp(-((x - (w - 1) / 2) ** 2) / (w * w) / 0.02) / math.sqrt(2 * math.pi * 0.01)
    fy = math.exp(-((y - h / 2) ** 2) / (h * h) / 0.02) / math.sqrt(2 * math.pi * 0.01)
    assert float(wt[y, x]) == pytest.approx(fx * fy, rel=1e-12)
    assert int(wt.argmax()) // w == h // 2  # the y-centre quirk: peak row H/2, not (H-1)/2


def test_accumulator_and_tiled_map() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 56, generator=g, dtype=torch.float64)
    seen: list[tuple[int, int]] = []

    def up2(tiles: torch.Tensor, boxes: list[tiling.TileBox]) -> torch.Tensor:
        seen.extend((b.top, b.left) for b in boxes)
        # tile-major stacking: tile j of image i is at row j*B + i
        for j, b in enumerate(boxes):
            assert torch.equal(tiles[j * 2 : j * 2 + 2], x[:, :, b.slices()[0], b.slices()[1]])
        return F.interpolate(tiles, scale_factor=2, mode="nearest")

    out = tiling.tiled_map(x, up2, tile=16, stride=8, scale=2, tiles_per_batch=3)
    assert torch.allclose(out, F.interpolate(x, scale_factor=2, mode="nearest"), atol=1e-12)
    assert seen == [(b.top, b.left) for b in tiling.tile_grid(40, 56, 16, 8)]
    # one tile: the map is exactly fn(x)
    one = tiling.tiled_map(x, lambda t, b: t * 3, tile=64, stride=32)
    assert torch.equal(one, x * 3)
    acc = tiling.TileAccumulator((1, 1, 8, 8))
    acc.add(torch.ones(1, 1, 4, 4), 0, 0, torch.ones(4, 4))
    with pytest.raises(RuntimeError, match="cover"):
        acc.result()


# ---- colour -----------------------------------------------------------------------------------
def _ref_wavelet(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    # StableSR scripts/wavelet_color_fix.py, restated: 5 levels, radius 2**i, replicate pad
    def blur(img: torch.Tensor, r: int) -> torch.Tensor:
        k = torch.tensor(
            [[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]], dtype=img.dtype
        )
        k = k[None, None].repeat(3, 1, 1, 1)
        return F.conv2d(F.pad(img, (r, r, r, r), mode="replicate"), k, groups=3, dilation=r)

    def decomp(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        high = torch.zeros_like(img)
        for i in range(5):
            low = blur(img, 2**i)
            high += img - low
            img = low
        return high, low

    return decomp(content)[0] + decomp(style)[1]


def test_wavelet_and_adain_match_stablesr() -> None:
    g = torch.Generator().manual_seed(1)
    img, ref = torch.rand(2, 3, 48, 40, generator=g), torch.rand(2, 3, 48, 40, generator=g) * 0.5 + 0.3
    assert torch.allclose(color.wavelet_color_fix(img, ref), _ref_wavelet(img, ref), atol=1e-6)
    assert torch.allclose(color.wavelet_color_fix(img, img), img, atol=1e-6)
    out = color.adain_color_fix(img, ref)
    flat_o, flat_r = out.reshape(2, 3, -1), ref.reshape(2, 3, -1)
    assert torch.allclose(flat_o.mean(-1), flat_r.mean(-1), atol=1e-5)
    assert torch.allclose((flat_o.var(-1) + 1e-5).sqrt(), (flat_r.var(-1) + 1e-5).sqrt(), atol=1e-4)
    assert torch.equal(color.color_fix(img, ref, None), img)
    assert torch.equal(color.color_fix(img, ref, "wavelet"), color.wavelet_color_fix(img, ref))
    with pytest.raises(ValueError, match="unknown colour fix"):
        color.color_fix(img, ref, "lab")
    with pytest.raises(ValueError, match="one shape"):
        color.adain_color_fix(img, ref[:, :, :10])


def test_ycbcr_fix_takes_luma_from_image_and_chroma_from_reference() -> None:
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64) * 0.6 + 0.2  # in gamut
    back = color.ycbcr_to_rgb(color.rgb_to_ycbcr(img))
    assert torch.allclose(back, img, atol=2e-5)
    ref = torch.rand(1, 3, 16, 16, generator=g, dtype=torch.float64) * 0.6 + 0.2
    out = color.ycbcr_color_fix(img, ref)
    y_o, y_i, c_o, c_r = (
        color.rgb_to_ycbcr(out)[:, :1],
        color.rgb_to_ycbcr(img)[:, :1],
        color.rgb_to_ycbcr(out)[:, 1:],
        color.rgb_to_ycbcr(ref)[:, 1:],
    )
    unclipped = (out > 0.001) & (out < 0.999)
    mask = unclipped.all(dim=1, keepdim=True)
    assert torch.allclose(y_o[mask], y_i[mask], atol=1e-4)
    assert torch.allclose(c_o[mask.expand_as(c_o)], c_r[mask.expand_as(c_r)], atol=1e-4)
    # Y of a grey level in MATLAB's convention: 16/255 + 219/255 * v
    grey = torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64)
    assert float(color.rgb_to_ycbcr(grey)[0, 0]) == pytest.approx((16 + 219 * 0.5) / 255, abs=1e-4)


# ---- SD loading, VAE, prompts -------------------------------------------------------------------
def test_tiny_sd_folder_layout_and_loading(tiny_sd_dir: Path, sd) -> None:
    for name in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "scheduler/scheduler_config.json",
    ):
        assert (tiny_sd_dir / name).is_file(), name
    assert is_random_weights(tiny_sd_dir) and (tiny_sd_dir / RANDOM_WEIGHTS_MARKER).is_file()
    assert type(sd.scheduler).__name__ == "EulerDiscreteScheduler"
    assert sd.scheduler.config.timestep_spacing == "trailing"
    assert sd.tokenizer.model_max_length == 77
    assert latent_scale(sd.vae) == (0.18215, 0.0)
    assert 2 ** (len(sd.vae.config.block_out_channels) - 1) == 8 and sd.vae.config.latent_channels == 4
    assert not any(p.requires_grad for p in sd.unet.parameters()) and not sd.unet.training
    only = load_sd_components(tiny_sd_dir, parts=("vae",))
    assert only.unet is None and only.vae is not None
    with pytest.raises(SRBenchError, match="lack"):
        only.require("unet")


def test_missing_parts_and_offline_hub_ids_raise_weights_missing(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(WeightsMissing, match=r"'unet'.*diffusers folder"):
        load_sd_components(broken, parts=("unet",))
    (broken / "tokenizer" / "vocab.json").unlink()  # transformers would silently build an empty tokenizer
    with pytest.raises(WeightsMissing, match="tokenizer"):
        load_sd_components(broken, parts=("tokenizer",))
    with pytest.raises(
        WeightsMissing, match=r"srbench weights fetch invsr.*HF_HOME|HF_HOME.*srbench weights fetch invsr"
    ):
        load_sd_components("srbench-test/not-cached", parts=("vae",), fetch_hint="invsr")


def test_load_by_hub_id_from_the_hf_cache_offline(tiny_sd_dir: Path) -> None:
    snap = install_in_hf_cache(tiny_sd_dir, "srbench-test/tiny-sd")
    assert snap.is_dir()
    comp = load_sd_components("srbench-test/tiny-sd", parts=("vae", "tokenizer", "scheduler"))
    ref = load_sd_components(tiny_sd_dir, parts=("vae",))
    assert all(
        torch.equal(a, b)
        for a, b in zip(comp.vae.state_dict().values(), ref.vae.state_dict().values(), strict=True)
    )
    assert comp.tokenizer.model_max_length == 77


def test_vae_encode_decode_scaling_and_determinism(sd) -> None:
    g = torch.Generator().manual_seed(0)
    x01 = torch.rand(1, 3, 64, 48, generator=g)
    assert torch.allclose(from_vae_range(to_vae_range(x01)), x01, atol=1e-7)
    x = to_vae_range(x01)
    with torch.no_grad():
        z_mode = vae_encode(sd.vae, x, sample=False)
        assert z_mode.shape == (1, 4, 8, 6)
        assert torch.allclose(z_mode, 0.18215 * sd.vae.encode(x).latent_dist.mode())
        a = vae_encode(sd.vae, x, generator=torch.Generator().manual_seed(3))
        b = vae_encode(sd.vae, x, generator=torch.Generator().manual_seed(3))
        c = vae_encode(sd.vae, x, generator=torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)
        img = vae_decode(sd.vae, z_mode)
        assert img.shape == (1, 3, 64, 48)
        assert torch.allclose(img, sd.vae.decode(z_mode / 0.18215).sample)


def test_prompt_cache_encodes_once_and_matches_the_text_encoder(sd) -> None:
    calls = {"n": 0}
    te = sd.text_encoder
    orig = te.forward

    def counting(*args, **kwargs):
        calls["n"] += 1
        return orig(*args, **kwargs)

    te.forward = counting
    try:
        cache = PromptEmbeddingCache(sd.tokenizer, te)
        e4 = cache.get("a photo of the cat", 4)
        e1 = cache.get("a photo of the cat", 1)
        assert e4.shape == (4, 77, 32) and calls["n"] == 1
        ids = sd.tokenizer(
            "a photo of the cat", padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            direct = orig(ids)[0]
        assert torch.equal(e1, direct) and torch.equal(e4[3], direct[0])
        assert (
            cache.get("a photo of the cat", 2, dtype=torch.float64).dtype == torch.float64 and calls["n"] == 1
        )
        skip = PromptEmbeddingCache(sd.tokenizer, te, clip_skip=1).encode("a photo of the cat")
        with torch.no_grad():
            hs = orig(ids, output_hidden_states=True).hidden_states[-2]
            assert torch.allclose(skip, getattr(te, "text_model", te).final_layer_norm(hs))
        cache.release_text_encoder()
        assert torch.equal(cache.get("a photo of the cat", 1), e1)
        with pytest.raises(RuntimeError, match="released"):
            cache.get("another prompt", 1)
    finally:
        del te.forward


# ---- weights manifest --------------------------------------------------------------------------
def test_weights_manifest_resolve_fetch_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from srbench import weights as W

    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"srbench" * 100)
    repo_src = tmp_path / "repo"
    (repo_src / "sub").mkdir(parents=True)
    (repo_src / "sub" / "present.json").write_text("{}")
    install_in_hf_cache(repo_src, "srbench-test/manifest-repo")
    W.register_weights(
        W.WeightsManifest(
            "testmethod",
            files=(
                W.WeightFile(
                    "sub/present.json", repo_id="srbench-test/manifest-repo", size=2, size_exact=True
                ),
                W.WeightFile("absent.pth", repo_id="srbench-test/manifest-repo", size=135_000_000),
                W.WeightFile(
                    "blob.bin",
                    url=blob.as_uri(),
                    size=700,
                    size_exact=True,
                    sha256=hashlib.sha256(blob.read_bytes()).hexdigest(),
                    subdir="testmethod",
                ),
            ),
        )
    )
    assert W.resolve("testmethod", "present.json").read_text() == "{}"
    with pytest.raises(WeightsMissing) as err:
        W.resolve("testmethod", "absent.pth")
    msg = str(err.value)
    assert "absent.pth" in msg and "srbench weights fetch testmethod" in msg
    assert "models--srbench-test--manifest-repo" in msg
    with pytest.raises(SRBenchError, match="not in the 'testmethod' weights manifest"):
        W.resolve("testmethod", "nope.bin")
    # offline: the hub file cannot be fetched -> a clear error naming it
    with pytest.raises(WeightsMissing, match=r"absent\.pth.*HF_HUB_OFFLINE"):
        W.fetch("testmethod", log=False)
    assert W.weights_cli(["where", "testmethod"]) == 1
    out = capsys.readouterr().out
    assert "missing  hf://srbench-test/manifest-repo/absent.pth" in out and "present  hf://" in out
    # a URL entry downloads (file:// works offline), is checked and lands in the srbench cache
    url_entry = W.get_manifest("testmethod").files[2]
    got = W._download_url(url_entry)
    assert got.read_bytes() == blob.read_bytes() and W.local_path(url_entry) == got
    bad = W.WeightFile("bad.bin", url=blob.as_uri(), sha256="0" * 64, subdir="testmethod")
    with pytest.raises(SRBenchError, match="sha256"):
        W._download_url(bad)
    assert not (got.parent / "bad.bin").exists()
    assert W.weights_cli(["list"]) == 0
    assert "testmethod" in capsys.readouterr().out
    with pytest.raises(SRBenchError, match="no weights manifest"):
        W.get_manifest("nope")


def test_random_marker_convention(tmp_path: Path) -> None:
    f = tmp_path / "x.pth"
    f.write_bytes(b"0")
    assert not is_random_weights(f)
    marker = mark_random_weights(f, seed=3)
    assert marker.name == "x.pth." + RANDOM_WEIGHTS_MARKER
    assert is_random_weights(f) and json.loads(marker.read_text())["seed"] == 3
    assert not is_random_weights(tmp_path)  # a file's marker does not mark its folder


def test_tiny_text_encoder_file_uses_the_hub_key_layout(tiny_sd_dir: Path, sd) -> None:
    from safetensors.torch import load_file

    keys = list(load_file(str(tiny_sd_dir / "text_encoder" / "model.safetensors")))
    assert keys and all(k.startswith("text_model.") for k in keys)  # as in stabilityai/sd-turbo
    from srbench.testing.tiny_sd import build_tiny_sd

    built = build_tiny_sd(seed=0)["text_encoder"].state_dict()
    loaded = sd.text_encoder.state_dict()
    assert built.keys() == loaded.keys()
    assert all(torch.equal(built[k], loaded[k]) for k in built)  # the prefixed keys were all loaded
