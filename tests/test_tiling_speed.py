"""Speed changes that must not change results: tile weights cached (bit-identical), float32 blending
(within 1e-5 of float64), StableSR tile batching (within float round-off), and the ``blend_dtype``
option.  The timings themselves are in ``benchmarks/official_slow.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from srbench.diffusion import tiling
from srbench.interface import SRBenchError
from srbench.registry import create_method

CONF = Path(__file__).parent.parent / "conf" / "method"


class _NoCache(dict):  # type: ignore[type-arg]
    """A weight cache that keeps nothing: the weights are rebuilt for every tile (the old behaviour)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


def _counting(fn: Any, calls: list[tuple[int, int]]) -> Any:
    def wrapped(h: int, w: int, **kw: Any) -> torch.Tensor:
        calls.append((h, w))
        return fn(h, w, **kw)

    return wrapped


def _disagreeing_tiles(scale: int, seed: int = 0) -> Any:
    """A tile function whose outputs differ in the overlaps (as independent SR runs do)."""
    g = torch.Generator().manual_seed(seed)
    noise: dict[tuple[int, int], torch.Tensor] = {}

    def fn(tiles: torch.Tensor, boxes: list[tiling.TileBox]) -> torch.Tensor:
        up = torch.nn.functional.interpolate(tiles, scale_factor=scale, mode="bilinear")
        b = tiles.shape[0] // len(boxes)
        out = []
        for j, box in enumerate(boxes):
            key = (box.top, box.left)
            if key not in noise:
                noise[key] = 0.02 * torch.randn(up[j * b : (j + 1) * b].shape, generator=g)
            out.append((up[j * b : (j + 1) * b] + noise[key]).clamp(0, 1))
        return torch.cat(out)

    return fn


@pytest.mark.parametrize(
    ("weight_fn", "scale"), [(tiling.gaussian_weights_cv2, 4), (tiling.gaussian_weights_mixture, 1)]
)
def test_weight_cache_is_bit_identical_and_builds_each_size_once(weight_fn: Any, scale: int) -> None:
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    fn = _disagreeing_tiles(scale)
    kw = {"tile": 16, "stride": 8, "scale": scale, "tiles_per_batch": 3}
    cached_calls: list[tuple[int, int]] = []
    uncached_calls: list[tuple[int, int]] = []
    for dtype in (torch.float64, torch.float32):
        cached = tiling.tiled_map(
            x, fn, weight_fn=_counting(weight_fn, cached_calls), accumulate_dtype=dtype, **kw
        )
        uncached = tiling.tiled_map(
            x,
            fn,
            weight_fn=_counting(weight_fn, uncached_calls),
            accumulate_dtype=dtype,
            weight_cache=_NoCache(),
            **kw,
        )
        assert cached.dtype == dtype and torch.equal(cached, uncached)
    n_tiles = len(tiling.tile_grid(40, 56, 16, 8))
    assert len(cached_calls) == 2 and len(uncached_calls) == 2 * n_tiles  # once per call vs once per tile
    # a shared cache keeps them across calls (what StableSR does over its steps)
    shared: tiling.WeightCache = {}
    calls: list[tuple[int, int]] = []
    wf = _counting(weight_fn, calls)
    first = tiling.tiled_map(x, fn, weight_fn=wf, weight_cache=shared, **kw)
    second = tiling.tiled_map(x, fn, weight_fn=wf, weight_cache=shared, **kw)
    assert torch.equal(first, second) and len(calls) == 1 and len(shared) == 1
    # the positional-compatible call of other callers still works and gives the same result
    legacy = tiling.tiled_map(
        x,
        fn,
        tile=16,
        stride=8,
        scale=scale,
        weight_fn=weight_fn,
        tiles_per_batch=3,
        accumulate_dtype=torch.float64,
    )
    assert torch.equal(legacy, first)


def test_float32_blending_is_within_1e_5_of_float64() -> None:
    # InvSR-like: 128-px LR canvas, 32-px tiles at stride 16, x4 (25 tiles, 4 overlaps per pixel)
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    fn = _disagreeing_tiles(4, seed=3)
    kw = {"tile": 32, "stride": 16, "scale": 4, "tiles_per_batch": 8}
    ref = tiling.tiled_map(x, fn, accumulate_dtype=torch.float64, **kw)
    f32 = tiling.tiled_map(x, fn, accumulate_dtype=torch.float32, **kw)
    assert f32.dtype == torch.float32
    assert float((f32.double() - ref).abs().max()) <= 1e-6


def test_stablesr_sampler_builds_its_weights_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import methods.stablesr.sampler as smod
    from methods.stablesr.testing import tiny_sft_unet

    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(smod, "gaussian_weights_mixture", _counting(tiling.gaussian_weights_mixture, calls))
    sft_unet, encoder = tiny_sft_unet(seed=1)
    z_lr = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(4))
    guid = smod.Guidance(cond=torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(5)))
    outs = {}
    for d in ("float64", "float32"):
        s = smod.StableSRSampler(sft_unet, encoder, tile_batch_size=2, blend_dtype=d)
        calls.clear()
        outs[d] = s.sample(z_lr, guid, steps=3, tile=16, stride=8, generator=torch.Generator().manual_seed(6))
        assert len(calls) == 1  # 2 tiles x 3 steps, one weight tile
    torch.testing.assert_close(outs["float32"], outs["float64"], atol=1e-5, rtol=0)


# ---- the methods, on tiny random models ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiling_speed")


def _invsr(root: Path, **opts: Any) -> Any:
    from srbench.testing.factories import build_tiny

    m = build_tiny("invsr", root / "invsr", chopping_size=16, **opts)
    m.load("cpu")
    return m


def test_invsr_blend_dtype_float32_matches_float64(tiny_root: Path) -> None:
    m32 = _invsr(tiny_root)
    m64 = _invsr(tiny_root, blend_dtype="float64")
    assert m32.blend_dtype == torch.float32 and m64.blend_dtype == torch.float64
    lr = torch.rand(1, 3, 40, 24, generator=torch.Generator().manual_seed(7))  # 4 x 2 tiles of 16 at 8
    a = m32.upscale(lr, steps=1, generator=torch.Generator().manual_seed(8))
    b = m64.upscale(lr, steps=1, generator=torch.Generator().manual_seed(8))
    assert float((a - b).abs().max()) <= 1e-5


@pytest.fixture(scope="module")
def stablesr_tiny(tiny_root: Path) -> Any:
    from methods.stablesr.testing import save_tiny_stablesr

    return save_tiny_stablesr(tiny_root / "stablesr")


def test_stablesr_tile_batch_size_does_not_change_the_output(stablesr_tiny: Any) -> None:
    # tiny StableSR (input_size 128, 16-px latent tiles at stride 8): a 48x64 LR -> 192x256 -> 24x32
    # latent -> 2 x 3 = 6 tiles; 1 tile per call (the official --n_samples 1), 4 (default), all 6
    lr = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(9))
    outs = {}
    for tb in (1, 4, 6):
        m = create_method("stablesr", **stablesr_tiny.options(), tile_batch_size=tb)
        m.load("cpu")
        assert m.sampler.tile_batch_size == tb and m.sampler.blend_dtype == torch.float32
        outs[tb] = m.upscale(lr, steps=3, generator=torch.Generator().manual_seed(10))
    torch.testing.assert_close(outs[4], outs[1], atol=1e-4, rtol=0)
    torch.testing.assert_close(outs[6], outs[1], atol=1e-4, rtol=0)


# ---- the option ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["invsr", "stablesr", "dmsr"])
def test_blend_dtype_option_is_validated(name: str) -> None:
    with pytest.raises(SRBenchError, match=rf"{name}: blend_dtype must be one of \['float32', 'float64'\]"):
        create_method(name, blend_dtype="float16")
    with pytest.raises(SRBenchError, match="blend_dtype"):
        create_method(name, blend_dtype="double")
    assert create_method(name, blend_dtype="float64").blend_dtype == torch.float64
    assert create_method(name).blend_dtype == torch.float32
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert isinstance(cfg, dict) and cfg["blend_dtype"] == "float32"
    assert create_method(cfg).blend_dtype == torch.float32


def test_blend_dtype_of() -> None:
    assert tiling.blend_dtype_of("float32") is torch.float32
    assert tiling.blend_dtype_of("torch.float64") is torch.float64
    assert tiling.blend_dtype_of(torch.float64) is torch.float64
    with pytest.raises(SRBenchError, match="x: blend_dtype must be one of"):
        tiling.blend_dtype_of(torch.float16, "x")
