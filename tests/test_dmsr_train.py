"""DM-SR training: degradation, losses (Eq. 4–8 and the estimator target), discriminator, and a tiny
train → save → load → infer round trip through ``train_cli``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from methods.dmsr.degradation import DegradationConfig, realesrgan_degrade, sample_kernels
from methods.dmsr.losses import (
    LatentLPIPS,
    d_loss,
    dm_grad,
    eps_target,
    g_loss,
    lpips_timestep_target,
    surrogate,
)
from methods.dmsr.pipeline import add_noise
from srbench.data.demo import load_photo
from srbench.diffusion.schedules import scaled_linear_alphas_cumprod
from srbench.interface import WeightsMissing

ABAR = scaled_linear_alphas_cumprod()


# ---- degradation ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(load_photo("astronaut")[100:164, 180:244])  # 64x64 uint8 RGB


def test_degradation_is_deterministic_by_seed_and_leaves_global_rngs_alone(photo: np.ndarray) -> None:
    random.seed(7)
    np.random.seed(7)
    py_state, np_state = random.getstate(), np.random.get_state()
    a = realesrgan_degrade(photo, 11)
    b = realesrgan_degrade(photo, 11)
    c = realesrgan_degrade(photo, 12)
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # a Generator works as the seed too and advances (two draws differ)
    g = np.random.default_rng(5)
    assert not np.array_equal(realesrgan_degrade(photo, g), realesrgan_degrade(photo, g))


def test_degradation_accepts_float_and_torch(photo: np.ndarray) -> None:
    f = photo.astype(np.float32) / 255
    lr = realesrgan_degrade(f, 3)
    assert lr.dtype == np.float32 and lr.shape == (16, 16, 3) and lr.min() >= 0 and lr.max() <= 1
    np.testing.assert_allclose(lr * 255, np.round(lr * 255), atol=1e-3)  # quantised to 8 bits
    np.testing.assert_array_equal(np.round(lr * 255).astype(np.uint8), realesrgan_degrade(photo, 3))
    t = torch.from_numpy(f).permute(2, 0, 1)
    lt = realesrgan_degrade(t, 3)
    assert isinstance(lt, torch.Tensor) and lt.shape == (3, 16, 16)
    torch.testing.assert_close(lt, torch.from_numpy(lr).permute(2, 0, 1))
    batch = realesrgan_degrade(torch.stack([t, t]), 3)
    assert batch.shape == (2, 3, 16, 16) and not torch.equal(batch[0], batch[1])  # one child seed each
    with pytest.raises(ValueError):
        realesrgan_degrade(photo[..., :2], 0)
    with pytest.raises(ValueError, match="unknown degradation"):
        realesrgan_degrade(photo, 0, {"noise_rnage": [1, 2]})


def test_degradation_presets_and_kernels() -> None:
    rs, re = DegradationConfig.resshift(), DegradationConfig.realesrgan()
    assert rs.ranges() == (list(range(3, 21, 2)), list(range(3, 15, 2)))  # ResShift's kernel sizes
    assert re.ranges() == (list(range(7, 22, 2)),) * 2 and re.second_order_prob == 1.0
    assert DegradationConfig.from_dict({"preset": "realesrgan", "sf": 2}).sf == 2
    random.seed(0)
    np.random.seed(0)
    for _ in range(5):
        k1, k2, sinc = sample_kernels(rs)
        assert k1.shape == (21, 21) and k2.shape == (15, 15) and sinc.shape == (15, 15)
        for k in (k1, k2, sinc):
            assert abs(float(k.sum()) - 1) < 1e-4


def test_realesrgan_preset_sharpens_before_degrading(photo: np.ndarray) -> None:
    plain = realesrgan_degrade(photo, 4, {"preset": "realesrgan", "usm_sharpen": False})
    usm = realesrgan_degrade(photo, 4, {"preset": "realesrgan"})
    assert usm.shape == plain.shape == (16, 16, 3) and not np.array_equal(usm, plain)


def test_paired_dataset_is_a_function_of_seed_and_k(tmp_path: Path, photo: np.ndarray) -> None:
    from methods.dmsr.data import CounterSampler, PairedSRDataset

    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    hr_dir.mkdir()
    lr_dir.mkdir()
    Image.fromarray(photo).save(hr_dir / "a.png")
    Image.fromarray(np.ascontiguousarray(photo[::-1])).save(hr_dir / "b.png")
    ds = PairedSRDataset([hr_dir], gt_size=32, seed=3)
    x, y = ds[5], ds[5]
    assert x["hr"].shape == (3, 32, 32) and x["lr"].shape == (3, 8, 8)
    assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])
    assert not torch.equal(ds[6]["lr"], x["lr"])
    assert list(CounterSampler(4, 7)) == [4, 5, 6] and len(CounterSampler(4, 7)) == 3
    # the torch-op backend of srbench.data.degradations gives the same shapes
    other = PairedSRDataset([hr_dir], gt_size=32, seed=3, backend="srbench")[5]
    assert torch.equal(other["hr"], x["hr"]) and other["lr"].shape == (3, 8, 8)
    # pre-made pairs: aligned crops (HR crop downscaled by 4 equals the LR crop here)
    for name in ("a", "b"):
        hr = np.asarray(Image.open(hr_dir / f"{name}.png"))
        Image.fromarray(hr[::4, ::4]).save(lr_dir / f"{name}.png")
    s = PairedSRDataset([hr_dir], gt_size=32, seed=3, lr_dir=lr_dir)[2]
    torch.testing.assert_close(s["hr"][:, ::4, ::4], s["lr"])


# ---- losses -----------------------------------------------------------------------------------------
def _gaussian_eps(mean: torch.Tensor, s2: float):  # type: ignore[no-untyped-def]
    """The ideal ε-predictor for data ~ N(mean, s2·I): ε(x_t) = σ(x_t − √ᾱ·mean)/(ᾱ·s2 + σ²)."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = ABAR[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (x - a.sqrt() * mean) / (a * s2 + 1 - a)

    return fn


def test_surrogate_has_the_prescribed_gradient() -> None:
    y = torch.randn(2, 4, 3, 3, requires_grad=True)
    g = torch.randn(2, 4, 3, 3)
    loss = surrogate(y, g)
    loss.backward()
    torch.testing.assert_close(y.grad, g / y.numel())
    assert loss.item() == pytest.approx(0.5 * g.pow(2).mean().item(), rel=1e-5)


def test_dm_grad_vanishes_at_the_target_and_pulls_towards_it() -> None:
    gen = torch.Generator().manual_seed(0)
    x_hr = torch.randn(2, 4, 8, 8, generator=gen)
    eps_fn = _gaussian_eps(torch.zeros(()), 1.0)
    t = torch.tensor([100, 400])
    noise = torch.randn(2, 4, 8, 8, generator=gen)
    assert dm_grad(eps_fn, x_hr.clone(), x_hr, t, noise, ABAR).abs().max() < 1e-6  # Z_SR = X_HR: no push
    z = (x_hr + torch.randn(2, 4, 8, 8, generator=gen)).requires_grad_(True)
    opt = torch.optim.SGD([z], lr=2000.0)
    dist0 = (z - x_hr).norm().item()
    for _ in range(20):  # descending Eq. 7 as printed moves Z_SR to X_HR^0 (shared noise: g ∝ Z − X)
        opt.zero_grad()
        surrogate(z, dm_grad(eps_fn, z, x_hr, t, noise, ABAR)).backward()
        opt.step()
    assert (z - x_hr).norm().item() < 0.5 * dist0


def test_eps_target_fixed_point_reconstructs_x_hr() -> None:
    gen = torch.Generator().manual_seed(1)
    x_hr = torch.randn(2, 4, 8, 8, generator=gen)
    t = torch.tensor([50, 300])

    # a denoiser that knows X_HR exactly (delta data): every ε is its own target (Eq. 8 residual = 0)
    def delta(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        a = ABAR[tt].view(-1, 1, 1, 1)
        return (x - a.sqrt() * x_hr) / (1 - a).sqrt()

    e = torch.randn(2, 4, 8, 8, generator=gen)
    torch.testing.assert_close(eps_target(delta, e, x_hr, t, ABAR), e, rtol=1e-4, atol=1e-4)
    # Gaussian data: regressing ε_SR on its (stop-gradient) target converges to the fixed point ε*,
    # a noise from which the denoiser's x0-prediction is X_HR (§3.5) — the sign used in train.py
    eps_fn = _gaussian_eps(torch.zeros(()), 0.5)
    e = torch.zeros(2, 4, 8, 8, requires_grad=True)
    opt = torch.optim.SGD([e], lr=0.5 * e.numel())
    for _ in range(200):
        opt.zero_grad()
        surrogate(e, e.detach() - eps_target(eps_fn, e, x_hr, t, ABAR)).backward()
        opt.step()
    x_t = add_noise(x_hr, e.detach(), t, ABAR)
    a = ABAR[t].view(-1, 1, 1, 1)
    x0_pred = (x_t - (1 - a).sqrt() * eps_fn(x_t, t)) / a.sqrt()
    torch.testing.assert_close(x0_pred, x_hr, rtol=1e-3, atol=1e-3)


def test_gan_losses() -> None:
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = torch.nn.functional.softplus
    assert d_loss(real, fake).item() == pytest.approx((sp(-real) + sp(fake)).mean().item())
    assert g_loss(fake).item() == pytest.approx(sp(-fake).mean().item())
    assert d_loss(real, fake, "hinge").item() == pytest.approx(
        0.5 * ((1 - real).clamp(min=0) + (1 + fake).clamp(min=0)).mean().item()
    )
    assert g_loss(fake, "hinge").item() == pytest.approx(-fake.mean().item())
    with pytest.raises(ValueError):
        d_loss(real, fake, "wgan")


def test_lpips_timestep_target_scales_and_clamps() -> None:
    fake_lpips = lambda a, b: torch.tensor([0.0, 0.2, 0.9985, 1.3]).view(4, 1, 1, 1)  # noqa: E731
    img = torch.rand(4, 3, 8, 8)
    assert lpips_timestep_target(fake_lpips, img, img).tolist() == pytest.approx([0.0, 100.0, 499.0, 499.0])


def test_latent_lpips_layout_and_invsr_file(tmp_path: Path) -> None:
    full = LatentLPIPS()
    sd = full.state_dict()
    assert sd["net.slice1.0.weight"].shape == (64, 4, 3, 3)  # 4-channel latent input
    assert sd["net.slice2.5.weight"].shape == (128, 64, 3, 3)
    assert sd["net.slice5.28.weight"].shape == (512, 512, 3, 3)
    assert sd["lin4.model.1.weight"].shape == (1, 512, 1, 1)
    pools = [n for n, m in full.net.named_modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools == ["slice5.23"]  # only the last max-pool is kept
    # a file in InvSR's layout: DDP prefix, duplicate ``lins.*`` and the scaling layer buffers
    tiny = LatentLPIPS(width_div=16)
    torch.nn.init.normal_(tiny.net.slice1[0].weight)
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    state.update(
        {f"module.lins.{k}.model.1.weight": getattr(tiny, f"lin{k}").model[1].weight for k in range(5)}
    )
    state["module.scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)
    torch.save(state, tmp_path / "vgg16_sdturbo_lpips.pth")
    loaded = LatentLPIPS.from_file(tmp_path / "vgg16_sdturbo_lpips.pth", width_div=16)
    assert torch.equal(loaded.net.slice1[0].weight, tiny.net.slice1[0].weight)
    z0, z1 = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    d = loaded(z0, z1)
    assert d.shape == (2,) and (d > 0).all() and loaded(z0, z0).abs().max() < 1e-6
    loaded.train()
    assert not loaded.training  # a frozen metric: dropout stays off
    with pytest.raises(WeightsMissing, match="OAOA/InvSR"):
        LatentLPIPS.from_file(tmp_path / "nope.pth")


# ---- discriminator ----------------------------------------------------------------------------------
def test_discriminator_paper_shape_and_lr_conditioning() -> None:
    from methods.dmsr.discriminator import ControlNetDiscriminator

    with torch.device("meta"):
        paper = ControlNetDiscriminator()
    assert tuple(paper.body.config.block_out_channels) == (64, 128, 256, 256)
    assert paper.body.config.cross_attention_dim == 1024 and paper.head.out_features == 1

    torch.manual_seed(0)
    d = ControlNetDiscriminator(
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        norm_num_groups=8,
        latent_downscale=8,
    ).eval()
    torch.nn.init.normal_(
        d.body.controlnet_cond_embedding.conv_out.weight, std=0.1
    )  # ControlNet zero-inits it
    z, emb, t = torch.randn(2, 4, 8, 8), torch.randn(1, 77, 32), torch.tensor([10, 300])
    lr_a, lr_b = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = d(z, t, emb, lr_a), d(z, t, emb, lr_b)
    assert a.shape == (2,) and (a - b).abs().max() > 1e-6


# ---- training round trip ----------------------------------------------------------------------------
def _tiny_overrides(root: Path, sd: Path, hr: Path) -> list[str]:
    return [
        f"base_model={sd}",
        f"output_dir={root / 'run'}",
        f"data.hr_dirs=[{hr}]",
        "data.gt_size=64",
        "data.num_workers=0",
        "device=cpu",
        "log_every=1",
        "save_every=1000",
        "estimator.iterations=2",
        "estimator.batch_size=2",
        "estimator.width_div=16",
        "estimator.imagenet_init=none",
        "estimator.lpips_pretrained_backbone=false",
        "encoder.iterations=2",
        "encoder.batch_size=2",
        "encoder.latent_lpips=random",
        "encoder.latent_lpips_width_div=16",
        "encoder.disc_channels=[8,16]",
        "encoder.adv_start=1",
    ]


def test_train_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import methods.dmsr.method  # noqa: F401
    from methods.dmsr.checkpoint import load_checkpoint
    from methods.dmsr.train import train_cli
    from srbench.registry import create_method
    from srbench.testing import is_random_weights
    from srbench.testing.tiny_sd import save_tiny_sd

    sd = save_tiny_sd(tmp_path / "tiny-sd")
    hr = tmp_path / "hr"
    hr.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(load_photo(name)[:80, :96]).save(hr / f"{name}.png")
    args = _tiny_overrides(tmp_path, sd, hr)

    assert train_cli(["--print-config", *args]) == 0
    assert "gt_size: 64" in capsys.readouterr().out
    assert train_cli([a for a in args if not a.startswith("data.hr_dirs")] + ["data.hr_dirs=[]"]) == 1
    assert "data.hr_dirs" in capsys.readouterr().err

    assert train_cli(args) == 0
    ckpt = tmp_path / "run" / "checkpoint"
    assert f"checkpoint: {ckpt}" in capsys.readouterr().out
    meta = json.loads((ckpt / "dmsr.json").read_text())
    assert meta["training"]["iterations"] == {"estimator": 2, "encoder": 2}
    assert meta["real"] is False and is_random_weights(ckpt)
    assert meta["training"]["recipe"]["encoder"]["losses"] == {
        "l1": 1.0,
        "lpips": 2.0,
        "adv": 0.1,
        "dm": 0.5,
        "eps": 1.0,
    }
    logs = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    enc = [r for r in logs if r["stage"] == "encoder"]
    assert [r["iteration"] for r in enc] == [1, 2] and {"l1", "lpips", "dm", "eps", "d"} <= set(enc[0])
    assert "adv" in enc[1] and all(np.isfinite(r["total"]) for r in enc)

    ck = load_checkpoint(ckpt)
    assert any(lin.weight.abs().max() > 0 for lin in ck.encoder.t_embed)  # trained away from zero init
    m = create_method("dmsr", checkpoint=str(ckpt), tile_size=16)
    m.load("cpu")
    out = m.upscale(torch.rand(1, 3, 16, 16), steps=2)
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    assert not m.weights_info().real and "'estimator': 2" in m.weights_info().detail

    # resume: one more encoder iteration continues from train_state.pt (the estimator is not re-run)
    more = [a.replace("encoder.iterations=2", "encoder.iterations=3") for a in args]
    assert train_cli([*more, "resume=true"]) == 0
    meta = json.loads((ckpt / "dmsr.json").read_text())
    assert meta["training"]["iterations"] == {"estimator": 2, "encoder": 3}
    logs = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["iteration"]) for r in logs[-2:]] == [("encoder", 2), ("encoder", 3)]
    # a fresh start from the trained checkpoint (init_from) with only the encoder stage
    assert train_cli([*more, "stages=[encoder]", f"init_from={ckpt}", f"output_dir={tmp_path / 'run2'}"]) == 0
    meta2 = json.loads((tmp_path / "run2" / "checkpoint" / "dmsr.json").read_text())
    assert meta2["training"]["iterations"] == {"estimator": 2, "encoder": 3}  # estimator count from init_from
