"""Synthetic LR from HR: ResShift's and Real-ESRGAN's degradation pipelines, deterministic by seed.

The steps follow the authors' batched PyTorch code (ResShift/InvSR ``RealESRGANDataset`` + ``degrade_fun``;
Real-ESRGAN ``RealESRGANModel.feed_data``; Wang et al. 2021, §3) and call basicsr's building blocks:
the kernel constructors (``bivariate_Gaussian``, ``bivariate_generalized_Gaussian``, ``bivariate_plateau``,
``circular_lowpass_kernel``), ``filter2D`` (reflect-padded convolution), the noise functions
``add_gaussian_noise_pt`` / ``add_poisson_noise_pt``, ``USMSharp`` and ``DiffJPEG``:

1. [Real-ESRGAN only] unsharp-mask the HR (the model degrades ``gt_usm``);
2. blur with kernel 1 (iso/aniso Gaussian, generalised Gaussian, plateau, or a 2-D sinc);
3. random resize (up/down/keep; area/bilinear/bicubic ``F.interpolate``);
4. Gaussian or Poisson noise (colour or grey);
5. JPEG with quality U(jpeg_range) (``DiffJPEG``, as the authors; or OpenCV's real encoder);
6. with ``second_order_prob``: blur with kernel 2 (with ``second_blur_prob``), resize relative to the
   target size, noise again;
7. in random order: [resize to H/sf x W/sf + final sinc filter] and JPEG;
8. round to 8 bits.

Randomness.  Every random choice is drawn from a ``numpy.random.Generator`` built from the caller's seed
and returned as a plain dict (``params``), so one image's degradation can be logged and replayed with
:func:`apply_degradation`.  The pixel noise is drawn by basicsr's functions from torch's CPU generator,
which is seeded from that dict inside ``torch.random.fork_rng`` (the caller's global torch state is left
untouched).  The global ``random`` / ``numpy.random`` states are never used.  Bit-exact reproduction of
the authors' released sets is impossible anyway: their draws come from global generators in an order
that depends on their data loader.

``random_add_jpg_compression`` is not used: it passes a float quality that current OpenCV rejects
(env.md §3).  The OpenCV JPEG path does what ``add_jpg_compression(img, int(q))`` does, on a uint8 image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


def _basicsr_degradations() -> Any:
    """basicsr's degradation module (basicsr-fixed imports with current torchvision; plain basicsr 1.4.2
    needs the ``functional_tensor`` alias, env.md §3)."""
    import sys

    import torchvision.transforms.functional as tvf

    sys.modules.setdefault("torchvision.transforms.functional_tensor", tvf)
    from basicsr.data import degradations

    return degradations


@dataclass(frozen=True)
class DegradationPipeline:
    """All settings of one pipeline; field names are the keys of the authors' YAML configs."""

    name: str = "custom"
    description: str = ""
    sf: int = 4
    usm_sharpen: bool = False  # Real-ESRGAN degrades the unsharp-masked HR
    # kernels (the dataset part of the authors' code)
    blur_kernel_size: int = 21
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    blur_kernel_size2: int = 21
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    final_sinc_prob: float = 0.8
    #: odd kernel sizes drawn from; None = ResShift's ``range(3, blur_kernel_size, 2)``
    kernel_range1: tuple[int, ...] | None = None
    kernel_range2: tuple[int, ...] | None = None
    # first degradation
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)
    # second degradation
    second_order_prob: float = 1.0
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)
    #: ``diffjpeg``: basicsr's DiffJPEG (what the authors used); ``cv2``: OpenCV's real JPEG encoder
    jpeg: Literal["diffjpeg", "cv2"] = "diffjpeg"
    extra: Mapping[str, Any] = field(default_factory=dict)  # free-form notes, ignored

    def ranges(self) -> tuple[list[int], list[int]]:
        r1 = list(self.kernel_range1) if self.kernel_range1 else list(range(3, self.blur_kernel_size, 2))
        r2 = list(self.kernel_range2) if self.kernel_range2 else list(range(3, self.blur_kernel_size2, 2))
        return r1, r2

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DegradationPipeline:
        """A preset (``preset: NAME``, default ``resshift``) with any fields overridden."""
        d = dict(d or {})
        base = get_pipeline(d.pop("preset", "resshift"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown degradation settings {unknown}; known: {sorted(known)}")
        tuples = {f.name for f in fields(cls) if "tuple" in str(f.type)}
        d = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in d.items()}
        return replace(base, **d)


# The ImageNet-Test pipeline: ResShift `configs/degradation_testing_realesrgan.yaml` (identical file in
# InvSR; InvSR §4.1 "the degradation settings of ResShift"), one order only.
RESSHIFT_TEST = DegradationPipeline(
    name="resshift_test",
    description="ResShift/InvSR ImageNet-Test degradation (configs/degradation_testing_realesrgan.yaml): "
    "one-order Real-ESRGAN-style pipeline",
    blur_kernel_size=13,
    kernel_prob=(0.6, 0.4, 0.0, 0.0, 0.0, 0.0),
    sinc_prob=0.1,
    blur_sigma=(0.2, 0.8),
    betag_range=(1.0, 1.5),
    betap_range=(1.0, 1.2),
    blur_kernel_size2=7,
    kernel_prob2=(0.6, 0.4, 0.0, 0.0, 0.0, 0.0),
    sinc_prob2=0.0,
    blur_sigma2=(0.2, 0.5),
    betag_range2=(0.5, 0.8),
    betap_range2=(1.0, 1.2),
    final_sinc_prob=0.2,
    resize_range=(0.5, 1.5),
    noise_range=(1.0, 15.0),
    poisson_scale_range=(0.05, 0.3),
    jpeg_range=(70.0, 95.0),
    second_order_prob=0.0,
    second_blur_prob=0.2,
    resize_range2=(0.8, 1.2),
    noise_range2=(1.0, 10.0),
    poisson_scale_range2=(0.05, 0.2),
    jpeg_range2=(80.0, 100.0),
)

# ResShift / InvSR training configs (configs/realsr_swinunet_realesrgan256.yaml, sd-turbo-sr-ldis.yaml);
# DM-SR §4.1 trains "following the ResShift pipeline".
RESSHIFT_TRAIN = DegradationPipeline(
    name="resshift",
    description="ResShift/InvSR training degradation (configs/realsr_swinunet_realesrgan256.yaml): "
    "Real-ESRGAN two-order pipeline with second_order_prob 0.5",
    blur_kernel_size2=15,
    second_order_prob=0.5,
)

# Real-ESRGAN x4plus (options/train_realesrgan_x4plus.yml; RealESRGANModel.feed_data): USM'd HR, 7..21 px
# kernels, the second order always on.
REALESRGAN = DegradationPipeline(
    name="realesrgan",
    description="Real-ESRGAN x4plus degradation (options/train_realesrgan_x4plus.yml): two orders always, "
    "unsharp-masked HR",
    usm_sharpen=True,
    kernel_range1=tuple(range(7, 22, 2)),
    kernel_range2=tuple(range(7, 22, 2)),
    second_order_prob=1.0,
)

PIPELINES: dict[str, DegradationPipeline] = {p.name: p for p in (RESSHIFT_TEST, RESSHIFT_TRAIN, REALESRGAN)}


def get_pipeline(name: str | DegradationPipeline | Mapping[str, Any]) -> DegradationPipeline:
    if isinstance(name, DegradationPipeline):
        return name
    if isinstance(name, Mapping):
        return DegradationPipeline.from_dict(name)
    if name not in PIPELINES:
        raise ValueError(f"unknown degradation pipeline '{name}' (known: {', '.join(PIPELINES)})")
    return PIPELINES[name]


# ------------------------------------------------------------------------------------------- parameters


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _beta(rng: np.random.Generator, rng_range: Sequence[float]) -> float:
    # basicsr random_bivariate_{generalized_Gaussian,plateau}: half the draws below 1, half above
    return _u(rng, rng_range[0], 1.0) if rng.uniform() < 0.5 else _u(rng, 1.0, rng_range[1])


def _draw_kernel(
    rng: np.random.Generator,
    sizes: Sequence[int],
    sinc_prob: float,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    sigma: Sequence[float],
    betag: Sequence[float],
    betap: Sequence[float],
) -> dict[str, Any]:
    size = int(rng.choice(sizes))
    if rng.uniform() < sinc_prob:
        # ResShift/Real-ESRGAN dataset: wider cutoff range for kernels >= 13 px
        lo = np.pi / 3 if size < 13 else np.pi / 5
        return {"type": "sinc", "size": size, "omega_c": _u(rng, lo, np.pi)}
    p = np.asarray(kernel_prob, dtype=np.float64)
    kind = str(kernel_list[int(rng.choice(len(kernel_list), p=p / p.sum()))])
    iso = kind.endswith("iso") and not kind.endswith("aniso")
    sx = _u(rng, *sigma)
    sy, theta = (sx, 0.0) if iso else (_u(rng, *sigma), _u(rng, -math.pi, math.pi))
    k: dict[str, Any] = {"type": kind, "size": size, "sigma_x": sx, "sigma_y": sy, "theta": theta}
    if kind.startswith("generalized"):
        k["beta"] = _beta(rng, betag)
    elif kind.startswith("plateau"):
        k["beta"] = _beta(rng, betap)
    return k


def _draw_resize(
    rng: np.random.Generator, prob: Sequence[float], rng_range: Sequence[float]
) -> dict[str, Any]:
    p = np.asarray(prob, dtype=np.float64)
    updown = ("up", "down", "keep")[int(rng.choice(3, p=p / p.sum()))]
    scale = (
        _u(rng, 1.0, rng_range[1])
        if updown == "up"
        else _u(rng, rng_range[0], 1.0)
        if updown == "down"
        else 1.0
    )
    return {"updown": updown, "scale": scale, "mode": RESIZE_MODES[int(rng.integers(3))]}


def _draw_noise(
    rng: np.random.Generator,
    gauss_prob: float,
    sigma: Sequence[float],
    poisson: Sequence[float],
    gray_prob: float,
) -> dict[str, Any]:
    if rng.uniform() < gauss_prob:
        out: dict[str, Any] = {"type": "gaussian", "sigma": _u(rng, *sigma)}
    else:
        out = {"type": "poisson", "scale": _u(rng, *poisson)}
    out["gray"] = bool(rng.uniform() < gray_prob)
    return out


def sample_params(pipeline: str | DegradationPipeline, seed: int | np.random.Generator) -> dict[str, Any]:
    """Every random choice of one degradation, as a JSON-able dict (the torch noise seed included)."""
    p = get_pipeline(pipeline)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    r1, r2 = p.ranges()
    params: dict[str, Any] = {"pipeline": p.name}
    params["kernel1"] = _draw_kernel(
        rng, r1, p.sinc_prob, p.kernel_list, p.kernel_prob, p.blur_sigma, p.betag_range, p.betap_range
    )
    params["kernel2"] = _draw_kernel(
        rng, r2, p.sinc_prob2, p.kernel_list2, p.kernel_prob2, p.blur_sigma2, p.betag_range2, p.betap_range2
    )
    if rng.uniform() < p.final_sinc_prob:
        params["final_sinc"] = {
            "type": "sinc",
            "size": int(rng.choice(r2)),
            "omega_c": _u(rng, np.pi / 3, np.pi),
        }
    else:
        params["final_sinc"] = None  # a pulse: no filtering
    params["resize1"] = _draw_resize(rng, p.resize_prob, p.resize_range)
    params["noise1"] = _draw_noise(
        rng, p.gaussian_noise_prob, p.noise_range, p.poisson_scale_range, p.gray_noise_prob
    )
    params["jpeg1"] = _u(rng, *p.jpeg_range)
    second = bool(rng.uniform() < p.second_order_prob)
    params["second_order"] = second
    if second:
        params["blur2"] = bool(rng.uniform() < p.second_blur_prob)
        params["resize2"] = _draw_resize(rng, p.resize_prob2, p.resize_range2)
        params["noise2"] = _draw_noise(
            rng, p.gaussian_noise_prob2, p.noise_range2, p.poisson_scale_range2, p.gray_noise_prob2
        )
    params["final_order"] = "resize_first" if rng.uniform() < 0.5 else "jpeg_first"
    params["final_mode"] = RESIZE_MODES[int(rng.integers(3))]
    params["jpeg2"] = _u(rng, *p.jpeg_range2)
    params["noise_seed"] = int(rng.integers(0, 2**62))
    return params


# ---------------------------------------------------------------------------------------------- kernels


def build_kernel(spec: Mapping[str, Any] | None, pad_to: int) -> torch.Tensor:
    """The (pad_to, pad_to) float32 kernel of a drawn spec (None = a unit pulse), via basicsr."""
    deg = _basicsr_degradations()
    if spec is None:
        k = np.zeros((pad_to, pad_to), dtype=np.float64)
        k[pad_to // 2, pad_to // 2] = 1.0
        return torch.from_numpy(k).float()
    size, kind = int(spec["size"]), spec["type"]
    if kind == "sinc":
        k = deg.circular_lowpass_kernel(spec["omega_c"], size, pad_to=0)
    else:
        iso = kind.endswith("iso") and not kind.endswith("aniso")
        args = (size, spec["sigma_x"], spec["sigma_y"], spec["theta"])
        if kind.startswith("generalized"):
            k = deg.bivariate_generalized_Gaussian(*args, spec["beta"], isotropic=iso)
        elif kind.startswith("plateau"):
            k = deg.bivariate_plateau(*args, spec["beta"], isotropic=iso)
        else:
            k = deg.bivariate_Gaussian(*args, isotropic=iso)
    k = k / np.sum(k)
    pad = (pad_to - size) // 2
    if pad > 0:
        k = np.pad(k, ((pad, pad), (pad, pad)))
    return torch.from_numpy(np.ascontiguousarray(k)).float()


# ------------------------------------------------------------------------------------------------ steps


@lru_cache(maxsize=1)
def _diffjpeg() -> torch.nn.Module:
    from basicsr.utils.diffjpeg import DiffJPEG

    return DiffJPEG(differentiable=False).eval()


@lru_cache(maxsize=1)
def _usm() -> torch.nn.Module:
    from basicsr.utils.img_process_util import USMSharp

    return USMSharp().eval()


def _filter(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """basicsr's ``filter2D`` (reflect padding); an image too small for a reflect pad of half the kernel
    (the authors' code would fail there: their crops are >= 256 px) is padded by edge replication instead."""
    from basicsr.utils.img_process_util import filter2D

    pad = kernel.shape[-1] // 2
    if min(img.shape[-2:]) > pad:
        return filter2D(img, kernel[None])
    b, c, h, w = img.shape
    x = F.pad(img.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(x, kernel[None, None].to(img.dtype)).reshape(b, c, h, w)


def _noise(img: torch.Tensor, spec: Mapping[str, Any]) -> torch.Tensor:
    deg = _basicsr_degradations()
    gray = int(spec["gray"])
    if spec["type"] == "gaussian":
        return deg.add_gaussian_noise_pt(img, sigma=spec["sigma"], gray_noise=gray, clip=True, rounds=False)
    return deg.add_poisson_noise_pt(img, scale=spec["scale"], gray_noise=gray, clip=True, rounds=False)


def _jpeg(img: torch.Tensor, quality: float, backend: str) -> torch.Tensor:
    img = img.clamp(0, 1)  # the authors clamp before JPEG ("otherwise JPEGer will result in artifacts")
    if backend == "diffjpeg":
        return _diffjpeg()(img, quality=float(quality))
    if backend != "cv2":
        raise ValueError(f"unknown JPEG backend '{backend}' (diffjpeg | cv2)")
    import cv2

    outs = []
    for x in img:
        # what basicsr's add_jpg_compression(img, int(q)) does, on uint8 so OpenCV takes it without a
        # depth-conversion warning (the image is rounded to 8 bits first either way)
        bgr = x.flip(0).permute(1, 2, 0).mul(255).round().to(torch.uint8).numpy()
        ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise RuntimeError("OpenCV failed to encode a JPEG")
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / 255.0
        outs.append(torch.from_numpy(np.ascontiguousarray(dec)).permute(2, 0, 1).flip(0))
    return torch.stack(outs)


def _resize(img: torch.Tensor, size: tuple[int, int] | None, scale: float | None, mode: str) -> torch.Tensor:
    if size is not None:
        size = (max(1, size[0]), max(1, size[1]))
        return F.interpolate(img, size=size, mode=mode)
    return F.interpolate(img, scale_factor=scale, mode=mode)


def apply_degradation(
    hr: torch.Tensor, params: Mapping[str, Any], pipeline: str | DegradationPipeline | None = None
) -> torch.Tensor:
    """Degrade one (1,3,H,W) RGB float HR in [0,1] with drawn ``params`` -> (1,3,H/sf,W/sf), 8-bit levels."""
    p = get_pipeline(pipeline or params["pipeline"])
    if hr.ndim != 4 or hr.shape[:2] != (1, 3):
        raise ValueError(f"expected a (1,3,H,W) tensor, got {tuple(hr.shape)}")
    h0, w0 = hr.shape[-2:]
    sf = p.sf
    if h0 < sf or w0 < sf:
        raise ValueError(f"image {w0}x{h0} is smaller than the scale factor {sf}")
    r1, r2 = p.ranges()
    k1 = build_kernel(params["kernel1"], max(p.blur_kernel_size, max(r1)))
    k2 = build_kernel(params["kernel2"], max(p.blur_kernel_size2, max(r2)))
    sinc = build_kernel(params["final_sinc"], max(p.blur_kernel_size2, max(r2)))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(int(params["noise_seed"]))
        out = hr.detach().float().cpu().clamp(0, 1)
        if p.usm_sharpen:
            if min(h0, w0) <= 50:
                raise ValueError(f"image {w0}x{h0} is too small for Real-ESRGAN's USM (radius 50)")
            out = _usm()(out)
        # ---- first order
        out = _filter(out, k1)
        r = params["resize1"]
        out = _resize(out, None, r["scale"], r["mode"])
        out = _noise(out, params["noise1"])
        out = _jpeg(out, params["jpeg1"], p.jpeg)
        # ---- second order (sizes relative to the target, as the authors' code)
        if params["second_order"]:
            if params["blur2"]:
                out = _filter(out, k2)
            r = params["resize2"]
            out = _resize(out, (int(h0 / sf * r["scale"]), int(w0 / sf * r["scale"])), None, r["mode"])
            out = _noise(out, params["noise2"])
        # ---- final: [resize back + sinc] and JPEG, in the drawn order
        target = (h0 // sf, w0 // sf)
        if params["final_order"] == "resize_first":
            out = _filter(_resize(out, target, None, params["final_mode"]), sinc)
            out = _jpeg(out, params["jpeg2"], p.jpeg)
        else:
            out = _jpeg(out, params["jpeg2"], p.jpeg)
            out = _filter(_resize(out, target, None, params["final_mode"]), sinc)
        return torch.clamp((out * 255.0).round(), 0, 255) / 255.0


def degrade(
    hr: torch.Tensor | np.ndarray,
    seed: int | np.random.Generator,
    pipeline: str | DegradationPipeline | Mapping[str, Any] = "resshift_test",
) -> tuple[torch.Tensor | np.ndarray, Any]:
    """HR -> (LR, params), deterministic for ``seed`` (an int, or a ``numpy.random.Generator`` to draw from).

    ``hr``: torch (3,H,W) or (B,3,H,W) RGB float in [0,1], or numpy (H,W,3) RGB uint8 / float in [0,1].
    The LR comes back in the same kind and layout (uint8 stays uint8; floats lie on the 8-bit grid), with
    H/sf x W/sf pixels.  ``params`` holds every random choice (JSON-able) for logging or replay with
    :func:`apply_degradation`; for a batch it is a list, one dict per image, drawn in order from ``seed``.
    """
    p = get_pipeline(pipeline)
    if isinstance(hr, np.ndarray):
        if hr.ndim != 3 or hr.shape[2] != 3:
            raise ValueError(f"expected an (H,W,3) RGB array, got shape {hr.shape}")
        params = sample_params(p, seed)
        is_uint8 = hr.dtype == np.uint8
        x = torch.from_numpy(np.ascontiguousarray(hr)).float().permute(2, 0, 1)[None]
        x = x / 255.0 if is_uint8 else x
        lr = apply_degradation(x, params, p)[0].permute(1, 2, 0).numpy()
        return (np.round(lr * 255).astype(np.uint8) if is_uint8 else lr.astype(np.float32)), params
    if hr.ndim == 3:
        lr_t, params = degrade(hr[None], seed, p)
        return lr_t[0], params  # type: ignore[index]
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise ValueError(f"expected a (3,H,W) or (B,3,H,W) tensor, got {tuple(hr.shape)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    draws = [sample_params(p, rng) for _ in range(hr.shape[0])]
    out = torch.cat([apply_degradation(x[None], d, p) for x, d in zip(hr, draws, strict=True)]).to(hr.dtype)
    return out, (draws[0] if hr.shape[0] == 1 else draws)
