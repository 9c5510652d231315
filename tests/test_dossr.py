"""DoSSR plugin: official checkpoint layout and conversion, network wiring, the method on tiny random
models (shapes, determinism with a seeded generator, every order x steps in {1, 2, 5, 10}).

All models are random and tiny (built by :mod:`methods.dossr.testing` and saved in the real formats);
no number from them means anything about DoSSR's quality.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import methods.dossr  # noqa: F401  (registers "dossr")
from methods.dossr.convert import (
    COND_ENCODER_KEY,
    CONTROL_KEY,
    PREPROCESS_KEY,
    TEXT_KEY,
    UNET_KEY,
    VAE_KEY,
    clip_text_to_openclip,
    controlnet_to_ldm,
    convert_controlnet,
    convert_official_checkpoint,
    convert_text_encoder,
    convert_unet,
    convert_vae,
    load_official_checkpoint,
    unet_to_ldm,
    vae_to_ldm,
)
from methods.dossr.network import CondEncoder, DoSSRDenoiser, build_lacontrolnet, empty_init
from methods.dossr.preprocess import pad_to_multiple
from methods.dossr.testing import TinyDoSSR, save_tiny_dossr
from srbench import create_method
from srbench.archs.rrdbnet import build_rrdbnet
from srbench.interface import SRBenchError, UnsupportedSteps, WeightsMissing
from srbench.testing.tiny_sd import SD2_TEXT_ENCODER_SIZES
from srbench.timing import StageTimer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyDoSSR:
    return save_tiny_dossr(tmp_path_factory.mktemp("dossr"), seed=0)


@pytest.fixture(scope="module")
def method(tiny: TinyDoSSR):
    m = create_method("dossr", model=str(tiny.sd_folder), ckpt=str(tiny.ckpt))
    m.load("cpu", torch.float32)
    return m


def _lr(seed: int = 0, b: int = 1, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


# ---- official layout ------------------------------------------------------------------------------
def test_official_checkpoint_round_trip(tiny: TinyDoSSR) -> None:
    """diffusers → official layout (file on disk) → diffusers gives back every tensor exactly."""
    state = load_official_checkpoint(tiny.ckpt)
    prefixes = {UNET_KEY, CONTROL_KEY, VAE_KEY, COND_ENCODER_KEY, TEXT_KEY, PREPROCESS_KEY}
    assert all(any(k.startswith(p) for k in state) for p in prefixes)
    # facts of the official module tree (model/cldm.py, cldm_v21.yaml)
    width = tiny.parts["unet"]["conv_in.weight"].shape[0]
    assert state[CONTROL_KEY + "input_blocks.0.0.weight"].shape == (width, 8, 3, 3)  # cat[x_t, c_latent]
    n_zero = len({k for k in state if k.startswith(CONTROL_KEY + "zero_convs.") and k.endswith("weight")})
    n_in = len({k.split(".")[2] for k in state if k.startswith(CONTROL_KEY + "input_blocks.")})
    assert n_zero == n_in and CONTROL_KEY + "middle_block_out.0.weight" in state
    assert not any("input_hint_block" in k for k in state)
    assert state[VAE_KEY + "encoder.mid.attn_1.q.weight"].ndim == 4  # ldm VAE attention: 1x1 convs
    assert state[COND_ENCODER_KEY + "quant_conv.weight"].shape[:2] == (8, 8)
    assert TEXT_KEY + "transformer.resblocks.0.attn.in_proj_weight" in state
    assert PREPROCESS_KEY + "body.0.rdb1.conv1.weight" in state and "lambdas" in state

    from transformers import CLIPTextConfig, CLIPTextModel

    from methods.dossr.method import _load_configs

    ucfg, vcfg, tcfg = _load_configs(tiny.sd_folder)
    conv = convert_official_checkpoint(
        state, unet_config=ucfg, vae_config=vcfg, text_encoder=CLIPTextModel(tcfg)
    )
    for name, ref in tiny.parts.items():
        got = getattr(conv, name)
        assert set(got) == set(ref), name
        for k, v in ref.items():
            assert torch.equal(got[k], v), (name, k)
    with pytest.raises(SRBenchError, match="penultimate"):
        convert_text_encoder(
            state, CLIPTextModel(CLIPTextConfig(**{**tcfg.to_dict(), "num_hidden_layers": 1}))
        )


def test_lightning_pickle_checkpoint_loads(tmp_path: Path, tiny: TinyDoSSR) -> None:
    """A raw Lightning 1.x file (class-keyed callbacks) is refused by weights_only loading and read by
    the restricted unpickler instead, with the same tensors."""
    light = save_tiny_dossr(tmp_path, seed=0, lightning=True)
    with pytest.raises(Exception, match=r"(?i)weights.only|unpickl|global"):
        torch.load(light.ckpt, weights_only=True)
    a, b = load_official_checkpoint(light.ckpt), load_official_checkpoint(tiny.ckpt)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_not_a_dossr_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.out.2.weight": torch.zeros(1)}}, path)
    with pytest.raises(SRBenchError, match="control_model"):
        load_official_checkpoint(path)


def test_sd21_sized_networks_match_the_paper() -> None:
    """At SD 2.1-base size (parameters on the meta device, nothing allocated): per-part parameter counts
    of the official modules, the paper's 1716.6 M total (Tab. 1: the OpenCLIP tower's 24 blocks, of
    which the penultimate-layer encoder keeps 23), and the inverse key maps on the real layout
    (layers_per_block = 2, 4 levels) round-trip through diffusers' converters."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    ucfg = {
        "sample_size": 64,
        "layers_per_block": 2,
        "block_out_channels": (320, 640, 1280, 1280),
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        "cross_attention_dim": 1024,
        "attention_head_dim": [5, 10, 20, 20],
        "use_linear_projection": True,
    }
    vcfg = {
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "latent_channels": 4,
        "scaling_factor": 0.18215,
    }
    tcfg = CLIPTextConfig(**SD2_TEXT_ENCODER_SIZES)
    with empty_init():
        unet = UNet2DConditionModel(**ucfg)
        nets = {
            "unet": unet,
            "controlnet": build_lacontrolnet(unet.config),
            "vae": AutoencoderKL(**vcfg),
            "cond_encoder": CondEncoder.from_vae_config(vcfg),
            "text_encoder": CLIPTextModel(tcfg),
            "preprocess": build_rrdbnet(
                {
                    "num_in_ch": 3,
                    "num_out_ch": 3,
                    "scale": 4,
                    "num_feat": 64,
                    "num_block": 23,
                    "num_grow_ch": 32,
                }
            ),
        }
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in nets.items()}
    assert counts == {
        "unet": 865_910_724,
        "controlnet": 363_153_280,  # incl. 13 zero convs
        "vae": 83_653_863,
        "cond_encoder": 34_163_664,
        "text_encoder": 340_387_840,
        "preprocess": 16_697_987,
    }
    openclip_block = 12_596_224  # the 24th resblock of ViT-H's text tower (unused: penultimate layer)
    assert (sum(counts.values()) + openclip_block) / 1e6 == pytest.approx(1716.6, abs=0.05)

    u_sd, c_sd = nets["unet"].state_dict(), nets["controlnet"].state_dict()
    ldm = unet_to_ldm(u_sd, 2)
    assert {UNET_KEY + f"input_blocks.{i}.0.op.weight" for i in (3, 6, 9)} <= set(ldm)
    assert {UNET_KEY + f"output_blocks.{i}.conv.weight" for i in ("2.1", "5.2", "8.2")} <= set(ldm)
    assert len(ldm) == 686 and set(convert_unet(ldm, unet.config)) == set(u_sd)
    cl = controlnet_to_ldm(c_sd, 2)
    assert cl[CONTROL_KEY + "input_blocks.0.0.weight"].shape == (320, 8, 3, 3)
    assert set(convert_controlnet(cl, unet.config)) == set(c_sd)
    assert len([k for k in cl if ".zero_convs." in k]) == 24
    v_sd = nets["vae"].state_dict()
    assert set(convert_vae(vae_to_ldm(v_sd), vcfg)) == set(v_sd)
    assert len(clip_text_to_openclip(nets["text_encoder"].state_dict())) == 4 + 23 * 12


# ---- network wiring -------------------------------------------------------------------------------
def test_denoiser_wiring(method) -> None:
    den: DoSSRDenoiser = method.denoiser
    g = torch.Generator().manual_seed(5)
    x, c1, c2 = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    ctx = method.prompts.get(method.prompt, 1)
    t = torch.tensor([499])
    u1, u2 = den(x, t, c1, ctx), den(x, t, c2, ctx)
    assert u1.shape == x.shape and not torch.allclose(u1, u2)  # the hint latent matters
    plain = den.unet(x, t, encoder_hidden_states=ctx).sample
    den.control_scale = 0.0
    try:
        assert torch.allclose(den(x, t, c1, ctx), plain, atol=1e-6)  # no residuals = the plain UNet
    finally:
        den.control_scale = 1.0
    assert not torch.allclose(u1, plain)


def test_checkpoint_parts_are_used(method, tiny: TinyDoSSR) -> None:
    """UNet / VAE / text tower come from the checkpoint (what the official code runs), not the SD folder."""
    for name, module in (
        ("unet", method.denoiser.unet),
        ("vae", method.vae),
        ("controlnet", method.denoiser.controlnet),
    ):
        ref = tiny.parts[name]
        assert all(torch.equal(v, ref[k]) for k, v in module.state_dict().items()), name
    info = method.weights_info()
    assert info.real is False and "η table" in info.detail


def test_pad_to_multiple() -> None:
    x = torch.arange(2 * 3 * 20 * 24, dtype=torch.float32).reshape(2, 3, 20, 24)
    y, hw = pad_to_multiple(x)
    assert y.shape == (2, 3, 32, 32) and hw == (20, 24) and torch.equal(y[..., :20, :24], x)
    z, _ = pad_to_multiple(torch.ones(1, 3, 3, 5))  # too small to reflect
    assert z.shape == (1, 3, 16, 16)
    assert pad_to_multiple(x[..., :16, :16])[0].shape == (2, 3, 16, 16)


# ---- the method -----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_every_order_and_steps(method, order: int, steps: int) -> None:
    method.order = order
    try:
        out = method.upscale(_lr(), steps=steps, generator=torch.Generator().manual_seed(steps))
    finally:
        method.order = 3
    assert out.shape == (1, 3, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_shapes_stages_and_determinism(method) -> None:
    lr = _lr(1, b=2)
    method.timer = StageTimer("cpu")
    try:
        a = method.upscale(lr, steps=5, generator=torch.Generator().manual_seed(7))
        assert set(method.timer.finish()) == {"preprocess", "encode", "denoise", "decode"}
    finally:
        method.timer = None
    torch.manual_seed(123)  # the global RNG must not matter: all randomness comes from the generator
    b = method.upscale(lr, steps=5, generator=torch.Generator().manual_seed(7))
    c = method.upscale(lr, steps=5, generator=torch.Generator().manual_seed(8))
    d = method.upscale(lr.flip(-1), steps=5, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 3, 64, 64)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)  # the SDE noise is seeded by the generator
    assert not torch.allclose(a, d)  # the LR reaches the output (through I_pre)
    odd = method.upscale(_lr(2, h=20, w=24), steps=2, generator=torch.Generator().manual_seed(0))
    assert odd.shape == (1, 3, 80, 96)  # padded to multiples of 16 inside, cropped back


def test_sampler_calls_the_network_on_the_official_grid(method) -> None:
    """The network sees the integer timesteps 499, 399, 299, 200, 100 (N = 5) with the hint latent and
    the prompt context, once per step, and never t = 0."""
    seen: list[tuple[list[int], tuple[int, ...], tuple[int, ...]]] = []
    real = method.denoiser

    class Spy(torch.nn.Module):
        def forward(
            self, x: torch.Tensor, t: torch.Tensor, c_latent: torch.Tensor, context: torch.Tensor
        ) -> torch.Tensor:
            seen.append((t.tolist(), tuple(c_latent.shape), tuple(context.shape)))
            return real(x, t, c_latent, context)

    method.denoiser = Spy()
    try:
        method.upscale(_lr(4, b=2), steps=5, generator=torch.Generator().manual_seed(0))
    finally:
        method.denoiser = real
    assert [t for t, _, _ in seen] == [[v, v] for v in (499, 399, 299, 200, 100)]
    assert all(c == (2, 4, 8, 8) and ctx[:2] == (2, 77) for _, c, ctx in seen)


def test_options_variants(tiny: TinyDoSSR) -> None:
    m = create_method(
        "dossr",
        model=str(tiny.sd_folder),
        ckpt=str(tiny.ckpt),
        eta="paper",
        color_fix="none",
        posterior="mode",
    )
    m.load("cpu")
    assert m.schedule(5).timesteps.tolist() == [500, 400, 300, 200, 100, 0]  # starts where η = 1
    g = torch.Generator().manual_seed(0)
    for order in (1, 2, 3):  # the first update uses the r -> 0 limit (λ = ∞ at the start)
        m.order = order
        out = m.upscale(_lr(3), steps=2, generator=g)
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    m.eta_variant, m.x0_form = "code", "paper"  # Eq. 9 form, code η (1 - η = 2.5e-6 at the start: finite)
    assert torch.isfinite(m.upscale(_lr(3), steps=2, generator=g)).all()
    with pytest.raises(SRBenchError, match="x0_form"):
        create_method("dossr", eta="paper", x0_form="paper")


def test_steps_bounds(method) -> None:
    assert method.supported_steps() == range(1, 500)
    for bad in (0, 500, 2.5):
        with pytest.raises(UnsupportedSteps, match=r"1\.\.499"):
            method.check_steps(bad)


def test_bad_options_and_missing_weights(tmp_path: Path, tiny: TinyDoSSR) -> None:
    with pytest.raises(SRBenchError, match="order"):
        create_method("dossr", order=4)
    with pytest.raises(SRBenchError, match="color_fix"):
        create_method("dossr", color_fix="bogus")
    m = create_method("dossr", model=str(tiny.sd_folder), ckpt=str(tmp_path / "none.ckpt"))
    with pytest.raises(WeightsMissing, match=r"method\.ckpt=.*none\.ckpt: no such file"):
        m.load("cpu")
    m = create_method("dossr", model=str(tiny.sd_folder))
    # the key a user types on the command line, and where the download link is
    with pytest.raises(
        WeightsMissing, match=r"Google Drive.*srbench weights where dossr.*method\.ckpt=<path>"
    ):
        m.load("cpu")
    m = create_method("dossr", ckpt=str(tiny.ckpt))  # SD 2.1-base by HF id: not in the (empty) HF cache
    with pytest.raises(WeightsMissing, match="srbench weights fetch dossr"):
        m.load("cpu")


def test_checkpoint_without_unet_uses_the_base_model(tmp_path: Path, tiny: TinyDoSSR) -> None:
    """A checkpoint lacking ``model.diffusion_model.*`` (e.g. stripped to the trained parts) runs with the
    SD folder's UNet; the other parts still come from the checkpoint."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    state = load_official_checkpoint(tiny.ckpt)
    path = tmp_path / "no_unet.ckpt"
    torch.save({k: v for k, v in state.items() if not k.startswith(UNET_KEY)}, path)
    m = create_method("dossr", model=str(tiny.sd_folder), ckpt=str(path))
    m.load("cpu")
    base = load_file(str(next((tiny.sd_folder / "unet").glob("*.safetensors"))))
    got = m.denoiser.unet.state_dict()
    assert isinstance(m.denoiser.unet, UNet2DConditionModel) and set(got) == set(base)
    assert all(torch.equal(got[k], base[k]) for k in base)
    assert "from SD: ['unet']" in m.weights_info().detail
    assert all(torch.equal(v, tiny.parts["vae"][k]) for k, v in m.vae.state_dict().items())
