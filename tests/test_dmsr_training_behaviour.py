"""DM-SR training, by behaviour: train.py's own stage code (estimator_loss, encoder_forward, encoder_losses,
weighted_total, discriminator_loss, _step, train_estimator) on fixed batches.

* every weight of Eq. 9 changes the encoder's gradient by exactly its term's gradient;
* one optimiser step on a fixed batch lowers each term (a flipped L_ε or L_dm sign raises it);
* L1 is on Z_SR (it moves with the denoiser), the discriminator sees I_LR, the estimator's target is
  LPIPS(I_LR, I_HR) and a short stage-1 run ranks the stronger degradation higher;
* a collapsed estimator (every t̂ in one bin, targets in several) is reported.

The frozen UNet is replaced by the ideal ε-predictor of Gaussian data (the Tweedie denoiser of
N(0, s²I)) where a term's direction depends on a meaningful denoiser (L_dm, L_ε); everything else is
the tiny random SD-Turbo folder.  No number here says anything about DM-SR's quality.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from methods.dmsr.train import (
    DMSRTrainer,
    build_lpips_target,
    disc_optimizer,
    is_collapsed,
    load_config,
    timestep_histogram,
)
from srbench.data.demo import load_photo

TERMS = ("l1", "lpips", "adv", "dm", "eps")


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from srbench.testing.tiny_sd import save_tiny_sd

    return save_tiny_sd(tmp_path_factory.mktemp("dmsr-behaviour") / "sd")


def _trainer(sd: Path, out: Path, *extra: str, seed: int = 0) -> DMSRTrainer:
    over = [
        f"base_model={sd}",
        f"output_dir={out}",
        "device=cpu",
        "data.gt_size=64",
        "log_every=10",
        "save_every=100000",
        "estimator.width_div=16",
        "estimator.imagenet_init=none",
        "estimator.lpips_pretrained_backbone=false",
        "encoder.latent_lpips=random",
        "encoder.latent_lpips_width_div=16",
        "encoder.disc_channels=[8,16]",
        "encoder.adv_start=0",
        *extra,
    ]
    with torch.random.fork_rng(devices=[]):  # T and E_θ initialise from the global RNG
        torch.manual_seed(seed)
        return DMSRTrainer(load_config(None, over))


def _hr() -> torch.Tensor:
    crops = [load_photo(n)[100:164, 120:184] for n in ("astronaut", "coffee")]
    return torch.stack([torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 255 for c in crops])


def _degrade(hr: torch.Tensor, blur: float, noise: float = 0.0) -> torch.Tensor:
    x = TF.gaussian_blur(hr, 2 * round(3 * blur) + 1, blur) if blur > 0 else hr
    lr = F.interpolate(x, scale_factor=0.25, mode="bicubic", antialias=True)
    if noise:
        lr = lr + noise * torch.randn(lr.shape, generator=torch.Generator().manual_seed(0))
    return lr.clamp(0, 1)


def _gaussian_denoiser(abar: torch.Tensor, s2: float):  # type: ignore[no-untyped-def]
    """ε(x_t) = σ x_t / (ᾱ s² + σ²) for data ~ N(0, s² I): the UNet replaced by the ideal denoiser."""

    def eps_fn(unet: Any = None):  # type: ignore[no-untyped-def]
        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = abar.to(t.device)[t].float().view(-1, 1, 1, 1)
            return (1 - a).sqrt() * x.float() / (a * s2 + 1 - a)

        return fn

    return eps_fn


def _lr_conditioned(disc: torch.nn.Module) -> torch.nn.Module:
    """ControlNet zero-initialises its hint embedding's output conv: give it weights, as training would."""
    with torch.no_grad():
        w = disc.body.controlnet_cond_embedding.conv_out.weight
        w.copy_(0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1)))
    return disc


def _setup(tr: DMSRTrainer, s2: float = 1.0) -> tuple[Any, torch.Tensor, torch.Tensor]:
    tr.eps_fn = _gaussian_denoiser(tr.abar, s2)  # type: ignore[method-assign]
    with torch.random.fork_rng(devices=[]):  # the discriminator initialises from the global RNG
        torch.manual_seed(0)
        parts = tr.encoder_parts()
    _lr_conditioned(parts.disc)
    hr = _hr()
    return parts, hr, _degrade(hr, 1.5)


def _losses(tr: DMSRTrainer, parts: Any, hr: torch.Tensor, lr: torch.Tensor, seed: int = 7):  # type: ignore[no-untyped-def]
    tr.gen.manual_seed(seed)  # the same HR latent sample and L_dm noise at every evaluation
    fwd = tr.encoder_forward(hr, lr)
    return fwd, tr.encoder_losses(fwd, parts, use_adv=True)


def _grads(total: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    g = torch.autograd.grad(total, params, retain_graph=True, allow_unused=True)
    return torch.cat(
        [(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params, strict=True)]
    )


# ---- Eq. 9 weights ---------------------------------------------------------------------------------------
def test_each_loss_weight_changes_the_gradient_by_its_term(sd_folder: Path, tmp_path: Path) -> None:
    tr = _trainer(sd_folder, tmp_path / "run")
    parts, hr, lr = _setup(tr)
    params = [p for p in tr.encoder.parameters() if p.requires_grad]
    _, losses = _losses(tr, parts, hr, lr)
    assert set(losses) == set(TERMS)
    weights = tr.cfg.encoder.losses
    paper = {k: float(weights[k]) for k in TERMS}
    assert paper == {"l1": 1.0, "lpips": 2.0, "adv": 0.1, "dm": 0.5, "eps": 1.0}  # Eq. 3, 9; App. A.2
    for k in TERMS:  # weight 3 on one term, 0 on the others: the gradient is 3 × that term's
        for j in TERMS:
            weights[j] = 3.0 if j == k else 0.0
        total = _grads(tr.weighted_total(losses), params)
        term = _grads(losses[k], params)
        assert term.abs().max() > 0, k
        torch.testing.assert_close(total, 3.0 * term, rtol=1e-4, atol=1e-4 * float(term.abs().max()))
    for j in TERMS:
        weights[j] = paper[j]
    # a zero weight removes the term (not computed at all)
    tr.cfg.encoder.losses["dm"] = 0.0
    assert "dm" not in _losses(tr, parts, hr, lr)[1]


# ---- one step lowers each term ----------------------------------------------------------------------------
@pytest.mark.parametrize("term", TERMS)
def test_a_step_on_a_fixed_batch_lowers_each_term(sd_folder: Path, tmp_path: Path, term: str) -> None:
    weights = [f"encoder.losses.{k}={1.0 if k == term else 0.0}" for k in TERMS]
    tr = _trainer(sd_folder, tmp_path / "run", *weights)
    parts, hr, lr = _setup(tr)
    params = [p for p in tr.encoder.parameters()]
    opt = torch.optim.Adam(params, lr=1e-6)  # first Adam step ≈ lr·sign(grad): a small descent step
    _, before = _losses(tr, parts, hr, lr)
    tr._step(tr.weighted_total(before), opt, params)
    _, after = _losses(tr, parts, hr, lr)
    assert set(before) == {term}
    assert after[term].item() < before[term].item(), (term, before[term].item(), after[term].item())


# ---- what each term looks at ----------------------------------------------------------------------------
def test_l1_is_on_z_sr_which_moves_with_the_denoiser(sd_folder: Path, tmp_path: Path) -> None:
    tr = _trainer(sd_folder, tmp_path / "run")
    parts, hr, lr = _setup(tr, s2=1.0)
    fwd, losses = _losses(tr, parts, hr, lr)
    torch.testing.assert_close(losses["l1"], F.l1_loss(fwd.z, fwd.x_hr))
    assert not torch.allclose(losses["l1"], F.l1_loss(fwd.x, fwd.x_hr))
    tr.eps_fn = _gaussian_denoiser(tr.abar, 0.25)  # type: ignore[method-assign]
    _, other = _losses(tr, parts, hr, lr)
    assert abs(other["l1"].item() - losses["l1"].item()) > 1e-4  # Z = (X − σ ε_SR)/α depends on μ_ψ


def test_the_discriminator_and_l_adv_are_conditioned_on_i_lr(sd_folder: Path, tmp_path: Path) -> None:
    tr = _trainer(sd_folder, tmp_path / "run")
    parts, hr, lr = _setup(tr)
    fwd, losses = _losses(tr, parts, hr, lr)
    d = tr.discriminator_loss(parts.disc, fwd)
    fwd.i_lr = fwd.i_lr.flip(0)  # the other image's LR, the same Z_SR and X_HR
    assert abs(tr.discriminator_loss(parts.disc, fwd).item() - d.item()) > 1e-6
    assert abs(tr.encoder_losses(fwd, parts, use_adv=True)["adv"].item() - losses["adv"].item()) > 1e-6
    # Eq. 4: the real and the fake term both see I_LR (the flip above would also move a real-only one)
    seen: list[torch.Tensor] = []
    disc = parts.disc

    def recording(x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        seen.append(cond)
        return disc(x, t, emb, cond)

    tr.discriminator_loss(recording, fwd)  # type: ignore[arg-type]
    assert len(seen) == 2 and all(c is fwd.i_lr for c in seen)
    # InvSR's discriminator optimiser (trainer.py: torch.optim.Adam, lr_dis 5e-5, weight_decay_dis 1e-3)
    opt = disc_optimizer(list(parts.disc.parameters()), tr.cfg.encoder)
    assert (
        type(opt) is torch.optim.Adam and opt.defaults["lr"] == 5e-5 and opt.defaults["weight_decay"] == 1e-3
    )


# ---- stage 1 ---------------------------------------------------------------------------------------------
def _seeded_lpips() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_lpips_target("alex", False)


def test_estimator_target_is_lpips_of_lr_against_hr(sd_folder: Path, tmp_path: Path) -> None:
    tr = _trainer(sd_folder, tmp_path / "run", "estimator.target_scale=50000")
    hr, lpips_fn = _hr(), _seeded_lpips()
    _, _, t_weak = tr.estimator_loss(hr, _degrade(hr, 0.5), lpips_fn)
    _, _, t_strong = tr.estimator_loss(hr, _degrade(hr, 3.0, noise=0.05), lpips_fn)
    assert (t_weak > 0).all() and (t_strong > t_weak).all()
    loss, t_hat, t_gt = tr.estimator_loss(hr, _degrade(hr, 0.5), lpips_fn)
    torch.testing.assert_close(loss, (t_hat - t_gt).abs().mean())


def test_encoder_timestep_source_target_is_stage_one_target(sd_folder: Path, tmp_path: Path) -> None:
    """encoder.timestep_source=target: E_θ gets t = round(t_gt) of stage 1 (LPIPS(I_LR, I_HR), its scale)."""
    from methods.dmsr.estimator import discretize_timestep

    over = ("estimator.target_scale=50000", "encoder.timestep_source=target")
    tr = _trainer(sd_folder, tmp_path / "run", *over)
    _, hr, _ = _setup(tr)
    lpips_fn = _seeded_lpips()
    for lr in (_degrade(hr, 0.5), _degrade(hr, 3.0, noise=0.05)):
        tr.gen.manual_seed(7)
        t = tr.encoder_forward(hr, lr, lpips_fn).t
        _, _, t_gt = tr.estimator_loss(hr, lr, lpips_fn)
        assert (t > 0).all() and torch.equal(t, discretize_timestep(t_gt, tr.t_max))


def test_a_short_estimator_run_ranks_stronger_degradations_higher(sd_folder: Path, tmp_path: Path) -> None:
    from methods.dmsr.pipeline import upsample_lr

    tr = _trainer(sd_folder, tmp_path / "run", "estimator.target_scale=50000", "estimator.batch_size=4")
    hr = _hr()
    weak, strong = _degrade(hr, 0.5), _degrade(hr, 3.0, noise=0.05)
    batch = {"hr": torch.cat([hr, hr]), "lr": torch.cat([weak, strong])}
    tr.loader = lambda stage, start, stop, b: [batch] * (stop - start)  # type: ignore[method-assign]
    tr.cfg.estimator.iterations = 100
    tr.state.stage = "estimator"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the random LPIPS backbone of the target
        tr.train_estimator(None)  # the stage's own loop, on this batch every iteration
    with torch.no_grad():
        t_weak, t_strong = tr.estimator(upsample_lr(weak)), tr.estimator(upsample_lr(strong))
    assert (t_strong > t_weak).all() and float((t_strong - t_weak).mean()) > 10, (t_weak, t_strong)
    logs = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert all(len(r["t_hat_hist"]) == 10 and sum(r["t_hat_hist"]) == 40 for r in logs)
    assert not logs[-1]["collapsed"]  # (an untrained T sends everything to one bin: early records may say so)


def test_estimator_collapse_is_detected_and_reported(
    sd_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert timestep_histogram(torch.tensor([0.0, 49.9, 50.0, 499.0, 600.0]), 499, 10) == [2, 1] + [0] * 7 + [
        2
    ]
    assert is_collapsed([0, 8, 0], [3, 5, 0]) and not is_collapsed([0, 8, 0], [0, 8, 0])
    assert not is_collapsed([4, 4, 0], [3, 5, 0])
    tr = _trainer(sd_folder, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="srbench.dmsr.train"):
        rep = tr.collapse_report(torch.full((8,), 129.0), torch.linspace(0, 499, 8), "estimator", 10)
    assert rep["collapsed"] and "collapsed" in caplog.text and rep["t_hat_hist"][2] == 8
    assert not tr.collapse_report(torch.linspace(0, 499, 8), torch.linspace(0, 499, 8), "estimator", 10)[
        "collapsed"
    ]


# ---- files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_checkpoint_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from methods.dmsr.checkpoint import DMSRConfig, save_checkpoint
    from methods.dmsr.encoder import TimestepAwareEncoder
    from methods.dmsr.estimator import TimestepEstimator

    enc = TimestepAwareEncoder(block_out_channels=(8,), norm_num_groups=4)
    old = os.umask(umask)
    try:
        out = save_checkpoint(
            tmp_path / "ck",
            estimator=TimestepEstimator(width_div=16),
            encoder=enc,
            config=DMSRConfig(base_model="x"),
        )
    finally:
        os.umask(old)
    for f in ("dmsr.safetensors", "dmsr.json"):
        assert (out / f).stat().st_mode & 0o777 == 0o666 & ~umask, f
    assert not list(out.glob(".*"))  # no temporary file left behind
