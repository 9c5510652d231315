"""InvSR port: noise predictor (size, keys, official layout), timesteps, the sampler against a
hand-computed reference, chopping, colour fix, plugin options and weights -- on tiny random models
saved in the real formats and loaded through the plugin's own code."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods.invsr  # noqa: F401  (registers "invsr")
from methods.invsr import pipeline as P
from methods.invsr.method import InvSR
from methods.invsr.noise_predictor import (
    OFFICIAL_NUM_PARAMS,
    TINY_CONFIG,
    NoisePredictor,
    load_noise_predictor,
    save_noise_predictor,
    save_tiny_noise_predictor,
)
from srbench import UnsupportedSteps, create_method
from srbench.interface import SRBenchError, WeightsMissing
from srbench.testing import RANDOM_WEIGHTS_MARKER, install_in_hf_cache
from srbench.timing import StageTimer


class NotATensor:  # pickled into a checkpoint by a test: weights_only loading must refuse it
    pass


TILE = 16  # LR chopping size used in the tests (a multiple of 16, like the real 128)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from srbench.testing.tiny_sd import save_tiny_sd

    root = tmp_path_factory.mktemp("invsr")
    return save_tiny_sd(root / "sd", seed=0), save_tiny_noise_predictor(root / "np" / "np.pth", seed=0)


@pytest.fixture(scope="module")
def method(tiny_files: tuple[Path, Path]) -> InvSR:
    sd, np_file = tiny_files
    m = create_method("invsr", model=str(sd), noise_predictor=str(np_file), chopping_size=TILE)
    m.load("cpu", torch.float32)
    assert isinstance(m, InvSR)
    return m


def _lr(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# ---- noise predictor -------------------------------------------------------------------------------
def test_full_size_noise_predictor_matches_the_release() -> None:
    with torch.device("meta"):
        model = NoisePredictor()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_NUM_PARAMS == 33_837_576
    assert len(state) == 164
    top = Counter(".".join(k.split(".")[:2]) for k in state)
    assert top == {
        "encoder.time_embedding": 4,
        "encoder.conv_in": 2,
        "encoder.down_blocks": 124,
        "encoder.mid_block": 30,
        "encoder.conv_norm_out": 2,
        "encoder.conv_out": 2,
    }
    shapes = {  # invsr.md §3
        "encoder.time_embedding.linear_1.weight": (512, 256),
        "encoder.time_embedding.linear_2.weight": (512, 512),
        "encoder.conv_in.weight": (256, 3, 3, 3),
        "encoder.down_blocks.0.resnets.0.norm1.weight": (256,),
        "encoder.down_blocks.0.resnets.0.conv1.weight": (256, 256, 3, 3),
        "encoder.down_blocks.0.resnets.0.time_emb_proj.weight": (256, 512),
        "encoder.down_blocks.0.attentions.0.group_norm.weight": (256,),
        "encoder.down_blocks.0.attentions.0.to_q.weight": (256, 256),
        "encoder.down_blocks.0.downsamplers.0.conv.weight": (256, 256, 3, 3),
        "encoder.down_blocks.1.resnets.0.conv1.weight": (512, 256, 3, 3),
        "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": (512, 256, 1, 1),
        "encoder.mid_block.attentions.0.to_out.0.weight": (512, 512),
        "encoder.conv_norm_out.weight": (512,),
        "encoder.conv_out.weight": (8, 512, 3, 3),
        "encoder.conv_out.bias": (8,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    enc = model.encoder
    assert [a.heads for a in enc.down_blocks[0].attentions] == [4, 4, 4]
    assert [a.heads for a in enc.down_blocks[1].attentions] == [8, 8, 8]
    assert enc.down_blocks[1].downsamplers is None and len(enc.down_blocks[0].resnets) == 3


@pytest.mark.parametrize(
    ("prefix", "wrap"), [("", False), ("module.", False), ("_orig_mod.", False), ("module._orig_mod.", True)]
)
def test_official_layout_round_trip(tmp_path: Path, prefix: str, wrap: bool) -> None:
    ref = load_noise_predictor(save_tiny_noise_predictor(tmp_path / "a.pth", seed=1))
    path = save_noise_predictor(ref, tmp_path / "b.pth", prefix=prefix, wrap=wrap)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # the file is weights-only loadable
    keys = list(raw["state_dict"] if wrap else raw)
    assert all(k.startswith(prefix + "encoder.") for k in keys)
    got = load_noise_predictor(path)
    for k, v in ref.state_dict().items():
        assert torch.equal(got.state_dict()[k], v), k
    x = _lr((1, 3, 16, 16))
    assert torch.equal(got(x, 199.0, sample_posterior=False), ref(x, 199.0, sample_posterior=False))


def test_checkpoint_errors_list_keys_and_file(tmp_path: Path) -> None:
    good = tmp_path / "np.pth"
    model = load_noise_predictor(save_tiny_noise_predictor(good))
    state = dict(model.state_dict())
    state.pop("encoder.conv_out.bias")
    state["encoder.extra.weight"] = torch.zeros(1)
    state["encoder.conv_in.weight"] = torch.zeros(1, 1, 3, 3)
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    shutil.copy(good.with_suffix(".json"), bad.with_suffix(".json"))
    with pytest.raises(SRBenchError) as err:
        load_noise_predictor(bad)
    msg = str(err.value)
    assert "bad.pth" in msg and "missing 1 keys [encoder.conv_out.bias]" in msg
    assert "unexpected 1 keys [encoder.extra.weight]" in msg and "encoder.conv_in.weight" in msg

    evil = tmp_path / "evil.pth"
    torch.save({"encoder.conv_in.weight": NotATensor()}, evil)  # a pickled object: refused, never built
    with pytest.raises(SRBenchError, match="weights-only"):
        load_noise_predictor(evil)
    # the full-size model with a tiny file: a shape error, not a silent partial load
    with pytest.raises(SRBenchError, match="shape mismatches"):
        load_noise_predictor(good, config={})


def test_noise_predictor_output_is_a_posterior_sample() -> None:
    torch.manual_seed(0)
    model = NoisePredictor(TINY_CONFIG).eval()
    x = _lr((2, 3, 16, 24))
    with torch.no_grad():
        h = model.moments(x, 199.0)
        assert h.shape == (2, 8, 8, 12)
        assert torch.equal(model(x, torch.tensor(199.0), sample_posterior=False), h[:, :4])
        n1 = model(x, 199.0, generator=torch.Generator().manual_seed(5))
        n2 = model(x, 199.0, generator=torch.Generator().manual_seed(5))
        expected = h[:, :4] + torch.exp(0.5 * h[:, 4:].clamp(-30, 20)) * torch.randn(
            2, 4, 8, 12, generator=torch.Generator().manual_seed(5)
        )
        assert torch.equal(n1, n2) and torch.allclose(n1, expected, atol=1e-6)
        assert not torch.allclose(model.moments(x, 99.0), h)  # time-conditioned
        assert torch.allclose(model.moments(x * 0 + 0.5, 199.0), model.encoder(x * 0, 199.0))  # input centred


# ---- timesteps ----------------------------------------------------------------------------------------
def test_timestep_rules() -> None:
    assert {n: P.resolve_timesteps(n) for n in range(1, 6)} == P.DEFAULT_TIMESTEPS
    assert P.resolve_timesteps(6) == (250, 208, 166, 125, 83, 41)  # app.py linspace rule
    assert len(P.resolve_timesteps(250)) == 250 and P.resolve_timesteps(250)[-1] == 1
    with pytest.raises(UnsupportedSteps, match=r"steps=251"):
        P.resolve_timesteps(251)
    with pytest.raises(UnsupportedSteps, match=r"steps=6; supported: 1\.\.5"):
        P.resolve_timesteps(6, more_steps="error")
    assert P.resolve_timesteps(2, timesteps=[100, 200]) == (200, 100)
    with pytest.raises(UnsupportedSteps, match=r"supported: \[2\]"):
        P.resolve_timesteps(1, timesteps=[100, 200])
    assert P.resolve_timesteps(3, timesteps={1: [150], 3: [250, 150, 50]}) == (250, 150, 50)  # Tab. 1 sets
    assert P.resolve_timesteps(3, start_timestep=150) == (150, 100, 50)  # Tab. 4
    assert P.resolve_timesteps(2, start_timestep=200) == P.DEFAULT_TIMESTEPS[2]
    assert P.resolve_timesteps(4, start_timestep=200) == P.DEFAULT_TIMESTEPS[4]
    assert P.resolve_timesteps(5, start_timestep=250) == P.DEFAULT_TIMESTEPS[5]
    assert P.resolve_timesteps(1, start_timestep=100) == (100,)
    for bad in ([200, 200], [0], [1001]):
        with pytest.raises(SRBenchError):
            P.check_timesteps(bad)
    assert P.supported_step_counts() == list(range(1, 251))
    assert P.supported_step_counts(more_steps="error") == [1, 2, 3, 4, 5]
    assert P.supported_step_counts(timesteps={1: [200], 3: [200, 100, 50]}) == [1, 3]


def test_sigma_uses_tau_minus_one(method: InvSR) -> None:
    s = method.sampler
    assert s is not None
    assert s.sigma(200) == pytest.approx(0.5693, abs=1e-4) and s.sigma(250) == pytest.approx(0.6932, abs=1e-4)
    assert s.sigma(200) == float(s.sigmas[199]) and s.mod_lq == 16


# ---- the sampler against a reference computation ---------------------------------------------------------
def _reference(sampler: P.InvSRSampler, lr: torch.Tensor, taus: list[int], seed: int) -> torch.Tensor:
    """InvSR written out by hand (invsr.md §2.3) from the loaded parts."""
    g = torch.Generator().manual_seed(seed)
    unet, vae, f_w = sampler.unet, sampler.vae, sampler.noise_predictor
    ac = sampler.sd.scheduler.alphas_cumprod
    sig = [float(((1 - ac[t - 1]) / ac[t - 1]) ** 0.5) for t in taus] + [0.0]
    emb = sampler.prompt_embeds(lr.shape[0])
    noise = f_w(lr, torch.tensor(float(taus[0] - 1)), generator=g)
    up = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    z = 0.18215 * vae.encode(up * 2 - 1).latent_dist.sample(generator=g)
    x = z + sig[0] * noise
    # Eq. 8: x / sqrt(1 + s^2) = sqrt(abar) z + sqrt(1 - abar) f_w
    a = float(ac[taus[0] - 1])
    assert torch.allclose(x / (1 + sig[0] ** 2) ** 0.5, a**0.5 * z + (1 - a) ** 0.5 * noise, atol=1e-5)
    for i, tau in enumerate(taus):
        eps = unet(
            x / (sig[i] ** 2 + 1) ** 0.5, torch.tensor(float(tau - 1)), encoder_hidden_states=emb
        ).sample
        x = x + (sig[i + 1] - sig[i]) * eps  # with one step: x0 = x - sigma * eps (Eq. 9)
        torch.randn(x.shape, generator=g)  # the scheduler's unused draw
    return (vae.decode(x / 0.18215).sample / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("taus", [[200], [200, 100, 50]])
def test_sample_tiles_equals_the_written_out_algorithm(method: InvSR, taus: list[int]) -> None:
    s = method.sampler
    assert s is not None
    lr = _lr((2, 3, 32, 16), seed=3)
    with torch.no_grad():
        ref = _reference(s, lr, taus, seed=11)
    out = s.sample_tiles(lr, taus, torch.Generator().manual_seed(11))
    assert out.shape == (2, 3, 128, 64) and out.dtype == torch.float32
    assert torch.allclose(out, ref, atol=1e-5)
    with pytest.raises(SRBenchError, match="multiples of 16"):
        s.sample_tiles(_lr((1, 3, 24, 16)), taus)


# ---- whole images ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5])
def test_every_step_count_shapes_range_determinism(method: InvSR, steps: int) -> None:
    lr = _lr((1, 3, TILE, TILE), seed=steps)
    a = method.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(0))
    b = method.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(0))
    c = method.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 3, 4 * TILE, 4 * TILE) and a.dtype == torch.float32
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.std()) > 0
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_chopping_equals_no_chopping_on_a_tile_sized_input(
    method: InvSR, tiny_files: tuple[Path, Path]
) -> None:
    sd, np_file = tiny_files
    whole = InvSR(model=str(sd), noise_predictor=str(np_file), chopping_size=None)
    whole.load("cpu")
    lr = _lr((1, 3, TILE, TILE), seed=7)
    chopped = method.upscale(lr, steps=2, generator=torch.Generator().manual_seed(4))
    unchopped = whole.upscale(lr, steps=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(chopped, unchopped)
    # a larger, non-square input goes through the tiles and comes back at x4
    big = _lr((1, 3, 24, 20), seed=8)
    out = method.upscale(big, steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 96, 80) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_chopping_padding_and_crop_geometry(method: InvSR, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the network replaced by nearest x4 upsampling, reflect padding, tiling, Gaussian blending
    and the crop back must give exactly the nearest upsampling of the input."""
    s = method.sampler
    assert s is not None
    calls: list[tuple[int, ...]] = []

    def fake(lr: torch.Tensor, timesteps, generator=None, *, stochastic=False) -> torch.Tensor:
        calls.append(tuple(lr.shape))
        return F.interpolate(lr.float(), scale_factor=4, mode="nearest")

    monkeypatch.setattr(s, "sample_tiles", fake)
    for shape in [(1, 3, 10, 6), (2, 3, 12, 20), (1, 3, 36, 25), (1, 3, 1, 20)]:
        calls.clear()
        lr = _lr(shape, seed=shape[2])
        out = s.upscale(lr, (200,), None, chopping_size=TILE, chopping_batch_size=2)
        assert torch.allclose(out, F.interpolate(lr, scale_factor=4, mode="nearest"), atol=1e-6), shape
        assert all(c[-2:] == (TILE, TILE) and c[0] <= 2 * shape[0] for c in calls)
    # 36x25 -> reflect-padded to 48x32 -> row starts 0,8,..,32 x col starts 0,8,16, two tiles per call
    calls.clear()
    s.upscale(_lr((1, 3, 36, 25)), (200,), None, chopping_size=TILE, chopping_batch_size=2)
    from srbench.diffusion.tiling import tile_grid

    assert len(tile_grid(48, 32, TILE, TILE // 2)) == 5 * 3 == sum(c[0] for c in calls) and len(calls) == 8


def test_color_fix_options(method: InvSR, tiny_files: tuple[Path, Path]) -> None:
    from srbench.diffusion.color import wavelet_color_fix

    s = method.sampler
    assert s is not None
    lr = _lr((1, 3, TILE, TILE), seed=9)
    raw = s.upscale(lr, (200,), torch.Generator().manual_seed(0), chopping_size=TILE)
    fixed = s.upscale(lr, (200,), torch.Generator().manual_seed(0), chopping_size=TILE, color_fix="wavelet")
    ref = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False, antialias=True)
    assert torch.allclose(fixed, wavelet_color_fix(raw, ref).clamp(0, 1), atol=1e-6)
    assert not torch.allclose(fixed, raw, atol=1e-3)
    # padded image: the code's reference (padded LR stretched) differs from the input's
    small = _lr((1, 3, 12, 10), seed=10)
    a = s.upscale(small, (200,), torch.Generator().manual_seed(0), chopping_size=TILE, color_fix="ycbcr")
    b = s.upscale(
        small,
        (200,),
        torch.Generator().manual_seed(0),
        chopping_size=TILE,
        color_fix="ycbcr",
        color_fix_reference="input",
    )
    assert a.shape == b.shape == (1, 3, 48, 40) and not torch.allclose(a, b)
    sd, np_file = tiny_files
    with pytest.raises(SRBenchError, match="color_fix"):
        InvSR(model=str(sd), noise_predictor=str(np_file), color_fix="lab")


def test_stochastic_variant(method: InvSR) -> None:
    s = method.sampler
    assert s is not None
    lr = _lr((1, 3, 16, 16), seed=12)
    det1 = s.sample_tiles(lr, (200,), torch.Generator().manual_seed(0))
    sto1 = s.sample_tiles(lr, (200,), torch.Generator().manual_seed(0), stochastic=True)
    assert torch.allclose(det1, sto1, atol=1e-6)  # one step ends at sigma 0: no fresh noise
    det = s.sample_tiles(lr, (200, 100), torch.Generator().manual_seed(0))
    sto = s.sample_tiles(lr, (200, 100), torch.Generator().manual_seed(0), stochastic=True)
    sto_b = s.sample_tiles(lr, (200, 100), torch.Generator().manual_seed(0), stochastic=True)
    assert torch.equal(sto, sto_b) and not torch.allclose(det, sto, atol=1e-4)


# ---- plugin -----------------------------------------------------------------------------------------------
def test_plugin_stages_steps_and_random_label(
    method: InvSR, tiny_files: tuple[Path, Path], tmp_path: Path
) -> None:
    assert method.supported_steps() == list(range(1, 251))
    info = method.weights_info()
    assert info.real is False and info.label == "random" and "RANDOM" in info.detail
    method.timer = StageTimer("cpu")
    try:
        method.timer.reset()
        method.upscale(_lr((1, 3, 16, 16)), steps=1, generator=torch.Generator().manual_seed(0))
        stages = method.timer.finish()
    finally:
        method.timer = None
    assert {"noise_predict", "encode", "denoise", "decode"} <= set(stages) <= set(method.stages)
    # the same files without markers count as real weights
    sd, np_file = tiny_files
    sd2, np2 = tmp_path / "sd", tmp_path / "np.pth"
    shutil.copytree(sd, sd2, ignore=shutil.ignore_patterns(RANDOM_WEIGHTS_MARKER))
    shutil.copy(np_file, np2)
    shutil.copy(np_file.with_suffix(".json"), np2.with_suffix(".json"))
    m = InvSR(model=str(sd2), noise_predictor=str(np2), timesteps={1: [150], 3: [250, 150, 50]})
    m.load("cpu")
    assert m.weights_info().real is True
    assert m.supported_steps() == [1, 3]
    with pytest.raises(UnsupportedSteps, match=r"'invsr' cannot run steps=2; supported: \[1, 3\]"):
        m.upscale(_lr((1, 3, 16, 16)), steps=2)


def test_defaults_load_from_the_hf_cache_and_missing_weights_are_named(
    tiny_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    m = InvSR()  # stabilityai/sd-turbo + OAOA/InvSR, as a user runs it
    with pytest.raises(
        WeightsMissing, match=r"noise_predictor_sd_turbo_v5\.pth.*srbench weights fetch invsr"
    ):
        m.load("cpu")
    sd, np_file = tiny_files
    snap = tmp_path / "np_snapshot"
    snap.mkdir()
    for src, name in (
        (np_file, "noise_predictor_sd_turbo_v5.pth"),
        (np_file.with_suffix(".json"), "noise_predictor_sd_turbo_v5.json"),
        (
            Path(f"{np_file}.{RANDOM_WEIGHTS_MARKER}"),
            f"noise_predictor_sd_turbo_v5.pth.{RANDOM_WEIGHTS_MARKER}",
        ),
    ):
        shutil.copy(src, snap / name)
    install_in_hf_cache(snap, "OAOA/InvSR")
    with pytest.raises(WeightsMissing, match=r"stabilityai/sd-turbo.*srbench weights fetch invsr"):
        InvSR().load("cpu")
    install_in_hf_cache(sd, "stabilityai/sd-turbo")
    m = InvSR(chopping_size=TILE)
    m.load("cpu")
    out = m.upscale(_lr((1, 3, 16, 16)), steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 64, 64)
    info = m.weights_info()
    assert info.real is False and info.id.startswith("stabilityai/sd-turbo")


def test_yaml_config_builds_the_method() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(Path(__file__).parent.parent / "conf/method/invsr.yaml"))
    assert isinstance(cfg, dict) and cfg["name"] == "invsr"
    m = create_method(cfg)
    assert isinstance(m, InvSR) and m.timesteps_for(1) == (200,) and m.prompt == P.POSITIVE_PROMPT
    assert not m.prompt.endswith(".")


def test_half_precision_components(method: InvSR, tiny_files: tuple[Path, Path]) -> None:
    """The GPU dtype path on CPU: SD parts in bf16, f_w kept in fp32 and fed in its own dtype."""
    from srbench.diffusion.sd import load_sd_components

    sd, np_file = tiny_files
    half = P.InvSRSampler(load_sd_components(sd, dtype=torch.bfloat16), load_noise_predictor(np_file))
    assert (
        half.unet.dtype == torch.bfloat16 and next(half.noise_predictor.parameters()).dtype == torch.float32
    )
    lr = _lr((1, 3, 16, 16), seed=13)
    out = half.upscale(
        lr, (200, 100), torch.Generator().manual_seed(0), chopping_size=TILE, color_fix="wavelet"
    )
    assert method.sampler is not None
    ref = method.sampler.upscale(
        lr, (200, 100), torch.Generator().manual_seed(0), chopping_size=TILE, color_fix="wavelet"
    )
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().mean() < 0.02
