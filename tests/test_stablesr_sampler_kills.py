"""StableSR sampler checks that mutation testing (``benchmarks/mutation.py --group stablesr_sampler``)
showed missing: the training schedule against its closed form, the respacing rule for other T, Ho et al.
2020's posterior (Eq. 6-7) on respaced betas over several noisy steps, DDIM at 0 < η < 1, per-sample
conditions and negative prompts in a batch, networks in float64, the step callback, tiles per call,
and validation of bad options.  References are computed here from the papers' formulas; the sampler
is only ever called through its own functions."""

from __future__ import annotations

import math

import pytest
import torch

from methods.stablesr.noise import randn_like_channels_last
from methods.stablesr.sampler import Guidance, StableSRSampler, respaced_timesteps, train_scheduler
from methods.stablesr.testing import tiny_sft_unet
from srbench.interface import SRBenchError


@pytest.fixture(scope="module")
def sampler() -> StableSRSampler:
    sft_unet, encoder = tiny_sft_unet(seed=8)
    return StableSRSampler(sft_unet, encoder, tile_batch_size=2)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _eps(
    s: StableSRSampler, z: torch.Tensor, z_lr: torch.Tensor, tau: int, cond: torch.Tensor
) -> torch.Tensor:
    """ε of the networks on the whole latent (one tile), float64."""
    t = torch.full((z.shape[0],), tau)
    with torch.no_grad():
        return s.sft_unet(z, t, cond, s.encoder(z_lr, t)).double()


def _cond(seed: int, b: int = 1) -> torch.Tensor:
    return torch.randn(b, 8, 32, generator=_gen(seed))


def test_train_schedule_is_sd_scaled_linear() -> None:
    # ldm make_beta_schedule("linear", 1000, 0.00085, 0.012): β = linspace(√β₀, √β₁, T)²; ᾱ = Π(1 − β)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sched = train_scheduler()
    torch.testing.assert_close(sched.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-5, atol=0)
    assert sched.config.prediction_type == "epsilon" and not sched.config.clip_sample
    assert sched.config.variance_type == "fixed_small" and len(sched.alphas_cumprod) == 1000


@pytest.mark.parametrize(("steps", "T"), [(5, 100), (3, 11), (2, 10)])
def test_respacing_rule_for_other_train_lengths(steps: int, T: int) -> None:
    # improved-diffusion space_timesteps: stride (T−1)/(N−1) accumulated in float, Python round
    want, acc = [], 0.0
    for _ in range(steps):
        want.append(round(acc))
        acc += (T - 1) / (steps - 1)
    assert respaced_timesteps(steps, T) == want
    assert respaced_timesteps(5, 100) == [0, 25, 50, 74, 99]  # 24.75, 49.5 (half to even), 74.25


def test_respacing_rejects_out_of_range_steps() -> None:
    for bad in (0, -3, 1001):
        with pytest.raises(ValueError, match=rf"steps must be in 1\.\.1000, got {bad}"):
            respaced_timesteps(bad)
    with pytest.raises(ValueError, match=r"1\.\.10,"):
        respaced_timesteps(11, 10)
    assert respaced_timesteps(10, 10) == list(range(10))


def test_ddpm_posterior_eq7_over_several_noisy_steps(sampler: StableSRSampler) -> None:
    """Four respaced steps, three of them drawing noise: x_{t−1} = μ̃(x_t, x̂₀) + √β̃·n (Ho et al. Eq. 6-7,
    β' = 1 − ᾱ_t/ᾱ_prev), ᾱ from the closed-form schedule, x̂₀ unclipped (it leaves [-1, 1] here)."""
    z_lr = 3 * torch.randn(1, 4, 16, 16, generator=_gen(21))
    cond = _cond(22)
    out = sampler.sample(z_lr, Guidance(cond), steps=4, tile=16, stride=8, generator=_gen(23))

    abar = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)
    taus = [999, 666, 333, 0]
    g = _gen(23)
    z = torch.randn(z_lr.shape, generator=g).double()
    x0_range = 0.0
    for k, tau in enumerate(taus):
        eps = _eps(sampler, z.float(), z_lr, tau, cond)
        a_t, a_prev = abar[tau], (abar[taus[k + 1]] if k + 1 < 4 else torch.tensor(1.0, dtype=torch.float64))
        beta = 1 - a_t / a_prev
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x0_range = max(x0_range, x0.abs().max().item())
        c0, ct = a_prev.sqrt() * beta / (1 - a_t), (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t)
        z = c0 * x0 + ct * z
        if k + 1 < 4:
            z = z + (beta * (1 - a_prev) / (1 - a_t)).sqrt() * torch.randn(z.shape, generator=g)
    assert x0_range > 1.5  # clipping x̂₀ to [-1, 1] would change the result
    torch.testing.assert_close(out, z.float(), atol=5e-4, rtol=1e-4)


def test_ddim_half_eta_three_steps(sampler: StableSRSampler) -> None:
    """DDIM (Song et al. Eq. 12 with σ of Eq. 16) at η = 0.5 over three steps, final ᾱ_prev = 1."""
    z_lr = torch.randn(1, 4, 16, 16, generator=_gen(31))
    cond = _cond(32)
    seen: list[tuple[int, int, torch.Tensor]] = []
    out = sampler.sample(
        z_lr,
        Guidance(cond),
        steps=3,
        tile=16,
        stride=8,
        sampler="ddim",
        eta=0.5,
        generator=_gen(33),
        callback=lambda k, tau, z: seen.append((k, tau, z.clone())),
    )
    abar = sampler.alphas_cumprod.double()
    g = _gen(33)
    z = torch.randn(z_lr.shape, generator=g).double()
    for k, (tau, prev) in enumerate(((999, 500), (500, 0), (0, None))):
        eps = _eps(sampler, z.float(), z_lr, tau, cond)
        a_t, a_prev = abar[tau].item(), (abar[prev].item() if prev is not None else 1.0)
        x0 = (z - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        sigma = 0.5 * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        z = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if prev is not None:
            z = z + sigma * torch.randn(z.shape, generator=g)
        assert seen[k][:2] == (k, tau)
        torch.testing.assert_close(seen[k][2], z.float(), atol=5e-4, rtol=1e-4)
    assert len(seen) == 3 and torch.equal(seen[-1][2], out)


def test_ddim_eta0_is_deterministic_and_eta_noise_is_seeded(sampler: StableSRSampler) -> None:
    z_lr = torch.randn(1, 4, 16, 16, generator=_gen(41))
    run = lambda eta, seed: sampler.sample(  # noqa: E731
        z_lr, Guidance(_cond(42)), steps=2, tile=16, stride=8, sampler="ddim", eta=eta, generator=_gen(seed)
    )
    torch.testing.assert_close(run(0.0, 1), run(0.0, 1))
    # η = 0 draws only x_T, η = 1 draws at every step but the last
    assert not torch.allclose(run(0.0, 1), run(0.0, 2))
    assert not torch.allclose(run(1.0, 1), run(0.0, 1))


def test_batch_with_per_sample_conditions_and_negatives(sampler: StableSRSampler) -> None:
    """Two images, two prompts, two negative prompts, two tiles per image: each image's ε is what it gets
    alone (the conditions follow the tile-major batch order)."""
    g = _gen(51)
    z, z_lr = torch.randn(2, 4, 16, 24, generator=g), torch.randn(2, 4, 16, 24, generator=g)
    pos, neg = _cond(52, 2), _cond(53, 2)
    for guid in (Guidance(pos), Guidance(pos, neg, 2.5)):
        with torch.no_grad():
            both = sampler.predict_eps(z, z_lr, 300, guid, tile=16, stride=8)
            for i in range(2):
                one = Guidance(
                    guid.cond[i : i + 1],
                    None if guid.negative is None else guid.negative[i : i + 1],
                    guid.scale,
                )
                alone = sampler.predict_eps(z[i : i + 1], z_lr[i : i + 1], 300, one, tile=16, stride=8)
                torch.testing.assert_close(both[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    # one prompt for the whole batch is broadcast to every image
    with torch.no_grad():
        shared = sampler.predict_eps(z, z_lr, 300, Guidance(pos[:1], neg[:1], 2.5), tile=16, stride=8)
        first = sampler.predict_eps(z[:1], z_lr[:1], 300, Guidance(pos[:1], neg[:1], 2.5), tile=16, stride=8)
        second = sampler.predict_eps(z[1:], z_lr[1:], 300, Guidance(pos[:1], neg[:1], 2.5), tile=16, stride=8)
    torch.testing.assert_close(shared, torch.cat([first, second]), atol=1e-5, rtol=1e-5)


def test_guidance_without_negative_is_the_plain_model(sampler: StableSRSampler) -> None:
    pos, neg = _cond(61), _cond(62)
    assert not Guidance(pos).active and not Guidance(pos, None, 3.0).active
    assert not Guidance(pos, neg, 1.0).active and Guidance(pos, neg, 0.0).active
    z, z_lr = torch.randn(1, 4, 16, 16, generator=_gen(63)), torch.randn(1, 4, 16, 16, generator=_gen(64))
    with torch.no_grad():
        plain = sampler.predict_eps(z, z_lr, 700, Guidance(pos), tile=16, stride=8)
        assert torch.equal(
            sampler.predict_eps(z, z_lr, 700, Guidance(pos, None, 3.0), tile=16, stride=8), plain
        )
    torch.testing.assert_close(plain.double(), _eps(sampler, z, z_lr, 700, pos), atol=1e-5, rtol=1e-5)


def test_float64_networks_and_float64_blend_give_float32(sampler: StableSRSampler) -> None:
    sft64, enc64 = tiny_sft_unet(seed=8)
    s64 = StableSRSampler(sft64.double(), enc64.double(), tile_batch_size=3, blend_dtype="float64")
    assert s64.blend_dtype == torch.float64
    g = _gen(71)
    z, z_lr = torch.randn(1, 4, 16, 24, generator=g), torch.randn(1, 4, 16, 24, generator=g)
    guid = Guidance(_cond(72), _cond(73), 2.0)
    with torch.no_grad():
        e64 = s64.predict_eps(z, z_lr, 250, guid, tile=16, stride=8)
        e32 = sampler.predict_eps(z, z_lr, 250, guid, tile=16, stride=8)
    assert e64.dtype == torch.float32
    torch.testing.assert_close(e64, e32, atol=1e-4, rtol=1e-4)
    out = s64.sample(z_lr, Guidance(_cond(72)), steps=2, tile=16, stride=8, generator=_gen(74))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize(("tile_batch_size", "calls"), [(0, 3), (1, 3), (2, 2), (5, 1)])
def test_tiles_per_network_call(sampler: StableSRSampler, tile_batch_size: int, calls: int) -> None:
    s = StableSRSampler(sampler.sft_unet, sampler.encoder, tile_batch_size=tile_batch_size)
    assert s.tile_batch_size == max(1, tile_batch_size)
    sizes: list[int] = []
    hook = s.sft_unet.unet.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            s.predict_eps(
                torch.randn(1, 4, 16, 32), torch.randn(1, 4, 16, 32), 10, Guidance(_cond(81)), 16, 8
            )
    finally:
        hook.remove()
    assert len(sizes) == calls and sum(sizes) == 3  # 3 tiles across


def test_initial_latent_authors_layout_and_validation(sampler: StableSRSampler) -> None:
    z_lr = torch.randn(1, 4, 8, 16, generator=_gen(91))
    a999 = float(
        torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2, 0)[-1]
    )
    got = sampler.initial_latent(z_lr, "noised_lr", _gen(92), "authors")
    n = randn_like_channels_last(z_lr.shape, _gen(92), z_lr.device)
    torch.testing.assert_close(got, math.sqrt(a999) * z_lr + math.sqrt(1 - a999) * n, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(got, sampler.initial_latent(z_lr, "noised_lr", _gen(92)))
    with pytest.raises(ValueError, match=r"noise_layout must be one of .*got 'nchw'"):
        sampler.initial_latent(z_lr, "noise", None, "nchw")
    with pytest.raises(ValueError, match=r"init_latent must be one of .*got 'lr'"):
        sampler.initial_latent(z_lr, "lr", None)
    with pytest.raises(ValueError, match=r"sampler must be one of .*got 'euler'"):
        sampler.sample(z_lr, Guidance(_cond(93)), steps=2, sampler="euler")


def test_initial_latent_authors_pure_noise_discards_the_channels_last_draw(sampler: StableSRSampler) -> None:
    # the 128→512 script draws randn_like(init_latent) (channels_last), then x_T = torch.randn(shape)
    z_lr = torch.randn(1, 4, 8, 16, generator=_gen(94))
    g = _gen(95)
    randn_like_channels_last(z_lr.shape, g, z_lr.device)
    want = torch.randn(z_lr.shape, generator=g)
    torch.testing.assert_close(
        sampler.initial_latent(z_lr, "noise", _gen(95), "authors"), want, atol=0, rtol=0
    )


def test_blend_dtype_error_names_the_method() -> None:
    sft_unet, encoder = tiny_sft_unet(seed=8)
    with pytest.raises(SRBenchError, match=r"^stablesr: blend_dtype must be one of"):
        StableSRSampler(sft_unet, encoder, blend_dtype="float16")


def test_fusion_dtype_and_weights_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fusion accumulates in ``blend_dtype`` and the Gaussian weights are evaluated once per tile size
    for the whole sampling loop (module docstring; the official ``p_sample_loop_canvas`` does the same)."""
    from methods.stablesr import sampler as mod

    weight_calls: list[tuple[int, int]] = []
    real_weights, real_map = mod.gaussian_weights_mixture, mod.tiled_map

    def counting_weights(h: int, w: int, *a: object, **k: object) -> torch.Tensor:
        weight_calls.append((h, w))
        return real_weights(h, w, *a, **k)

    result_dtypes: list[torch.dtype] = []

    def recording_map(*a: object, **k: object) -> torch.Tensor:
        out = real_map(*a, **k)
        result_dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(mod, "gaussian_weights_mixture", counting_weights)
    monkeypatch.setattr(mod, "tiled_map", recording_map)
    sft_unet, encoder = tiny_sft_unet(seed=8)
    for blend in (torch.float32, torch.float64):
        weight_calls.clear()
        result_dtypes.clear()
        s = StableSRSampler(sft_unet, encoder, blend_dtype=blend)
        out = s.sample(
            torch.randn(1, 4, 16, 24), Guidance(_cond(96)), steps=3, tile=16, stride=8, generator=_gen(97)
        )
        assert out.dtype == torch.float32
        assert result_dtypes == [blend] * 3
        assert weight_calls == [(16, 16)]  # 2 tiles x 3 steps, one evaluation


def test_step_noise_is_float32_under_a_float64_default() -> None:
    """The per-step DDIM noise is drawn in float32 whatever torch's default dtype (a float64 draw would
    turn the latent float64)."""
    sft_unet, encoder = tiny_sft_unet(seed=8)
    s = StableSRSampler(sft_unet, encoder)
    z_lr = torch.randn(1, 4, 16, 16)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = s.sample(
            z_lr,
            Guidance(_cond(98).float()),
            steps=2,
            tile=16,
            stride=8,
            sampler="ddim",
            eta=1.0,
            generator=_gen(99),
        )
    finally:
        torch.set_default_dtype(before)
    assert out.dtype == torch.float32
