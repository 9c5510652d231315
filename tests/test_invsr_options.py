"""InvSR sampler options of the authors' code (sampler_invsr.py + pipeline_stable_diffusion_inversion_sr.py):
the scheduler from the model folder driven as ``retrieve_timesteps`` does (bit for bit, float32
``scale_model_input`` divisor included), classifier-free guidance with the negative prompt, the tiled VAE,
and the noise predictor's config check -- on tiny random models saved as the hub publishes them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods.invsr  # noqa: F401  (registers "invsr")
from methods.invsr import pipeline as P
from methods.invsr.method import InvSR
from methods.invsr.noise_predictor import NoisePredictor, NoisePredictorConfig, save_tiny_noise_predictor
from srbench.interface import SRBenchError

TILE = 16


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from srbench.testing.tiny_sd import save_tiny_sd

    root = tmp_path_factory.mktemp("invsr-options")
    return {
        "sd": save_tiny_sd(root / "sd"),
        "sigma_min": save_tiny_sd(root / "sd-sigma-min", scheduler_config={"final_sigmas_type": "sigma_min"}),
        "dpm": save_tiny_sd(root / "sd-dpm", scheduler="DPMSolverMultistepScheduler"),
        "np": save_tiny_noise_predictor(root / "np.pth"),
    }


def _method(files: dict[str, Path], sd: str = "sd", **options: object) -> InvSR:
    m = InvSR(model=str(files[sd]), noise_predictor=str(files["np"]), chopping_size=TILE, **options)
    m.load("cpu")
    return m


def _lr(seed: int = 0, size: int = TILE, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _authors_call(
    sampler: P.InvSRSampler,
    lr: torch.Tensor,
    taus: list[int],
    seed: int,
    *,
    cfg_scale: float = 1.0,
    negative: str = P.NEGATIVE_PROMPT,
    vae_tiles: tuple[int, int] | None = None,
) -> torch.Tensor:
    """One call of the authors' StableDiffusionInvEnhancePipeline, written from its __call__ with
    diffusers' own scheduler (folder class and config) and VAE: retrieve_timesteps, add_noise,
    scale_model_input, CFG, step (+ their scheduler's unused randn), decode; ``vae_tiles`` = (latent,
    sample) tile sizes of sampler_invsr.py's enable_tiling."""
    g = torch.Generator().manual_seed(seed)
    unet, f_w = sampler.unet, sampler.noise_predictor
    vae = copy.deepcopy(sampler.vae)
    vae.disable_tiling()
    if vae_tiles is not None:
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = vae_tiles
    sched = type(sampler.sd.scheduler).from_config(sampler.sd.scheduler.config)
    n = lr.shape[0]
    guided = cfg_scale > 1
    assert sampler.prompts is not None
    emb = sampler.prompts.get(sampler.prompt, n)
    if guided:
        emb = torch.cat([sampler.prompts.get(negative, n), emb])
    # 5. retrieve_timesteps
    timesteps = torch.tensor(taus, dtype=torch.float32) - 1
    cache = sched.sigmas.flip(0)[1:]
    sigmas = cache[timesteps.long()]
    if sched.config.final_sigmas_type == "sigma_min":
        last = ((1 - sched.alphas_cumprod[0]) / sched.alphas_cumprod[0]) ** 0.5
    else:
        last = 0
    sched.sigmas = torch.cat([sigmas, torch.tensor([last], dtype=torch.float32)]).type(torch.float32)
    sched.timesteps = timesteps
    sched._step_index = None
    sched._begin_index = None
    # 6. latents
    noise = f_w(lr, timesteps[:1].repeat(n), generator=g)
    up = F.interpolate(lr, size=(4 * lr.shape[-2], 4 * lr.shape[-1]), mode="bicubic")
    z = vae.config.scaling_factor * vae.encode(up * 2 - 1).latent_dist.sample(generator=g)
    x = sched.add_noise(z, noise, timesteps[:1].repeat(n))
    # 8. denoising loop
    for t in timesteps:
        x_in = sched.scale_model_input(torch.cat([x] * 2) if guided else x, t)
        eps = unet(x_in, t, encoder_hidden_states=emb, return_dict=False)[0]
        if guided:
            e_u, e_t = eps.chunk(2)
            eps = e_u + cfg_scale * (e_t - e_u)
        x = sched.step(eps, t, x, generator=g, return_dict=False)[0]
        torch.randn(eps.shape, generator=g)  # their EulerDiscreteScheduler.step draws noise every step
    img = vae.decode(x / vae.config.scaling_factor, return_dict=False)[0]
    return (img / 2 + 0.5).clamp(0, 1)


# ---- the scheduler ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("taus", [[200], [200, 100, 50], [250, 214, 178, 142, 107, 71, 35]])
def test_sampler_is_the_authors_pipeline_bit_for_bit(files: dict[str, Path], taus: list[int]) -> None:
    m = _method(files)
    assert m.sampler is not None
    lr = _lr(3, batch=2)
    ref = _authors_call(m.sampler, lr, taus, seed=5)
    out = m.sampler.sample_tiles(lr, taus, torch.Generator().manual_seed(5))
    assert torch.equal(out, ref)  # float32 scale_model_input divisor, float32 sigma table, RNG order


def test_scheduler_comes_from_the_model_folder(files: dict[str, Path]) -> None:
    zero, sigma_min = _method(files), _method(files, "sigma_min")
    assert zero.sampler is not None and sigma_min.sampler is not None
    assert sigma_min.sampler.timestep_scheduler([200], torch.device("cpu")).sigmas[-1] > 0
    lr = _lr(4)
    a = sigma_min.sampler.sample_tiles(lr, [200, 100], torch.Generator().manual_seed(1))
    b = zero.sampler.sample_tiles(lr, [200, 100], torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)  # final_sigmas_type of the folder's config is honoured
    assert torch.equal(a, _authors_call(sigma_min.sampler, lr, [200, 100], seed=1))
    # a class whose sigma table is not the Euler one is refused by name; the override option fixes it
    with pytest.raises(SRBenchError, match="DPMSolverMultistepScheduler"):
        _method(files, "dpm")
    fixed = _method(files, "dpm", scheduler="EulerDiscreteScheduler")
    assert type(fixed.sampler.scheduler).__name__ == "EulerDiscreteScheduler"  # type: ignore[union-attr]
    with pytest.raises(SRBenchError, match="not a diffusers scheduler"):
        _method(files, scheduler="NoSuchScheduler")


# ---- classifier-free guidance ----------------------------------------------------------------------------
def test_cfg_above_one_guides_with_the_negative_prompt(files: dict[str, Path]) -> None:
    plain, guided = _method(files), _method(files, cfg_scale=3.0)
    other_negative = _method(files, cfg_scale=3.0, negative_prompt="a painting")
    assert P.NEGATIVE_PROMPT.endswith("noisy,painting, drawing, sketch, oil painting")  # the code's string
    assert guided.sampler is not None
    batches: list[int] = []
    hook = guided.sampler.unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    lr = _lr(6)
    try:
        out = guided.sampler.sample_tiles(lr, [200, 100], torch.Generator().manual_seed(2))
    finally:
        hook.remove()
    assert batches == [2, 2]  # [negative; positive] in one UNet batch per step
    assert torch.equal(out, _authors_call(guided.sampler, lr, [200, 100], seed=2, cfg_scale=3.0))
    base = plain.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(guided.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2)), base)
    assert not torch.equal(
        other_negative.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2)),
        guided.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2)),
    )
    # cfg_scale <= 1: no guidance, the negative prompt is not used (the pipeline's condition)
    for scale in (1.0, 0.5):
        m = _method(files, cfg_scale=scale, negative_prompt="anything")
        assert torch.equal(m.upscale(lr, steps=2, generator=torch.Generator().manual_seed(2)), base)


# ---- tiled VAE -------------------------------------------------------------------------------------------
def test_tiled_vae_as_the_authors_enable_tiling(files: dict[str, Path]) -> None:
    # tiles larger than the tile sizes go through diffusers' tiled encode/decode; the real sizes
    # (128 latent / 1024 px) make that happen for chopping_size > 256 (HR tile 4P > 1024, latent P/2 > 128)
    small = {"latent_tiled_size": 4, "sample_tiled_size": 32}  # HR tile 64 > 32: active
    tiled, untiled = _method(files, **small), _method(files, tiled_vae=False)
    default = _method(files)  # 128 / 1024 with a 16-px chopping size: not active
    assert tiled.sampler is not None and default.sampler is not None
    vae, vae_default = tiled.sampler.vae, default.sampler.vae
    assert vae.use_tiling and (vae.tile_latent_min_size, vae.tile_sample_min_size) == (4, 32)
    assert (vae_default.tile_latent_min_size, vae_default.tile_sample_min_size) == (128, 1024)
    lr = _lr(8)
    a = tiled.sampler.sample_tiles(lr, [200], torch.Generator().manual_seed(3))
    assert torch.equal(a, _authors_call(tiled.sampler, lr, [200], seed=3, vae_tiles=(4, 32)))
    plain = untiled.upscale(lr, steps=1, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(tiled.upscale(lr, steps=1, generator=torch.Generator().manual_seed(3)), plain)
    assert torch.equal(default.upscale(lr, steps=1, generator=torch.Generator().manual_seed(3)), plain)


# ---- noise predictor config ------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths", [(2, 2, 3), (1, 2, 2), (2, 1, 2)])
def test_noise_predictor_refuses_mismatched_block_lists(lengths: tuple[int, int, int]) -> None:
    n_layers, n_channels, n_types = lengths  # (2, 2, 3) passed the chained != check before
    cfg = NoisePredictorConfig(
        layers_per_block=(1,) * n_layers,
        block_out_channels=(8, 16)[:n_channels],
        down_block_types=("AttnDownBlock2D",) * n_types,
        norm_num_groups=4,
        attention_head_dim=4,
        temb_channels=16,
    )
    with pytest.raises(SRBenchError, match="one layers_per_block"):
        NoisePredictor(cfg)
