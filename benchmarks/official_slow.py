"""Where the authors' code is slow, and what srbench does instead: time and output difference, one run.

    .venv/bin/python benchmarks/official_slow.py [--device cpu|cuda] [--repeats 3] [--json PATH]

Prints one table, ``item | official-style | srbench | ratio | max|Δ|``: ratio = official-style time /
srbench time (> 1: srbench is faster); max|Δ| is the largest absolute difference of the outputs (the SR
image in [0,1] unless the item says otherwise).  Every time is the fastest of ``--repeats`` runs after
one warm-up, the variants of a row interleaved (this machine may be shared).  Rows:

1. Blending precision and weight caching.
   * ``blend 512→2048``: InvSR-style chopping of a 512² LR (128-px tiles, stride 64, ×4, 49 tiles,
     8 per call) with a *stub* tile function that returns precomputed HR tiles, so only the blending is
     timed.  Official-style = a re-expression of InvSR's ``ImageSpliterTh`` (float64 canvases of shape
     (B,C,H,W) for values and weights, Gaussian weights rebuilt with OpenCV for every tile); srbench =
     ``tiled_map`` with weights cached per tile size and float32 (or float64) accumulation.
   * ``ε-fusion``: StableSR's per-step fusion of tile ε on a 128² latent (1024² image, 64-px tiles,
     stride 32) for 200 steps with stub ε tiles; weights per tile (srbench before this change) vs cached
     across steps (bit-identical), and the official canvas stitching (float32) vs srbench float32.
   * ``ε-fusion, DDPM-200``: StableSR's real sampler loop with stub networks at that size, blending in
     float64 vs float32: Δ of the final latent.
   * per method on the tiny random models: the whole ``upscale`` with ``blend_dtype`` float64 vs float32.
2. StableSR tile batching on the tiny model (fp32): ``tile_batch_size`` 1 (the official commands'
   ``--n_samples 1``) vs 4 (srbench default) vs all tiles in one call.
3. Prompt encoding: InvSR's pipeline re-encodes the prompt batch at every call (official-style) vs the
   embedding cached at load; on the tiny model (whole upscale) and with a text encoder of the real
   SD-Turbo / SD 2.1 size (OpenCLIP-H text tower as ``CLIPTextModel``: hidden 1024, 23 layers, 16 heads,
   MLP 4096, 77 positions) with RANDOM weights — a cost measurement, never a quality one.

All model numbers come from tiny random-weight models (srbench.testing.factories): speed and numerics
only.  The "official-style" functions below are written from reading the authors' code (files cited in
each); they are re-expressions for timing, not the authors' code.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as srbench does; before torch starts OpenMP

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import srbench
from srbench.diffusion.tiling import (
    TileBox,
    WeightCache,
    gaussian_weights_cv2,
    gaussian_weights_mixture,
    tile_grid,
    tiled_map,
)


# ---- timing ---------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def race(
    fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device
) -> dict[str, tuple[float, Any]]:
    """Fastest wall time of each function over ``repeats`` interleaved runs (after one warm-up each),
    and its last result."""
    out: dict[str, Any] = {}
    for name, fn in fns.items():  # warm-up: allocator, oneDNN primitives, lazy imports
        out[name] = fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            out[name] = fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], out[name]) for name in fns}


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def flips_8bit(a: torch.Tensor, b: torch.Tensor) -> int:
    """Pixels whose 8-bit value (round(255 x), as a saved PNG) differs."""
    qa = (a.double().clamp(0, 1) * 255).round()
    qb = (b.double().clamp(0, 1) * 255).round()
    return int((qa != qb).sum())


@dataclass
class Row:
    item: str
    official: str  # what the slow variant is
    srbench: str  # what srbench does
    t_official: float
    t_srbench: float
    delta: float
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.t_official / self.t_srbench if self.t_srbench > 0 else math.inf


def _fmt_t(t: float) -> str:
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"


def print_table(rows: list[Row]) -> None:
    head = ("#", "item", "official-style", "srbench", "ratio", "max|Δ|")
    body = [
        (str(i), r.item, _fmt_t(r.t_official), _fmt_t(r.t_srbench), f"{r.ratio:.2f}x", f"{r.delta:.2e}")
        for i, r in enumerate(rows, 1)
    ]
    widths = [max(len(x[k]) for x in [head, *body]) for k in range(len(head))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for cells in body:
        print(line(cells))
    print()
    for i, r in enumerate(rows, 1):
        print(f"{i}. official-style: {r.official}; srbench: {r.srbench}." + (f" {r.note}" if r.note else ""))


# ---- 1. blending: official-style re-expressions -----------------------------------------------------
def _official_starts(length: int, pch: int, stride: int) -> list[int]:
    # InvSR utils/util_image.py ImageSpliterTh.extract_starts: range(0, length, stride), a start past
    # the end moved to length - pch, duplicates dropped in order
    if length <= pch:
        return [0]
    starts = [min(s, length - pch) for s in range(0, length, stride)]
    return sorted(set(starts), key=starts.index)


def _official_cv2_weight(h: int, w: int, device: torch.device) -> torch.Tensor:
    # InvSR ImageSpliterTh.get_weight / generate_kernel_1d, called in update() for EVERY tile:
    # cv2.getGaussianKernel (CV_64F, OpenCV's default sigma for the size; k+1 taps minus the first for an
    # even size), numpy outer product, to a (1,1,h,w) float64 tensor on the device
    import cv2

    def k1(n: int) -> np.ndarray:
        sigma = 0.3 * ((n - 1) * 0.5 - 1) + 0.8
        if n % 2 == 0:
            return cv2.getGaussianKernel(n + 1, sigma, ktype=cv2.CV_64F)[1:]
        return cv2.getGaussianKernel(n, sigma, ktype=cv2.CV_64F)

    kern = np.matmul(k1(h).reshape(-1, 1), k1(w).reshape(1, -1))
    return torch.from_numpy(kern)[None, None].to(dtype=torch.float64, device=device)


def official_style_chop_blend(
    lr: torch.Tensor,
    tile_fn: Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor],
    pch: int,
    stride: int,
    sf: int,
    extra_bs: int,
) -> torch.Tensor:
    """Re-expression of InvSR's chopping (sampler_invsr.py ``sample_func`` -> utils/util_image.py
    ``ImageSpliterTh``: ``__init__``, ``__next__``, ``update``, ``gather``), for timing."""
    bs, chn, h, w = lr.shape
    starts = [(i, j) for i in _official_starts(h, pch, stride) for j in _official_starts(w, pch, stride)]
    # __init__: both canvases float64 and (B, C, H*sf, W*sf)
    im_res = torch.zeros(bs, chn, h * sf, w * sf, dtype=torch.float64, device=lr.device)
    pixel_count = torch.zeros(bs, chn, h * sf, w * sf, dtype=torch.float64, device=lr.device)
    for k in range(0, len(starts), extra_bs):
        group = starts[k : k + extra_bs]
        pch_in = torch.cat([lr[:, :, i : i + pch, j : j + pch] for i, j in group], dim=0)
        res = tile_fn(pch_in, group)  # the whole SD pipeline in the official code
        for n, (i, j) in enumerate(group):  # update()
            cur = res[n * bs : (n + 1) * bs].type(torch.float64)
            wt = _official_cv2_weight(cur.shape[-2], cur.shape[-1], lr.device)
            hs, ws = i * sf, j * sf
            im_res[:, :, hs : hs + pch * sf, ws : ws + pch * sf] += cur * wt
            pixel_count[:, :, hs : hs + pch * sf, ws : ws + pch * sf] += wt
    assert torch.all(pixel_count != 0)  # gather()
    return im_res.div(pixel_count)


def _official_canvas_offsets(n: int, tile: int, overlap: int, length: int) -> list[int]:
    # p_mean_variance_canvas: offset k = max(k*tile - k*overlap, 0), the last one = length - tile
    return [length - tile if k == n - 1 else max(k * tile - overlap * k, 0) for k in range(n)]


def _official_canvas_count(tile: int, overlap: int, length: int) -> int:
    # p_mean_variance_canvas's grid_rows / grid_cols loops
    count, cur = 0, 0
    while cur < length:
        cur = max(count * tile - overlap * count, 0) + tile
        count += 1
    return count


def official_style_canvas_eps(
    x: torch.Tensor,
    eps_fn: Callable[[torch.Tensor, list[tuple[int, int]]], torch.Tensor],
    tile_weights: torch.Tensor,
    tile: int,
    overlap: int,
    batch_size: int,
) -> torch.Tensor:
    """Re-expression of StableSR's ``p_mean_variance_canvas`` ε fusion (ldm/models/diffusion/ddpm.py),
    for timing: the grid loops (``row`` along x, ``col`` along y), tiles cut and concatenated in batches
    of ``batch_size`` that are flushed at the end of every inner loop, the network on each batch, then
    the stitching into float32 canvases ``torch.zeros(x.shape)`` for ε and for the contributors, with
    ``tile_weights`` the float64 (1,C,h,w) mixture Gaussian made ONCE per sampling loop
    (``p_sample_loop_canvas`` -> ``_gaussian_weights``): products promoted to float64, added in place
    into the float32 canvases."""
    _, _, h, w = x.shape
    n_rows, n_cols = _official_canvas_count(tile, overlap, w), _official_canvas_count(tile, overlap, h)
    xs, ys = (
        _official_canvas_offsets(n_rows, tile, overlap, w),
        _official_canvas_offsets(n_cols, tile, overlap, h),
    )
    preds: dict[tuple[int, int], torch.Tensor] = {}
    for ox in xs:
        inputs: list[torch.Tensor] = []
        where: list[tuple[int, int]] = []
        for c, oy in enumerate(ys):
            inputs.append(x[:, :, oy : oy + tile, ox : ox + tile])
            where.append((oy, ox))
            if len(inputs) == batch_size or c == n_cols - 1:
                out = eps_fn(torch.cat(inputs, dim=0), where)
                for i, pos in enumerate(where):
                    preds[pos] = out[i].unsqueeze(0)
                inputs, where = [], []
    noise_pred = torch.zeros(x.shape, device=x.device)
    contributors = torch.zeros(x.shape, device=x.device)
    for (oy, ox), eps in preds.items():
        noise_pred[:, :, oy : oy + tile, ox : ox + tile] += eps * tile_weights
        contributors[:, :, oy : oy + tile, ox : ox + tile] += tile_weights
    return noise_pred / contributors


class _NoCache(dict):  # type: ignore[type-arg]
    """A ``weight_cache`` that never keeps anything: ``tiled_map`` then builds the weights for every
    tile, as srbench did before this change (same code path otherwise)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _synthetic_lr(size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A photo-like LR in [0,1]: smooth colour field + texture."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(
        torch.rand(1, 3, size // 16, size // 16, generator=g), size=(size, size), mode="bicubic"
    )
    return (base + 0.08 * torch.randn(1, 3, size, size, generator=g)).clamp(0, 1).to(device)


def bench_blend_512(args: argparse.Namespace, device: torch.device) -> list[Row]:
    lr = _synthetic_lr(512, device)
    pch, stride, sf, bs = 128, 64, 4, 8
    boxes = tile_grid(512, 512, pch, stride)
    up = F.interpolate(lr, scale_factor=sf, mode="bicubic", align_corners=False)
    g = torch.Generator().manual_seed(1)
    # tiles that disagree in their overlaps, as independent SR runs do (σ = 0.02 per-tile noise)
    hr: dict[tuple[int, int], torch.Tensor] = {}
    for b in boxes:
        crop = up[:, :, b.top * sf : (b.top + pch) * sf, b.left * sf : (b.left + pch) * sf]
        noise = 0.02 * torch.randn(crop.shape, generator=g).to(device)
        hr[(b.top, b.left)] = (crop + noise).clamp(0, 1).float().contiguous()

    def stub_official(_tiles: torch.Tensor, group: list[tuple[int, int]]) -> torch.Tensor:
        return torch.cat([hr[p] for p in group])

    def stub(_tiles: torch.Tensor, group: list[TileBox]) -> torch.Tensor:
        return torch.cat([hr[(b.top, b.left)] for b in group])

    def srb(dtype: torch.dtype, weight_cache: WeightCache | None = None) -> Callable[[], torch.Tensor]:
        return lambda: tiled_map(
            lr,
            stub,
            tile=pch,
            stride=stride,
            scale=sf,
            weight_fn=gaussian_weights_cv2,
            tiles_per_batch=bs,
            accumulate_dtype=dtype,
            weight_cache=weight_cache,
        )

    res = race(
        {
            "official": lambda: official_style_chop_blend(lr, stub_official, pch, stride, sf, bs),
            "fp64": srb(torch.float64),
            "fp32": srb(torch.float32),
            "fp64_nocache": srb(torch.float64, _NoCache()),
        },
        args.repeats,
        device,
    )
    (t_off, off), (t64, o64), (t32, o32), (t64n, o64n) = (
        res[k] for k in ("official", "fp64", "fp32", "fp64_nocache")
    )
    label = "blend 512→2048 (InvSR chop, stub tiles)"
    n = len(boxes)
    return [
        Row(
            f"{label}: official fp64 vs srbench fp32",
            f"ImageSpliterTh re-expression, float64 (B,C,H,W) canvases, cv2 weights per tile ({n} tiles)",
            "tiled_map, weights cached per tile size, float32 accumulation (the new default)",
            t_off,
            t32,
            max_abs(off, o32),
            f"8-bit pixels changed: {flips_8bit(off, o32)} of {off.numel()}.",
        ),
        Row(
            f"{label}: official fp64 vs srbench fp64",
            "as above",
            "tiled_map float64 (blend_dtype: float64), weights cached, one (1,1,H,W) weight canvas",
            t_off,
            t64,
            max_abs(off, o64),
            f"8-bit pixels changed: {flips_8bit(off, o64)}.",
        ),
        Row(
            f"{label}: srbench fp64 vs fp32",
            "tiled_map float64",
            "tiled_map float32",
            t64,
            t32,
            max_abs(o64, o32),
        ),
        Row(
            f"{label}: weights per tile vs cached (fp64)",
            "tiled_map float64 with the weights rebuilt for every tile (srbench before)",
            "tiled_map float64, weights cached",
            t64n,
            t64,
            max_abs(o64n, o64),
            "Δ must be exactly 0.",
        ),
    ]


def bench_eps_fusion(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """StableSR's ε fusion at a realistic size: 4×128×128 latent, 64-px tiles at stride 32, 200 steps."""
    steps, tile, stride = 200, 64, 32
    z = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(2)).to(device)
    boxes = tile_grid(128, 128, tile, stride)
    g = torch.Generator().manual_seed(3)
    eps_tiles = {(b.top, b.left): torch.randn(1, 4, tile, tile, generator=g).to(device) for b in boxes}

    def stub(_t: torch.Tensor, group: list[TileBox]) -> torch.Tensor:
        return torch.cat([eps_tiles[(b.top, b.left)] for b in group])

    def loop(dtype: torch.dtype, cached: bool) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            shared: dict[Any, torch.Tensor] = {}  # kept across the steps, as StableSRSampler.weight_cache
            out = z
            for _ in range(steps):
                out = tiled_map(
                    z,
                    stub,
                    tile=tile,
                    stride=stride,
                    weight_fn=gaussian_weights_mixture,
                    tiles_per_batch=4,
                    accumulate_dtype=dtype,
                    weight_cache=shared if cached else _NoCache(),
                ).to(torch.float32)
            return out

        return run

    def stub_official(_t: torch.Tensor, where: list[tuple[int, int]]) -> torch.Tensor:
        return torch.cat([eps_tiles[pos] for pos in where])

    def official() -> torch.Tensor:
        # once per sampling loop, float64, tiled to (1, C, h, w)
        tw = gaussian_weights_mixture(tile, tile, device=device)[None, None].repeat(1, 4, 1, 1)
        out = z
        for _ in range(steps):
            out = official_style_canvas_eps(z, stub_official, tw, tile, tile - stride, 4)
        return out

    res = race(
        {
            "nocache64": loop(torch.float64, False),
            "cache64": loop(torch.float64, True),
            "official": official,
            "cache32": loop(torch.float32, True),
        },
        args.repeats,
        device,
    )
    (tn, on), (tc, oc), (to, oo), (t32, o32) = (
        res[k] for k in ("nocache64", "cache64", "official", "cache32")
    )
    label = f"ε-fusion 128² latent ×{steps} steps (StableSR, stub ε)"
    return [
        Row(
            f"{label}: weights per tile vs cached",
            f"tiled_map float64, mixture weights rebuilt for each of {len(boxes)} tiles at every step "
            "(srbench before)",
            "tiled_map float64, weights cached across steps (StableSRSampler.weight_cache)",
            tn,
            tc,
            max_abs(on, oc),
            "Δ of the fused ε; must be exactly 0.",
        ),
        Row(
            f"{label}: official canvas vs srbench fp32",
            "p_mean_variance_canvas re-expression (tiles cut and batched by 4 per grid row, float32 "
            "(1,C,H,W) canvases, float64 weights made once per loop)",
            "tiled_map float32, weights cached (the new default)",
            to,
            t32,
            max_abs(oo, o32),
            f"Δ of the fused ε (|ε| ~ 1); srbench float64 vs official: {max_abs(oo, oc):.2e}.",
        ),
    ]


class _StubEncoder(torch.nn.Module):
    def forward(self, z_lr: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"lr": z_lr}


class _DtypeOnly(torch.nn.Module):
    """Carries the UNet dtype the sampler reads (that of the first parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)


class _StubSFTUNet(torch.nn.Module):
    """ε of a tile: the exact ε-prediction for Gaussian data x_0 ~ N(z_lr, s² I) (so the DDPM trajectory is
    a realistic, contracting one ending near the LR latent), plus a term from the tile's own mean so that
    overlapping tiles disagree (as real per-tile UNet runs do) and the fusion matters."""

    def __init__(self, alphas_cumprod: torch.Tensor, s: float = 0.5) -> None:
        super().__init__()
        self.unet = _DtypeOnly()  # the sampler reads only the dtype of ``sft_unet.unet``'s parameters
        self.register_buffer("abar", alphas_cumprod.float())
        self.s2 = s * s

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, feats: dict) -> torch.Tensor:  # type: ignore[type-arg]
        a = self.abar[t].view(-1, 1, 1, 1)
        eps = (1 - a).sqrt() * (z - a.sqrt() * feats["lr"]) / (a * self.s2 + 1 - a)
        return eps + 0.05 * z.mean(dim=(2, 3), keepdim=True)


def bench_ddpm_synthetic(args: argparse.Namespace, device: torch.device) -> list[Row]:
    from methods.stablesr.sampler import Guidance, StableSRSampler

    z_lr = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(5)).to(device)
    guid = Guidance(cond=torch.zeros(1, 77, 8, device=device))
    samplers = {}
    for d in ("float64", "float32"):
        s = StableSRSampler(None, _StubEncoder(), tile_batch_size=4, blend_dtype=d)  # type: ignore[arg-type]
        s.sft_unet = _StubSFTUNet(s.alphas_cumprod).to(device)  # type: ignore[assignment]
        samplers[d] = s

    def run(d: str) -> Callable[[], torch.Tensor]:
        return lambda: samplers[d].sample(
            z_lr, guid, steps=200, tile=64, stride=32, generator=torch.Generator(device).manual_seed(6)
        )

    res = race({"fp64": run("float64"), "fp32": run("float32")}, args.repeats, device)
    (t64, o64), (t32, o32) = res["fp64"], res["fp32"]
    return [
        Row(
            "StableSR DDPM-200 on a 128² latent (stub nets): fp64 vs fp32 blend",
            "StableSRSampler, blend_dtype float64",
            "StableSRSampler, blend_dtype float32",
            t64,
            t32,
            max_abs(o64, o32),
            f"Δ of the final latent z_0 (std {float(o64.std()):.2f}; the VAE decoder maps it to [0,1]).",
        )
    ]


def bench_tiny_blend(args: argparse.Namespace, device: torch.device, root: Path) -> list[Row]:
    from srbench.testing.factories import build_tiny

    cases = {
        # (LR size, steps): tiny InvSR / DM-SR tiles are 32 LR px at stride 16 -> 9 tiles at 64²
        "invsr": ((1, 3, 64, 64), 1),
        "dmsr": ((1, 3, 64, 64), 1),
        # tiny StableSR: input_size 128 -> 16-px latent tiles; 32x48 LR -> 16x24 latent, 2 tiles
        "stablesr": ((1, 3, 32, 48), args.stablesr_steps),
    }
    rows = []
    for name, (shape, steps) in cases.items():
        lr = torch.rand(*shape, generator=torch.Generator().manual_seed(7)).to(device)
        methods = {}
        for d in ("float64", "float32"):
            m = build_tiny(name, root / f"{name}-{d}", blend_dtype=d)
            m.load(device)
            methods[d] = m

        def run(d: str, lr: torch.Tensor = lr, steps: int = steps, ms: dict = methods) -> Callable:  # type: ignore[type-arg]
            m = ms[d]
            return lambda: m.upscale(lr, steps=steps, generator=torch.Generator(device).manual_seed(8))

        res = race({"fp64": run("float64"), "fp32": run("float32")}, args.repeats, device)
        (t64, o64), (t32, o32) = res["fp64"], res["fp32"]
        rows.append(
            Row(
                f"tiny {name} upscale {shape[2]}x{shape[3]}, {steps} step(s): blend fp64 vs fp32",
                f"{name} blend_dtype float64",
                f"{name} blend_dtype float32",
                t64,
                t32,
                max_abs(o64, o32),
                f"8-bit pixels changed: {flips_8bit(o64, o32)} of {o64.numel()}.",
            )
        )
    return rows


# ---- 2. StableSR tile batching -------------------------------------------------------------------------
def bench_tile_batching(args: argparse.Namespace, device: torch.device, root: Path) -> list[Row]:
    from srbench.testing.factories import build_tiny

    # 48x64 LR -> 192x256 image -> 24x32 latent -> 2 x 3 = 6 tiles of 16 at stride 8
    lr = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(9)).to(device)
    steps = args.stablesr_steps
    ms = {}
    for tb in (1, 4, 64):
        m = build_tiny("stablesr", root / f"stablesr-tb{tb}", tile_batch_size=tb)
        m.load(device)
        ms[tb] = m
    n_tiles = len(tile_grid(24, 32, 16, 8))

    def run(tb: int) -> Callable[[], torch.Tensor]:
        return lambda: ms[tb].upscale(lr, steps=steps, generator=torch.Generator(device).manual_seed(10))

    res = race({tb: run(tb) for tb in ms}, args.repeats, device)
    (t1, o1), (t4, o4), (ta, oa) = res[1], res[4], res[64]
    off = (
        f"tile_batch_size 1: the encoder and the UNet once per tile ({n_tiles} tiles x {steps} steps), as "
        "p_mean_variance_canvas with the README's --n_samples 1"
    )
    return [
        Row(
            f"StableSR tile batching, tiny, {steps} steps: 1 vs 4 tiles/call",
            off,
            "tile_batch_size 4 (srbench default)",
            t1,
            t4,
            max_abs(o1, o4),
        ),
        Row(
            f"StableSR tile batching, tiny, {steps} steps: 1 vs all {n_tiles} tiles/call",
            off,
            f"tile_batch_size >= {n_tiles} (one call per step)",
            t1,
            ta,
            max_abs(o1, oa),
            f"4 vs all: max|Δ| {max_abs(o4, oa):.2e}.",
        ),
    ]


# ---- 3. prompt encoding --------------------------------------------------------------------------------
def official_style_encode(tokenizer: Any, text_encoder: Any, prompt: str, n: int) -> torch.Tensor:
    """What InvSR's pipeline does at EVERY call (src/diffusers/pipelines/stable_diffusion/
    pipeline_stable_diffusion_inversion_sr.py ``__call__`` step 3 -> ``encode_prompt``; sampler_invsr.py
    passes ``prompt=[_positive]*batch``): tokenize the batch of copies, run the text encoder on it.
    StableSR's scripts do the same once per image (``model.cond_stage_model(['']*n_samples)``)."""
    ids = tokenizer(
        [prompt] * n,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(text_encoder.device)
    with torch.inference_mode():
        return text_encoder(ids)[0]


def bench_prompt_tiny(args: argparse.Namespace, device: torch.device, root: Path) -> list[Row]:
    from methods.invsr.pipeline import InvSRSampler
    from srbench.diffusion.sd import load_sd_components
    from srbench.testing.factories import build_tiny

    m = build_tiny("invsr", root / "invsr-prompt")
    m.load(device)
    sampler = m.sampler
    assert sampler is not None
    parts = load_sd_components(m.model, device=device, parts=("text_encoder", "tokenizer"))
    tok, te = parts.tokenizer, parts.text_encoder

    class OfficialPromptSampler(InvSRSampler):
        """InvSR's sampler with the prompt re-encoded at every pipeline call (official behaviour)."""

        def prompt_embeds(self, batch: int) -> torch.Tensor:
            return official_style_encode(tok, te, self.prompt, batch).to(self.unet.device, self.unet.dtype)

    off_sampler = OfficialPromptSampler.__new__(OfficialPromptSampler)
    off_sampler.__dict__.update(sampler.__dict__)
    lr = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(11)).to(device)
    ts = m.timesteps_for(1)
    kw = {"chopping_size": 32, "chopping_batch_size": 8}  # 9 tiles -> 2 pipeline calls (8 + 1)

    res = race(
        {
            "official": lambda: off_sampler.upscale(lr, ts, torch.Generator(device).manual_seed(12), **kw),
            "srbench": lambda: sampler.upscale(lr, ts, torch.Generator(device).manual_seed(12), **kw),
            "encode1": lambda: official_style_encode(tok, te, sampler.prompt, 1),
        },
        args.repeats,
        device,
    )
    (to, oo), (ts_, os_), (te1, e1) = res["official"], res["srbench"], res["encode1"]
    cached = sampler.prompt_embeds(1)
    return [
        Row(
            "prompt encoding, tiny InvSR upscale 64² (9 tiles, 2 calls)",
            "prompt batch re-encoded at each pipeline call (8 + 1 copies)",
            "embedding encoded once at load, text encoder freed",
            to,
            ts_,
            max_abs(oo, os_),
            f"one tiny encode = {_fmt_t(te1)} = {100 * te1 / ts_:.1f}% of a tiny upscale; cached vs fresh "
            f"embedding max|Δ| {max_abs(cached, e1):.1e}.",
        )
    ]


def bench_prompt_real_size(args: argparse.Namespace, device: torch.device, root: Path) -> list[Row]:
    from transformers import CLIPTextConfig, CLIPTextModel

    from methods.invsr.pipeline import POSITIVE_PROMPT
    from srbench.diffusion.prompts import PromptEmbeddingCache
    from srbench.diffusion.sd import load_sd_components
    from srbench.testing.tiny_sd import SD2_TEXT_ENCODER_SIZES, save_tiny_sd

    tok = load_sd_components(save_tiny_sd(root / "tok-sd"), parts=("tokenizer",)).tokenizer
    cfg = CLIPTextConfig(**SD2_TEXT_ENCODER_SIZES)  # the real SD 2.x / SD-Turbo text encoder sizes
    torch.manual_seed(0)
    te = CLIPTextModel(cfg).to(device).eval()  # RANDOM weights: a timing stand-in only
    n_params = sum(p.numel() for p in te.parameters())
    cache = PromptEmbeddingCache(tok, te)
    cache.encode(POSITIVE_PROMPT, device=device, dtype=torch.float32)
    # a 512² LR through InvSR's chopping (128-px tiles, stride 64): 49 tiles, 8 per call -> 7 calls
    n_tiles, per_call = len(tile_grid(512, 512, 128, 64)), 8
    calls = [min(per_call, n_tiles - k) for k in range(0, n_tiles, per_call)]

    def official_invsr() -> list[torch.Tensor]:
        return [official_style_encode(tok, te, POSITIVE_PROMPT, n) for n in calls]

    def srbench_invsr() -> list[torch.Tensor]:
        return [cache.get(POSITIVE_PROMPT, n, device=device, dtype=torch.float32) for n in calls]

    res = race(
        {
            "off": official_invsr,
            "srb": srbench_invsr,
            "enc1": lambda: official_style_encode(tok, te, POSITIVE_PROMPT, 1),
            "enc2": lambda: official_style_encode(tok, te, "", 2),
        },
        max(1, min(args.repeats, 2)),
        device,
    )
    (to, oo), (ts_, os_), (t1, e1), (t2, _) = res["off"], res["srb"], res["enc1"], res["enc2"]
    cached1 = cache.get(POSITIVE_PROMPT, 1, device=device, dtype=torch.float32)
    return [
        Row(
            f"prompt encoding, real-size CLIP text ({n_params / 1e6:.0f} M, RANDOM), per InvSR 512² image",
            f"{len(calls)} encodes of the prompt batch ({'+'.join(map(str, calls))} copies)",
            f"{len(calls)} cache look-ups (expand views)",
            to,
            ts_,
            max_abs(torch.cat(oo), torch.cat(os_)),
            f"one encode of 1 prompt: {_fmt_t(t1)}; StableSR's per-image encode of ['']*2: {_fmt_t(t2)}; "
            f"cached vs fresh embedding max|Δ| {max_abs(cached1, e1):.1e} (identical).",
            {"encode_1_s": t1, "encode_stablesr_2_s": t2, "params": n_params},
        )
    ]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return platform.processor() or "cpu"


# ---- main ------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant, fastest kept (default 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows and the setting as JSON")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 on cpu)")
    ap.add_argument(
        "--stablesr-steps",
        type=int,
        default=200,
        help="DDPM steps of the tiny StableSR rows (default 200, the paper's)",
    )
    ap.add_argument(
        "--only", default="blend,batching,prompt", help="comma list of sections: blend, batching, prompt"
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    t_start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "blend" in sections:
            rows += bench_blend_512(args, device)
            rows += bench_eps_fusion(args, device)
            rows += bench_ddpm_synthetic(args, device)
            rows += bench_tiny_blend(args, device, root)
        if "batching" in sections:
            rows += bench_tile_batching(args, device, root)
        if "prompt" in sections:
            rows += bench_prompt_tiny(args, device, root)
            rows += bench_prompt_real_size(args, device, root)
    wall = time.perf_counter() - t_start
    setting = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": threads,
        "repeats": args.repeats,
        "stablesr_steps": args.stablesr_steps,
        "torch": torch.__version__,
        "srbench": getattr(srbench, "__version__", "?"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "wall_s": wall,
    }
    print(
        f"official_slow: device {device} ({setting['device_name'] or '?'}), {threads} thread(s), "
        f"fastest of {args.repeats} runs, torch {torch.__version__}; load average {setting['load_average']}; "
        f"tiny RANDOM models (speed/numerics only)\n"
    )
    print_table(rows)
    print(f"\n(total {wall:.0f} s)")
    if args.json:
        payload = {
            "setting": setting,
            "rows": [{**asdict(r), "ratio": r.ratio} for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
