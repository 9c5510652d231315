"""Train DM-SR (paper §3–4; no official code exists, so this is the recipe srbench ships).

``srbench train dmsr [--config FILE] [key=value ...]``  (also ``python -m methods.dmsr.train ...``)

Defaults are ``conf/train/dmsr.yaml`` (the paper's values where it gives them).  Two stages, in order
(brief §6.6: "train T first and freeze it, then train E_θ on the predicted t̂"; the paper does not say):

* ``estimator``: T regresses t_gt = clamp(500·LPIPS(I_LR, I_HR), 0, 499) with an L1 loss (§3.1);
* ``encoder``: E_θ (init: the SD VAE encoder, zero-init t-embeddings) with T frozen, on
  L_tot = 1·L1 + 2·L_per(latent LPIPS) + 0.1·L_adv + 0.5·L_dm + 1·L_ε (Eq. 3, 9; App. A.2), the
  LR-conditioned ControlNet discriminator trained alongside (Eq. 4), AdamW lr 1e-4 halved every 100k,
  batch 16, 300k iterations (§4.1).  The SD UNet and VAE stay frozen; gradients flow *through* the UNet
  (Z_SR depends on E_θ through ε_SR = μ_ψ(X)).

Output: ``<output_dir>/checkpoint`` in srbench's DM-SR format (``dmsr.json`` + ``dmsr.safetensors``), the
directory the ``dmsr`` method loads; ``<output_dir>/train_state.pt`` (optimisers, discriminator, counters)
for ``resume=true``; ``<output_dir>/train_log.jsonl``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from srbench.safe_load import load_tensors

log = logging.getLogger("srbench.dmsr.train")

STAGES = ("estimator", "encoder")


# ---- config -------------------------------------------------------------------------------------
def default_config_path() -> Path:
    from srbench.cli import conf_dir

    return conf_dir() / "train" / "dmsr.yaml"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """The training config: the YAML file merged with ``key=value`` overrides (OmegaConf dotlist)."""
    from omegaconf import OmegaConf

    from srbench.interface import SRBenchError

    p = Path(path) if path else default_config_path()
    if not p.is_file():
        raise SRBenchError(f"training config {p} does not exist")
    cfg = OmegaConf.load(p)
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise SRBenchError(f"overrides must look like key=value, got {bad}")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise SRBenchError(f"unknown stages {unknown}; choose from {list(STAGES)}")
    return cfg


# ---- building blocks ------------------------------------------------------------------------------
def _torchvision_backbone(name: str) -> Path:
    import torchvision

    url = getattr(torchvision.models, name).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def build_lpips_target(net: str, pretrained_backbone: bool) -> torch.nn.Module:
    """The LPIPS of the estimator's target (``lpips`` package; backbone from the torch hub cache)."""
    import lpips

    from srbench.interface import WeightsMissing

    if pretrained_backbone:
        weights = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}[net]
        path = _torchvision_backbone(weights)
        if not path.is_file():
            raise WeightsMissing(
                f"LPIPS-{net} needs the torchvision ImageNet backbone at {path} (set TORCH_HOME); or set "
                "estimator.lpips_pretrained_backbone=false (random backbone: tests only)"
            )
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated ``pretrained=`` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=not pretrained_backbone, verbose=False)
    return model.eval().requires_grad_(False)


def build_latent_lpips(spec: Any, width_div: int) -> torch.nn.Module:
    """InvSR's latent LPIPS: a file path, ``null`` (HF OAOA/InvSR via the weights manifest) or ``random``."""
    from methods.dmsr.losses import LATENT_LPIPS_FILE, LatentLPIPS

    if spec == "random":
        return LatentLPIPS(width_div=width_div)
    if spec is None:
        from srbench.weights import resolve

        spec = resolve("dmsr", LATENT_LPIPS_FILE)
    return LatentLPIPS.from_file(spec, width_div=width_div)


@dataclass
class TrainState:
    stage: str = STAGES[0]
    iteration: int = 0  # finished iterations of ``stage``
    iterations: dict[str, int] = field(default_factory=dict)  # per stage, including init_from's
    resume: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage trained in this output_dir


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (
            round(float(v), 6) if isinstance(v, (int, float, torch.Tensor)) and not isinstance(v, bool) else v
        )
        for k, v in d.items()
    }


@dataclass
class EncoderForward:
    """One stage-2 batch after the forward pass (Eq. 2): I_LR, X_HR^0, t, X, ε_SR and Z_SR."""

    i_lr: torch.Tensor
    x_hr: torch.Tensor
    t: torch.Tensor
    x: torch.Tensor
    eps_sr: torch.Tensor
    z: torch.Tensor


@dataclass
class EncoderParts:
    latent_lpips: torch.nn.Module
    disc: torch.nn.Module
    fake_unet: torch.nn.Module | None
    target_lpips: torch.nn.Module | None


def timestep_histogram(t: torch.Tensor, t_max: int, bins: int = 10) -> list[int]:
    """Counts of ``t`` in ``bins`` equal bins over [0, t_max + 1)."""
    idx = (t.detach().float().clamp(0, t_max) * bins / (t_max + 1)).floor().long().clamp_(0, bins - 1)
    return torch.bincount(idx.view(-1).cpu(), minlength=bins).tolist()


def is_collapsed(t_hat_hist: list[int], ref_hist: list[int]) -> bool:
    """The estimator sends every input to one bin while its targets occupy several."""
    return sum(1 for n in t_hat_hist if n) == 1 and sum(1 for n in ref_hist if n) > 1


def disc_optimizer(params: list[torch.nn.Parameter], c: Any) -> torch.optim.Optimizer:
    """The discriminator's optimiser: Adam with InvSR's lr_dis 5e-5 and weight_decay_dis 1e-3 (InvSR
    trainer.py ``optimizer_dis = torch.optim.Adam``: weight decay as an L2 term), or AdamW."""
    kind = str(c.get("disc_optimizer", "adam"))
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind)
    if cls is None:
        raise ValueError(f"encoder.disc_optimizer must be adam|adamw, got {kind}")
    return cls(params, lr=float(c.disc_lr), weight_decay=float(c.disc_weight_decay))


class DMSRTrainer:
    """Everything one training run holds; :meth:`run` goes through the configured stages."""

    def __init__(self, cfg: Any) -> None:
        from methods.dmsr.checkpoint import PAPER_PROMPT, load_checkpoint
        from methods.dmsr.encoder import TimestepAwareEncoder
        from methods.dmsr.estimator import TimestepEstimator
        from methods.dmsr.pipeline import DMSRPipeline
        from srbench.diffusion.prompts import PromptEmbeddingCache
        from srbench.diffusion.schedules import alphas_cumprod_of
        from srbench.diffusion.sd import load_sd_components
        from srbench.environment import resolve_device
        from srbench.testing import is_random_weights

        self.cfg = cfg
        self.device = resolve_device(str(cfg.device))
        self.out = Path(cfg.output_dir).expanduser()
        self.out.mkdir(parents=True, exist_ok=True)
        cuda = self.device.type == "cuda"
        precision = str(cfg.precision) if cuda else "fp32"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
        self.scalers: dict[int, Any] = {}  # one GradScaler per optimiser, fp16 only
        self.gen = torch.Generator(self.device).manual_seed(int(cfg.seed))  # all training noise

        # frozen SD (§4.1: SD-Turbo); stored in the autocast dtype to save memory
        sd = load_sd_components(
            cfg.base_model,
            dtype=self.amp_dtype,
            device=self.device,
            parts=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
            fetch_hint="dmsr",
        )
        self.sd = sd
        self.base_random = Path(str(cfg.base_model)).expanduser().exists() and is_random_weights(
            Path(str(cfg.base_model)).expanduser()
        )
        self.prompt = PAPER_PROMPT if cfg.prompt in (None, "paper") else str(cfg.prompt)
        cache = PromptEmbeddingCache(sd.tokenizer, sd.text_encoder)
        self.prompt_embeds = cache.encode(self.prompt, device=self.device, dtype=self.amp_dtype)
        cache.release_text_encoder()
        sd.text_encoder = None
        self.abar = alphas_cumprod_of(sd.scheduler)
        self.t_max = int(cfg.t_max)

        # trainable networks: from a DM-SR checkpoint, or fresh (T: ImageNet VGG19; E: the SD VAE encoder)
        if cfg.init_from:
            ck = load_checkpoint(cfg.init_from)
            self.estimator, self.encoder = ck.estimator, ck.encoder
            self.init_info = ck.config.training
        else:
            self.estimator = TimestepEstimator(width_div=int(cfg.estimator.width_div))
            mode = str(cfg.estimator.imagenet_init)
            if mode == "required" or (
                mode == "if_cached" and _torchvision_backbone("VGG19_Weights").is_file()
            ):
                self.estimator.load_imagenet_vgg19(download=bool(cfg.allow_downloads))
            elif mode not in ("none", "if_cached"):
                raise ValueError(f"estimator.imagenet_init must be required|if_cached|none, got {mode}")
            self.encoder = TimestepAwareEncoder.from_vae(sd.vae, temb_dim=int(cfg.encoder.temb_dim))
            self.init_info = {}
        self.estimator.to(self.device).float()
        self.encoder.to(self.device).float()
        self.encoder.gradient_checkpointing = bool(cfg.encoder.gradient_checkpointing)
        if bool(cfg.encoder.unet_gradient_checkpointing):  # frozen, but back-propagated through (Z_SR)
            sd.unet.enable_gradient_checkpointing()
        self.pipe = DMSRPipeline(
            estimator=self.estimator,
            encoder=self.encoder,
            unet=sd.unet,
            vae=sd.vae,
            alphas_cumprod=self.abar,
            prompt_embeds=self.prompt_embeds,
            t_max=self.t_max,
            scale=int(cfg.data.scale),
        )
        self.state = TrainState(
            iterations={k: int(v) for k, v in self.init_info.get("iterations", {}).items()}
        )
        self.history: dict[str, Any] = {}

    # ---- helpers --------------------------------------------------------------------------------
    def autocast(self) -> Any:
        if self.device.type != "cuda" or self.amp_dtype == torch.float32:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def loader(self, stage: str, start: int, stop: int, batch: int) -> Any:
        from torch.utils.data import DataLoader

        from methods.dmsr.data import CounterSampler, PairedSRDataset

        d = self.cfg.data
        ds = PairedSRDataset(
            list(d.hr_dirs),
            gt_size=int(d.gt_size),
            scale=int(d.scale),
            seed=int(self.cfg.seed) + (0 if stage == STAGES[0] else 1_000_003),
            lr_dir=d.lr_dir,
            use_hflip=bool(d.use_hflip),
            degradation=_plain(d.degradation),
            backend=str(d.degradation_backend),
        )
        return DataLoader(
            ds,
            batch_size=batch,
            sampler=CounterSampler(start * batch, stop * batch),
            num_workers=int(d.num_workers),
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _log(self, stage: str, it: int, values: dict[str, Any]) -> None:
        rec = {"stage": stage, "iteration": it, "time": round(time.time(), 3), **_jsonable(values)}
        with (self.out / "train_log.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info(
            "%s %d %s", stage, it, {k: v for k, v in rec.items() if k not in ("stage", "iteration", "time")}
        )
        self.history.setdefault(stage, []).append(rec)

    def eps_fn(self, unet: Any = None) -> Any:
        unet = unet or self.sd.unet

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond = self.prompt_embeds.expand(x.shape[0], *self.prompt_embeds.shape[1:])
            with self.autocast():
                return unet(x.to(self.amp_dtype), t, encoder_hidden_states=cond).sample

        return fn

    def _step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
        opt.zero_grad(set_to_none=True)
        scaler = None
        if self.amp_dtype == torch.float16:
            scaler = self.scalers.setdefault(id(opt), torch.amp.GradScaler("cuda"))
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        clip = float(self.cfg.grad_clip or 0)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    # ---- stage 1: timestep estimator (§3.1) -----------------------------------------------------
    def train_estimator(self, resume: dict[str, Any] | None) -> None:
        c = self.cfg.estimator
        total = int(c.iterations)
        lpips_fn = build_lpips_target(str(c.lpips_net), bool(c.lpips_pretrained_backbone)).to(self.device)
        params = [p for p in self.estimator.parameters()]
        opt = torch.optim.AdamW(params, lr=float(c.lr), weight_decay=float(c.weight_decay))
        start = 0
        if resume:
            opt.load_state_dict(resume["opt"])
            start = int(resume["iteration"])
        self.estimator.train().requires_grad_(True)
        it = start
        seen_hat: list[torch.Tensor] = []
        seen_gt: list[torch.Tensor] = []
        for batch in self.loader("estimator", start, total, int(c.batch_size)):
            hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
            loss, t_hat, t_gt = self.estimator_loss(hr, lr, lpips_fn)
            self._step(loss, opt, params)
            seen_hat.append(t_hat.detach().float().cpu())
            seen_gt.append(t_gt.detach().float().cpu())
            it += 1
            self.state.iteration = it
            if it % int(self.cfg.log_every) == 0 or it == total:
                rmse = (t_hat.detach() - t_gt).pow(2).mean().sqrt()
                vals: dict[str, Any] = {"loss": loss.detach(), "rmse": rmse, "t_gt_mean": t_gt.mean()}
                vals.update(self.collapse_report(torch.cat(seen_hat), torch.cat(seen_gt), "estimator", it))
                self._log("estimator", it, vals)
                seen_hat, seen_gt = [], []
            if it % int(self.cfg.save_every) == 0 or it == total:
                self.save({"opt": opt.state_dict(), "iteration": it})
        self.estimator.eval().requires_grad_(False)

    def estimator_loss(
        self, hr: torch.Tensor, lr: torch.Tensor, lpips_fn: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1 on one batch: t_gt = clamp(s·LPIPS(I_LR, I_HR), 0, t_max) (§3.1), t̂ = T(I_LR), loss =
        L1(t̂, t_gt) (brief §6.6).  Returns (loss, t̂, t_gt)."""
        from methods.dmsr.losses import lpips_timestep_target
        from methods.dmsr.pipeline import upsample_lr

        c = self.cfg.estimator
        i_lr = upsample_lr(lr, int(self.cfg.data.scale))
        t_gt = lpips_timestep_target(lpips_fn, i_lr, hr, scale=float(c.target_scale), t_max=self.t_max)
        with self.autocast():
            t_hat = self.estimator(i_lr)
        return F.l1_loss(t_hat.float(), t_gt), t_hat, t_gt

    def collapse_report(
        self, t_hat: torch.Tensor, t_ref: torch.Tensor, stage: str, it: int
    ) -> dict[str, Any]:
        """Histograms of t̂ and of the reference t over [0, t_max] (``collapse_bins`` bins) since the last
        report; *collapse* = every t̂ in one bin while the references spread over several (a tiny run
        once sent every input to one bin).  Logged as a warning and recorded in train_log.jsonl."""
        hat = timestep_histogram(t_hat, self.t_max, self._bins())
        ref = timestep_histogram(t_ref, self.t_max, self._bins())
        collapsed = is_collapsed(hat, ref)
        if collapsed:
            log.warning(
                "%s %d: timestep estimator collapsed: every t̂ in one bin %s while the targets span %s",
                stage,
                it,
                hat,
                ref,
            )
        return {"t_hat_hist": hat, "t_ref_hist": ref, "collapsed": collapsed}

    def _bins(self) -> int:
        return int(self.cfg.get("collapse_bins", 10))

    # ---- stage 2: encoder (§3.2–3.5) ------------------------------------------------------------
    def encoder_parts(self) -> EncoderParts:
        """The networks stage 2 trains or scores with besides E_θ: latent LPIPS, the LR-conditioned
        discriminator (App. A.1), the DMD "fake" score (``dm_score=fake`` only), the LPIPS of the
        ``timestep_source=target`` ablation."""
        from methods.dmsr.discriminator import ControlNetDiscriminator

        c = self.cfg.encoder
        sd = self.sd
        vae_down = 2 ** (len(sd.vae.config.block_out_channels) - 1)
        latent_lpips = build_latent_lpips(_plain(c.latent_lpips), int(c.latent_lpips_width_div)).to(
            self.device
        )
        latent_lpips.to(self.amp_dtype)
        disc = ControlNetDiscriminator.for_base_model(sd.unet.config, vae_down, list(c.disc_channels)).to(
            self.device
        )
        fake_unet = None
        if str(c.dm_score) == "fake":  # DMD-style variant (not the paper's Eq. 7): a trained "fake" score
            fake_unet = copy.deepcopy(sd.unet).float().train().requires_grad_(True)
        elif str(c.dm_score) != "paired":
            raise ValueError(f"encoder.dm_score must be paired|fake, got {c.dm_score}")
        target_lpips = None
        if str(c.timestep_source) == "target":
            e = self.cfg.estimator
            target_lpips = build_lpips_target(str(e.lpips_net), bool(e.lpips_pretrained_backbone)).to(
                self.device
            )
        elif str(c.timestep_source) != "estimated":
            raise ValueError(f"encoder.timestep_source must be estimated|target, got {c.timestep_source}")
        return EncoderParts(latent_lpips, disc, fake_unet, target_lpips)

    def encoder_forward(self, hr: torch.Tensor, lr: torch.Tensor, target_lpips: Any = None) -> EncoderForward:
        """One batch through DM-SR as trained: X_HR^0 = VAE latent of the HR (no gradient), t from the
        frozen T (or the LPIPS target), X = E_θ(I_LR, t), ε_SR = μ_ψ(X, t) and Z = (X − √(1−ᾱ)ε_SR)/√ᾱ
        (Eq. 2) -- gradients flow from Z and ε_SR back to E_θ through the frozen UNet."""
        from methods.dmsr.estimator import discretize_timestep
        from methods.dmsr.losses import lpips_timestep_target
        from methods.dmsr.pipeline import upsample_lr, x0_from_eps
        from srbench.diffusion.vae import vae_encode

        i_lr = upsample_lr(lr, int(self.cfg.data.scale))
        with torch.no_grad():
            x_hr = vae_encode(
                self.sd.vae, hr * 2 - 1, sample=bool(self.cfg.encoder.hr_latent_sample), generator=self.gen
            ).float()
            if target_lpips is None:
                t = discretize_timestep(self.estimator(i_lr), self.t_max)  # T frozen (stage 1)
            else:
                scale = float(self.cfg.estimator.target_scale)  # stage 1's t_gt (§3.1)
                t_gt = lpips_timestep_target(target_lpips, i_lr, hr, scale=scale, t_max=self.t_max)
                t = discretize_timestep(t_gt, self.t_max)
        with self.autocast():
            x = self.pipe.encode(i_lr, t).float()
        eps_sr = self.eps_fn()(x, t).float()
        z = x0_from_eps(x, eps_sr, t, self.abar)
        return EncoderForward(i_lr=i_lr, x_hr=x_hr, t=t, x=x, eps_sr=eps_sr, z=z)

    def encoder_losses(
        self, fwd: EncoderForward, parts: EncoderParts, *, use_adv: bool
    ) -> dict[str, torch.Tensor]:
        """The loss terms of Eq. 9 with a non-zero weight: L1 and latent LPIPS on Z_SR vs X_HR^0 (Eq. 3),
        L_adv from the LR-conditioned discriminator (Eq. 5, only when ``use_adv``), L_dm (Eq. 6–7, shared
        noise drawn from the trainer's generator) and L_ε (Eq. 8), the last two as surrogates whose
        gradients are the printed expressions (:mod:`methods.dmsr.losses`)."""
        from methods.dmsr.losses import dm_grad, eps_target, g_loss, surrogate
        from methods.dmsr.pipeline import add_noise

        c = self.cfg.encoder
        w = c.losses
        eps_real = self.eps_fn()
        z, x_hr, t = fwd.z, fwd.x_hr, fwd.t
        losses: dict[str, torch.Tensor] = {}
        if float(w.l1) > 0:
            losses["l1"] = F.l1_loss(z, x_hr)
        if float(w.lpips) > 0:
            with self.autocast():
                lp = parts.latent_lpips(z.to(self.amp_dtype), x_hr.to(self.amp_dtype))
            losses["lpips"] = lp.float().mean()
        if use_adv and float(w.adv) > 0:
            parts.disc.requires_grad_(False)  # Eq. 5: only E_θ is updated
            with self.autocast():
                losses["adv"] = g_loss(
                    parts.disc(z, t, self.prompt_embeds, fwd.i_lr).float(), str(c.gan_loss)
                )
            parts.disc.requires_grad_(True)
        # L_dm (Eq. 6–7): shared noise, timestep t̂ (or uniform in [1, t_max])
        if float(w.dm) > 0:
            if str(c.dm_timestep) == "uniform":
                t_dm = torch.randint(1, self.t_max + 1, t.shape, generator=self.gen, device=self.device)
            else:
                t_dm = t
            noise = torch.randn(z.shape, generator=self.gen, device=self.device)
            if parts.fake_unet is None:
                g = dm_grad(eps_real, z, x_hr, t_dm, noise, self.abar)
            else:  # DMD: ∝ s_fake − s_real = (ε_real − ε_fake)/σ at the noised Z_SR
                with torch.no_grad():
                    z_t = add_noise(z.detach(), noise, t_dm, self.abar)
                    g = eps_real(z_t, t_dm).float() - self.eps_fn(parts.fake_unet)(z_t, t_dm).float()
            losses["dm"] = surrogate(z, g)
        # L_ε (Eq. 8): ε_SR regressed onto μ_ψ(√ᾱ X_HR + √(1−ᾱ) ε_SR, t̂) (stop-gradient)
        if float(w.eps) > 0:
            tgt = eps_target(eps_real, fwd.eps_sr, x_hr, t, self.abar)
            losses["eps"] = surrogate(fwd.eps_sr, fwd.eps_sr.detach() - tgt)
        return losses

    def weighted_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 9: Σ_k w_k·L_k with the configured ``encoder.losses`` weights."""
        w = self.cfg.encoder.losses
        total = sum(float(w[k]) * v for k, v in losses.items())
        if not isinstance(total, torch.Tensor):
            raise ValueError("no loss term has a non-zero weight")
        return total

    def discriminator_loss(self, disc: torch.nn.Module, fwd: EncoderForward) -> torch.Tensor:
        """Eq. 4: real X_HR^0 against Z_SR (detached), both conditioned on I_LR (and t, the prompt)."""
        from methods.dmsr.losses import d_loss

        with self.autocast():
            real = disc(fwd.x_hr, fwd.t, self.prompt_embeds, fwd.i_lr).float()
            fake = disc(fwd.z.detach(), fwd.t, self.prompt_embeds, fwd.i_lr).float()
            return d_loss(real, fake, str(self.cfg.encoder.gan_loss))

    def train_encoder(self, resume: dict[str, Any] | None) -> None:
        from methods.dmsr.pipeline import add_noise

        c = self.cfg.encoder
        w = c.losses
        total = int(c.iterations)
        parts = self.encoder_parts()
        disc, fake_unet, target_lpips = parts.disc, parts.fake_unet, parts.target_lpips

        enc_params = [p for p in self.encoder.parameters()]
        opt = torch.optim.AdamW(enc_params, lr=float(c.lr), weight_decay=float(c.weight_decay))  # §4.1
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=int(c.lr_halve_every), gamma=0.5)
        d_params = [p for p in disc.parameters()]
        opt_d = disc_optimizer(d_params, c)
        opt_f = None
        if fake_unet is not None:
            opt_f = torch.optim.AdamW(fake_unet.parameters(), lr=float(c.fake_lr), weight_decay=0.0)
        start = 0
        if resume:
            opt.load_state_dict(resume["opt"])
            sched.load_state_dict(resume["sched"])
            disc.load_state_dict(resume["disc"])
            opt_d.load_state_dict(resume["opt_d"])
            if fake_unet is not None and "fake_unet" in resume:
                fake_unet.load_state_dict(resume["fake_unet"])
                opt_f.load_state_dict(resume["opt_f"])  # type: ignore[union-attr]
            if "gen" in resume:
                self.gen.set_state(resume["gen"].cpu())
            start = int(resume["iteration"])

        self.estimator.eval().requires_grad_(False)
        self.encoder.train().requires_grad_(True)
        disc.train()
        it = start
        seen_t: list[torch.Tensor] = []
        for batch in self.loader("encoder", start, total, int(c.batch_size)):
            hr, lr = batch["hr"].to(self.device), batch["lr"].to(self.device)
            b = hr.shape[0]
            fwd = self.encoder_forward(hr, lr, target_lpips)
            seen_t.append(fwd.t.detach().float().cpu())
            losses = self.encoder_losses(fwd, parts, use_adv=it >= int(c.adv_start))
            total_loss = self.weighted_total(losses)
            if not torch.isfinite(total_loss):
                raise FloatingPointError(f"non-finite loss at encoder iteration {it + 1}: {losses}")
            self._step(total_loss, opt, enc_params)
            sched.step()

            d_val = torch.zeros(())
            if float(w.adv) > 0:
                d_val = self.discriminator_loss(disc, fwd)
                self._step(d_val, opt_d, d_params)
            # fake score model (DMD variant only): denoising loss on the current Z_SR
            if fake_unet is not None and opt_f is not None:
                for _ in range(int(c.fake_updates)):
                    t_f = torch.randint(0, self.t_max + 1, (b,), generator=self.gen, device=self.device)
                    n_f = torch.randn(fwd.z.shape, generator=self.gen, device=self.device)
                    z_t = add_noise(fwd.z.detach(), n_f, t_f, self.abar)
                    pred = self.eps_fn(fake_unet)(z_t, t_f).float()
                    self._step(F.mse_loss(pred, n_f), opt_f, list(fake_unet.parameters()))

            it += 1
            self.state.iteration = it
            if it % int(self.cfg.log_every) == 0 or it == total:
                vals: dict[str, Any] = {k: v.detach() for k, v in losses.items()}
                vals.update(
                    total=total_loss.detach(),
                    d=d_val.detach(),
                    t_mean=fwd.t.float().mean(),
                    lr=sched.get_last_lr()[0],
                )
                # the timesteps E_θ trained on since the last record (the frozen T's, or the targets)
                vals["t_hist"] = timestep_histogram(torch.cat(seen_t), self.t_max, self._bins())
                seen_t = []
                self._log("encoder", it, vals)
            if it % int(self.cfg.save_every) == 0 or it == total:
                self.save(self._encoder_resume(opt, sched, disc, opt_d, fake_unet, opt_f, it))
        self.encoder.eval().requires_grad_(False)

    def _encoder_resume(self, opt, sched, disc, opt_d, fake_unet, opt_f, it: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        st: dict[str, Any] = {
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "disc": disc.state_dict(),
            "opt_d": opt_d.state_dict(),
            "iteration": it,
            "gen": self.gen.get_state(),
        }
        if fake_unet is not None:
            st["fake_unet"] = fake_unet.state_dict()
            st["opt_f"] = opt_f.state_dict()
        return st

    # ---- saving ---------------------------------------------------------------------------------
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoint"

    def save(self, stage_state: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint and ``train_state.pt``.

        ``stage_state``: optimisers, counters etc. of the running stage (for ``resume=true``)."""
        from omegaconf import OmegaConf

        from methods.dmsr.checkpoint import DMSRConfig, save_checkpoint
        from srbench.testing import mark_random_weights, random_marker_path

        if stage_state is not None:
            self.state.iterations[self.state.stage] = self.state.iteration
            self.state.resume[self.state.stage] = stage_state
        iters = dict(self.state.iterations)
        real = (
            not self.base_random
            and all(iters.get(s, 0) > 0 for s in STAGES)
            and bool(self.cfg.estimator.lpips_pretrained_backbone)
            and _plain(self.cfg.encoder.latent_lpips) != "random"
        )
        cfg = DMSRConfig(
            base_model=str(self.cfg.base_model),
            prompt=self.prompt,
            t_max=self.t_max,
            scale=int(self.cfg.data.scale),
            real=real,
            training={
                "iterations": iters,
                "recipe": OmegaConf.to_container(self.cfg, resolve=True),
                "trainer": "methods.dmsr.train",
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
        out = save_checkpoint(
            self.checkpoint_dir(), estimator=self.estimator, encoder=self.encoder, config=cfg
        )
        if real:
            random_marker_path(out).unlink(missing_ok=True)
        else:
            mark_random_weights(
                out, builder="methods.dmsr.train", base_model=str(self.cfg.base_model), iterations=iters
            )
        tmp = self.out / ".train_state.pt.tmp"
        torch.save({"iterations": iters, "resume": self.state.resume}, tmp)
        tmp.replace(self.out / "train_state.pt")
        return out

    # ---- the run --------------------------------------------------------------------------------
    def run(self) -> Path:
        """Run ``cfg.stages`` in order.  With ``resume=true`` a stage trained in this output_dir continues
        from its saved state (skipped when it already has the configured iterations)."""
        state_file = self.out / "train_state.pt"
        if bool(self.cfg.resume) and state_file.is_file():
            from methods.dmsr.checkpoint import load_checkpoint

            saved = load_tensors(state_file, map_location=self.device)
            ck = load_checkpoint(self.checkpoint_dir(), device=self.device)
            self.estimator.load_state_dict(ck.estimator.state_dict())
            self.encoder.load_state_dict(ck.encoder.state_dict())
            self.state.iterations = dict(saved["iterations"])
            self.state.resume = dict(saved["resume"])
            log.info("resuming %s at %s", self.out, self.state.iterations)
        for stage in self.cfg.stages:
            target = int(self.cfg[stage].iterations)
            r = self.state.resume.get(stage)
            if r is not None and int(r["iteration"]) >= target:
                log.info("stage %s already has %d iterations: skipped", stage, int(r["iteration"]))
                continue
            self.state.stage, self.state.iteration = stage, int(r["iteration"]) if r else 0
            if stage == "estimator":
                self.train_estimator(r)
            else:
                self.train_encoder(r)
            log.info("stage %s done (%d iterations): %s", stage, self.state.iteration, self.checkpoint_dir())
        return self.checkpoint_dir()


def _plain(x: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(x, (DictConfig, ListConfig)):
        return OmegaConf.to_container(x, resolve=True)
    return x


def train(cfg: Any) -> Path:
    """Run the configured stages; return the checkpoint directory."""
    return DMSRTrainer(cfg).run()


def train_cli(argv: list[str]) -> int:
    """``srbench train dmsr [--config FILE] [--print-config] [key=value ...]``; returns an exit code."""
    from omegaconf import OmegaConf

    from srbench.interface import SRBenchError

    p = argparse.ArgumentParser(
        prog="srbench train dmsr",
        description="Train DM-SR's timestep estimator and encoder (methods/dmsr/README.md).",
        epilog="example: srbench train dmsr data.hr_dirs=[/data/DF2K,/data/LSDIR] output_dir=runs/dmsr",
    )
    p.add_argument("--config", default=None, help="YAML file (default: conf/train/dmsr.yaml)")
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    p.add_argument("overrides", nargs="*", help="key=value (OmegaConf dotlist), e.g. encoder.iterations=1000")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.print_config:
            print(OmegaConf.to_yaml(cfg))
            return 0
        if not cfg.data.hr_dirs:
            raise SRBenchError("set data.hr_dirs=[folder,...] (HR training images, e.g. DF2K and LSDIR)")
        from methods.dmsr.data import list_images

        list_images(list(cfg.data.hr_dirs))  # fail before loading any model
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        out = train(cfg)
    except (SRBenchError, FileNotFoundError, ValueError) as exc:
        print(f"srbench train dmsr: {exc}", file=sys.stderr)
        return 1
    print(f"checkpoint: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(train_cli(sys.argv[1:]))
