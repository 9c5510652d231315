"""Formula checks that mutation testing (benchmarks/mutation.py) showed missing: each test pins a value or
a property the surviving mutants changed -- known closed-form values, a library's own computation, or
behaviour (dtype / device propagation on the "meta" device, validation of bad input).  Grouped by the
module under test; benchmarks/README.md lists the mutants judged equivalent instead."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

# ---- srbench.diffusion.schedules ------------------------------------------------------------------------
from srbench.diffusion import schedules
from srbench.safe_load import WeightsFileRefused


def test_ancestral_step_sigmas_closed_form() -> None:
    # k-diffusion get_ancestral_step: up = min(s_to, η sqrt(s_to² (s_from² − s_to²) / s_from²)),
    # down = sqrt(s_to² − up²)
    assert schedules.ancestral_step_sigmas(5.0, 3.0) == pytest.approx((1.8, 2.4))  # 3-4-5 numbers
    down, up = schedules.ancestral_step_sigmas(5.0, 3.0, eta=0.5)
    assert up == pytest.approx(1.2) and down == pytest.approx(math.sqrt(9 - 1.44))
    assert schedules.ancestral_step_sigmas(5.0, 3.0, eta=2.0) == pytest.approx((0.0, 3.0))  # capped at s_to
    assert schedules.ancestral_step_sigmas(5.0, 0.0) == (0.0, 0.0)
    assert schedules.ancestral_step_sigmas(2.0, 1.0, eta=0.0) == pytest.approx((1.0, 0.0))  # η = 0: DDIM


def test_schedule_tables_keep_their_dtypes() -> None:
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # diffusers builds SD's betas in float32 whatever the default
    try:
        ac = schedules.scaled_linear_alphas_cumprod()
    finally:
        torch.set_default_dtype(before)
    assert ac.dtype == torch.float32
    assert schedules.ve_sigmas(ac.double()).dtype == torch.float32
    table = schedules.alphas_cumprod_of(SimpleNamespace(alphas_cumprod=np.array([0.9, 0.5])))
    assert table.dtype == torch.float32 and table.device.type == "cpu"
    with pytest.raises(ValueError, match="SimpleNamespace has no alphas_cumprod table"):
        schedules.alphas_cumprod_of(SimpleNamespace())


# ---- methods.dossr.schedule ------------------------------------------------------------------------------
from methods.dossr import schedule as dschedule  # noqa: E402


@pytest.mark.parametrize("kind", ["scaled_linear", "linear"])
def test_dossr_alphas_cumprod_equals_diffusers_for_any_config_form(kind: str) -> None:
    from diffusers import DDPMScheduler

    cfg = {"num_train_timesteps": 400, "beta_start": 0.0005, "beta_end": 0.02, "beta_schedule": kind}
    want = DDPMScheduler(**cfg).alphas_cumprod.double().numpy()
    frozen = DDPMScheduler(**cfg).config  # attribute access (FrozenDict)
    for form in (cfg, frozen, SimpleNamespace(**cfg)):
        got = dschedule.alphas_cumprod_from_config(form)
        assert got.shape == (400,) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=2e-6)
    # missing or null keys take SD's values
    sd = dschedule.alphas_cumprod_from_config(None)
    np.testing.assert_array_equal(dschedule.alphas_cumprod_from_config({"beta_start": None}), sd)
    np.testing.assert_array_equal(dschedule.alphas_cumprod_from_config(SimpleNamespace()), sd)
    with pytest.raises(ValueError, match="unsupported beta_schedule 'squaredcos_cap_v2'"):
        dschedule.alphas_cumprod_from_config({"beta_schedule": "squaredcos_cap_v2"})


def test_dossr_eta_schedule_bounds_and_variants() -> None:
    code = dschedule.eta_schedule(1000, 500)
    np.testing.assert_array_equal(code, dschedule.eta_schedule(1000, 500, "code"))  # "code" is the default
    assert code[0] == pytest.approx((1 - math.cos(math.pi * 0.001)) / 2)
    assert code[499] == pytest.approx((1 - math.cos(math.pi * 0.999)) / 2) and (code[500:] == 1).all()
    paper = dschedule.eta_schedule(1000, 500, "paper")
    assert paper[0] == 0 and paper[500] == pytest.approx(1.0) and paper[250] == pytest.approx(0.5)
    full = dschedule.eta_schedule(10, 10, "paper")  # t1 = T: the ramp covers the whole table
    assert full.shape == (10,) and full[9] == pytest.approx((1 - math.cos(math.pi * 0.9)) / 2)
    assert dschedule.eta_schedule(10, 2)[:2].tolist() == pytest.approx(
        [(1 - math.cos(math.pi * 0.001)) / 2, (1 - math.cos(math.pi * 0.999)) / 2]
    )
    for t1 in (1, 11):
        with pytest.raises(ValueError, match=r"t1 must be in \(1, 10\]"):
            dschedule.eta_schedule(10, t1)
    with pytest.raises(ValueError, match="unknown eta variant 'cosine'"):
        dschedule.eta_schedule(10, 5, "cosine")  # type: ignore[arg-type]


def test_dossr_grids() -> None:
    assert dschedule.space_timesteps(500, 3) == [0, 250, 499]
    assert dschedule.space_timesteps(10, 1) == [0]
    assert dschedule.space_timesteps(5, 5) == [0, 1, 2, 3, 4]
    for count in (0, 6):
        with pytest.raises(ValueError, match=f"cannot take {count} timesteps out of 5"):
            dschedule.space_timesteps(5, count)
    assert dschedule.max_steps(500) == 499 and dschedule.max_steps(500, "paper") == 500
    ts = dschedule.sampling_timesteps(500, 500, "paper")
    assert ts.dtype == np.int64 and ts[0] == 500 and ts[-1] == 0 and len(ts) == 501
    with pytest.raises(ValueError, match=r"1 <= steps <= 500 \(t1=500\), got 501"):
        dschedule.sampling_timesteps(501, 500, "paper")
    with pytest.raises(ValueError, match=r"1 <= steps <= 499 \(t1=500\), got 500"):
        dschedule.sampling_timesteps(500, 500)


def test_dos_schedule_validation() -> None:
    ok = {"alpha": np.array([0.5, 0.9]), "sigma": np.array([0.8, 0.4]), "eta": np.array([1.0, 0.5])}
    dschedule.DoSSchedule(**ok)  # η = 1 only at the start: fine
    bad = [
        ({**ok, "alpha": np.array([0.5])}, "needs >= 2 points"),
        ({**ok, "sigma": np.array([0.8, 0.4, 0.1])}, "of one length"),
        ({**ok, "eta": np.array([1.0, 0.5, 0.1])}, "of one length"),
        ({**ok, "eta": np.array([0.5, 1.0])}, "η must be < 1 at every target point"),
        ({**ok, "sigma": np.array([0.4, 0.8]), "eta": np.array([0.5, 0.5])}, "λ must strictly decrease"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            dschedule.DoSSchedule(**kw)
    same = {"alpha": np.array([1.0, 1.0]), "sigma": np.array([0.5, 0.5]), "eta": np.array([0.0, 0.0])}
    with pytest.raises(ValueError, match="strictly"):  # equal λ is not a decrease
        dschedule.DoSSchedule(**same)
    with pytest.raises(ValueError, match="leaves no room"):
        dschedule.DoSSchedule.build(5, alphas_cumprod=np.linspace(0.99, 0.5, 400), t1=500)


def test_dos_schedule_tables_are_float64_read_only_and_keep_their_timesteps() -> None:
    ac32 = dschedule.alphas_cumprod_from_config(None).astype(np.float32)
    eta32 = dschedule.eta_schedule().astype(np.float32)
    ts = np.array([499, 250, 0])
    s = dschedule.DoSSchedule.from_alphas_cumprod(ac32, ts, eta32)
    assert s.alpha.dtype == s.sigma.dtype == s.eta.dtype == np.float64  # float32 tables are widened first
    np.testing.assert_array_equal(s.timesteps, ts)
    assert s.alpha[0] == np.sqrt(np.float64(ac32[499]))
    for table in (s.A, s.lam, s.k):
        assert not table.flags.writeable  # shared by every call: read-only
    paper = dschedule.DoSSchedule.build(3, variant="paper")
    np.testing.assert_array_equal(paper.eta, dschedule.eta_schedule(1000, 500, "paper")[paper.timesteps])
    with pytest.raises(ValueError, match="leaves no room in a 500-step schedule for the 'paper' grid"):
        dschedule.DoSSchedule.build(3, alphas_cumprod=np.linspace(0.99, 0.5, 500), variant="paper")


# ---- methods.dossr.solvers -------------------------------------------------------------------------------
from methods.dossr import solvers  # noqa: E402


def _sched() -> dschedule.DoSSchedule:
    return dschedule.DoSSchedule.build(3)


def test_start_state_is_alpha_x_hat0_plus_sigma_noise() -> None:
    s = _sched()
    x_hat0, noise = torch.full((1, 4, 2, 2), 2.0), torch.full((1, 4, 2, 2), 3.0)
    zero = torch.zeros_like(x_hat0)
    torch.testing.assert_close(solvers.start_state(x_hat0, s, zero), float(s.alpha[0]) * x_hat0)
    torch.testing.assert_close(solvers.start_state(zero, s, noise), float(s.sigma[0]) * noise)
    assert float(s.alpha[0]) != float(s.alpha[1]) and float(s.sigma[0]) != float(s.sigma[1])


def test_randn_like_uses_the_generator_and_follows_x() -> None:
    x = torch.zeros(2, 3, dtype=torch.float16)
    state = torch.random.get_rng_state()
    a = solvers.randn_like(x, torch.Generator().manual_seed(4))
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is not touched
    assert a.dtype == torch.float16 and a.shape == (2, 3)
    want = torch.randn((2, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float32)
    assert torch.equal(a, want.half())  # drawn in float32, then cast
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # ... whatever the default dtype
    try:
        b = solvers.randn_like(x, torch.Generator().manual_seed(4))
    finally:
        torch.set_default_dtype(before)
    assert torch.equal(b, a)
    meta = solvers.randn_like(torch.zeros(2, 3, device="meta"), None)
    assert meta.device.type == "meta" and meta.dtype == torch.float32


def test_step_coefficients_edges_and_term_names() -> None:
    paper = dschedule.DoSSchedule.build(3, variant="paper")  # η = 1 at the start
    c0 = solvers.step_coefficients(paper, 0)
    assert (c0.linear, c0.d1, c0.d2) == (0.0, 0.0, 0.0)
    for i in (-1, 3):
        with pytest.raises(IndexError, match=f"update {i} out of range for 3 steps"):
            solvers.step_coefficients(paper, i)
    solver = solvers.DoSSDESolver(_sched(), order=3)
    x = torch.ones(1, 1, 2, 2)
    keys = [set(solver.step_terms(x, x * k, x, x)) for k in (1.0, 2.0, 4.0)]
    base = {"linear", "dosg", "pat", "noise"}
    assert keys == [base, base | {"pat_d1"}, base | {"pat_d1", "pat_d2"}]
    with pytest.raises(ValueError, match="undefined where η = 1"):
        solvers.predict_x0(x, x, alpha=0.5, sigma=0.5, eta=1.0, x_hat0=x, parameterization="paper")
    assert torch.isfinite(
        solvers.predict_x0(x, x, alpha=0.5, sigma=0.5, eta=0.999, x_hat0=x, parameterization="paper")
    ).all()
    with pytest.raises(ValueError, match="needs x̂0"):
        solvers.predict_x0(x, x, alpha=0.5, sigma=0.5, eta=0.5, parameterization="paper")
    with pytest.raises(ValueError, match="unknown parameterization 'ddim'"):
        solvers.predict_x0(x, x, alpha=0.5, sigma=0.5, parameterization="ddim")  # type: ignore[arg-type]


def test_solver_limits_at_an_infinite_lambda_and_the_sampling_rng() -> None:
    paper = dschedule.DoSSchedule.build(3, variant="paper")  # λ_0 = ∞: differences with it are 0
    solver = solvers.DoSSDESolver(paper, order=2)
    x = torch.ones(1, 1, 2, 2)
    solver.step_terms(x, x, x, x)
    second = solver.step_terms(x, 3 * x, x, x)
    assert torch.equal(second["pat_d1"], torch.zeros_like(x))
    u = torch.full((1, 1, 2, 2), 0.5)
    torch.testing.assert_close(  # the paper form's η defaults to 0: the DDPM x0 formula
        solvers.predict_x0(x, u, alpha=0.8, sigma=0.6, x_hat0=x, parameterization="paper"),
        solvers.predict_x0(x, u, alpha=0.8, sigma=0.6),
    )
    gen_x = solvers.randn_like(torch.zeros(2, 3, device="meta"), torch.Generator().manual_seed(0))
    assert gen_x.device.type == "meta"  # drawn on the generator's device (CPU), moved to x's
    sched = _sched()
    s = solvers.DoSSDESolver(sched, order=3)
    x0 = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    a = s.sample(x0, x0, lambda x, i: 0.5 * x, torch.Generator().manual_seed(7))
    b = s.sample(x0, x0, lambda x, i: 0.5 * x, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)


# ---- srbench.diffusion.color -----------------------------------------------------------------------------
from srbench.diffusion import color  # noqa: E402


def _pair(dtype: torch.dtype = torch.float32, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    img, ref = torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 16, 16, generator=g) * 0.5 + 0.2
    return img.to(device, dtype), ref.to(device, dtype)


@pytest.mark.parametrize("fix", ["adain", "wavelet", "ycbcr"])
def test_colour_fixes_compute_in_float32_or_float64_and_return_the_input_dtype(fix: str) -> None:
    img, ref = _pair()
    out32 = color.color_fix(img, ref, fix)
    low = color.color_fix(img.bfloat16(), ref.bfloat16(), fix)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, color.color_fix(img.bfloat16().float(), ref.bfloat16().float(), fix).bfloat16())
    out64 = color.color_fix(img.double(), ref.double(), fix)
    assert out64.dtype == torch.float64 and (out64 - out32.double()).abs().max() > 1e-12  # not via float32
    meta = color.color_fix(*_pair(device="meta"), fix)  # every table and kernel follows the device
    assert meta.device.type == "meta" and meta.shape == img.shape


def test_float64_inputs_keep_float64_accuracy_and_levels_are_used() -> None:
    img, ref = _pair(torch.float64)
    out = color.adain_color_fix(img, ref)
    assert (out.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))).abs().max() < 1e-12  # float32 would give ~1e-8
    assert (color.wavelet_color_fix(img, img) - img).abs().max() < 1e-12  # high + low telescopes to img
    two = color.wavelet_color_fix(img, ref, levels=2)
    assert (two - color.wavelet_color_fix(img, ref)).abs().max() > 1e-3  # levels reach the decomposition
    high, low = color.wavelet_decomposition(img, levels=2)
    assert (high + low - img).abs().max() < 1e-12


def test_adain_eps_keeps_a_flat_image_finite() -> None:
    flat, ref = torch.full((1, 3, 8, 8), 0.3), _pair()[1][..., :8, :8]
    out = color.adain_color_fix(flat, ref)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.mean(dim=(2, 3)), ref.mean(dim=(2, 3)))


def test_bt601_ycbcr_values_and_clamps() -> None:
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    torch.testing.assert_close(color.rgb_to_ycbcr(white).flatten(), torch.tensor([235, 128, 128]) / 255.0)
    torch.testing.assert_close(color.rgb_to_ycbcr(black).flatten(), torch.tensor([16, 128, 128]) / 255.0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(
        color.rgb_to_ycbcr(red).flatten(),
        (torch.tensor([65.481, -37.797, 112.0]) + torch.tensor([16, 128, 128])) / 255,
    )
    torch.testing.assert_close(color.ycbcr_to_rgb(color.rgb_to_ycbcr(red)), red, atol=2e-3, rtol=0)
    assert color.rgb_to_ycbcr(torch.full((1, 3, 1, 1), 3.0)).max() == 1.0  # clamped like InvSR's
    assert color.rgb_to_ycbcr(torch.full((1, 3, 1, 1), -3.0)).min() == 0.0
    assert color.ycbcr_to_rgb(torch.ones(1, 3, 1, 1)).max() == 1.0  # R, B above 1 before the clamp
    assert color.ycbcr_to_rgb(torch.zeros(1, 3, 1, 1)).min() == 0.0  # R, B below 0 before the clamp


def test_colour_fix_names() -> None:
    img, ref = _pair()
    for off in (None, "none", "nofix", "NoFix"):
        assert color.color_fix(img, ref, off) is img
    for name, fn in (
        ("adain", color.adain_color_fix),
        ("wavelet", color.wavelet_color_fix),
        ("ycbcr", color.ycbcr_color_fix),
    ):
        assert torch.equal(color.color_fix(img, ref, name.upper()), fn(img, ref))
    with pytest.raises(ValueError, match="unknown colour fix 'sepia'"):
        color.color_fix(img, ref, "sepia")
    with pytest.raises(ValueError, match="one shape"):
        color.adain_color_fix(img, ref[..., :8])


# ---- methods.dmsr.pipeline -------------------------------------------------------------------------------
from methods.dmsr.pipeline import DMSRPipeline, multistep_timesteps  # noqa: E402


@pytest.fixture(scope="module")
def dmsr_parts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from methods.dmsr.checkpoint import PAPER_PROMPT, load_checkpoint
    from methods.dmsr.testing import save_tiny_dmsr
    from srbench.diffusion.prompts import PromptEmbeddingCache
    from srbench.diffusion.schedules import alphas_cumprod_of
    from srbench.diffusion.sd import load_sd_components
    from srbench.testing.tiny_sd import save_tiny_sd

    root = tmp_path_factory.mktemp("dmsr-kills")
    sd_folder = save_tiny_sd(root / "sd")
    ck = load_checkpoint(save_tiny_dmsr(root / "ck", sd_folder, seed=2))
    sd = load_sd_components(sd_folder)
    emb = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder).encode(PAPER_PROMPT)
    return {
        "estimator": ck.estimator,
        "encoder": ck.encoder,
        "unet": sd.unet,
        "vae": sd.vae,
        "alphas_cumprod": alphas_cumprod_of(sd.scheduler),
        "prompt_embeds": emb,
    }


def _lr(seed: int = 3) -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_dmsr_pipeline_moves_inputs_to_each_network(dmsr_parts: dict) -> None:
    import copy

    parts = {k: copy.deepcopy(v) for k, v in dmsr_parts.items()}
    for k in ("estimator", "encoder", "unet", "vae"):
        parts[k] = parts[k].to("meta")
    pipe = DMSRPipeline(**parts)  # LR, t, prompt on the CPU; every network on another device
    for timestep in (None, 120):
        out, _ = pipe(_lr(), 2, timestep=timestep)
        assert out.device.type == "meta" and out.shape == (1, 3, 64, 64)
    # and in another dtype (the estimator stays float32, as the method keeps it)
    low = {k: copy.deepcopy(v) for k, v in dmsr_parts.items()}
    for k in ("encoder", "unet", "vae"):
        low[k] = low[k].to(torch.bfloat16)
    out, _ = DMSRPipeline(**low)(_lr(), 2)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@torch.no_grad()
def test_dmsr_pipeline_defaults_results_and_fixed_timestep_clamp(dmsr_parts: dict) -> None:
    pipe = DMSRPipeline(**dmsr_parts)
    assert pipe.t_max == 499 and pipe.scale == 4
    lr = _lr()
    out, t_hat = pipe(lr)
    assert torch.equal(out, pipe(lr, 1)[0])
    i_lr = pipe.upsample(lr)
    _, t = pipe.estimate(i_lr)
    x = pipe.encode(i_lr, t)
    res = pipe.denoise(x, t_hat, 3)
    assert [int(v) for v in res.timesteps] == [int(v) for v in multistep_timesteps(t_hat, 3, 499)]
    torch.testing.assert_close(res.eps, pipe.predict_eps(x, res.timesteps[0]).float())
    torch.testing.assert_close(pipe.denoise(x, t_hat).z0, pipe.denoise(x, t_hat, 1).z0)
    seen: list[int] = []
    hook = pipe.unet.register_forward_pre_hook(lambda _m, args: seen.append(int(args[1].flatten()[0])))
    try:
        _, fixed = pipe(lr, 1, timestep=650)  # beyond t_max: clamped to the last index
    finally:
        hook.remove()
    assert seen == [499] and float(fixed[0]) == 650.0
    with pytest.raises(ValueError, match="t_max=1000 outside the schedule"):
        DMSRPipeline(**{**dmsr_parts, "t_max": 1000})
    DMSRPipeline(**{**dmsr_parts, "t_max": 999})


@torch.no_grad()
def test_dmsr_pipeline_uses_the_vae_latent_scale_and_shift(dmsr_parts: dict) -> None:
    import copy

    vae = copy.deepcopy(dmsr_parts["vae"])
    vae.register_to_config(scaling_factor=0.5, shift_factor=0.1)
    pipe = DMSRPipeline(**{**dmsr_parts, "vae": vae})
    assert (pipe.latent_scale, pipe.latent_shift) == (0.5, 0.1)
    i_lr, t = pipe.upsample(_lr()), torch.tensor([200])
    mean = dmsr_parts["encoder"].encode_mean(i_lr * 2 - 1, t)
    torch.testing.assert_close(pipe.encode(i_lr, t), (mean - 0.1) * 0.5)  # X = s (mean − shift)
    seen = []
    hook = vae.decoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    try:
        z0 = torch.ones(1, 4, 8, 8)
        pipe.decode(z0)
    finally:
        hook.remove()
    torch.testing.assert_close(seen[0], vae.post_quant_conv(z0 / 0.5 + 0.1))  # D(z / s + shift)
    bare = copy.deepcopy(dmsr_parts["vae"])
    bare.register_to_config(scaling_factor=None, shift_factor=None)
    assert (DMSRPipeline(**{**dmsr_parts, "vae": bare}).latent_scale, 0.0) == (0.18215, 0.0)


# ---- srbench.metrics -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def psnr_suite():  # type: ignore[no-untyped-def]
    from srbench.metrics import MetricSuite

    return MetricSuite(["psnr", "psnr-rgb", "niqe"])


def _img(h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_metrics_clamp_inputs_and_crop_to_the_common_size(psnr_suite) -> None:  # type: ignore[no-untyped-def]
    sr, hr = _img(40, 56, 0), _img(40, 56, 1)
    wild = sr * 1.6 - 0.3  # out of [0, 1] both ways: scored as the clamped image
    assert psnr_suite.score(wild, hr)["psnr-rgb"] == psnr_suite.score(wild.clamp(0, 1), hr)["psnr-rgb"]
    assert psnr_suite.score(sr, wild)["psnr-rgb"] == psnr_suite.score(sr, wild.clamp(0, 1))["psnr-rgb"]
    big = torch.cat([hr, _img(40, 8, 2)], dim=2)  # HR wider than SR (H != W): the common top-left region
    assert psnr_suite.score(sr, big)["psnr-rgb"] == pytest.approx(
        psnr_suite.score(sr, hr)["psnr-rgb"], abs=1e-12
    )
    tall = torch.cat([hr, _img(8, 56, 3)], dim=1)
    assert psnr_suite.score(sr, tall)["psnr-rgb"] == pytest.approx(
        psnr_suite.score(sr, hr)["psnr-rgb"], abs=1e-12
    )


def test_psnr_is_computed_in_float64(psnr_suite) -> None:  # type: ignore[no-untyped-def]
    sr, hr = _img(32, 32, 4), _img(32, 32, 5)
    mse = float(((sr - hr) ** 2).mean())
    # pyiqa: 10 log10(1 / (mse + 1e-8)); float32 inputs would be off by ~1e-6 dB
    assert psnr_suite.score(sr, hr)["psnr-rgb"] == pytest.approx(10 * math.log10(1 / (mse + 1e-8)), abs=1e-9)


def test_minimum_side_is_inclusive_and_directions_can_be_overridden(psnr_suite) -> None:  # type: ignore[no-untyped-def]
    from srbench.metrics import lower_better

    ok = psnr_suite.score(_img(96, 96, 6))  # NIQE needs 96 px: exactly 96 is scored
    assert math.isfinite(ok["niqe"])
    small = psnr_suite.score(_img(95, 120, 7))
    assert math.isnan(small["niqe"]) and "niqe" in psnr_suite.errors
    assert psnr_suite.lower_better("niqe") is True and lower_better("psnr") is False
    psnr_suite._lower_better["psnr"] = True  # pyiqa disagreeing with the table: pyiqa wins
    try:
        assert psnr_suite.lower_better("psnr") is True and psnr_suite.lower_better("niqe") is True
    finally:
        del psnr_suite._lower_better["psnr"]


# ---- methods.dmsr.losses ---------------------------------------------------------------------------------
class _NotATensor:  # pickled into a weights file: loading it must be refused (weights_only)
    pass


def test_latent_lpips_is_lpips_on_latent_vgg_features() -> None:
    import lpips

    from methods.dmsr.losses import LatentLPIPS

    torch.manual_seed(0)
    m = LatentLPIPS(width_div=16)
    assert all(not p.requires_grad for p in m.parameters())  # a frozen metric
    z0, z1 = torch.randn(3, 4, 16, 12), torch.randn(3, 4, 16, 12)
    f0, f1 = m.net(z0), m.net(z1)
    assert f0[0].shape[-2:] == (16, 12)  # the 4-channel first conv keeps the size (padding 1)
    # the lpips package's own normalisation and spatial average, head by head
    want = sum(
        lpips.spatial_average(
            getattr(m, f"lin{k}")((lpips.normalize_tensor(a) - lpips.normalize_tensor(b)) ** 2)
        )
        for k, (a, b) in enumerate(zip(f0, f1, strict=True))
    ).flatten()
    got = m(z0, z1)
    torch.testing.assert_close(got, want)
    for i in range(3):  # per sample, not over the batch
        torch.testing.assert_close(m(z0[i : i + 1], z1[i : i + 1]), got[i : i + 1])
    full = LatentLPIPS().state_dict()  # InvSR's file: heads on 64, 128, 256, 512, 512 channels
    assert [tuple(full[f"lin{k}.model.1.weight"].shape) for k in range(5)] == [
        (1, c, 1, 1) for c in (64, 128, 256, 512, 512)
    ]


def test_latent_lpips_file_variants(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from methods.dmsr.losses import LatentLPIPS
    from srbench.interface import SRBenchError

    torch.manual_seed(1)
    three = LatentLPIPS(in_chans=3, width_div=16)
    state = three.state_dict()
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    loaded = LatentLPIPS.from_file(tmp_path / "wrapped.pth", width_div=16)
    assert loaded.net.slice1[0].in_channels == 3  # the input width comes from the file
    assert torch.equal(loaded.lin2.model[1].weight, three.lin2.model[1].weight)
    torch.save({**state, "net.slice9.0.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    refused = r"not InvSR's latent LPIPS layout: unexpected net\.slice9\.0\.weight"
    with pytest.raises(SRBenchError, match=refused):
        LatentLPIPS.from_file(tmp_path / "extra.pth", width_div=16)  # strict: an unknown layer is refused
    torch.save({k: v for k, v in state.items() if k != "lin2.model.1.weight"}, tmp_path / "short.pth")
    with pytest.raises(SRBenchError, match=r"missing lin2\.model\.1\.weight \(1\)"):
        LatentLPIPS.from_file(tmp_path / "short.pth", width_div=16)  # the error names what is missing
    with pytest.raises(SRBenchError, match=r"other shape net\.slice1\.0\.weight"):
        LatentLPIPS.from_file(tmp_path / "wrapped.pth", width_div=8)  # widths of another network
    torch.save({**state, "meta": _NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(WeightsFileRefused, match="refused: the file holds more than tensors"):
        LatentLPIPS.from_file(tmp_path / "pickled.pth", width_div=16)  # never unpickles arbitrary objects


def test_dm_grad_pairs_each_sample_with_its_own_target() -> None:
    from methods.dmsr.losses import dm_grad
    from srbench.diffusion.schedules import scaled_linear_alphas_cumprod

    abar = scaled_linear_alphas_cumprod()
    z, x = torch.randn(3, 4, 4, 4), torch.randn(3, 4, 4, 4)  # an odd batch

    def eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 2.0 * x_t

    t = torch.tensor([10, 200, 400])
    g = dm_grad(eps, z, x, t, torch.zeros_like(z), abar)
    torch.testing.assert_close(g, 2.0 * abar[t].sqrt().view(-1, 1, 1, 1) * (z - x))


# ---- methods.dmsr.estimator ----------------------------------------------------------------------------
def test_estimator_normalises_with_torchvision_imagenet_statistics() -> None:
    import warnings

    import torchvision

    from methods.dmsr.estimator import TimestepEstimator

    preset = torchvision.models.VGG19_Weights.IMAGENET1K_V1.transforms()
    torch.manual_seed(3)
    est = TimestepEstimator(width_div=16).eval()
    assert est.mean.flatten().tolist() == pytest.approx(list(preset.mean))
    assert est.std.flatten().tolist() == pytest.approx(list(preset.std))
    img = torch.rand(2, 3, 32, 32)
    x = (img - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # softmax over an explicit dim: no implicit-dim warning
        ref = est.head(est.features(x).mean(dim=(2, 3)))
        torch.testing.assert_close(est.logits(img), ref)
        torch.testing.assert_close(est(img), torch.softmax(ref, -1) @ torch.arange(500.0))


def test_estimator_imagenet_file_is_loaded_strictly_and_safely(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from methods.dmsr.estimator import TimestepEstimator

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    file = tmp_path / "checkpoints" / "vgg19-dcbb9e9d.pth"
    est = TimestepEstimator()
    with pytest.raises(ValueError, match="width_div"):
        TimestepEstimator(width_div=16).load_imagenet_vgg19()
    # a file missing a layer is refused (strict), not half-loaded
    torch.save({"features.0.weight": est.features[0].weight.detach().clone()}, file)
    with pytest.raises(RuntimeError, match="Missing key"):
        est.load_imagenet_vgg19()
    # a pickled object other than tensors is refused (weights_only), the file is never executed
    torch.save({"features.0.weight": SimpleNamespace(a=1)}, file)
    with pytest.raises(WeightsFileRefused, match="refused: the file holds more than tensors"):
        est.load_imagenet_vgg19()
