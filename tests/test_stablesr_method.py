"""The ``stablesr`` plugin end to end on a tiny random model saved in the official formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import methods.stablesr  # noqa: F401  (registers "stablesr")
from methods.stablesr.testing import TinyStableSR, save_tiny_stablesr
from srbench.interface import SRBenchError, UnsupportedSteps, WeightsMissing
from srbench.registry import create_method
from srbench.timing import StageTimer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyStableSR:
    return save_tiny_stablesr(tmp_path_factory.mktemp("stablesr"), seed=0)


@pytest.fixture(scope="module")
def method(tiny: TinyStableSR):
    m = create_method("stablesr", **tiny.options())
    m.load("cpu", torch.float32)
    return m


def _lr(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_loads_official_format_and_reports_random_weights(method, tiny: TinyStableSR) -> None:
    info = method.weights_info()
    assert not info.real and "stablesr_000117.ckpt" in info.id and "global_step 117" in info.detail
    # the ckpt's UNet (not the SD folder's) is the one in use
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(tiny.model, subfolder="unet")
    assert not torch.equal(base.conv_in.weight, method.sft_unet.unet.conv_in.weight)
    assert len(method.sft_unet.targets) == 12 and method.cfw.levels == [1, 2]


def test_upscale_shapes_range_determinism_and_stages(method) -> None:
    lr = _lr(16, 24)  # s = max(128/16, 4) = 8: 128x192 upsample, 16x24 latent = 2 tiles, resized back to 4x
    method.timer = StageTimer("cpu")
    try:
        a = method.upscale(lr, steps=2, generator=torch.Generator().manual_seed(1))
        stages = method.timer.finish()
    finally:
        method.timer = None
    b = method.upscale(lr, steps=2, generator=torch.Generator().manual_seed(1))
    c = method.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2))
    assert a.shape == (1, 3, 64, 96) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(stages) == {"encode", "denoise", "decode"}


def test_exact_4x_with_padding_and_batch(method) -> None:
    lr = torch.cat([_lr(33, 34, 3), _lr(33, 34, 4)])  # s = 4: 132x136, padded to 160x160 (latent 20x20)
    out = method.upscale(lr, steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 132, 136) and torch.isfinite(out).all()
    assert not torch.equal(out[0], out[1])


def test_options_change_the_output(tiny: TinyStableSR, method) -> None:
    lr = _lr(16, 16)
    ref = method.upscale(lr, steps=2, generator=torch.Generator().manual_seed(5))
    variants = {
        "wavelet": {"color_fix": "wavelet"},
        "w0": {"w": 0.0},
        "ddim_cfg": {"sampler": "ddim", "eta": 1.0, "negative_prompt": "bad photo", "cfg_scale": 2.0},
        "noised_lr": {"init_latent": "noised_lr", "upsample": "bilinear"},
    }
    for name, opts in variants.items():
        m = create_method("stablesr", **{**tiny.options(), **opts})
        m.load("cpu", torch.float32)
        out = m.upscale(lr, steps=2, generator=torch.Generator().manual_seed(5))
        assert out.shape == ref.shape and torch.isfinite(out).all(), name
        assert not torch.allclose(out, ref, atol=1e-4), name


def test_w0_needs_no_cfw_checkpoint(tiny: TinyStableSR) -> None:
    opts = {**tiny.options(), "w": 0.0, "vqgan_ckpt": None}
    m = create_method("stablesr", **opts)
    m.load("cpu", torch.float32)
    assert "no CFW" in m.weights_info().detail
    assert m.upscale(_lr(16, 16), steps=1, generator=torch.Generator().manual_seed(0)).shape == (1, 3, 64, 64)


def test_steps_and_option_errors(method, tmp_path: Path, tiny: TinyStableSR) -> None:
    with pytest.raises(UnsupportedSteps):
        method.upscale(_lr(16, 16), steps=1001)
    with pytest.raises(UnsupportedSteps):
        method.upscale(_lr(16, 16), steps=0)
    with pytest.raises(SRBenchError, match="color_fix"):
        create_method("stablesr", color_fix="sepia")
    with pytest.raises(SRBenchError, match="w must be in"):
        create_method("stablesr", w=1.5)
    m = create_method("stablesr", **{**tiny.options(), "ckpt": str(tmp_path / "nope.ckpt")})
    with pytest.raises(WeightsMissing, match="does not exist"):
        m.load("cpu", torch.float32)


def test_default_weights_are_resolved_through_the_manifest(tiny: TinyStableSR) -> None:
    from srbench.weights import get_manifest

    manifest = get_manifest("stablesr")
    assert {"stablesr_000117.ckpt", "vqgan_cfw_00011.ckpt"} <= {f.filename for f in manifest.files}
    m = create_method("stablesr", model=str(tiny.model))  # ckpt from the (empty, offline) HF cache
    with pytest.raises(WeightsMissing, match="srbench weights fetch stablesr"):
        m.load("cpu", torch.float32)


def test_mismatched_checkpoint_is_a_clear_error(tiny: TinyStableSR, tmp_path: Path) -> None:
    from srbench.diffusion.checkpoints import load_lightning_checkpoint
    from srbench.testing.lightning import write_lightning_checkpoint

    state, _ = load_lightning_checkpoint(tiny.ckpt)
    state = {k: v for k, v in state.items() if "middle_block.2.spade" not in k}  # one SFT layer short
    bad = write_lightning_checkpoint(tmp_path / "bad.ckpt", state)
    m = create_method("stablesr", **{**tiny.options(), "ckpt": str(bad)})
    with pytest.raises(SRBenchError, match=r"SFT layers of bad\.ckpt: 8 missing keys \['mid_block_resnets_1"):
        m.load("cpu", torch.float32)
