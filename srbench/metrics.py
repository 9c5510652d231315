"""srbench's metric suite: pyiqa metrics set up the way the SR papers use them, built once, offline-aware.

Settings that differ from pyiqa's defaults, on purpose (research/anchors.md §0 item 2, §(c)):

* ``psnr`` and ``ssim`` are computed on the Y channel of YCbCr ITU-R BT.601 (limited range 16-235, as
  BasicSR and MATLAB ``rgb2ycbcr``; InvSR, StableSR, SeeSR, OSEDiff), not on pyiqa's defaults (RGB for
  ``psnr``, YIQ for ``ssim``): pyiqa gets ``test_y_channel=True, color_space='ycbcr'`` and ``crop_border``,
  and float64 input.  pyiqa's SSIM rounds Y to integers (as MATLAB does on uint8 images) and skips MATLAB's
  >256-px downsampling, as every paper that used pyiqa did.  ``psnr-rgb`` is RGB PSNR (DM-SR's setting).
* ``crop_border`` applies to ``psnr``, ``psnr-rgb`` and ``ssim`` only (where SeeSR/OSEDiff use it); every
  other metric runs at pyiqa's defaults (NIQE: Y of YIQ, no crop; PI: PIRM setting, YCbCr Y, crop 4).
* ``maniqa`` is pyiqa's default, the KonIQ-10k model; SeeSR and OSEDiff report ``maniqa-pipal``: both exist.

Offline: before a metric is built, the files it needs are looked up (:mod:`srbench.metric_files`).  A
missing file never reaches pyiqa's downloader: the metric is skipped (``skipped[name]`` names the file, the
full path to place it at and its URL) or, with ``on_missing="error"``, ``WeightsMissing`` is raised.  NIQE
falls back on basicsr's copy of the same pristine model when pyiqa's ``niqe_modelparameters.mat`` is absent;
LPIPS takes its linear layers from the ``lpips`` package, whose files are byte-identical to pyiqa's.

Untrusted files: a file whose SHA256 differs from the published one, or that pyiqa/torchvision would
unpickle and srbench's weights-only load refuses, is never handed to pyiqa: the metric is skipped (or the
run stops) the same way, the message naming the file, its hash and the expected one
(:meth:`srbench.metric_files.RequiredFile.refusal`).  ``random_backbones=True`` (tests and benchmarks of the
plumbing only) gives torchvision backbones and FID's InceptionV3 random weights made in memory instead of
reading a file; such metrics have ``weights_verified`` False and their values are not the metric's.

Batches: :meth:`MetricSuite.score_batch` calls each metric once per batch of same-size images (pyiqa's
metrics score (B,3,H,W) at once) and gives the per-image :meth:`MetricSuite.score` values: bit-identical on
CPU with one thread; with several threads, batch-size-dependent kernels move the last bits (measured on 2
threads: SSIM 3e-16, LPIPS 1e-7 relative; CUDA not measured).  ``score`` is ``score_batch`` on a batch of one.
On CPU, SSIM's float64 11x11 convolution unfolds the whole batch (~270 MiB per 512-px image): pass ``chunk``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from srbench import metric_files
from srbench.interface import SRBenchError, WeightsMissing

log = logging.getLogger(__name__)

_YCBCR = {"color_space": "ycbcr"}
#: images with more pixels than this (``metrics.max_pixels``) are scored in tiles where that is exact (PSNR,
#: SSIM) and not at all by metrics that need the whole image in memory (4096^2: a 16.8 MP image)
DEFAULT_MAX_PIXELS = 4096 * 4096
#: side of the output blocks of tiled PSNR/SSIM (SSIM's CPU convolution needs ~1 KiB per pixel)
PIXEL_TILE = 512
# NIQE fits its model on 96x96 blocks (pyiqa fails below one block); PI also crops 4 px per side first
_MIN_SIDE = {"niqe": 96, "pi": 104}


@dataclass(frozen=True)
class MetricSpec:
    """What an srbench metric name means: the pyiqa metric, its fixed options and its direction."""

    name: str
    kind: Literal["fr", "nr", "set"]  # set: one value per cell, the SR set against the HR set (FID)
    lower_better: bool
    pyiqa_name: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # fixed pyiqa kwargs (suite settings are added)
    pixel: bool = False  # PSNR/SSIM: takes crop_border (and y_channel), gets float64 input
    score_range: str = ""


# Directions are pyiqa's (DEFAULT_CONFIGS[...]["lower_better"]); tests check this table against pyiqa.
_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("psnr", "fr", False, "psnr", "PSNR on Y of YCbCr BT.601 (16-235)", pixel=True),
    MetricSpec("psnr-rgb", "fr", False, "psnr", "PSNR on RGB (DM-SR's setting)", pixel=True),
    MetricSpec(
        "ssim",
        "fr",
        False,
        "ssim",
        "SSIM, Gaussian 11/1.5, no downsampling, on Y of YCbCr BT.601 rounded to integers",
        pixel=True,
    ),
    MetricSpec("lpips", "fr", True, "lpips", "LPIPS v0.1, AlexNet (pyiqa 'lpips')"),
    MetricSpec("lpips-vgg", "fr", True, "lpips-vgg", "LPIPS v0.1, VGG16 (pyiqa 'lpips-vgg')"),
    MetricSpec("dists", "fr", True, "dists", "DISTS, VGG16"),
    MetricSpec("topiq_fr", "fr", False, "topiq_fr", "TOPIQ-FR, ResNet50, KADID-10k weights"),
    MetricSpec(
        "niqe", "nr", True, "niqe", "NIQE, pyiqa default: Y of YIQ, LIVE pristine model, 96-px blocks"
    ),
    MetricSpec(
        "pi", "nr", True, "pi", "Perceptual Index (10 - NRQM + NIQE)/2, PIRM setting: YCbCr Y, crop 4"
    ),
    MetricSpec("brisque", "nr", True, "brisque", "BRISQUE (pyiqa's SVM, Y channel)"),
    MetricSpec(
        "clipiqa", "nr", False, "clipiqa", "CLIP-IQA, RN50, pyiqa's 5 prompt pairs (official: 1 pair)"
    ),
    MetricSpec("musiq", "nr", False, "musiq", "MUSIQ, KonIQ-10k weights (0-100)"),
    MetricSpec(
        "maniqa", "nr", False, "maniqa", "MANIQA, KonIQ-10k weights (pyiqa default; not the PIPAL model)"
    ),
    MetricSpec(
        "maniqa-pipal", "nr", False, "maniqa-pipal", "MANIQA, PIPAL weights (as SeeSR/OSEDiff report)"
    ),
    MetricSpec("topiq_nr", "nr", False, "topiq_nr", "TOPIQ-NR, ResNet50, KonIQ-10k weights"),
    MetricSpec("liqe", "nr", False, "liqe", "LIQE, CLIP ViT-B/32, KonIQ-10k weights (1-5)"),
    MetricSpec("nima", "nr", False, "nima", "NIMA, InceptionResNetV2, AVA weights (aesthetics, 0-10)"),
    MetricSpec(
        "fid",
        "set",
        True,
        "fid",
        "FID of the SR set against the HR set (as the protocol crops them): pyiqa's clean-fid mode (PIL "
        "bicubic resize to 299 per channel), InceptionV3 pt_inception-2015-12-05; unreliable below ~1000 "
        "images",
    ),
)
_SPEC_BY_NAME = {s.name: s for s in _SPECS}

#: the order papers print metric columns in: full-reference fidelity, then perceptual full-reference, then
#: set-level, then no-reference metrics (one list for the leaderboard and the report)
PAPER_ORDER: tuple[str, ...] = (
    "psnr",
    "psnr-rgb",
    "ssim",
    "lpips",
    "lpips-vgg",
    "dists",
    "topiq_fr",
    "fid",
    "niqe",
    "pi",
    "brisque",
    "clipiqa",
    "musiq",
    "maniqa",
    "maniqa-pipal",
    "topiq_nr",
    "liqe",
    "nima",
)


def paper_order(names: Sequence[str]) -> list[str]:
    """``names`` in :data:`PAPER_ORDER` (unknown names last, in their given order)."""
    rank = {n: i for i, n in enumerate(PAPER_ORDER)}
    return sorted(dict.fromkeys(names), key=lambda n: (rank.get(n, len(rank)), list(names).index(n)))


def set_level(name: str) -> bool:
    """True for metrics computed once per cell over the whole image set (FID), not per image."""
    spec = _SPEC_BY_NAME.get(name)
    return spec is not None and spec.kind == "set"


def metric_specs() -> dict[str, MetricSpec]:
    """Every metric name srbench knows, with its meaning and direction (no pyiqa import needed)."""
    return dict(_SPEC_BY_NAME)


def lower_better(name: str) -> bool:
    """Score direction of a metric name (for leaderboards that never build the metric)."""
    try:
        return _SPEC_BY_NAME[name].lower_better
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(_SPEC_BY_NAME)}") from None


@contextlib.contextmanager
def random_torchvision_weights() -> Iterator[None]:
    """While active, torchvision's pretrained-weight enums hand out the random initial state dict of their
    architecture instead of reading a file (``MetricSuite(random_backbones=True)``: tests, benchmarks)."""
    import torchvision.models as tvm
    from torchvision.models._api import WeightsEnum

    def random_state(self: WeightsEnum, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        builder = getattr(tvm, type(self).__name__.removesuffix("_Weights").lower())
        return builder(weights=None).state_dict()

    original = WeightsEnum.get_state_dict
    WeightsEnum.get_state_dict = random_state  # type: ignore[method-assign]
    try:
        yield
    finally:
        WeightsEnum.get_state_dict = original  # type: ignore[method-assign]


@contextlib.contextmanager
def random_inception_weights() -> Iterator[None]:
    """While active, pyiqa's FID InceptionV3 keeps its random initial weights instead of reading
    ``pt_inception-2015-12-05-*.pth`` (``MetricSuite(random_backbones=True)``: tests of the plumbing)."""
    import pyiqa.archs.inception as inception

    original = inception.load_pretrained_network
    inception.load_pretrained_network = lambda *args, **kwargs: None
    try:
        yield
    finally:
        inception.load_pretrained_network = original


def _in_our_words(e: Exception) -> str:
    """An exception from pyiqa/torch as one line; torch's unpickling refusals in srbench's words (never its
    advice to load with ``weights_only=False``)."""
    import pickle

    from srbench.safe_load import refusal_message

    if isinstance(e, pickle.UnpicklingError) or "weights_only" in str(e):
        return refusal_message("a file it loads", e)
    return f"{type(e).__name__}: {e}"


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected (3,H,W) or (1,3,H,W) RGB, got shape {tuple(x.shape)}")
    if not (torch.is_floating_point(x) or x.dtype == torch.uint8):
        raise ValueError(f"{what}: expected a float tensor in [0,1] or uint8, got {x.dtype}")
    return x


def _check_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected a (B,3,H,W) RGB batch, got shape {tuple(x.shape)}")
    if not (torch.is_floating_point(x) or x.dtype == torch.uint8):
        raise ValueError(f"{what}: expected a float tensor in [0,1] or uint8, got {x.dtype}")
    return x


def _unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 k/255 (bit-identical to ``quantize()`` of the float image), float clamped to [0,1]."""
    return x.to(torch.float32).div(255.0) if x.dtype == torch.uint8 else x.clamp(0.0, 1.0)


def _to_floats(out: Any, n: int) -> list[float]:
    """A metric's output for ``n`` images -> ``n`` floats (pyiqa gives (n,), (n,1), or 0-d when n=1)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    t = torch.as_tensor(out).detach().reshape(-1)
    if t.numel() != n:
        raise SRBenchError(
            f"metric returned {t.numel()} values for {f'{n} images' if n > 1 else 'one image'}"
        )
    return [float(v) for v in t.cpu()]


class MetricSuite:
    """A fixed set of metrics, each built once on ``device`` and reused for every image.

    ``available`` lists the metrics that were built; ``skipped`` maps the others to a message naming the
    missing file, the full path to place it at and its URL; ``notes`` says, per built metric, what it is and
    which files it read; ``options`` holds the pyiqa kwargs used; ``weights_verified`` is True where every
    file matched its published SHA256, None where some file has no published hash (or no files are
    needed), False only for ``random_backbones`` stand-ins (not the published metric).
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        device: str | torch.device = "cpu",
        crop_border: int = 0,
        y_channel: bool = True,
        on_missing: Literal["skip", "error"] = "skip",
        allow_download: bool = False,
        random_backbones: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        unknown = [n for n in names if n not in _SPEC_BY_NAME]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(_SPEC_BY_NAME)}")
        if on_missing not in ("skip", "error"):
            raise ValueError(f"on_missing must be 'skip' or 'error', got {on_missing!r}")
        if int(crop_border) < 0:
            raise ValueError(f"crop_border must be >= 0, got {crop_border}")
        self.names = list(dict.fromkeys(names))
        self.device = torch.device(device)
        self.crop_border = int(crop_border)
        self.y_channel = bool(y_channel)
        self.on_missing = on_missing
        self.allow_download = allow_download
        self.random_backbones = bool(random_backbones)
        self.max_pixels = int(max_pixels) if max_pixels is not None else DEFAULT_MAX_PIXELS
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.available: list[str] = []
        self.skipped: dict[str, str] = {}
        self.notes: dict[str, str] = {}
        self.options: dict[str, dict[str, Any]] = {}  # pyiqa kwargs actually used, per built metric
        self.weights_verified: dict[str, bool | None] = {}
        self.errors: dict[str, str] = {}  # metrics that failed in the last score() call (scored NaN), and why
        self.image_errors: list[dict[str, str]] = []  # per image of the last score_batch() call
        self._metrics: dict[str, torch.nn.Module] = {}
        self._lower_better: dict[str, bool] = {}  # pyiqa's direction where it differs from the table
        self.pyiqa_version = ""
        if self.names:
            import pyiqa

            self.pyiqa_version = getattr(pyiqa, "__version__", "")
        for name in self.names:
            self._build(name)

    # ---- building ----
    def _pyiqa_options(self, spec: MetricSpec) -> dict[str, Any]:
        opts = dict(spec.options)
        if spec.pixel:
            y = self.y_channel and spec.name != "psnr-rgb"
            opts.update(test_y_channel=y, crop_border=self.crop_border)
            if y:
                opts.update(_YCBCR)
        return opts

    def _unavailable(self, name: str, message: str) -> None:
        if self.on_missing == "error":
            raise WeightsMissing(f"metric '{name}': {message}")
        log.warning("metric '%s' skipped: %s", name, message)
        self.skipped[name] = message

    def _build(self, name: str) -> None:
        spec = _SPEC_BY_NAME[name]
        opts = self._pyiqa_options(spec)
        try:
            files = metric_files.required_files(name)
        except Exception as e:  # e.g. an optional pyiqa module that fails to import
            self._unavailable(name, f"cannot resolve its weight files: {type(e).__name__}: {e}")
            return
        # random_backbones: torchvision backbones and FID's InceptionV3 get random weights made in memory
        stand_ins = [
            f for f in files if self.random_backbones and (f.source == "torchvision" or spec.kind == "set")
        ]
        files = [f for f in files if f not in stand_ins]
        found = {f.filename: f.locate() for f in files}
        missing = [f for f in files if found[f.filename] is None and not f.optional]
        used: list[str] = []
        checks: list[bool | None] = []
        if name == "niqe" and missing and not self.allow_download:
            mat = metric_files.niqe_params_from_basicsr()
            if mat is None:
                self._unavailable(
                    name,
                    missing[0].problem() + " (basicsr, whose niqe_pris_params.npz can stand in, is absent)",
                )
                return
            opts["pretrained_model_path"] = str(mat)
            used.append(f"basicsr niqe_pris_params.npz (same MATLAB pristine model) converted to {mat}")
            missing = []
        if missing and self.allow_download:  # srbench downloads (never pyiqa): the same checks follow
            for f in missing:
                found[f.filename] = self._download(name, f)
                if found[f.filename] is None:
                    return
            missing = []
        if missing:
            self._unavailable(name, "; ".join(f.problem() for f in missing))
            return
        for f in files:
            path = found[f.filename]
            if path is None:
                continue
            refused = f.refusal(path)  # a wrong hash, or a pickle that is more than tensors: never loaded
            if refused is not None:
                self._unavailable(name, refused)
                return
            if path != f.path and f.source != "timm":  # an identical copy from another package (lpips)
                opts["pretrained_model_path"] = str(path)
            used.append(str(path))
            if not f.optional:
                checks.append(f.verified(path))
        if name == "niqe" and "pretrained_model_path" in opts:
            checks.append(None)  # basicsr's parameters carry no hash
        for f in stand_ins:
            used.append(f"RANDOM {f.what} (random_backbones=True: plumbing only, not the published metric)")
            checks.append(False)
        if any(f.source == "timm" for f in files):
            from huggingface_hub import constants

            if not constants.HF_HUB_OFFLINE:
                log.info(
                    "metric '%s' uses a timm backbone: set HF_HUB_OFFLINE=1 where there is no network", name
                )
        try:
            import pyiqa

            with (
                random_torchvision_weights() if stand_ins else contextlib.nullcontext(),
                random_inception_weights() if stand_ins and spec.kind == "set" else contextlib.nullcontext(),
            ):
                metric = pyiqa.create_metric(spec.pyiqa_name, device=self.device, **opts)
        except Exception as e:
            why = f"pyiqa could not build it: {_in_our_words(e)}"
            if self.on_missing == "error":
                raise SRBenchError(f"metric '{name}': {why}") from None
            self._unavailable(name, why)
            return
        metric.eval()
        if bool(metric.lower_better) != spec.lower_better:  # pyiqa changed a direction: trust pyiqa, say so
            log.warning(
                "metric '%s': pyiqa says lower_better=%s, srbench's table disagrees",
                name,
                metric.lower_better,
            )
            self._lower_better[name] = bool(metric.lower_better)
        self._metrics[name] = metric
        self.available.append(name)
        self.options[name] = dict(opts)
        # False for a random stand-in, True if every file matched its hash, None if some cannot be checked
        self.weights_verified[name] = (
            False if False in checks else (True if checks and all(c is True for c in checks) else None)
        )
        desc = spec.description
        if spec.pixel:
            if not opts["test_y_channel"] and name != "psnr-rgb":
                desc = f"{name.upper()} on RGB (y_channel=False)"
            desc += f"; crop_border={self.crop_border}"
        self.notes[name] = desc + (f"; files: {', '.join(used)}" if used else "")

    def _download(self, name: str, f: metric_files.RequiredFile) -> Path | None:
        """``allow_download``: fetch a missing file with srbench's downloader (the CLIP hash checked)."""
        if f.source == "timm":  # the HF hub client fetches it when timm asks (safetensors first)
            return f.path
        from srbench.data.fetch import download

        try:
            download(f.url, f.path, sha256=f.sha256, progress=False)
        except SRBenchError as e:
            self._unavailable(name, f"{f.problem()} (download failed: {e})")
            return None
        return f.path

    # ---- scoring ----
    @torch.inference_mode()
    def score(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> dict[str, float]:
        """Scores of one image: every built NR metric, and every FR metric when ``hr`` is given.

        ``sr``/``hr``: (3,H,W) or (1,3,H,W) float RGB in [0,1] (clamped), or uint8 (``k`` means ``k/255``,
        bit-identical to the quantized float image).  NR metrics see the whole SR image.  An image with more
        than ``max_pixels`` pixels gets PSNR/SSIM computed in tiles (the same value up to summation order)
        and NaN with a reason for every other metric, which would need the whole image in memory.
        When SR and HR sizes differ, FR metrics compare the common top-left region
        ``[:min(H), :min(W)]`` of both (as InvSR's metric script does); nothing is resized.
        A metric that fails on an image (or cannot score one so small) gets NaN, a logged warning and an
        entry in ``errors``, which describes the latest call only.
        """
        sr = _as_batch(sr, "sr")
        hr = None if hr is None else _as_batch(hr, "hr")
        return self.score_batch(sr, hr)[0]  # a batch of one: the same calls, the same values

    @torch.inference_mode()
    def score_batch(
        self, sr: torch.Tensor, hr: torch.Tensor | None = None, *, chunk: int | None = None
    ) -> list[dict[str, float]]:
        """Scores of a batch of images of one size, as ``[score(sr[i], hr[i]) for i in range(B)]``.

        ``sr``/``hr``: (B,3,H,W) float RGB in [0,1] (clamped); ``hr`` may have another H,W than ``sr`` (the
        common top-left region rule of :meth:`score`).  Each metric is called once per ``chunk`` images
        (default: the whole batch at once); ``chunk`` bounds the memory a call needs.  A metric that fails
        on a chunk is retried image by image, so only the images it fails on get NaN.  ``errors`` maps each
        metric that failed on some image to why (naming the images when B > 1); ``image_errors[i]`` is
        image ``i``'s own ``errors`` as :meth:`score` would give it.  Both describe the latest call only.
        """
        sr = _check_batch(sr, "sr")
        if hr is not None:
            hr = _check_batch(hr, "hr")
            if hr.shape[0] != sr.shape[0]:
                raise ValueError(f"sr and hr batch sizes differ: sr {tuple(sr.shape)}, hr {tuple(hr.shape)}")
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
        n = sr.shape[0]
        step = max(1, n if chunk is None else chunk)
        out: list[dict[str, float]] = [{} for _ in range(n)]
        self.image_errors = [{} for _ in range(n)]
        pixels = max(sr.shape[-2] * sr.shape[-1], 0 if hr is None else hr.shape[-2] * hr.shape[-1])
        if pixels > self.max_pixels:  # one image at a time, in tiles where that is exact
            for i in range(n):
                self._score_large(sr[i], None if hr is None else hr[i], i, out, self.image_errors)
            self.errors = self._summarise_errors(self.image_errors)
            return out
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            self._score_chunk(sr[lo:hi], None if hr is None else hr[lo:hi], lo, out, self.image_errors)
        self.errors = self._summarise_errors(self.image_errors)
        return out

    def _score_chunk(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor | None,
        lo: int,
        out: list[dict[str, float]],
        errs: list[dict[str, str]],
    ) -> None:
        """Scores images ``lo .. lo+len(sr)-1`` into ``out``/``errs``: one call per metric, if that works."""
        n = sr.shape[0]
        sr = _unit(sr.to(self.device))
        sr_fr = hr_fr = None
        if hr is not None:
            hr = _unit(hr.to(self.device))
            h, w = min(sr.shape[-2], hr.shape[-2]), min(sr.shape[-1], hr.shape[-1])
            sr_fr, hr_fr = sr[..., :h, :w], hr[..., :h, :w]
        for name in self.available:
            spec = _SPEC_BY_NAME[name]
            if spec.kind == "set" or (spec.kind == "fr" and hr_fr is None):
                continue
            metric = self._metrics[name]
            side = min((sr_fr if spec.kind == "fr" else sr).shape[-2:])
            if side < _MIN_SIDE.get(name, 0):  # every image of the batch has this size
                why = f"image side {side} px < {_MIN_SIDE[name]} px, the least {name} can score"
                log.warning("metric '%s' not computed: %s", name, why)
                for i in range(n):
                    errs[lo + i][name] = why
                    out[lo + i][name] = math.nan
                continue
            if spec.kind == "fr":
                args = (sr_fr.double(), hr_fr.double()) if spec.pixel else (sr_fr.float(), hr_fr.float())
            else:
                args = (sr.float(),)
            try:
                values = _to_floats(metric(*args), n)
            except Exception as e:
                if n == 1:
                    values = [self._failed(name, lo, e, errs, single=len(errs) == 1)]
                else:  # one bad image must not cost the others their scores: retry image by image
                    log.info(
                        "metric '%s' failed on images %d-%d together (%s); retrying one by one",
                        name,
                        lo,
                        lo + n - 1,
                        type(e).__name__,
                    )
                    values = []
                    for i in range(n):
                        try:
                            values += _to_floats(metric(*(a[i : i + 1] for a in args)), 1)
                        except Exception as e1:
                            values.append(self._failed(name, lo + i, e1, errs, single=False))
            for i, v in enumerate(values):
                out[lo + i][name] = v

    def _score_large(
        self,
        sr: torch.Tensor,
        hr: torch.Tensor | None,
        i: int,
        out: list[dict[str, float]],
        errs: list[dict[str, str]],
    ) -> None:
        """Image ``i`` over ``max_pixels``: PSNR/SSIM in tiles, NaN and a reason for the other metrics."""
        h, w = sr.shape[-2:]
        if hr is not None:
            h, w = min(h, hr.shape[-2]), min(w, hr.shape[-1])
        big = max(sr.shape[-2] * sr.shape[-1], 0 if hr is None else hr.shape[-2] * hr.shape[-1])
        for name in self.available:
            spec = _SPEC_BY_NAME[name]
            if spec.kind == "fr" and hr is None:
                continue
            if spec.pixel:
                assert hr is not None
                try:
                    out[i][name] = self._tiled_pixel_metric(name, sr[:, :h, :w], hr[:, :h, :w])
                except Exception as e:
                    out[i][name] = self._failed(name, i, e, errs, single=len(errs) == 1)
                continue
            why = (
                f"image of {big / 1e6:.1f} MP is over metrics.max_pixels={self.max_pixels} "
                f"({self.max_pixels / 1e6:.1f} MP): {name} needs the whole image in memory; not computed"
            )
            log.warning("metric '%s' not computed: %s", name, why)
            errs[i][name] = why
            out[i][name] = math.nan

    def _tiled_pixel_metric(self, name: str, sr: torch.Tensor, hr: torch.Tensor) -> float:
        """pyiqa's PSNR / SSIM of (3,H,W) ``sr`` vs ``hr`` from PIXEL_TILE blocks, never the whole image.

        PSNR: pyiqa ``psnr_arch.psnr`` (``10 log10(1 / (mse + 1e-8))``, data range 1) with the MSE summed
        over blocks.  SSIM: pyiqa ``ssim_arch`` (Y rounded to integers, 11x11 Gaussian window, 'valid'
        filtering, mean of the map); each block's map is computed from its input plus the 10-pixel margin
        the window needs, so the blocks' maps tile the whole map exactly.  Only the order of the final sum
        differs from the whole-image value.
        """
        from pyiqa.archs.func_util import preprocess_rgb
        from pyiqa.archs.ssim_arch import ssim
        from pyiqa.utils.color_util import to_y_channel

        opts = self.options[name]
        y, space, crop = (
            bool(opts["test_y_channel"]),
            opts.get("color_space", "yiq"),
            int(opts["crop_border"]),
        )
        if crop:
            sr, hr = sr[:, crop:-crop, crop:-crop], hr[:, crop:-crop, crop:-crop]
        h, w = sr.shape[-2:]

        def block(t: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
            return _unit(t[None, :, r0:r1, c0:c1].to(self.device)).double()

        total, count = 0.0, 0
        if _SPEC_BY_NAME[name].pyiqa_name == "psnr":
            for r0 in range(0, h, PIXEL_TILE):
                for c0 in range(0, w, PIXEL_TILE):
                    r1, c1 = min(r0 + PIXEL_TILE, h), min(c0 + PIXEL_TILE, w)
                    a, b = block(sr, r0, r1, c0, c1), block(hr, r0, r1, c0, c1)
                    if y:
                        a, b = to_y_channel(a, 1.0, space), to_y_channel(b, 1.0, space)
                    total += float(((a - b) ** 2).sum())
                    count += a.numel()
            return float(10.0 * math.log10(1.0 / (total / count + 1e-8)))
        margin = 10  # the 11x11 window's 'valid' output is 10 px smaller than its input
        if h <= margin or w <= margin:
            raise ValueError(f"image {w}x{h} is smaller than SSIM's 11x11 window")
        for r0 in range(0, h - margin, PIXEL_TILE):
            for c0 in range(0, w - margin, PIXEL_TILE):
                r1, c1 = min(r0 + PIXEL_TILE, h - margin), min(c0 + PIXEL_TILE, w - margin)
                a = preprocess_rgb(block(sr, r0, r1 + margin, c0, c1 + margin), y, 255, space).double()
                b = preprocess_rgb(block(hr, r0, r1 + margin, c0, c1 + margin), y, 255, space).double()
                ssim_map = ssim(a, b, get_ssim_map=True, data_range=255)
                total += float(ssim_map.sum())
                count += ssim_map.numel()
        return total / count

    @staticmethod
    def _failed(name: str, i: int, e: Exception, errs: list[dict[str, str]], *, single: bool) -> float:
        where = "this image" if single else f"image {i}"
        log.warning("metric '%s' failed on %s: %s: %s", name, where, type(e).__name__, e)
        errs[i][name] = f"{type(e).__name__}: {e}"
        return math.nan

    @staticmethod
    def _summarise_errors(image_errors: list[dict[str, str]]) -> dict[str, str]:
        """Per-metric messages: the image's own for one image, else "images [i, j]: why" per distinct why."""
        if len(image_errors) == 1:
            return dict(image_errors[0])
        by_metric: dict[str, dict[str, list[int]]] = {}
        for i, errs in enumerate(image_errors):
            for name, why in errs.items():
                by_metric.setdefault(name, {}).setdefault(why, []).append(i)
        return {
            name: "; ".join(
                f"image{'s' if len(ix) > 1 else ''} {ix if len(ix) > 1 else ix[0]}: {why}"
                for why, ix in whys.items()
            )
            for name, whys in by_metric.items()
        }

    # ---- set-level metrics ----
    @property
    def set_level(self) -> list[str]:
        """The built metrics that score a whole set at once (:meth:`score_set`)."""
        return [n for n in self.available if _SPEC_BY_NAME[n].kind == "set"]

    @torch.inference_mode()
    def score_set(self, sr_files: Sequence[Path], hr_files: Sequence[Path]) -> dict[str, float]:
        """Each built set-level metric of the SR files against the HR files (image files as pyiqa reads
        them: FID resizes each to 299x299 with PIL bicubic, clean-fid's ``clean`` mode).  A metric that fails
        gets NaN and an entry in ``errors``."""
        import tempfile

        self.errors = {}
        out: dict[str, float] = {}
        if not self.set_level:
            return out
        if not sr_files or not hr_files:
            raise ValueError("score_set needs at least one SR and one HR file")
        with tempfile.TemporaryDirectory(prefix="srbench-set-") as tmp:
            dirs = []
            for side, files in (("sr", sr_files), ("hr", hr_files)):
                d = Path(tmp) / side
                d.mkdir()
                for i, f in enumerate(files):  # pyiqa reads a folder: link the chosen files into one
                    (d / f"{i:06d}{Path(f).suffix.lower()}").symlink_to(Path(f).resolve())
                dirs.append(str(d))
            for name in self.set_level:
                try:
                    value = self._metrics[name](
                        dirs[0], dirs[1], mode="clean", num_workers=0, batch_size=8, verbose=False
                    )
                    out[name] = float(torch.as_tensor(value).reshape(-1)[0])
                except Exception as e:
                    log.warning("metric '%s' failed on the set: %s: %s", name, type(e).__name__, e)
                    self.errors[name] = f"{type(e).__name__}: {e}"
                    out[name] = math.nan
        return out

    # ---- directions and specs ----
    def lower_better(self, name: str) -> bool:
        return self._lower_better[name] if name in self._lower_better else lower_better(name)

    @staticmethod
    def specs() -> dict[str, MetricSpec]:
        return metric_specs()

    def __repr__(self) -> str:
        return f"MetricSuite(available={self.available}, skipped={list(self.skipped)}, device={self.device})"
