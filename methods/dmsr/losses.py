"""DM-SR training objectives (paper §3.1, §3.4–3.5, Eq. 3–9, App. A.2).

Image part, on Z_SR (scaled latent), Eq. 3:
  L_Z = 1.0·L1(Z_SR, X_HR^0) + 2.0·L_per + 0.1·L_adv + 0.5·L_dm
Noise part, on ε_SR, Eq. 8–9: L_tot = L_Z + 1.0·L_ε.
Timestep estimator (§3.1): target t = clamp(500·LPIPS(I_LR, I_HR), 0, 499), L1 regression (brief §6.6).

* ``LatentLPIPS`` — L_per "computed in latent space, following InvSR" (§3.4): InvSR's latent VGG16-LPIPS
  (``latent_lpips`` in zsyOAOA/InvSR: VGG16 convs with a 4-channel first conv and only the last max-pool,
  LPIPS linear heads, no input scaling layer), file ``vgg16_sdturbo_lpips.pth`` in HF ``OAOA/InvSR``.
  Re-implemented here with the same parameter names so that file loads as is.
* GAN losses, Eq. 4–5: non-saturating (the paper's log form; its Eq. 4 prints the signs loosely) or
  hinge (InvSR's setting, which App. A.2 says L_adv follows) — a config choice.
* L_dm (Eq. 6–7) and L_ε (Eq. 8) are given as *gradients*; they are implemented as surrogate losses
  whose gradient w.r.t. the tensor they act on equals the printed expression (see each function).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs as _VGG_CFGS
from torchvision.models.vgg import make_layers

from methods.dmsr.weights import LATENT_LPIPS_FILE, LATENT_LPIPS_REPO
from srbench.interface import SRBenchError, WeightsMissing
from srbench.safe_load import load_tensors

# InvSR's vgg16_latent: VGG16 ``features`` split into 5 slices, the max-pools at indices 4, 9 and 16 dropped
_SLICES: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3),
    (5, 6, 7, 8),
    (10, 11, 12, 13, 14, 15),
    (17, 18, 19, 20, 21, 22),
    (23, 24, 25, 26, 27, 28, 29),
)


class _LinHead(nn.Module):
    """LPIPS "NetLinLayer": dropout then a 1×1 conv to one channel without bias (keys ``model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _VGG16Latent(nn.Module):
    def __init__(self, in_chans: int, width_div: int) -> None:
        super().__init__()
        cfg = [v if v == "M" else max(1, int(v) // width_div) for v in _VGG_CFGS["D"]]
        feats = make_layers(cfg, batch_norm=False)
        first = feats[0]
        feats[0] = nn.Conv2d(in_chans, first.out_channels, 3, padding=1)
        for i, idx in enumerate(_SLICES, start=1):
            seq = nn.Sequential()
            for j in idx:
                seq.add_module(str(j), feats[j])
            setattr(self, f"slice{i}", seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 6):
            x = getattr(self, f"slice{i}")(x)
            outs.append(x)
        return outs


class LatentLPIPS(nn.Module):
    """InvSR's latent LPIPS: d(z0, z1) per sample, (B,), for scaled SD latents (B,4,h,w)."""

    def __init__(self, in_chans: int = 4, width_div: int = 1) -> None:
        super().__init__()
        self.net = _VGG16Latent(in_chans, width_div)
        chns = [max(1, c // width_div) for c in (64, 128, 256, 512, 512)]
        for k, c in enumerate(chns):
            head = _LinHead(c)
            with torch.no_grad():  # LPIPS weights are non-negative (a distance); keeps random stand-ins valid
                head.model[1].weight.abs_()
            setattr(self, f"lin{k}", head)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LatentLPIPS:  # a frozen metric: dropout always off
        return super().train(False)

    def forward(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        def unit(f: torch.Tensor) -> torch.Tensor:
            return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)

        total = z0.new_zeros(z0.shape[0])
        for k, (f0, f1) in enumerate(zip(self.net(z0), self.net(z1), strict=True)):
            diff = (unit(f0) - unit(f1)).pow(2)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, width_div: int = 1) -> LatentLPIPS:
        """Load InvSR's ``vgg16_sdturbo_lpips.pth`` (keys ``net.slice*.``, ``lin*.model.1.weight``; the
        duplicate ``lins.*`` and ``scaling_layer.*`` entries and ``module.``/``_orig_mod.`` prefixes are
        accepted and ignored)."""
        p = Path(path)
        if not p.is_file():
            raise WeightsMissing(
                f"latent LPIPS weights not found at {p}; download {LATENT_LPIPS_FILE} from the Hugging Face "
                f"repo {LATENT_LPIPS_REPO} (InvSR's training file) and point train.latent_lpips at it"
            )
        state = load_tensors(p)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        clean = {}
        for k, v in state.items():
            k = k.removeprefix("module.").removeprefix("_orig_mod.")
            if k.startswith(("net.", "lin")) and not k.startswith("lins."):
                clean[k] = v
        in_chans = clean["net.slice1.0.weight"].shape[1] if "net.slice1.0.weight" in clean else 4
        model = cls(in_chans=in_chans, width_div=width_div)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(clean)), sorted(set(clean) - set(expected))
        resized = [k for k in clean if k in expected and clean[k].shape != expected[k].shape]
        if missing or unexpected or resized:
            problems = [
                f"{what} {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", resized))
                if keys
            ]
            raise SRBenchError(f"{p}: not InvSR's latent LPIPS layout: {'; '.join(problems)}")
        model.load_state_dict(clean, strict=True)
        return model


# ---- GAN (Eq. 4–5) -----------------------------------------------------------------------------
def d_loss(real: torch.Tensor, fake: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """Discriminator loss (Eq. 4) on logits, mean over the batch."""
    if kind == "nonsaturating":  # −log σ(D(real)) − log(1 − σ(D(fake)))
        return (F.softplus(-real) + F.softplus(fake)).mean()
    if kind == "hinge":  # InvSR's hinge_d_loss
        return 0.5 * (F.relu(1 - real) + F.relu(1 + fake)).mean()
    raise ValueError(f"unknown GAN loss '{kind}'")


def g_loss(fake: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """Generator (encoder) adversarial loss (Eq. 5): −log σ(D(Z_SR)); hinge: −D(Z_SR)."""
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind == "hinge":
        return (-fake).mean()
    raise ValueError(f"unknown GAN loss '{kind}'")


# ---- gradient-defined losses (Eq. 7, Eq. 8) ------------------------------------------------------
def surrogate(target_of: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5·mean((y − sg(y − g))²) for y = ``target_of``: its gradient w.r.t. y is g/numel (g detached) and
    its value is 0.5·mean(g²), DMD's way of turning a prescribed gradient into a loss."""
    y = target_of
    return 0.5 * F.mse_loss(y, (y - grad.to(y.dtype)).detach(), reduction="sum") / y.numel()


def dm_grad(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z_sr: torch.Tensor,
    x_hr: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """Eq. 6–7: noise Z_SR and X_HR^0 with the *shared* ε at t, then g = μ_ψ(Z̃) − μ_ψ(X̃).

    Applied at Z_SR (:func:`surrogate`), descending g moves Z_SR towards X_HR^0 (for a Gaussian data
    model g ∝ Z_SR − X_HR^0), so the printed sign is kept.  No gradient flows through μ_ψ here.
    """
    from methods.dmsr.pipeline import add_noise

    with torch.no_grad():
        z_t = add_noise(z_sr.detach(), noise, t, alphas_cumprod)
        x_t = add_noise(x_hr, noise, t, alphas_cumprod)
        eps = eps_fn(torch.cat([z_t, x_t]), torch.cat([t, t])).float()
        e_z, e_x = eps.chunk(2)
    return e_z - e_x


def eps_target(
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    eps_sr: torch.Tensor,
    x_hr: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
) -> torch.Tensor:
    """Eq. 8's μ_ψ(√ᾱ·X_HR^0 + √(1−ᾱ)·ε_SR, t): the noise the denoiser sees when ε_SR is added to X_HR^0.

    L_ε regresses ε_SR onto this target (stop-gradient): gradient (ε_SR − target)·∂ε_SR/∂θ.  A fixed
    point ε* = μ_ψ(√ᾱ·X_HR + √(1−ᾱ)·ε*) is exactly a noise from which μ_ψ reconstructs X_HR (§3.5).  Eq. 8
    prints the opposite sign (μ − ε_SR); descending that moves ε_SR *away* from the fixed point (shown for
    a Gaussian data model in the README), so it is read as the residual of the regression.
    """
    from methods.dmsr.pipeline import add_noise

    with torch.no_grad():
        return eps_fn(add_noise(x_hr, eps_sr.detach(), t, alphas_cumprod), t).float()


# ---- timestep estimator target (§3.1) -----------------------------------------------------------
def lpips_timestep_target(
    lpips_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    i_lr: torch.Tensor,
    i_hr: torch.Tensor,
    *,
    scale: float = 500.0,
    t_max: int = 499,
) -> torch.Tensor:
    """t_gt = clamp(scale·LPIPS(I_LR, I_HR), 0, t_max) for images in [0, 1] (``lpips_fn`` takes [-1, 1])."""
    with torch.no_grad():
        d = lpips_fn(i_lr * 2 - 1, i_hr * 2 - 1).float().view(-1)
    return (scale * d).clamp(0, t_max)
