"""Overlapping tiles with Gaussian blending, in image space or latent space.

- :func:`tile_starts` / :func:`tile_grid`: start offsets along an axis with a stride; a start that
  would run past the end is clamped to ``length - tile`` and duplicates are dropped, so the last
  tile is flush with the border.  This is InvSR's ``ImageSpliterTh.extract_starts`` and gives the
  same grid as StableSR's aggregation sampling (App. B, "dynamically adjusted overlap").
- Tile weights: :func:`gaussian_weights_cv2` (InvSR chopping: separable ``cv2.getGaussianKernel``
  with OpenCV's default sigma) and :func:`gaussian_weights_mixture` (StableSR aggregation sampling,
  from mixture-of-diffusers: variance 0.01 of the tile size, x centred at (W-1)/2, y at H/2).
- :class:`TileAccumulator`: sum of ``w * tile`` and of ``w`` into a canvas, then their ratio.
- :func:`tiled_map`: cut tiles, run a function on batches of tiles, blend the (optionally scaled)
  outputs, row band by row band (the same sums as :class:`TileAccumulator`, bit for bit, but only about
  one tile of rows held; the blended rows can go straight into a uint8 canvas).  InvSR runs its
  whole pipeline per LR tile (scale 4); StableSR calls it once per step on the latent (scale 1) to fuse
  noise predictions.  The weights are computed once per distinct tile size (per call, or across calls
  with a shared ``weight_cache``), not once per tile.
- Blend precision (:data:`BLEND_DTYPES`, :func:`blend_dtype_of`): InvSR's ``ImageSpliterTh`` blends
  in float64, StableSR's canvas sampler in float32.  float32 gives the same image within 3e-7 (a 2048²
  InvSR blend; 1.3e-6 after StableSR's 200 steps; ``benchmarks/official_slow.py``) at half the canvas
  memory traffic, so the methods default to float32 and keep ``blend_dtype: float64`` as an option.
- Padding: :func:`pad_bottom_right_to_multiple` (DoSSR, DM-SR) and :func:`reflect_pad_to` (DM-SR: a
  minimum size, centred, then a multiple).  InvSR keeps its own padding, which follows the authors'
  ``sampler_invsr.py`` splits and mode rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from srbench.interface import SRBenchError

WeightFn = Callable[..., torch.Tensor]
#: key of a cached weight tile: (weight function, height, width, dtype, device)
WeightCache = dict[tuple[Any, int, int, torch.dtype, str], torch.Tensor]

#: the accepted values of the methods' ``blend_dtype`` option
BLEND_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}


def blend_dtype_of(value: str | torch.dtype, method: str = "") -> torch.dtype:
    """The torch dtype of a ``blend_dtype`` option (``"float32"`` / ``"float64"``, or a torch dtype);
    anything else is an :class:`~srbench.interface.SRBenchError` naming the accepted values."""
    if isinstance(value, torch.dtype) and value in BLEND_DTYPES.values():
        return value
    key = str(value).lower().removeprefix("torch.")
    if key in BLEND_DTYPES:
        return BLEND_DTYPES[key]
    where = f"{method}: " if method else ""
    raise SRBenchError(f"{where}blend_dtype must be one of {list(BLEND_DTYPES)}, got {value!r}")


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` with step ``stride`` covering ``[0, length)``."""
    if tile <= 0 or stride <= 0:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be positive")
    if stride > tile:
        raise ValueError(f"stride {stride} > tile {tile} leaves gaps")
    if length <= tile:
        return [0]
    starts: list[int] = []
    for s in range(0, length, stride):
        s = min(s, length - tile)
        if s not in starts:
            starts.append(s)
    return starts


@dataclass(frozen=True)
class TileBox:
    """A tile in input coordinates (``top, left, height, width``)."""

    top: int
    left: int
    height: int
    width: int

    def slices(self, scale: int = 1) -> tuple[slice, slice]:
        return (
            slice(self.top * scale, (self.top + self.height) * scale),
            slice(self.left * scale, (self.left + self.width) * scale),
        )


def tile_grid(
    height: int, width: int, tile: int | tuple[int, int], stride: int | tuple[int, int]
) -> list[TileBox]:
    """Tiles covering a ``height x width`` plane, row-major (as InvSR and StableSR iterate them).
    A side no longer than the tile gets one tile of the side's own length."""
    th, tw = (tile, tile) if isinstance(tile, int) else tile
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    boxes = []
    for top in tile_starts(height, th, sh):
        for left in tile_starts(width, tw, sw):
            boxes.append(TileBox(top, left, min(th, height), min(tw, width)))
    return boxes


def _gaussian_kernel_1d_cv2(size: int, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    # cv2.getGaussianKernel(k, sigma) with OpenCV's default sigma for k: exp(-(i-(k-1)/2)^2 / (2 sigma^2)),
    # normalised to sum 1. InvSR (ImageSpliterTh.generate_kernel_1d) takes k+1 taps for an even size
    # and drops the first, keeping its sigma 0.3*((size-1)/2 - 1) + 0.8 computed from ``size``.
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    k = size + 1 if size % 2 == 0 else size
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    if size % 2 == 0:
        g = g[1:]
    return g.to(dtype=dtype, device=device)


def gaussian_weights_cv2(
    height: int,
    width: int,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """InvSR's chopping weights ``(height, width)``: outer product of two OpenCV Gaussian kernels."""
    kh = _gaussian_kernel_1d_cv2(height, torch.float64, device)
    kw = _gaussian_kernel_1d_cv2(width, torch.float64, device)
    return torch.outer(kh, kw).to(dtype)


def gaussian_weights_mixture(
    height: int,
    width: int,
    *,
    var: float = 0.01,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """StableSR's tile weights ``(height, width)`` (``ddpm.py _gaussian_weights``, from
    mixture-of-diffusers): ``exp(-(x-mx)^2 / W^2 / (2 var)) / sqrt(2 pi var)`` per axis with
    ``mx = (W-1)/2`` for x but ``my = H/2`` for y (an inherited quirk, kept)."""
    x = torch.arange(width, dtype=torch.float64)
    y = torch.arange(height, dtype=torch.float64)
    norm = math.sqrt(2 * math.pi * var)
    px = torch.exp(-((x - (width - 1) / 2) ** 2) / (width * width) / (2 * var)) / norm
    py = torch.exp(-((y - height / 2) ** 2) / (height * height) / (2 * var)) / norm
    return torch.outer(py, px).to(dtype=dtype, device=device)


def uniform_weights(
    height: int, width: int, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> torch.Tensor:
    return torch.ones(height, width, dtype=dtype, device=device)


class TileAccumulator:
    """Weighted average of overlapping tiles on a ``(B,C,H,W)`` canvas."""

    def __init__(
        self,
        shape: Sequence[int],
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> None:
        if len(shape) != 4:
            raise ValueError(f"canvas shape must be (B,C,H,W), got {tuple(shape)}")
        self.value = torch.zeros(tuple(shape), dtype=dtype, device=device)
        self.weight = torch.zeros((1, 1, *shape[2:]), dtype=dtype, device=device)

    def add(self, tile: torch.Tensor, top: int, left: int, weight: torch.Tensor) -> None:
        """Add ``weight * tile`` at ``(top, left)``; ``weight`` is ``(h, w)`` for a tile ``(B,C,h,w)``."""
        h, w = tile.shape[-2:]
        if tuple(weight.shape) != (h, w):
            raise ValueError(f"weight {tuple(weight.shape)} does not match tile {(h, w)}")
        wt = weight.to(self.value.dtype)
        self.value[:, :, top : top + h, left : left + w] += tile.to(self.value.dtype) * wt
        self.weight[:, :, top : top + h, left : left + w] += wt

    def result(self) -> torch.Tensor:
        if not bool((self.weight > 0).all()):
            raise RuntimeError("tiles do not cover the whole canvas (a pixel has zero total weight)")
        return self.value / self.weight


class _RowBand:
    """:class:`TileAccumulator` over a moving band of canvas rows: rows no later tile reaches are divided
    out and handed on, so only a band about one tile high is ever held (the same sums, in the same order,
    as the whole-canvas accumulator: bit-identical results)."""

    def __init__(self, b: int, c: int, width: int, dtype: torch.dtype, device: torch.device) -> None:
        self.b, self.c, self.width, self.dtype, self.device = b, c, width, dtype, device
        self.top = 0  # canvas row of the band's first row
        self.value = torch.zeros((b, c, 0, width), dtype=dtype, device=device)
        self.weight = torch.zeros((1, 1, 0, width), dtype=dtype, device=device)

    def add(self, tile: torch.Tensor, top: int, left: int, weight: torch.Tensor) -> None:
        h, w = tile.shape[-2:]
        if tuple(weight.shape) != (h, w):
            raise ValueError(f"weight {tuple(weight.shape)} does not match tile {(h, w)}")
        grow = top + h - (self.top + self.value.shape[2])
        if grow > 0:
            self.value = torch.cat([self.value, self.value.new_zeros((self.b, self.c, grow, self.width))], 2)
            self.weight = torch.cat([self.weight, self.weight.new_zeros((1, 1, grow, self.width))], 2)
        r = top - self.top
        wt = weight.to(self.dtype)
        self.value[:, :, r : r + h, left : left + w] += tile.to(self.dtype) * wt
        self.weight[:, :, r : r + h, left : left + w] += wt

    def flush(self, upto: int) -> tuple[int, torch.Tensor] | None:
        """The blended rows ``[top, upto)`` as ``(top, tensor)``, dropped from the band (None if none)."""
        n = min(upto, self.top + self.value.shape[2]) - self.top
        if n <= 0:
            return None
        weight = self.weight[:, :, :n]
        if not bool((weight > 0).all()):
            raise RuntimeError("tiles do not cover the whole canvas (a pixel has zero total weight)")
        rows = (self.top, self.value[:, :, :n] / weight)
        self.value, self.weight = self.value[:, :, n:].clone(), self.weight[:, :, n:].clone()
        self.top += n
        return rows


def tiled_map(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor, list[TileBox]], torch.Tensor],
    *,
    tile: int | tuple[int, int],
    stride: int | tuple[int, int],
    scale: int = 1,
    weight_fn: WeightFn = gaussian_weights_cv2,
    tiles_per_batch: int = 1,
    accumulate_dtype: torch.dtype = torch.float64,
    out_channels: int | None = None,
    weight_cache: WeightCache | None = None,
    out: torch.Tensor | None = None,
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` ``(B,C,H,W)`` and blend the results.

    ``fn(tiles, boxes)`` gets up to ``tiles_per_batch`` tiles stacked on the batch axis, tile-major
    (``[tile0 of every image, tile1 of every image, ...]``, as InvSR's ``ImageSpliterTh`` does), and
    their boxes in ``x``'s coordinates (to crop other aligned inputs); it returns outputs of size
    ``scale`` times the tile, in the same order.  Outputs are weighted with ``weight_fn(h, w)`` of the
    output tile size and averaged in ``accumulate_dtype``; the result has that dtype.  When one tile
    covers ``x`` the result is exactly ``fn(x)`` (no weighting round-off).

    Rows are blended as soon as no later tile reaches them, so besides the result only a band about one
    output tile high is held.  ``out`` (a preallocated ``(B,C,H*scale,W*scale)`` tensor, e.g. uint8)
    receives the blended rows, each passed through ``finish`` first (e.g. rounding to 8 bits): then no
    full-size ``accumulate_dtype`` canvas exists at all.

    ``weight_fn`` is evaluated once per distinct output tile size and reused (bit-identical to
    evaluating it per tile); pass a dict as ``weight_cache`` to keep those tensors across calls (StableSR
    fuses the same grid at every step).  Cached tensors are shared: do not modify them in place.
    """
    if tiles_per_batch < 1:
        raise ValueError("tiles_per_batch must be >= 1")
    b, _, h, w = x.shape
    boxes = tile_grid(h, w, tile, stride)

    def emit(top: int, rows: torch.Tensor) -> None:
        assert out is not None
        out[:, :, top : top + rows.shape[2]] = finish(rows) if finish is not None else rows

    if len(boxes) == 1:  # one tile covering everything: no blending, exactly fn(x)
        result = fn(x, boxes).to(accumulate_dtype)
        if out is None:
            return result
        emit(0, result)
        return out
    cache: WeightCache = {} if weight_cache is None else weight_cache
    band: _RowBand | None = None
    for i in range(0, len(boxes), tiles_per_batch):
        group = boxes[i : i + tiles_per_batch]
        batch = torch.cat([x[:, :, box.slices()[0], box.slices()[1]] for box in group], dim=0)
        result = fn(batch, group)
        expected = (len(group) * b, group[0].height * scale, group[0].width * scale)
        if result.shape[0] != expected[0] or tuple(result.shape[-2:]) != expected[1:]:
            raise RuntimeError(
                f"tile function returned {tuple(result.shape)}, expected (N,C,H,W) with {expected}"
            )
        if band is None:
            channels = out_channels or result.shape[1]
            band = _RowBand(b, channels, w * scale, accumulate_dtype, result.device)
            if out is None:
                out = torch.empty(
                    (b, channels, h * scale, w * scale), dtype=accumulate_dtype, device=result.device
                )
        for j, box in enumerate(group):
            piece = result[j * b : (j + 1) * b]
            ph, pw = piece.shape[-2], piece.shape[-1]
            key = (weight_fn, ph, pw, accumulate_dtype, str(result.device))
            wt = cache.get(key)
            if wt is None:
                wt = cache[key] = weight_fn(ph, pw, dtype=accumulate_dtype, device=result.device)
            band.add(piece, box.top * scale, box.left * scale, wt)
        del result, piece
        later = boxes[i + tiles_per_batch :]
        done = band.flush(min(bx.top for bx in later) * scale if later else h * scale)
        if done is not None:
            emit(*done)
    assert out is not None
    return out


# ---- padding -------------------------------------------------------------------------------------
def pad_bottom_right_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (B,C,H,W) at the bottom/right up to multiples of ``multiple``: reflect, or replicate when a
    side is too small to reflect the pad.  Returns the tensor (``x`` itself if no pad) and (pad_h, pad_w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (ph, pw)


def reflect_pad_to(
    x: torch.Tensor, min_size: int, multiple: int
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Reflect-pad (B,C,H,W) so both sides are ≥ ``min_size`` (centred, repeated while the image is smaller
    than the pad) and then a multiple of ``multiple`` (bottom/right).  Returns the padded tensor and
    (top, bottom, left, right) in input pixels."""
    top = bottom = left = right = 0
    while x.shape[-2] < min_size or x.shape[-1] < min_size:
        h, w = x.shape[-2:]
        ph, pw = max(0, min(min_size - h, h - 1)), max(0, min(min_size - w, w - 1))
        if ph == 0 and pw == 0:  # 1-px side: reflection impossible, replicate instead
            x = F.pad(x, (0, max(0, min_size - w), 0, max(0, min_size - h)), mode="replicate")
            bottom, right = bottom + max(0, min_size - h), right + max(0, min_size - w)
            continue
        t, le = ph // 2, pw // 2
        x = F.pad(x, (le, pw - le, t, ph - t), mode="reflect")
        top, bottom, left, right = top + t, bottom + ph - t, left + le, right + pw - le
    x, (ph, pw) = pad_bottom_right_to_multiple(x, multiple)
    return x, (top, bottom + ph, left, right + pw)
