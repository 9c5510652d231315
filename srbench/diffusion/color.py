"""Colour correction of an SR output against a reference (the upsampled LR), as StableSR defines it
(StableSR paper §3.1 Eq. 2-5; code ``scripts/wavelet_color_fix.py``, itself from pkuliyi2015's
sd-webui-stablesr ``colorfix.py``) and as InvSR reuses it (``utils/util_color_fix.py``, plus YCbCr).

All functions take ``(B,C,H,W)`` tensors of the same shape and are range-agnostic (StableSR applies
them in [-1,1], InvSR in [0,1]); they compute in at least float32 and return the input's dtype.
Nothing is clamped here: callers clamp as their method does.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

COLOR_FIXES = ("none", "adain", "wavelet", "ycbcr")


def _check(img: torch.Tensor, ref: torch.Tensor) -> None:
    if img.ndim != 4 or img.shape != ref.shape:
        raise ValueError(
            f"colour fix needs two (B,C,H,W) tensors of one shape, got {img.shape} and {ref.shape}"
        )


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _mean_std(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    var = flat.var(dim=2) + eps  # unbiased variance, as StableSR's calc_mean_std
    return flat.mean(dim=2).reshape(b, c, 1, 1), var.sqrt().reshape(b, c, 1, 1)


def adain_color_fix(img: torch.Tensor, ref: torch.Tensor, *, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN (StableSR Eq. 2, "pixel colour correction"): per image and channel,
    ``(img - mean(img)) / std(img) * std(ref) + mean(ref)`` with ``std = sqrt(unbiased var + eps)``."""
    _check(img, ref)
    wd = _work_dtype(img)
    x, r = img.to(wd), ref.to(wd)
    mx, sx = _mean_std(x, eps)
    mr, sr = _mean_std(r, eps)
    return ((x - mx) / sx * sr + mr).to(img.dtype)


@functools.cache
def _blur_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1,2,1]ᵀ[1,2,1]/16 as (1,1,3,3), built once per dtype/device (10 blurs per colour fix)."""
    k1 = torch.tensor([0.25, 0.5, 0.25], dtype=dtype, device=device)
    return (k1[:, None] * k1[None, :])[None, None]


def wavelet_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """One level of the "à trous" blur: the 3x3 kernel [1,2,1]ᵀ[1,2,1]/16 per channel with the given
    dilation, after replicate padding by ``dilation`` (so the output keeps the input size)."""
    c = image.shape[1]
    kernel = _blur_kernel(image.dtype, image.device).expand(c, 1, 3, 3)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=c, dilation=dilation)


def wavelet_decomposition(image: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, low)``: ``low`` is the image blurred at dilations 1, 2, 4, ..., 2^(levels-1) in turn
    (StableSR code; the paper's Eq. 3 writes 2^i from i = 1), ``high`` the sum of the removed detail
    layers, i.e. ``image - low`` (the telescoping sum of StableSR's loop, accumulated the same way)."""
    high = torch.zeros_like(image)
    low = image
    for i in range(levels):
        blurred = wavelet_blur(low, 2**i)
        high = high + (low - blurred)
        low = blurred
    return high, low


def wavelet_color_fix(img: torch.Tensor, ref: torch.Tensor, *, levels: int = 5) -> torch.Tensor:
    """Wavelet colour fix (StableSR Eq. 3-5): high frequencies of ``img`` + low frequencies of ``ref``."""
    _check(img, ref)
    wd = _work_dtype(img)
    high, _ = wavelet_decomposition(img.to(wd), levels)
    _, low = wavelet_decomposition(ref.to(wd), levels)
    return (high + low).to(img.dtype)


# ITU-R BT.601 "studio swing" conversion in MATLAB's rgb2ycbcr / ycbcr2rgb form, for images in [0,1],
# as InvSR's utils/util_image.py rgb2ycbcrTorch / ycbcr2rgbTorch (results clamped to [0,1] there too).
_RGB2YCBCR = torch.tensor(
    [[65.481, -37.797, 112.0], [128.553, -74.203, -93.786], [24.966, 112.0, -18.214]], dtype=torch.float64
)
_YCBCR2RGB = torch.tensor(
    [[0.00456621, 0.00456621, 0.00456621], [0.0, -0.00153632, 0.00791071], [0.00625893, -0.00318811, 0.0]],
    dtype=torch.float64,
)
_YCBCR_BIAS = (16.0, 128.0, 128.0)
_RGB_BIAS = (-222.921, 135.576, -276.836)


def rgb_to_ycbcr(img: torch.Tensor) -> torch.Tensor:
    """RGB [0,1] -> YCbCr [0,1] (MATLAB rgb2ycbcr / 255), clamped to [0,1] like InvSR's."""
    m = _RGB2YCBCR.to(img.device, img.dtype) / 255.0
    bias = torch.tensor(_YCBCR_BIAS, device=img.device, dtype=img.dtype)
    out = torch.einsum("bchw,cd->bdhw", img * 255.0, m) + bias[None, :, None, None]
    return (out / 255.0).clamp(0.0, 1.0)


def ycbcr_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """YCbCr [0,1] -> RGB [0,1] (MATLAB ycbcr2rgb), clamped to [0,1] like InvSR's."""
    m = _YCBCR2RGB.to(img.device, img.dtype) * 255.0
    bias = torch.tensor(_RGB_BIAS, device=img.device, dtype=img.dtype)
    out = torch.einsum("bchw,cd->bdhw", img * 255.0, m) + bias[None, :, None, None]
    return (out / 255.0).clamp(0.0, 1.0)


def ycbcr_color_fix(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """InvSR's ``ycbcr`` fix: luma (Y) from ``img``, chroma (CbCr) from ``ref``; RGB in [0,1]."""
    _check(img, ref)
    wd = _work_dtype(img)
    y = rgb_to_ycbcr(img.to(wd))[:, :1]
    cbcr = rgb_to_ycbcr(ref.to(wd))[:, 1:]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=1)).to(img.dtype)


def color_fix(img: torch.Tensor, ref: torch.Tensor, method: str | None) -> torch.Tensor:
    """Dispatch on ``method`` in :data:`COLOR_FIXES` (``None`` = ``"none"``)."""
    name = (method or "none").lower()
    if name in ("none", "nofix"):
        return img
    if name == "adain":
        return adain_color_fix(img, ref)
    if name == "wavelet":
        return wavelet_color_fix(img, ref)
    if name == "ycbcr":
        return ycbcr_color_fix(img, ref)
    raise ValueError(f"unknown colour fix '{method}'; choose from {COLOR_FIXES}")
