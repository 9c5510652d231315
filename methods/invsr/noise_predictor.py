"""InvSR's noise predictor f_w (paper §3.2, §4.1: "a VQGAN-encoder-style network with two
down-sampling blocks, each with self-attention"), re-built from upstream diffusers blocks so the
official ``noise_predictor_sd_turbo_v5.pth`` (HF ``OAOA/InvSR``) loads with a strict key match.

The authors' class (``NoisePredictor`` wrapping ``TimeAwareEncoder``) exists only in their vendored
diffusers 0.32.0.dev0 (``src/diffusers/models/autoencoders/{autoencoder_kl,vae}.py``).  Module names
here follow it, so state-dict keys are identical: ``encoder.time_embedding.*``, ``encoder.conv_in.*``,
``encoder.down_blocks.{0,1}.*``, ``encoder.mid_block.*``, ``encoder.conv_norm_out.*``,
``encoder.conv_out.*`` -- 164 tensors, 33,837,576 parameters with the released config.

Forward: LR image in [0,1] -> ``2x-1`` -> time-conditioned encoder -> 8 channels at half the LR size
= (mean, logvar) of a diagonal Gaussian; the predicted noise is one sample of it (logvar clamped to
[-30, 20], diffusers' ``DiagonalGaussianDistribution``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srbench.interface import SRBenchError
from srbench.safe_load import load_tensors

#: parameter count of the released predictor (config below); checked by the tests
OFFICIAL_NUM_PARAMS = 33_837_576


@dataclass(frozen=True)
class NoisePredictorConfig:
    """Defaults = ``model_start.params`` of the authors' ``configs/sample-sd-turbo.yaml``."""

    in_channels: int = 3
    latent_channels: int = 4
    down_block_types: tuple[str, ...] = ("AttnDownBlock2D", "AttnDownBlock2D")
    block_out_channels: tuple[int, ...] = (256, 512)
    layers_per_block: tuple[int, ...] = (3, 3)
    act_fn: str = "silu"
    norm_num_groups: int = 32
    mid_block_add_attention: bool = True
    resnet_time_scale_shift: str = "default"
    temb_channels: int = 512
    attention_head_dim: int = 64
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    double_z: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoisePredictorConfig:
        """From the authors' yaml ``params`` (``up_block_types`` and ``sample_size`` are ignored:
        they configure a decoder that does not exist) or from :meth:`to_dict`."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        unknown = set(data) - known - {"up_block_types", "sample_size", "_class_name"}
        if unknown:
            raise SRBenchError(f"unknown noise-predictor config keys {sorted(unknown)}")
        for key in ("down_block_types", "block_out_channels"):
            if key in kw:
                kw[key] = tuple(kw[key])
        if "layers_per_block" in kw:
            lpb = kw["layers_per_block"]
            n = len(kw.get("block_out_channels", cls.block_out_channels))
            kw["layers_per_block"] = (int(lpb),) * n if isinstance(lpb, int) else tuple(lpb)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class TimeAwareEncoder(nn.Module):
    """conv_in -> down blocks (time-conditioned ResNet + self-attention) -> mid block -> GN/SiLU/conv_out."""

    def __init__(self, cfg: NoisePredictorConfig) -> None:
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps
        from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block

        lengths = {
            "layers_per_block": len(cfg.layers_per_block),
            "block_out_channels": len(cfg.block_out_channels),
            "down_block_types": len(cfg.down_block_types),
        }
        if len(set(lengths.values())) != 1:
            raise SRBenchError(
                f"noise predictor: one layers_per_block / block type per block_out_channels, got {lengths}"
            )
        ch = cfg.block_out_channels
        t_dim = max(128, ch[0])  # as the authors' TimeAwareEncoder
        self.time_proj = Timesteps(t_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(t_dim, cfg.temb_channels)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], kernel_size=3, stride=1, padding=1)
        self.down_blocks = nn.ModuleList()
        out_ch = ch[0]
        for i, block_type in enumerate(cfg.down_block_types):
            in_ch, out_ch = out_ch, ch[i]
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=cfg.layers_per_block[i],
                    in_channels=in_ch,
                    out_channels=out_ch,
                    add_downsample=i < len(ch) - 1,
                    resnet_eps=1e-6,
                    downsample_padding=0,  # Downsample2D then pads (0,1,0,1) itself
                    resnet_act_fn=cfg.act_fn,
                    resnet_groups=cfg.norm_num_groups,
                    attention_head_dim=cfg.attention_head_dim,
                    resnet_time_scale_shift=cfg.resnet_time_scale_shift,
                    temb_channels=cfg.temb_channels,
                )
            )
        self.mid_block = UNetMidBlock2D(
            in_channels=ch[-1],
            resnet_eps=1e-6,
            resnet_act_fn=cfg.act_fn,
            output_scale_factor=1,
            attention_head_dim=cfg.attention_head_dim,
            resnet_groups=cfg.norm_num_groups,
            add_attention=cfg.mid_block_add_attention,
            resnet_time_scale_shift=cfg.resnet_time_scale_shift,
            temb_channels=cfg.temb_channels,
        )
        self.conv_norm_out = nn.GroupNorm(num_channels=ch[-1], num_groups=cfg.norm_num_groups, eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(
            ch[-1], 2 * cfg.latent_channels if cfg.double_z else cfg.latent_channels, 3, padding=1
        )

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(timesteps, device=sample.device)
        if t.ndim == 0:
            t = t[None]
        t = t * torch.ones(sample.shape[0], dtype=t.dtype, device=t.device)  # broadcast to the batch
        emb = self.time_proj(t).to(dtype=self.time_embedding.linear_1.weight.dtype)
        emb = self.time_embedding(emb)
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


class NoisePredictor(nn.Module):
    """f_w(y, t): LR image y in [0,1] ``(B,3,h,w)`` and timestep t (0-based, e.g. 199.0 for the
    paper's 200) -> noise ``(B,4,h/2,w/2)`` (a sample) or its ``(mean, logvar)``."""

    def __init__(self, config: NoisePredictorConfig | None = None) -> None:
        super().__init__()
        self.config = config or NoisePredictorConfig()
        self.encoder = TimeAwareEncoder(self.config)

    def moments(self, image01: torch.Tensor, timesteps: torch.Tensor | float) -> torch.Tensor:
        """Raw encoder output ``(B, 2*latent, h/2, w/2)`` for an input in [0,1] (centred to [-1,1])."""
        return self.encoder(image01 * 2.0 - 1.0, timesteps)

    def forward(
        self,
        image01: torch.Tensor,
        timesteps: torch.Tensor | float,
        *,
        generator: torch.Generator | None = None,
        sample_posterior: bool = True,
    ) -> torch.Tensor:
        h = self.moments(image01, timesteps)
        if not self.config.double_z:
            return h
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        dist = DiagonalGaussianDistribution(h)  # logvar clamped to [-30, 20]
        return dist.sample(generator=generator) if sample_posterior else dist.mean


# ---- checkpoint loading --------------------------------------------------------------------------
_PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes, in any nesting."""
    out = {}
    for key, value in state.items():
        k = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = value
    return out


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` (``torch.load(weights_only=True)``: no code is unpickled) or
    ``.safetensors`` file; a ``{"state_dict": ...}`` wrapper is unwrapped, prefixes stripped."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(p))
    else:
        state = load_tensors(p)  # a refusal is srbench's error naming the file
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SRBenchError(f"{p}: expected a state dict of tensors")
    return strip_prefixes(state)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``; any missing / unexpected key or shape mismatch is an error
    that lists them and names ``source``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

        def few(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... (+{len(items) - 8})" if len(items) > 8 else "")

        parts = [f"{source}: does not match the noise predictor"]
        if missing:
            parts.append(f"missing {len(missing)} keys [{few(missing)}]")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys [{few(unexpected)}]")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches [{few(shapes)}]")
        raise SRBenchError("; ".join(parts))
    model.load_state_dict(dict(state), strict=True)


def config_sidecar(path: str | Path) -> Path:
    """``x.pth`` -> ``x.json``: an optional config for a non-default (e.g. tiny test) predictor."""
    return Path(path).with_suffix(".json")


def load_noise_predictor(
    path: str | Path, *, config: NoisePredictorConfig | Mapping[str, Any] | None = None
) -> NoisePredictor:
    """Build the predictor (``config``; else a ``<stem>.json`` beside the file; else the official
    config) and load ``path`` strictly.  Returns it on CPU in fp32, eval mode, no gradients."""
    p = Path(path)
    if config is None and config_sidecar(p).is_file():
        config = json.loads(config_sidecar(p).read_text())
    if isinstance(config, Mapping):
        config = NoisePredictorConfig.from_dict(config)
    model = NoisePredictor(config)
    load_state_dict_strict(model, read_checkpoint(p), str(p))
    return model.eval().requires_grad_(False)


def save_noise_predictor(
    model: NoisePredictor,
    path: str | Path,
    *,
    prefix: str = "",
    wrap: bool = False,
    write_config: bool = True,
) -> Path:
    """Save in the official layout: a plain state dict pickled by ``torch.save`` (optionally with a key
    ``prefix`` such as ``module.``, or wrapped as ``{"state_dict": ...}``), plus the config sidecar."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {prefix + k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state} if wrap else state, p)
    if write_config and model.config != NoisePredictorConfig():
        config_sidecar(p).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return p


#: a tiny predictor with the real geometry (two blocks: x2 down, 4 latent channels) for tests
TINY_CONFIG = NoisePredictorConfig(
    block_out_channels=(16, 32),
    layers_per_block=(1, 1),
    norm_num_groups=8,
    attention_head_dim=8,
    temb_channels=32,
)


def save_tiny_noise_predictor(
    path: str | Path, *, seed: int = 0, config: NoisePredictorConfig = TINY_CONFIG, **save_kwargs: Any
) -> Path:
    """Random tiny predictor saved in the official layout (+ config sidecar + random-weights marker)."""
    from srbench.testing import mark_random_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = NoisePredictor(config)
    p = save_noise_predictor(model, path, **save_kwargs)
    mark_random_weights(p, builder="methods.invsr.noise_predictor.save_tiny_noise_predictor", seed=seed)
    return p
