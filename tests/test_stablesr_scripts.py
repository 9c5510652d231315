"""StableSR as the authors' scripts run it: padding, sizes, noise layout, VAEs, image patches, presets.

Everything runs on tiny random weights saved in the released checkpoint layout
(:func:`methods.stablesr.testing.save_tiny_stablesr`, input_size 128, so 16-px latent tiles).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import methods.stablesr  # noqa: F401  (registers "stablesr")
from methods.stablesr.geometry import (
    centre_crop_script_sizes,
    image_patches,
    pad_amounts,
    plan_centre_crop,
    plan_upscale,
)
from methods.stablesr.noise import (
    cpu_generator,
    initial_noise,
    posterior_noise,
    randn_like_channels_last,
    reseeded,
)
from methods.stablesr.testing import TinyStableSR, save_tiny_stablesr
from methods.stablesr.vaes import encoder_part, same_encoder
from srbench.cli import conf_dir
from srbench.interface import SRBenchError
from srbench.registry import create_method

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyStableSR:
    return save_tiny_stablesr(tmp_path_factory.mktemp("stablesr"), seed=0)


@pytest.fixture(scope="module")
def tiny_distinct(tmp_path_factory: pytest.TempPathFactory) -> TinyStableSR:
    return save_tiny_stablesr(tmp_path_factory.mktemp("stablesr-distinct"), seed=0, distinct_cfw_encoder=True)


def _method(tiny: TinyStableSR, **opts: Any):
    m = create_method("stablesr", **{**tiny.options(), **opts})
    m.load("cpu", torch.float32)
    return m


def _lr(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _latent_shapes(method, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the LR latent shape of every sampling call of ``method``."""
    seen: list[tuple[int, ...]] = []
    real = method.sampler.sample

    def spy(z_lr: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(tuple(z_lr.shape))
        return real(z_lr, *args, **kwargs)

    monkeypatch.setattr(method.sampler, "sample", spy)
    return seen


# ---- (1) padding rules ----------------------------------------------------------------------------
def test_pad_rules_authors_pads_an_aligned_side_by_32() -> None:
    assert pad_amounts(128, 180, "authors") == (32, 12)  # 128 is aligned, but 180 is not
    assert pad_amounts(128, 180, "minimal") == (0, 12)
    for rule in ("authors", "minimal"):
        assert pad_amounts(128, 192, rule) == (0, 0)
        assert pad_amounts(129, 191, rule) == (31, 1)
    # the 32x45 LR at input_size 128: upsampled 128x180
    authors = plan_upscale(32, 45, input_size=128, upscale=4, pad="authors")
    minimal = plan_upscale(32, 45, input_size=128, upscale=4, pad="minimal")
    assert authors.size == minimal.size == (128, 180)
    assert (authors.padded, authors.latent) == ((160, 192), (20, 24))
    assert (minimal.padded, minimal.latent) == ((128, 192), (16, 24))
    with pytest.raises(ValueError, match="pad must be one of"):
        pad_amounts(10, 10, "centred")


def test_32x45_latent_sizes_end_to_end(tiny: TinyStableSR, monkeypatch: pytest.MonkeyPatch) -> None:
    lr = _lr(32, 45)
    outs = {}
    for rule, latent in (("authors", (20, 24)), ("minimal", (16, 24))):
        m = _method(tiny, pad=rule)
        seen = _latent_shapes(m, monkeypatch)
        outs[rule] = m.upscale(lr, steps=1, generator=_gen(3))
        assert seen == [(1, 4, *latent)], rule
        assert outs[rule].shape == (1, 3, 128, 180)
    assert not torch.allclose(outs["authors"], outs["minimal"], atol=1e-3)


# ---- (2) enlargement above 4x with padding: exactly 4x ----------------------------------------------
def test_20x26_is_exactly_4x(tiny: TinyStableSR, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_upscale(20, 26, input_size=128, upscale=4, pad="authors")
    assert plan.factor == pytest.approx(6.4) and plan.size == (128, 166) and plan.padded == (160, 192)
    assert plan.output == (80, 104)  # the script returns 100x120 (resize of the padded image, no crop)
    m = _method(tiny, pad="authors")
    seen = _latent_shapes(m, monkeypatch)
    out = m.upscale(_lr(20, 26), steps=1, generator=_gen(0))
    assert out.shape == (1, 3, 80, 104) and seen == [(1, 4, 20, 24)]
    # the padding is cropped before the resize: with an identity restoration a smooth LR comes back as
    # its own x4 upsampling (resizing the padded image would squeeze it by 128/160 x 166/192)
    monkeypatch.setattr(m, "_restore", lambda up, steps, generator: up)
    ii, jj = torch.meshgrid(torch.linspace(0, 1, 20), torch.linspace(0, 1, 26), indexing="ij")
    ramp = ((ii + jj) / 2).expand(1, 3, 20, 26).contiguous()
    ref = torch.nn.functional.interpolate(ramp, scale_factor=4, mode="bicubic", align_corners=False)
    assert (m.upscale(ramp, steps=1) - ref.clamp(0, 1)).abs().max() < 0.02


# ---- (3) noise layout -------------------------------------------------------------------------------
def test_authors_noise_is_randn_like_of_a_channels_last_latent() -> None:
    shape = (1, 4, 20, 24)
    latent = torch.zeros(shape).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(7)
    ref = torch.randn_like(latent)  # the scripts' `noise = torch.randn_like(init_latent)`
    ours = initial_noise(shape, _gen(7), CPU, "authors", pure_noise=False)
    assert torch.equal(ours, ref) and ours.is_contiguous()
    assert torch.equal(randn_like_channels_last(shape, _gen(7), CPU), ref)
    contiguous = initial_noise(shape, _gen(7), CPU, "contiguous", pure_noise=False)
    assert not torch.allclose(contiguous, ref)  # same generator state, other numbers per position
    # pure-noise start (x_T = None): the randn_like draw is made and discarded, then torch.randn(shape)
    torch.manual_seed(7)
    torch.randn_like(latent)
    ref_pure = torch.randn(shape)
    assert torch.equal(initial_noise(shape, _gen(7), CPU, "authors", pure_noise=True), ref_pure)
    with pytest.raises(ValueError, match="noise_layout"):
        initial_noise(shape, _gen(7), CPU, "nhwc", pure_noise=True)


def test_sampler_noised_lr_start_uses_the_authors_draw(tiny: TinyStableSR) -> None:
    m = _method(tiny)
    z_lr = torch.randn(1, 4, 16, 16, generator=_gen(1))
    x_t = m.sampler.initial_latent(z_lr, "noised_lr", _gen(9), "authors")
    eps = randn_like_channels_last(z_lr.shape, _gen(9), CPU)
    assert torch.equal(x_t, m.sampler.scheduler.add_noise(z_lr, eps, torch.tensor([999])))
    assert not torch.equal(x_t, m.sampler.initial_latent(z_lr, "noised_lr", _gen(9), "contiguous"))


def test_posterior_noise_on_the_cpu_generator() -> None:
    g = _gen(4)
    assert cpu_generator(g) is g and cpu_generator(None) is None
    # a CUDA generator seeded 42 (seed_everything seeds both): the posterior draws from a CPU one seeded 42
    cuda_like = SimpleNamespace(device=torch.device("cuda"), initial_seed=lambda: 42)
    cpu = cpu_generator(cuda_like)  # type: ignore[arg-type]
    assert cpu is not None and cpu.device.type == "cpu" and torch.equal(cpu.get_state(), _gen(42).get_state())
    ref = torch.randn(1, 4, 8, 8, generator=_gen(4))
    assert torch.equal(posterior_noise((1, 4, 8, 8), _gen(4), CPU, "authors"), ref)
    g.manual_seed(11)
    torch.randn(3, generator=g)  # advanced: a reseeded copy starts again at the seed
    fresh = reseeded(g)
    assert fresh is not g and fresh.initial_seed() == 11
    assert torch.equal(fresh.get_state(), _gen(11).get_state())
    assert not torch.equal(g.get_state(), _gen(11).get_state())


def test_authors_layout_draws_the_posterior_then_x_t(tiny: TinyStableSR) -> None:
    m = _method(tiny, noise_layout="authors", init_latent="noised_lr")
    x = torch.rand(1, 3, 128, 128, generator=_gen(2)) * 2 - 1
    g = _gen(5)
    z = m._latent(m.cfw.vae, x, g)
    dist = m.cfw.vae.encode(x).latent_dist
    n = torch.randn(dist.mean.shape, generator=_gen(5))  # the first numbers of the stream
    torch.testing.assert_close(z, (dist.mean + dist.std * n) * 0.18215, rtol=0, atol=1e-6)
    # with a CUDA generator seeded 42 the posterior noise comes from the CPU generator seeded 42
    cuda_like = SimpleNamespace(device=torch.device("cuda"), initial_seed=lambda: 42)
    n42 = torch.randn(dist.mean.shape, generator=_gen(42))
    z42 = m._latent(m.cfw.vae, x, cuda_like)  # type: ignore[arg-type]
    torch.testing.assert_close(z42, (dist.mean + dist.std * n42) * 0.18215, rtol=0, atol=1e-6)
    # the x_T draw continues the same stream: authors and contiguous layouts give other samples
    lr = _lr(32, 32)
    a = m.upscale(lr, steps=2, generator=_gen(6))
    assert torch.equal(a, m.upscale(lr, steps=2, generator=_gen(6)))
    c = _method(tiny, noise_layout="contiguous", init_latent="noised_lr")
    assert not torch.allclose(a, c.upscale(lr, steps=2, generator=_gen(6)), atol=1e-4)


# ---- (4) which VAE encodes the input ---------------------------------------------------------------
def test_latent_from_the_main_checkpoint_vae(tiny_distinct: TinyStableSR) -> None:
    from diffusers import AutoencoderKL

    first_stage = AutoencoderKL.from_pretrained(tiny_distinct.model, subfolder="vae")  # = first_stage_model
    ckpt = _method(tiny_distinct, latent_vae="ckpt")
    cfw = _method(tiny_distinct, latent_vae="cfw")
    assert ckpt.latent_encoder is not None and cfw.latent_encoder is None
    assert "its own encoder" in ckpt.weights_info().detail
    assert not hasattr(ckpt.latent_encoder, "decoder")
    for name, t in first_stage.encoder.state_dict().items():
        assert torch.equal(ckpt.latent_encoder.encoder.state_dict()[name], t), name
    # the CFW features still come from the CFW file's encoder, which is not the first stage's
    assert not torch.equal(ckpt.cfw.vae.encoder.conv_in.weight, first_stage.encoder.conv_in.weight)
    x = torch.rand(1, 3, 128, 128, generator=_gen(1)) * 2 - 1
    torch.testing.assert_close(
        ckpt._latent(ckpt.latent_encoder, x, _gen(2)),
        first_stage.encode(x).latent_dist.sample(generator=_gen(2)) * 0.18215,
    )
    lr = _lr(32, 32)
    a = ckpt.upscale(lr, steps=1, generator=_gen(3))
    assert not torch.allclose(a, cfw.upscale(lr, steps=1, generator=_gen(3)), atol=1e-4)


def test_identical_encoders_share_one_pass(tiny: TinyStableSR) -> None:
    ckpt = _method(tiny, latent_vae="ckpt")
    cfw = _method(tiny, latent_vae="cfw")
    assert ckpt.latent_encoder is None and "same encoder tensors" in ckpt.weights_info().detail
    lr = _lr(32, 40)
    assert torch.equal(
        ckpt.upscale(lr, steps=1, generator=_gen(1)), cfw.upscale(lr, steps=1, generator=_gen(1))
    )


def test_encoder_key_sets_must_match() -> None:
    a = {
        "encoder.conv_in.weight": torch.ones(2),
        "quant_conv.bias": torch.zeros(2),
        "decoder.x": torch.ones(1),
    }
    part = encoder_part(a)
    assert set(part) == {"encoder.conv_in.weight", "quant_conv.bias"}
    assert same_encoder(part, {k: v.clone() for k, v in part.items()}, "a and b")
    assert not same_encoder(part, {**part, "quant_conv.bias": torch.ones(2)}, "a and b")
    with pytest.raises(SRBenchError, match="a and b have different key sets"):
        same_encoder(part, {"encoder.conv_in.weight": torch.ones(2)}, "a and b")


# ---- (5) presets ------------------------------------------------------------------------------------
def _compose(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("stablesr", {"geometry": "upscale", "pad": "minimal", "noise_layout": "contiguous"}),
        (
            "stablesr_old",
            {"geometry": "centre_crop", "upsample": "bilinear", "init_latent": "noise", "latent_vae": "cfw"},
        ),
        (
            "stablesr_tile",
            {"pad": "authors", "init_latent": "noised_lr", "latent_vae": "ckpt", "image_tile": 1280},
        ),
        (
            "stablesr_ddim",
            {"sampler": "ddim", "cfg_scale": 7.0, "init_latent": "noise", "latent_vae": "ckpt"},
        ),
    ],
)
def test_presets_compose_with_their_own_run_label(preset: str, expected: dict[str, Any]) -> None:
    cfg = _compose(f"method={preset}")
    assert cfg["method"]["name"] == "stablesr"
    assert cfg["run_name"] == ("stablesr" if preset == "stablesr" else preset.replace("_", "-"))
    assert {k: cfg["method"][k] for k in expected} == expected
    if preset != "stablesr":
        assert cfg["method"]["noise_layout"] == "authors" and cfg["method"]["w"] == 0.5
    create_method(cfg["method"])  # every option is one the method accepts
    assert _compose(f"method={preset}", "run_name=mine")["run_name"] == "mine"


def test_ddim_preset_prompts_and_paper_experiment() -> None:
    ddim = _compose("method=stablesr_ddim")["method"]
    assert ddim["prompt"] == "(masterpiece:2), (best quality:2), (realistic:2), (very clear:2)"
    assert ddim["negative_prompt"] == "3d, cartoon, anime, sketches, (worst quality:2), (low quality:2)"
    exp = _compose("experiment=stablesr_table1")
    assert exp["method"]["preset"] == "stablesr-old" and exp["method"]["geometry"] == "centre_crop"
    assert (exp["steps"], exp["method"]["w"], exp["method"]["color_fix"]) == (200, 0.5, "adain")
    assert exp["protocol"]["lr_centre_crop"] == 128 and exp["run_name"] == "stablesr-paper"


def test_presets_run_on_tiny_weights(tiny: TinyStableSR) -> None:
    def preset(name: str):
        opts = {k: v for k, v in _compose(f"method={name}")["method"].items() if k != "name"}
        m = create_method("stablesr", **{**opts, **tiny.options()})
        m.load("cpu", torch.float32)
        return m

    old = preset("stablesr_old")
    out = old.upscale(_lr(32, 32), steps=1, generator=_gen(0))  # 32 = input_size 128 / 4
    assert out.shape == (1, 3, 128, 128)
    assert torch.equal(out, old.upscale(_lr(32, 32), steps=1, generator=_gen(0)))
    with pytest.raises(SRBenchError, match="LANCZOS-resized to 32x32, resized to 128x128 and centre-cropped"):
        old.upscale(_lr(32, 45), steps=1)
    tile = preset("stablesr_tile")
    assert tile.upscale(_lr(20, 26), steps=1, generator=_gen(0)).shape == (1, 3, 80, 104)
    ddim = preset("stablesr_ddim")
    assert ddim.upscale(_lr(16, 20), steps=2, generator=_gen(0)).shape == (1, 3, 64, 80)


def test_centre_crop_geometry_accepts_only_what_stays_upscale_x() -> None:
    plan = plan_centre_crop(128, 128, input_size=512, upscale=4)
    assert (plan.size, plan.pad, plan.output) == ((512, 512), (0, 0), (512, 512))
    assert centre_crop_script_sizes(200, 130, 512) == ((192, 128), (768, 512))
    assert centre_crop_script_sizes(20, 130, 512) == ((0, 128), (0, 0))
    for h, w in ((130, 130), (64, 64), (128, 160)):
        with pytest.raises(SRBenchError, match="needs a square LR of input_size/upscale = 128 px"):
            plan_centre_crop(h, w, input_size=512, upscale=4)
    with pytest.raises(SRBenchError, match=r"input_size/upscale = 170\.667"):
        plan_centre_crop(170, 170, input_size=512, upscale=3)


# ---- (6) large images in image patches ---------------------------------------------------------------
def test_image_patches_follow_the_scripts_splitter() -> None:
    # rows [0, 220], columns [0, 1000, 1020]; column-major, as ImageSpliterTh iterates
    assert image_patches(1500, 2300, 1280, 1000) == [
        (0, 0, 1280, 1280),
        (220, 0, 1280, 1280),
        (0, 1000, 1280, 1280),
        (220, 1000, 1280, 1280),
        (0, 1020, 1280, 1280),
        (220, 1020, 1280, 1280),
    ]
    assert image_patches(1000, 1500, 1280, 1000) == [(0, 0, 1000, 1280), (0, 220, 1000, 1280)]


def test_image_tiling_reseeds_every_patch_and_blends(tiny: TinyStableSR) -> None:
    m = _method(tiny, pad="authors", image_tile=128, image_tile_stride=96)
    assert m.image_tile_stride == 96 and _method(tiny, image_tile=512).image_tile_stride == 232
    calls: list[tuple[tuple[int, ...], torch.Tensor]] = []
    real = m._restore

    def spy(up: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        calls.append((tuple(up.shape), generator.get_state().clone()))
        return real(up, steps, generator)

    m._restore = spy  # type: ignore[method-assign]
    g = _gen(8)
    state = g.get_state().clone()
    lr = _lr(32, 45)  # 128x180 -> padded 160x192 -> patches at rows [0, 32] x columns [0, 64]
    out = m.upscale(lr, steps=1, generator=g)
    assert out.shape == (1, 3, 128, 180)
    assert [s for s, _ in calls] == [(1, 3, 128, 128)] * 4
    assert all(torch.equal(st, _gen(8).get_state()) for _, st in calls)  # the seed reset per patch
    assert torch.equal(g.get_state(), state)  # the caller's generator is left alone
    assert torch.equal(out, m.upscale(lr, steps=1, generator=_gen(8)))
    whole = _method(tiny, pad="authors").upscale(lr, steps=1, generator=_gen(8))
    assert not torch.allclose(out, whole, atol=1e-3)
    # pixels only the first patch covers (rows < 32, columns < 64) are that patch's own result
    calls.clear()
    up = torch.rand(1, 3, 160, 192, generator=_gen(1)) * 2 - 1
    blended = m._restore_patches(up, 1, _gen(8))
    first = real(up[:, :, :128, :128], 1, _gen(8))
    torch.testing.assert_close(blended[:, :, :32, :64], first[:, :, :32, :64], rtol=0, atol=1e-5)
    assert not torch.allclose(blended[:, :, 40:120, 70:120], first[:, :, 40:120, 70:120], atol=1e-3)


def test_image_tile_options_are_checked(tiny: TinyStableSR) -> None:
    for opts, match in (
        ({"image_tile": 100}, "multiple of 8 and at least 8 \\* tile_size = 128"),
        ({"image_tile": 64}, "at least 8 \\* tile_size"),
        ({"image_tile": 128, "image_tile_stride": 129}, "image_tile_stride must be in 1..image_tile"),
    ):
        with pytest.raises(SRBenchError, match=match):
            create_method("stablesr", **{**tiny.options(), **opts})


# ---- (7) --upscale other than 4 ---------------------------------------------------------------------
def test_upscale_other_than_4(tiny: TinyStableSR) -> None:
    from srbench.protocol import Protocol

    two = _method(tiny, upscale=2)
    assert two.scale == 2 and plan_upscale(32, 40, input_size=128, upscale=2, pad="minimal").size == (
        128,
        160,
    )
    assert two.upscale(_lr(32, 40), steps=1, generator=_gen(0)).shape == (1, 3, 64, 80)
    eight = _method(tiny, upscale=8.0)
    assert eight.scale == 8 and eight.upscale(_lr(16, 20), steps=1, generator=_gen(0)).shape == (
        1,
        3,
        128,
        160,
    )
    for bad in (2.5, 0, "x"):
        with pytest.raises(SRBenchError, match="upscale must be a positive integer"):
            create_method("stablesr", upscale=bad)
    # the runner matches HR against method.scale: x4 pairs cannot score an x2 run
    with pytest.raises(SRBenchError, match="is not 2 x LR"):
        Protocol(name="full").prepare(torch.rand(3, 32, 40), torch.rand(3, 128, 160), two.scale)
