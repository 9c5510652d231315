"""StableSR sampler on tiny random networks: respacing, DDPM/DDIM against the written-out formulas,
aggregation (Eq. 7) against a hand-fused reference, guidance (Eq. 8), timesteps fed to the networks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from methods.stablesr.sampler import Guidance, StableSRSampler, respaced_timesteps
from methods.stablesr.testing import tiny_sft_unet


@pytest.fixture(scope="module")
def sampler() -> StableSRSampler:
    sft_unet, encoder = tiny_sft_unet(seed=4)
    return StableSRSampler(sft_unet, encoder, tile_batch_size=2)


def _guidance(b: int = 1, seed: int = 0) -> Guidance:
    g = torch.Generator().manual_seed(seed)
    return Guidance(cond=torch.randn(1, 8, 32, generator=g).expand(b, -1, -1))


def _eps_full(
    s: StableSRSampler, z: torch.Tensor, z_lr: torch.Tensor, tau: int, cond: torch.Tensor
) -> torch.Tensor:
    t = torch.full((z.shape[0],), tau)
    return s.sft_unet(z, t, cond, s.encoder(z_lr, t))


def test_respacing_matches_official_space_timesteps() -> None:
    t200 = respaced_timesteps(200)
    assert len(t200) == 200 and t200[:3] == [0, 5, 10] and t200[-2:] == [994, 999]
    assert {b - a for a, b in itertools.pairwise(t200)} == {5, 6}
    assert respaced_timesteps(4) == [0, 333, 666, 999]  # StableSR-Turbo
    assert respaced_timesteps(1) == [0]
    assert respaced_timesteps(1000) == list(range(1000))
    # the official loop accumulates a float stride: for 21 steps it differs from round(linspace)
    assert respaced_timesteps(21)[10] == 499  # 10 x 49.95 summed is 499.4999..; round(linspace): 500
    with pytest.raises(ValueError):
        respaced_timesteps(1001)


def test_ddpm_single_tile_equals_plain_respaced_ddpm(sampler: StableSRSampler) -> None:
    """One 16x16 tile through the aggregation code == the ldm respaced posterior written out."""
    z_lr = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    guid = _guidance()
    out = sampler.sample(z_lr, guid, steps=3, tile=16, stride=8, generator=torch.Generator().manual_seed(7))

    abar = sampler.alphas_cumprod.double()
    taus = respaced_timesteps(3)[::-1]  # 999, 500, 0
    g = torch.Generator().manual_seed(7)
    z = torch.randn(z_lr.shape, generator=g)
    with torch.no_grad():
        for k, tau in enumerate(taus):
            eps = _eps_full(sampler, z, z_lr, tau, guid.cond).double()
            a_t = abar[tau]
            a_prev = abar[taus[k + 1]] if k + 1 < len(taus) else torch.tensor(1.0, dtype=torch.float64)
            beta = 1 - a_t / a_prev  # respaced beta
            x0 = (z.double() - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            mean = (
                a_prev.sqrt() * beta / (1 - a_t) * x0
                + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * z.double()
            )
            var = beta * (1 - a_prev) / (1 - a_t)
            noise = torch.randn(z.shape, generator=g) if tau > 0 else torch.zeros(z.shape)
            z = (mean + var.clamp(min=1e-20).sqrt() * noise).float()
    torch.testing.assert_close(out, z, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_the_ddim_update(sampler: StableSRSampler, eta: float) -> None:
    z_lr = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    guid = _guidance()
    out = sampler.sample(
        z_lr,
        guid,
        steps=2,
        tile=16,
        stride=8,
        sampler="ddim",
        eta=eta,
        generator=torch.Generator().manual_seed(3),
    )
    abar = sampler.alphas_cumprod.double()
    g = torch.Generator().manual_seed(3)
    z = torch.randn(z_lr.shape, generator=g)
    with torch.no_grad():
        for tau, prev in ((999, 0), (0, None)):
            eps = _eps_full(sampler, z, z_lr, tau, guid.cond).double()
            a_t, a_prev = abar[tau].item(), (abar[prev].item() if prev is not None else 1.0)
            x0 = (z.double() - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            zn = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - sigma**2) * eps
            if sigma > 0:
                zn = zn + sigma * torch.randn(z.shape, generator=g)
            z = zn.float()
    torch.testing.assert_close(out, z, atol=2e-4, rtol=1e-4)


def _mixture_weights(t: int) -> torch.Tensor:
    # StableSR _gaussian_weights: var 0.01, x centred at (T-1)/2, y at T/2
    x = torch.exp(-((torch.arange(t) - (t - 1) / 2) ** 2) / (t * t) / 0.02)
    y = torch.exp(-((torch.arange(t) - t / 2) ** 2) / (t * t) / 0.02)
    return torch.outer(y, x).double()


def test_aggregation_fuses_tile_eps_with_gaussian_weights(sampler: StableSRSampler) -> None:
    g = torch.Generator().manual_seed(5)
    z, z_lr = torch.randn(2, 4, 24, 32, generator=g), torch.randn(2, 4, 24, 32, generator=g)
    guid = _guidance(b=2)
    with torch.no_grad():
        eps = sampler.predict_eps(z, z_lr, 421, guid, tile=16, stride=8)
        num = torch.zeros(z.shape, dtype=torch.float64)
        den = torch.zeros(z.shape[-2:], dtype=torch.float64)
        w = _mixture_weights(16)
        for y in (0, 8):  # last tile flush with the border
            for x in (0, 8, 16):
                e = _eps_full(
                    sampler, z[..., y : y + 16, x : x + 16], z_lr[..., y : y + 16, x : x + 16], 421, guid.cond
                )
                num[..., y : y + 16, x : x + 16] += e.double() * w
                den[y : y + 16, x : x + 16] += w
    ref = (num / den).float()
    torch.testing.assert_close(eps, ref, atol=1e-5, rtol=1e-5)
    # how many tiles share a UNet call does not change the result
    one_by_one = StableSRSampler(sampler.sft_unet, sampler.encoder, tile_batch_size=1)
    with torch.no_grad():
        torch.testing.assert_close(one_by_one.predict_eps(z, z_lr, 421, guid, tile=16, stride=8), eps)
    # encoding each LR tile differs from cropping the features of the whole LR latent (self-attention)
    with torch.no_grad():
        whole = _eps_full(sampler, z, z_lr, 421, guid.cond)
    assert not torch.allclose(eps, whole, atol=1e-3)


def test_guidance_eq8(sampler: StableSRSampler) -> None:
    g = torch.Generator().manual_seed(6)
    z, z_lr = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    pos, neg = torch.randn(1, 8, 32, generator=g), torch.randn(1, 8, 32, generator=g)
    with torch.no_grad():
        e_pos = sampler.predict_eps(z, z_lr, 600, Guidance(pos), tile=16, stride=8)
        e_neg = sampler.predict_eps(z, z_lr, 600, Guidance(neg), tile=16, stride=8)
        e_s = sampler.predict_eps(z, z_lr, 600, Guidance(pos, neg, 3.0), tile=16, stride=8)
        e_1 = sampler.predict_eps(z, z_lr, 600, Guidance(pos, neg, 1.0), tile=16, stride=8)
        e_0 = sampler.predict_eps(z, z_lr, 600, Guidance(pos, neg, 0.0), tile=16, stride=8)
    torch.testing.assert_close(e_s, e_neg + 3.0 * (e_pos - e_neg), atol=1e-4, rtol=1e-4)
    assert torch.equal(e_1, e_pos)  # s = 1: the plain model, no second pass
    torch.testing.assert_close(e_0, e_neg, atol=1e-4, rtol=1e-4)  # s = 0: the negative prompt alone


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_networks_see_the_original_timesteps(sampler: StableSRSampler, steps: int) -> None:
    seen_unet: list[int] = []
    seen_enc: list[int] = []
    h1 = sampler.sft_unet.unet.register_forward_pre_hook(lambda m, a: seen_unet.append(int(a[1][0])))
    h2 = sampler.encoder.register_forward_pre_hook(lambda m, a: seen_enc.append(int(a[1][0])))
    try:
        z_lr = torch.randn(1, 4, 16, 16)
        out = sampler.sample(
            z_lr, _guidance(), steps=steps, tile=16, stride=8, generator=torch.Generator().manual_seed(0)
        )
    finally:
        h1.remove()
        h2.remove()
    expected = respaced_timesteps(steps)[::-1]
    assert seen_unet == expected and seen_enc == expected
    assert out.shape == z_lr.shape and torch.isfinite(out).all()


def test_sampling_is_deterministic_per_generator(sampler: StableSRSampler) -> None:
    z_lr = torch.randn(1, 4, 16, 24)  # two tiles
    run = lambda seed: sampler.sample(  # noqa: E731
        z_lr, _guidance(), steps=2, tile=16, stride=8, generator=torch.Generator().manual_seed(seed)
    )
    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_initial_latents(sampler: StableSRSampler) -> None:
    z_lr = torch.randn(1, 4, 16, 16)
    noise = sampler.initial_latent(z_lr, "noise", torch.Generator().manual_seed(9))
    noised = sampler.initial_latent(z_lr, "noised_lr", torch.Generator().manual_seed(9))
    a999 = sampler.alphas_cumprod[999].item()
    assert abs(math.sqrt(a999) - 0.06826) < 1e-4  # sqrt(abar_999) of SD's 1000-step schedule
    torch.testing.assert_close(noised, math.sqrt(a999) * z_lr + math.sqrt(1 - a999) * noise)
    with pytest.raises(ValueError, match="init_latent"):
        sampler.initial_latent(z_lr, "lr", None)
