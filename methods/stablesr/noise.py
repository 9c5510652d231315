"""StableSR's random draws, in srbench's layout or in the authors' scripts' (``noise_layout``).

A seed only reproduces a sample if the same numbers land in the same places.  The authors' scripts
(``seed_everything(seed)``, which seeds the CPU and the CUDA generator with the same seed) draw:

1. the VAE posterior sample on the **CPU** generator, contiguous (ldm ``DiagonalGaussianDistribution
   .sample``: ``torch.randn(mean.shape).to(device)``);
2. ``noise = torch.randn_like(init_latent)`` on the latent's device.  The LR image comes from a numpy
   HWC array transposed to CHW (``im[None].transpose(0, 3, 1, 2)``), which is a channels_last tensor;
   that layout survives the upsampling, the padding and the VAE encoder, so the latent is channels_last
   and ``randn_like`` fills it in memory order (B, H, W, C): other numbers in each position than a
   contiguous draw.  (Established by running the authors' ldm ``Encoder``/``DiagonalGaussianDistribution``
   on such an input, padded and unpadded, on this project's torch; their pinned torch 1.12.1 on CUDA was
   not available to check.)  The tile script starts from the noised LR with this noise; the 128→512 and
   DDIM scripts draw it anyway and then set ``x_T = None``, so their sampler draws x_T with a second,
   contiguous ``torch.randn(shape)``;
3. one contiguous ``torch.randn`` per sampler step (srbench's DDPM/DDIM steps already draw so).

``noise_layout="authors"`` reproduces 1–2: the posterior noise from the CPU (the generator itself when it
is a CPU generator, else a CPU generator seeded with its seed), x_T with the channels_last draw (and,
for a pure-noise start, that draw discarded before a contiguous one).  With a CUDA generator seeded with
the script's ``--seed`` a call then draws what the script draws for its first image.
``"contiguous"`` (srbench's default) draws everything contiguous from the one generator.
"""

from __future__ import annotations

import torch

NOISE_LAYOUTS = ("contiguous", "authors")


def _randn(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Contiguous float32 Gaussian noise from ``generator`` (which may live on another device)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generator, device=device, dtype=torch.float32)


def cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator the scripts' posterior sample draws from: the CPU one seeded like ``generator``."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator("cpu").manual_seed(generator.initial_seed())


def reseeded(generator: torch.Generator | None) -> torch.Generator | None:
    """A fresh generator on the same device with ``generator``'s seed (the scripts reseed per image
    patch); the caller's generator is left as it is.  ``None`` stays ``None`` (the global RNG)."""
    if generator is None:
        return None
    return torch.Generator(generator.device).manual_seed(generator.initial_seed())


def posterior_noise(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device, layout: str
) -> torch.Tensor:
    """The noise of the VAE posterior sample ``mean + std · n`` (float32, on ``device``)."""
    if layout == "contiguous":
        return _randn(shape, generator, device)  # as diffusers' DiagonalGaussianDistribution.sample
    if layout == "authors":
        return torch.randn(tuple(shape), generator=cpu_generator(generator), dtype=torch.float32).to(device)
    raise ValueError(f"noise_layout must be one of {NOISE_LAYOUTS}, got '{layout}'")


def randn_like_channels_last(
    shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``torch.randn_like`` of a channels_last float32 tensor of ``shape`` (``empty_like`` + ``normal_``,
    which is what ``randn_like`` is), drawn on the generator's device and returned contiguous."""
    where = generator.device if generator is not None else device
    x = torch.empty(tuple(shape), dtype=torch.float32, device=where, memory_format=torch.channels_last)
    x.normal_(generator=generator)
    return x.to(device).contiguous()


def initial_noise(
    shape: torch.Size | tuple[int, ...],
    generator: torch.Generator | None,
    device: torch.device,
    layout: str,
    *,
    pure_noise: bool,
) -> torch.Tensor:
    """The ε of x_T: x_T = ε for a pure-noise start, x_T = √ᾱ·z_lr + √(1−ᾱ)·ε for the noised LR."""
    if layout == "contiguous":
        return _randn(shape, generator, device)
    if layout != "authors":
        raise ValueError(f"noise_layout must be one of {NOISE_LAYOUTS}, got '{layout}'")
    noise = randn_like_channels_last(shape, generator, device)  # the scripts' torch.randn_like(init_latent)
    if not pure_noise:
        return noise
    return _randn(shape, generator, device)  # x_T = None: the sampler's torch.randn(shape)
