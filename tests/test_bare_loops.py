"""The bare loops of ``benchmarks/bare_loops.py`` compute exactly what srbench's ``upscale()`` computes.

``benchmarks/overhead.py`` times srbench against these loops; the comparison only means something if both
run the same computation, so each diffusion method's bare loop must reproduce ``method.upscale`` for the
same seed (same random draws in the same order) on tiny random-weight models, on the single-tile path
that ``bench_options`` selects.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from srbench.testing.factories import build_tiny

_PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "bare_loops.py"
SIZE = 32  # LR px: one tile for every method (InvSR chopping, DM-SR tile, StableSR latent tile)
TOL = 1e-5
DIFFUSION = ("invsr", "dmsr", "dossr", "stablesr")


def _load_bare_loops() -> Any:
    name = "srbench_benchmarks_bare_loops"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _PATH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bare_loops = _load_bare_loops()


@pytest.fixture(scope="module", params=DIFFUSION)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    name = request.param
    method = build_tiny(name, tmp_path_factory.mktemp(name), **bare_loops.bench_options(name, SIZE))
    method.load("cpu", torch.float32)
    return method


def _lr(batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(123))


def _pair(method: Any, lr: torch.Tensor, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    ref = method.upscale(lr, steps=steps, generator=torch.Generator().manual_seed(seed))
    out = bare_loops.BARE[method.name](method, lr, steps, torch.Generator().manual_seed(seed))
    return ref, out


@pytest.mark.parametrize("steps", [1, 3])
def test_bare_loop_equals_srbench(loaded: Any, steps: int) -> None:
    ref, out = _pair(loaded, _lr(), steps, seed=7)
    assert out.shape == ref.shape == (1, 3, 4 * SIZE, 4 * SIZE)
    assert out.dtype == ref.dtype == torch.float32
    assert float(ref.std()) > 1e-3  # not a constant image: the comparison is not vacuous
    diff = float((out - ref).abs().max())
    assert diff <= TOL, f"{loaded.name} steps={steps}: bare loop differs from srbench by {diff:.3g}"


def test_bare_loop_uses_the_generator_like_srbench(loaded: Any) -> None:
    """Another seed changes both outputs the same way (stochastic methods), or neither (DM-SR)."""
    lr = _lr()
    ref7, _ = _pair(loaded, lr, 2, seed=7)
    ref8, out8 = _pair(loaded, lr, 2, seed=8)
    assert float((out8 - ref8).abs().max()) <= TOL
    changed = float((ref8 - ref7).abs().max()) > 1e-4
    assert changed == loaded.stochastic, f"{loaded.name}: seed changes the output: {changed}"


def test_bare_loop_batch_of_two(loaded: Any) -> None:
    ref, out = _pair(loaded, _lr(batch=2), 2, seed=3)
    assert out.shape == ref.shape == (2, 3, 4 * SIZE, 4 * SIZE)
    assert float((out - ref).abs().max()) <= TOL


def test_bare_loops_refuse_other_paths() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        bare_loops.bench_options("invsr", 24)
    assert bare_loops.method_steps("bicubic", 5) == 1
    assert set(bare_loops.BARE) == set(bare_loops.METHODS)
