"""DM-SR inference: Eq. 2, the §4.4 multi-step schedule, the pipeline against a hand computation, and the
``dmsr`` plugin on tiny random models saved in the real formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import methods.dmsr.method  # noqa: F401  (registers "dmsr")
from methods.dmsr.checkpoint import PAPER_PROMPT, load_checkpoint
from methods.dmsr.pipeline import DMSRPipeline, add_noise, multistep_timesteps, x0_from_eps
from methods.dmsr.testing import make_tiny_dmsr, save_tiny_dmsr
from srbench.diffusion.schedules import scaled_linear_alphas_cumprod
from srbench.diffusion.tiling import reflect_pad_to
from srbench.interface import SRBenchError, WeightsMissing
from srbench.registry import create_method
from srbench.timing import StageTimer

ABAR = scaled_linear_alphas_cumprod()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from srbench.testing.tiny_sd import save_tiny_sd

    root = tmp_path_factory.mktemp("dmsr")
    sd = save_tiny_sd(root / "tiny-sd")
    return {"sd": sd, "ckpt": save_tiny_dmsr(root / "tiny-dmsr", sd, seed=1)}


@pytest.fixture(scope="module")
def method(tiny: dict[str, Path]):  # type: ignore[no-untyped-def]
    m = create_method("dmsr", checkpoint=str(tiny["ckpt"]), tile_size=16, tile_stride=12)
    m.load("cpu")
    return m


# ---- formulas ----------------------------------------------------------------------------------
def test_sd_turbo_abar_values_from_the_brief() -> None:
    # brief §2.1 table (0-based diffusers index)
    for t, want in ((0, 0.9992), (50, 0.9516), (150, 0.8278), (250, 0.6738), (499, 0.2777)):
        assert ABAR[t].item() == pytest.approx(want, abs=6e-4)


def test_eq2_inverts_eq1() -> None:
    g = torch.Generator().manual_seed(0)
    z, eps = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    t = torch.tensor([0, 137, 499])
    x_t = add_noise(z, eps, t, ABAR)
    torch.testing.assert_close(x0_from_eps(x_t, eps, t, ABAR), z, rtol=1e-5, atol=1e-5)
    a = ABAR[137].item()
    torch.testing.assert_close(x_t[1], a**0.5 * z[1] + (1 - a) ** 0.5 * eps[1])


def test_multistep_schedule_is_linear_in_t_hat() -> None:
    t_hat = torch.tensor([250.4, 3.0])
    ts = multistep_timesteps(t_hat, 5, 499)
    assert [t[0].item() for t in ts] == [250, 200, 150, 100, 50]
    assert [t[1].item() for t in ts] == [3, 2, 2, 1, 1]
    assert [t.tolist() for t in multistep_timesteps(t_hat, 1, 499)] == [[250, 3]]
    assert multistep_timesteps(torch.tensor([498.7]), 2, 499)[0].item() == 499
    with pytest.raises(ValueError):
        multistep_timesteps(t_hat, 0, 499)


def test_reflect_pad_to_sizes_and_offsets() -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    y, (top, bottom, left, right) = reflect_pad_to(x, 16, 16)
    assert y.shape[-2:] == (16, 16) and top + bottom == 11 and left + right == 9
    assert torch.equal(y[:, :, top : top + 5, left : left + 7], x)
    y, pads = reflect_pad_to(torch.rand(1, 3, 40, 56), 16, 16)
    assert y.shape[-2:] == (48, 64) and pads == (0, 8, 0, 8)
    y, pads = reflect_pad_to(torch.rand(1, 3, 1, 20), 16, 16)  # 1-px side: replicate
    assert y.shape[-2:] == (16, 32)


# ---- pipeline vs. a hand computation ------------------------------------------------------------
def _pipe(tiny: dict[str, Path]) -> tuple[DMSRPipeline, dict]:
    from srbench.diffusion.prompts import PromptEmbeddingCache
    from srbench.diffusion.schedules import alphas_cumprod_of
    from srbench.diffusion.sd import load_sd_components

    sd = load_sd_components(tiny["sd"])
    ck = load_checkpoint(tiny["ckpt"])
    emb = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder).encode(PAPER_PROMPT)
    pipe = DMSRPipeline(
        estimator=ck.estimator,
        encoder=ck.encoder,
        unet=sd.unet,
        vae=sd.vae,
        alphas_cumprod=alphas_cumprod_of(sd.scheduler),
        prompt_embeds=emb,
    )
    return pipe, {"sd": sd, "ck": ck, "emb": emb}


@torch.no_grad()
def test_pipeline_matches_hand_computation(tiny: dict[str, Path]) -> None:
    pipe, p = _pipe(tiny)
    sd, ck, emb = p["sd"], p["ck"], p["emb"]
    lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for steps in (1, 3):
        out, t_hat = pipe(lr, steps)
        # by hand: bicubic, soft-argmax, rounding, encoder mean × 0.18215, Eq. 2, §4.4, decode
        i_lr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
        logits = ck.estimator.head(
            ck.estimator.features((i_lr - ck.estimator.mean) / ck.estimator.std).mean((2, 3))
        )
        t_ref = (logits.softmax(-1) * torch.arange(500.0)).sum(-1)
        torch.testing.assert_close(t_hat, t_ref, rtol=0, atol=1e-3)
        t = torch.floor(t_ref + 0.5).long()
        x = ck.encoder(i_lr * 2 - 1, t)[:, :4] * 0.18215
        cond = emb.expand(2, -1, -1)
        eps_sr = sd.unet(x, t, encoder_hidden_states=cond).sample
        a = ABAR[t].view(-1, 1, 1, 1)
        z = (x - (1 - a).sqrt() * eps_sr) / a.sqrt()
        for k in range(1, steps):
            tk = torch.floor(t_ref * (steps - k) / steps + 0.5).long()
            ak = ABAR[tk].view(-1, 1, 1, 1)
            xk = ak.sqrt() * z + (1 - ak).sqrt() * eps_sr  # ε_SR re-used (§4.4)
            ek = sd.unet(xk, tk, encoder_hidden_states=cond).sample
            z = (xk - (1 - ak).sqrt() * ek) / ak.sqrt()
        ref = (sd.vae.decode(z / 0.18215).sample / 2 + 0.5).clamp(0, 1)
        assert out.shape == (2, 3, 64, 64)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_fixed_timestep_and_prompt_override_change_the_result(tiny: dict[str, Path]) -> None:
    pipe, p = _pipe(tiny)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    base, _ = pipe(lr, 1, timestep=120)
    other_t, t_used = pipe(lr, 1, timestep=400)
    assert t_used.tolist() == [400.0]
    assert (base - other_t).abs().max() > 1e-4
    from srbench.diffusion.prompts import PromptEmbeddingCache

    emb2 = PromptEmbeddingCache(p["sd"].tokenizer, p["sd"].text_encoder).encode("a cat")
    other_p, _ = pipe(lr, 1, timestep=120, prompt_embeds=emb2)
    assert (base - other_p).abs().max() > 1e-6


# ---- the plugin ---------------------------------------------------------------------------------
def test_method_shapes_range_determinism_and_stages(method) -> None:  # type: ignore[no-untyped-def]
    info = method.weights_info()
    assert info.real is False and "tiny-dmsr" in info.id
    assert method.stochastic is False
    assert method.supported_steps() is None
    lr = torch.rand(1, 3, 12, 24, generator=torch.Generator().manual_seed(5))
    method.timer = StageTimer("cpu")
    method.timer.reset()
    a = method.upscale(lr, steps=1, generator=torch.Generator().manual_seed(0))
    stages = method.timer.finish()
    method.timer = None
    assert set(stages) == {"estimate", "encode", "denoise", "decode"}
    assert a.shape == (1, 3, 48, 96) and a.min() >= 0 and a.max() <= 1
    # LR padded to 16x32; 16-px tiles at stride 12: starts 0, 12, 16 along x = 3 tiles, one t̂ each
    assert len(method.last_t_hat) == 3 and all(0 <= t <= 499 for t in method.last_t_hat)
    b = method.upscale(lr, steps=1, generator=torch.Generator().manual_seed(123))
    assert torch.equal(a, b)  # nothing random is drawn


def test_method_multistep_and_batch(method) -> None:  # type: ignore[no-untyped-def]
    lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    one = method.upscale(lr, steps=1)
    two = method.upscale(lr, steps=2)
    assert one.shape == two.shape == (2, 3, 64, 64)
    assert (one - two).abs().max() > 1e-5
    single = method.upscale(lr[1:], steps=2)
    torch.testing.assert_close(two[1:], single, rtol=1e-4, atol=1e-4)


def test_method_fixed_timestep_option(tiny: dict[str, Path]) -> None:
    m = create_method("dmsr", checkpoint=str(tiny["ckpt"]), tile_size=16, timestep=50)
    m.load("cpu")
    m.upscale(torch.rand(1, 3, 16, 16), steps=1)
    assert m.last_t_hat == [50.0]
    with pytest.raises(SRBenchError, match="t_max"):
        create_method("dmsr", checkpoint=str(tiny["ckpt"]), timestep=700).load("cpu")
    # Tab. 3's "t = 500": the top of t̂ ∈ [0, 500] is the last bin, index 499 (t_max)
    top = create_method("dmsr", checkpoint=str(tiny["ckpt"]), tile_size=16, timestep=500)
    top.load("cpu")
    out = top.upscale(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), steps=1)
    assert top.last_t_hat == [499.0] and "fixed timestep 500 (index 499)" in top.weights_info().detail
    last = create_method("dmsr", checkpoint=str(tiny["ckpt"]), tile_size=16, timestep=499)
    last.load("cpu")
    assert torch.equal(
        out, last.upscale(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), steps=1)
    )
    with pytest.raises(SRBenchError, match=r"outside \[0, 500\].*t = 500 runs index 499"):
        create_method("dmsr", checkpoint=str(tiny["ckpt"]), timestep=501).load("cpu")


def test_method_errors(tiny: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing, match="srbench train dmsr"):
        create_method("dmsr").load("cpu")
    with pytest.raises(WeightsMissing):
        create_method("dmsr", checkpoint=str(tmp_path / "missing")).load("cpu")
    with pytest.raises(SRBenchError, match="tile_size"):
        create_method("dmsr", checkpoint="x", tile_size=20)
    with pytest.raises(SRBenchError, match="unknown option colour"):
        create_method("dmsr", checkpoint="x", colour="yes")
    # an encoder trained for another VAE geometry is refused with a clear message
    from srbench.testing.tiny_sd import save_tiny_sd

    other = save_tiny_sd(tmp_path / "other-sd", vae={"block_out_channels": (8, 8, 16, 32)})
    with pytest.raises(SRBenchError, match="does not fit the VAE"):
        create_method("dmsr", checkpoint=str(tiny["ckpt"]), model=str(other)).load("cpu")


def test_contract_factory_builds_a_working_method(tmp_path: Path) -> None:
    m = make_tiny_dmsr(tmp_path)
    m.load("cpu")
    out = m.upscale(torch.rand(1, 3, 16, 16), steps=1)
    assert out.shape == (1, 3, 64, 64) and not m.weights_info().real
