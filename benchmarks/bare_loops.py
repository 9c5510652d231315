"""Bare loops: each srbench method's computation written directly against torch / diffusers modules.

``BARE[name](method, lr, steps, generator)`` takes a *loaded* srbench method only to borrow what it
holds — networks (UNet, VAE, ControlNet, noise predictor, encoders, RRDBNet), tables (``alphas_cumprod``,
sigma tables) and the cached prompt embedding — and then runs the same arithmetic as
``method.upscale(lr, steps=steps, generator=generator)`` as one plain loop: no srbench wrappers
(samplers, pipelines, solvers, ``tiled_map``), no stage timers, no srbench helper functions in the loop
(the few small pure-math helpers — VE sigmas, the DoS-SDE coefficients, wavelet / AdaIN colour fixes,
DDPM respacing — are re-expressed below).  The random draws happen in the same order as srbench's, so
with identically seeded ``torch.Generator``s the outputs agree (bit for bit on CPU fp32 with this
torch / diffusers; ``tests/test_bare_loops.py`` allows 1e-5).

Only the simple, single-tile path of each method is reproduced; :func:`bench_options` gives the
method options that put an LR of ``size`` x ``size`` px on it, and the bare functions refuse anything
else:

* ``bicubic``: ``F.interpolate(x4, bicubic)``.
* ``realesrgan``: ``tile=0`` (one RRDBNet pass on the whole image).
* ``invsr``: ``chopping_size = size`` (one pipeline call, no padding), deterministic Euler with the
  code's one unused randn per step, ``color_fix = none``.
* ``dmsr``: ``tile_size = size`` (one tile, no padding), T's own estimate of t.
* ``dossr``: LR side a multiple of 16 (no padding), ``eta = code``, ``x0_form = code``, any order.
* ``stablesr``: ``input_size = 4 * size`` so the ×4 bicubic image is exactly the input size and the
  latent (``size / 2``) is exactly one ``input_size / 8`` tile; DDPM sampler, ``init_latent = noise``,
  no classifier-free guidance (``cfg_scale = 1``), CFW with the method's ``w``, AdaIN / wavelet / no
  colour fix.

Per-(method, steps) constants (timestep tensors, step coefficients, the prompt embedding, a diffusers
``DDPMScheduler``) are computed once and cached, as a hand-written loop would hold them.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

Bare = Callable[[Any, torch.Tensor, int, torch.Generator | None], torch.Tensor]

#: methods that have a bare loop, in the benchmark's order
METHODS = ("bicubic", "realesrgan", "invsr", "dmsr", "dossr", "stablesr")
#: methods that draw no sampling steps (always run with steps=1)
ONE_STEP = ("bicubic", "realesrgan")

_PLANS: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()


def bench_options(name: str, size: int) -> dict[str, Any]:
    """Method options (passed to ``srbench.testing.factories.build_tiny``) that put an LR of
    ``size`` x ``size`` px on the single-tile path that the bare loop reproduces."""
    if name in ("invsr", "dmsr", "dossr", "stablesr") and size % 16:
        raise ValueError(f"{name}: the LR size must be a multiple of 16 px for one unpadded tile, got {size}")
    if name == "invsr":
        return {"chopping_size": size}
    if name == "dmsr":
        return {"tile_size": size, "tile_stride": max(1, size // 2)}
    if name == "stablesr":
        return {"input_size": 4 * size}
    if name == "realesrgan":
        return {"tile": 0}
    return {}


def method_steps(name: str, steps: int) -> int:
    """The step count the benchmark runs ``name`` with (1 for the one-pass methods)."""
    return 1 if name in ONE_STEP else int(steps)


def _plan(method: Any, steps: int, build: Callable[[Any, int], Any]) -> Any:
    per = _PLANS.setdefault(method, {})
    if steps not in per:
        per[steps] = build(method, steps)
    return per[steps]


def _randn(shape: torch.Size, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    # diffusers' randn_tensor for a generator on like's device
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


# ---- bicubic / Real-ESRGAN -----------------------------------------------------------------------------
@torch.inference_mode()
def bare_bicubic(
    method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None
) -> torch.Tensor:
    out = F.interpolate(lr, scale_factor=method.scale, mode="bicubic", align_corners=False)
    return out.clamp_(0.0, 1.0)


@torch.inference_mode()
def bare_realesrgan(
    method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None
) -> torch.Tensor:
    if method.tile and max(lr.shape[-2:]) > method.tile:
        raise NotImplementedError("bare realesrgan: whole-image pass only (tile=0)")
    return method.net(lr).clamp_(0.0, 1.0)


# ---- InvSR --------------------------------------------------------------------------------------------
def _invsr_plan(method: Any, steps: int) -> dict[str, Any]:
    s = method.sampler
    if method.stochastic_sampling or not method.official_rng_order:
        raise NotImplementedError("bare invsr: deterministic Euler with the code's RNG order only")
    if (method.color_fix or "none").lower() not in ("none", "nofix"):
        raise NotImplementedError("bare invsr: color_fix=none only")
    taus = method.timesteps_for(steps)  # the paper's tau list (a table lookup)
    sig = [float(s.sigmas[t - 1]) for t in taus] + [0.0]  # VE sigmas (the paper's 1-based tau)
    dev, dtype = s.unet.device, s.unet.dtype
    return {
        "unet": s.unet,
        "vae": s.vae,
        "f_w": s.noise_predictor,
        "np_dtype": next(s.noise_predictor.parameters()).dtype,
        "emb": s.prompts.encode(s.prompt, device=dev, dtype=dtype),
        "sf": float(s.vae.config.scaling_factor),
        "t_start": torch.tensor(float(taus[0] - 1), device=dev),
        "sig0": torch.tensor(sig[0], dtype=dtype, device=dev),
        "steps": [
            (torch.tensor(float(t - 1), device=dev), sig[i], sig[i + 1], (sig[i] ** 2 + 1) ** 0.5)
            for i, t in enumerate(taus)
        ],
        "dtype": dtype,
        "size": method.chopping["chopping_size"],
    }


@torch.inference_mode()
def bare_invsr(method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    p = _plan(method, steps, _invsr_plan)
    n, _, h, w = lr.shape
    if (h, w) != (p["size"], p["size"]):
        raise NotImplementedError(f"bare invsr: LR must be exactly chopping_size={p['size']} px square")
    unet, vae, dtype = p["unet"], p["vae"], p["dtype"]
    y = lr.to(dtype)
    emb = p["emb"].expand(n, -1, -1)
    noise = p["f_w"](y.to(p["np_dtype"]), p["t_start"], generator=generator).to(dtype)
    y_up = F.interpolate(y, size=(h * 4, w * 4), mode="bicubic", align_corners=False)
    x = vae.encode(y_up * 2.0 - 1.0).latent_dist.sample(generator=generator) * p["sf"]
    x = x + p["sig0"] * noise
    for t, s, s_next, c_in in p["steps"]:
        eps = unet(x / c_in, t, encoder_hidden_states=emb).sample
        xf = x.float()
        x0 = xf - s * eps.float()
        x = (xf + (xf - x0) / s * (s_next - s)).to(dtype)
        _randn(x.shape, generator, x)  # the code's scheduler draws one unused randn per step
    img = vae.decode(x / p["sf"]).sample
    return (img / 2.0 + 0.5).clamp(0.0, 1.0).float()


# ---- DM-SR --------------------------------------------------------------------------------------------
def _dmsr_plan(method: Any, steps: int) -> dict[str, Any]:
    pipe = method.pipe
    if method.timestep is not None:
        raise NotImplementedError("bare dmsr: T's estimate only (no fixed timestep)")
    return {
        "estimator": pipe.estimator,
        "encoder": pipe.encoder,
        "unet": pipe.unet,
        "vae": pipe.vae,
        "ac": pipe.alphas_cumprod,
        "emb": pipe.prompt_embeds,
        "t_max": pipe.t_max,
        "scale": pipe.latent_scale,
        "shift": pipe.latent_shift,
        "latent_channels": pipe.encoder.latent_channels,
        "size": method.tile_size,
    }


@torch.inference_mode()
def bare_dmsr(method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    p = _plan(method, steps, _dmsr_plan)
    b, _, h, w = lr.shape
    if (h, w) != (p["size"], p["size"]):
        raise NotImplementedError(f"bare dmsr: LR must be exactly tile_size={p['size']} px square")
    t_max, ac, unet = p["t_max"], p["ac"], p["unet"]
    emb = p["emb"].expand(b, -1, -1)
    i_lr = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp_(0.0, 1.0)
    t_hat = p["estimator"](i_lr)
    t = torch.floor(t_hat.float() + 0.5).clamp_(0, t_max).long()
    mean = p["encoder"](i_lr * 2.0 - 1.0, t)[:, : p["latent_channels"]]
    x = (mean - p["shift"]) * p["scale"]
    z0 = eps_sr = None
    for k in range(steps):
        t_k = torch.floor((t_hat * (steps - k) / steps).float() + 0.5).clamp_(0, t_max).long()
        a = ac[t_k].float().view(-1, 1, 1, 1)
        # §4.4: later steps re-noise Z with the first step's ε_SR (no fresh noise)
        x_k = x if k == 0 else a.sqrt() * z0 + (1 - a).sqrt() * eps_sr
        eps = unet(x_k, t_k, encoder_hidden_states=emb).sample.float()
        if k == 0:
            eps_sr = eps
        z0 = (x_k.float() - (1 - a).sqrt() * eps) / a.sqrt()
    img = p["vae"].decode(z0 / p["scale"] + p["shift"]).sample
    return (img.float() / 2 + 0.5).clamp_(0.0, 1.0)


# ---- DoSSR --------------------------------------------------------------------------------------------
def _dossr_plan(method: Any, steps: int) -> dict[str, Any]:
    if method.eta_variant != "code" or method.x0_form != "code":
        raise NotImplementedError("bare dossr: eta='code' and x0_form='code' only")
    if method.color_fix not in ("wavelet", "none"):
        raise NotImplementedError("bare dossr: color_fix wavelet or none only")
    t1, ac_table = method.t1, np.asarray(method.alphas_cumprod, dtype=np.float64)
    # the official grid: space_timesteps(t1, steps + 1), descending
    stride, cur, grid = (t1 - 1) / steps, 0.0, []
    for _ in range(steps + 1):
        grid.append(round(cur))
        cur += stride
    ts = np.array(sorted(set(grid))[::-1], dtype=np.int64)
    eta_table = np.ones(len(ac_table))
    eta_table[:t1] = (1.0 - np.cos(np.pi * np.linspace(0.001, 0.999, t1))) / 2.0  # "trunc_12"
    ac, eta = ac_table[ts], eta_table[ts]
    alpha, sigma = np.sqrt(ac), np.sqrt(1.0 - ac)
    A = alpha * (1.0 - eta)
    lam, kk = sigma / A, eta / (1.0 - eta)
    updates = []
    for i in range(steps):  # the DoS-SDE update from grid point i to i + 1
        a_t, l_t, k_t, a_s, l_s, k_s = A[i + 1], lam[i + 1], kk[i + 1], A[i], lam[i], kk[i]
        r2 = (l_t / l_s) ** 2
        order = min(method.order, i + 1)
        updates.append(
            {
                "t": torch.full((1,), int(ts[i]), dtype=torch.long, device=method.device),
                "alpha": float(alpha[i]),
                "sigma": float(sigma[i]),
                "linear": float(a_t / a_s * r2),
                "dosg": float(a_t * (k_t - k_s * r2)),
                "pat": float(a_t * (1.0 - r2)),
                "noise": float(a_t * math.sqrt(l_t**2 - l_t**2 * r2)),
                "d1": float(-a_t * (l_t - l_s) ** 2 / l_s) if order >= 2 else None,
                "d2": float(a_t * ((l_s - 3 * l_t) * (l_s - l_t) / 2 - l_t**2 * math.log(l_t / l_s)))
                if order >= 3
                else None,
                "inv1": float(1.0 / (lam[i] - lam[i - 1])) if i >= 1 else 0.0,
                "inv2": float(2.0 / (lam[i] - lam[i - 2])) if i >= 2 else 0.0,
            }
        )
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float32, device=method.device)
    return {
        "updates": updates,
        "alpha0": float(alpha[0]),
        "sigma0": float(sigma[0]),
        "unet": method.denoiser.unet,
        "controlnet": method.denoiser.controlnet,
        "control_scale": method.denoiser.control_scale,
        "vae": method.vae,
        "cond_encoder": method.cond_encoder.encoder,
        "cond_quant": method.cond_encoder.quant_conv,
        "cond_sf": method.cond_encoder.scaling_factor,
        "rrdb": method.preprocess,
        "emb": method.prompts.encode(method.prompt, device=method.device, dtype=method.dtype),
        "sf": float(method.vae.config.scaling_factor),
        "wavelet_kernel": (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3),
        "color_fix": method.color_fix,
        "order": method.order,
    }


def _wavelet_split(image: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # StableSR's 5-level "à trous" decomposition: (high, low)
    high, low = torch.zeros_like(image), image
    for i in range(5):
        d = 2**i
        blurred = F.conv2d(F.pad(low, (d,) * 4, mode="replicate"), kernel, groups=3, dilation=d)
        high = high + (low - blurred)
        low = blurred
    return high, low


@torch.inference_mode()
def bare_dossr(method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    p = _plan(method, steps, _dossr_plan)
    b, _, h, w = lr.shape
    if h % 16 or w % 16:
        raise NotImplementedError("bare dossr: LR sides must be multiples of 16 (no padding)")
    unet, controlnet, vae, dtype = p["unet"], p["controlnet"], p["vae"], method.dtype
    pre = p["rrdb"](lr).float().clamp(0.0, 1.0)
    image = (pre * 2.0 - 1.0).to(dtype)
    x_hat0 = (vae.encode(image).latent_dist.sample(generator=generator) * p["sf"]).float()
    moments = p["cond_encoder"](image)
    if p["cond_quant"] is not None:
        moments = p["cond_quant"](moments)
    c_latent = torch.chunk(moments, 2, dim=1)[0] * p["cond_sf"]
    context = p["emb"].expand(b, -1, -1)
    x = p["alpha0"] * x_hat0 + p["sigma0"] * torch.randn(x_hat0.shape, generator=generator)
    x0_prev = d1_prev = None
    for u in p["updates"]:
        t = u["t"].expand(b)
        down, mid = controlnet(
            torch.cat([x, c_latent], dim=1),
            t,
            encoder_hidden_states=context,
            controlnet_cond=x,
            conditioning_scale=p["control_scale"],
            return_dict=False,
        )
        out = unet(
            x,
            t,
            encoder_hidden_states=context,
            down_block_additional_residuals=tuple(down),
            mid_block_additional_residual=mid,
            return_dict=False,
        )[0].float()
        x0 = (x - u["sigma"] * out) / u["alpha"]
        z = torch.randn(x.shape, generator=generator)
        new = u["linear"] * x + u["dosg"] * x_hat0 + u["pat"] * x0 + u["noise"] * z
        d1 = None
        if u["d1"] is not None and x0_prev is not None:
            d1 = (x0 - x0_prev) * u["inv1"]
            new = new + u["d1"] * d1
            if u["d2"] is not None and d1_prev is not None:
                new = new + u["d2"] * ((d1 - d1_prev) * u["inv2"])
        x0_prev, d1_prev = x0, (d1 if p["order"] >= 3 else None)
        x = new
    img = (vae.decode(x / p["sf"]).sample / 2.0 + 0.5).float()
    if p["color_fix"] == "wavelet":
        img = _wavelet_split(img, p["wavelet_kernel"])[0] + _wavelet_split(pre, p["wavelet_kernel"])[1]
    return img[..., : h * 4, : w * 4].clamp(0.0, 1.0)


# ---- StableSR -----------------------------------------------------------------------------------------
def _stablesr_plan(method: Any, steps: int) -> dict[str, Any]:
    from methods.stablesr.sampler import train_scheduler

    if method.sampler_name != "ddpm" or method.init_latent != "noise":
        raise NotImplementedError("bare stablesr: sampler=ddpm, init_latent=noise only")
    if method.negative_prompt is not None and method.cfg_scale != 1.0:
        raise NotImplementedError("bare stablesr: no classifier-free guidance")
    if method.color_fix not in ("adain", "wavelet", "none", "nofix"):
        raise NotImplementedError(f"bare stablesr: color_fix {method.color_fix}")
    stride = (1000 - 1) / (steps - 1) if steps > 1 else 1.0
    taus, cur = [], 0.0
    for _ in range(steps):
        taus.append(round(cur))
        cur += stride
    taus = taus[::-1]
    sched = train_scheduler()  # the diffusers DDPMScheduler with SD 2.1's training betas
    unet = method.sft_unet.unet
    modules = dict(unet.named_modules())
    sft = [
        (modules[path].conv2, method.sft_unet.sft[path.replace(".", "_")]) for path in method.sft_unet.targets
    ]
    vae = method.cfw.vae
    levels = method.cfw.levels
    n_up = len(vae.decoder.up_blocks)
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float32, device=method.device)
    return {
        "taus": taus,
        "ts": [torch.full((1,), tau, dtype=torch.long, device=method.device) for tau in taus],
        "sched": sched,
        "unet": unet,
        "sft": sft,
        "encoder": method.encoder,
        "vae": vae,
        "sf": float(vae.config.scaling_factor),
        "enc_taps": [(lvl, vae.encoder.down_blocks[lvl].downsamplers[0]) for lvl in levels],
        "dec_taps": [
            (lvl, vae.decoder.up_blocks[n_up - 1 - lvl].upsamplers[0], method.cfw.fusion_layers[str(lvl)])
            for lvl in levels
        ],
        "w": method.w,
        "emb": method.prompts.encode(method.prompt, device=method.device, dtype=method.dtype),
        "input_size": method.input_size,
        "tile": method.tile_size,
        "wavelet_kernel": (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3),
    }


def _adain(img: torch.Tensor, ref: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    b, c = img.shape[:2]
    xi, xr = img.reshape(b, c, -1), ref.reshape(b, c, -1)
    mi, si = xi.mean(dim=2).reshape(b, c, 1, 1), (xi.var(dim=2) + eps).sqrt().reshape(b, c, 1, 1)
    mr, sr = xr.mean(dim=2).reshape(b, c, 1, 1), (xr.var(dim=2) + eps).sqrt().reshape(b, c, 1, 1)
    return (img - mi) / si * sr + mr


@torch.inference_mode()
def bare_stablesr(
    method: Any, lr: torch.Tensor, steps: int, generator: torch.Generator | None
) -> torch.Tensor:
    p = _plan(method, steps, _stablesr_plan)
    b, _, h, w = lr.shape
    if 4 * min(h, w) != p["input_size"] or h != w or (4 * h) % 32 or 4 * h // 8 != p["tile"]:
        raise NotImplementedError(f"bare stablesr: LR must be {p['input_size'] // 4} px square (one tile)")
    dtype, unet, vae, sched = method.dtype, p["unet"], p["vae"], p["sched"]
    up = F.interpolate(lr.float() * 2.0 - 1.0, (4 * h, 4 * w), mode=method.upsample_mode, align_corners=False)
    up = up.clamp(-1.0, 1.0)

    # encode (posterior sample), keeping the VAE-encoder features that CFW fuses back in the decoder
    feats: dict[int, torch.Tensor] = {}
    hooks = []
    if p["w"] > 0:
        for lvl, down in p["enc_taps"]:
            hooks.append(down.register_forward_pre_hook(lambda _m, a, lvl=lvl: feats.__setitem__(lvl, a[0])))
    try:
        z_lr = vae.encode(up.to(dtype)).latent_dist.sample(generator=generator)
    finally:
        for hk in hooks:
            hk.remove()
    z_lr = (z_lr * p["sf"]).float()
    cond = p["emb"].expand(b, -1, -1)

    # denoise: DDPM over the respaced taus, the UNet's ResBlocks SFT-modulated by the encoder features
    z = torch.randn(z_lr.shape, generator=generator)
    sched.set_timesteps(timesteps=p["taus"], device=z.device)
    enc: dict[str, torch.Tensor] = {}
    hooks = [
        conv2.register_forward_hook(lambda _m, _a, out, layer=layer: layer(out, enc[str(out.shape[-1])]))
        for conv2, layer in p["sft"]
    ]
    try:
        for tau, t in zip(p["taus"], p["ts"], strict=True):
            t = t.expand(b)
            enc = p["encoder"](z_lr.to(dtype), t)
            eps = unet(z.to(dtype), t, encoder_hidden_states=cond, return_dict=False)[0].float()
            z = sched.step(eps, tau, z, generator=generator).prev_sample
    finally:
        for hk in hooks:
            hk.remove()

    # decode with CFW, colour fix against the upsampled LR
    hooks = []
    if p["w"] > 0:
        for lvl, upsampler, fusion in p["dec_taps"]:
            hooks.append(
                upsampler.register_forward_pre_hook(
                    lambda _m, a, lvl=lvl, fusion=fusion: (fusion(feats[lvl], a[0], p["w"]), *a[1:])
                )
            )
    try:
        x = vae.decode(z / p["sf"]).sample.float()
    finally:
        for hk in hooks:
            hk.remove()
    if method.color_fix == "adain":
        x = _adain(x, up.float())
    elif method.color_fix == "wavelet":
        x = _wavelet_split(x, p["wavelet_kernel"])[0] + _wavelet_split(up.float(), p["wavelet_kernel"])[1]
    return (x / 2.0 + 0.5).clamp(0.0, 1.0)


BARE: dict[str, Bare] = {
    "bicubic": bare_bicubic,
    "realesrgan": bare_realesrgan,
    "invsr": bare_invsr,
    "dmsr": bare_dmsr,
    "dossr": bare_dossr,
    "stablesr": bare_stablesr,
}
