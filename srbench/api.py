"""The Python API: ``srbench.load(name, ...)`` returns a ready method, and ``method(image)`` takes and
returns the kind of image you have (diffusers-style).

    import srbench
    sr = srbench.load("realesrgan")                # device="auto": CUDA when there is one
    big = sr("photo.png")                          # a PIL image
    arr = sr(np.asarray(Image.open("photo.png")))  # uint8 (h,w,3) in, uint8 (4h,4w,3) out
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from srbench.interface import SRBenchError, SRMethod


def load(
    name: str,
    *,
    steps: int | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    tiny: bool = False,
    **options: Any,
) -> SRMethod:
    """Create the method ``name`` with ``options`` (the keys of ``conf/method/<name>.yaml``; an unknown
    one is an error listing the known ones), load its weights on ``device`` and return it.

    ``steps`` becomes the default of ``method(image)`` (checked now: an unsupported count fails
    here, not on the first image).  ``device``/``dtype`` ``"auto"``: CUDA with fp16 when available,
    else CPU with fp32.  ``tiny=True``: tiny random weights (offline plumbing; never results).
    """
    from srbench.environment import resolve_device, resolve_dtype
    from srbench.registry import create_method

    method = create_method(name, tiny=tiny, **options)
    dev = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    dt = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, dev)
    if steps is not None:
        method.check_steps(steps)
        method.default_steps = int(steps)
    method.load(dev, dt)
    return method


@dataclass(frozen=True)
class ImageKind:
    """What an input image was, so the output can be given back the same way."""

    kind: str  # pil | numpy | tensor
    dtype: Any = None
    batched: bool = False
    gray: bool = False  # one channel in: the output is its luma, one channel out
    flat: bool = False  # (h,w) in: (H,W) out
    device: torch.device | None = None


def _numpy_to_float(arr: np.ndarray, what: str) -> torch.Tensor:
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
    else:
        raise SRBenchError(f"{what}: dtype {arr.dtype} is not uint8, uint16 or float")
    return torch.from_numpy(np.ascontiguousarray(out))


def to_batch(image: Any) -> tuple[torch.Tensor, ImageKind]:
    """(1 or B, 3, h, w) float32 in [0,1] from a path, PIL image, numpy array (h,w,3)/(h,w)/(B,h,w,3)
    or tensor (3,h,w)/(B,3,h,w); paths and PIL images follow the file rules of
    :func:`srbench.data.images.read_image` (grayscale to RGB, alpha on white, EXIF orientation)."""
    if isinstance(image, (str, os.PathLike)):
        from srbench.data.images import read_image

        return read_image(Path(image))[None], ImageKind("pil")
    if isinstance(image, Image.Image):
        from srbench.data.images import _to_float_rgb

        chw = torch.from_numpy(_to_float_rgb(image, Path("<PIL image>")))  # (3,h,w) float32 in [0,1]
        return chw[None].contiguous(), ImageKind("pil")
    if isinstance(image, np.ndarray):
        arr = image
        flat = arr.ndim == 2
        if flat:
            arr = arr[..., None]
        batched = arr.ndim == 4
        if arr.ndim not in (3, 4) or arr.shape[-1] not in (1, 3):
            raise SRBenchError(
                f"numpy image of shape {image.shape}: expected (h,w,3), (h,w) or (B,h,w,3) (channels last)"
            )
        t = _numpy_to_float(arr, "numpy image")
        t = (t if batched else t[None]).permute(0, 3, 1, 2)
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        return t.contiguous(), ImageKind("numpy", arr.dtype, batched, arr.shape[-1] == 1, flat)
    if isinstance(image, torch.Tensor):
        if image.ndim not in (3, 4) or image.shape[-3] != 3:
            raise SRBenchError(
                f"tensor image of shape {tuple(image.shape)}: expected (3,h,w) or (B,3,h,w) (channels first)"
            )
        t = image.detach()
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif not torch.is_floating_point(t):
            raise SRBenchError(f"tensor image: dtype {t.dtype} is not uint8 or float")
        batched = image.ndim == 4
        t = t.float() if batched else t.float()[None]
        return t, ImageKind("tensor", image.dtype, batched, device=image.device)
    raise SRBenchError(
        f"cannot upscale a {type(image).__name__}: give a file path, a PIL image, a numpy array or a tensor"
    )


def from_batch(sr: torch.Tensor, kind: ImageKind) -> Any:
    """The output batch (B,3,H,W) float in [0,1] as the kind the input was."""
    if kind.kind == "pil":
        from srbench.data.images import to_uint8

        return Image.fromarray(to_uint8(sr[0]))
    if kind.kind == "numpy":
        hwc = sr.detach().float().cpu().permute(0, 2, 3, 1)
        if kind.gray:  # ITU-R BT.601 luma, as PIL's convert("L")
            hwc = (hwc * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
        arr = hwc.numpy()
        if kind.dtype == np.uint8:
            arr = np.round(np.clip(arr, 0, 1) * 255.0).astype(np.uint8)
        elif kind.dtype == np.uint16:
            arr = np.round(np.clip(arr, 0, 1) * 65535.0).astype(np.uint16)
        else:
            arr = arr.astype(kind.dtype)
        arr = arr if kind.batched else arr[0]
        return arr[..., 0] if kind.flat else arr
    out = sr if kind.batched else sr[0]
    if kind.dtype == torch.uint8:
        out = out.clamp(0, 1).mul(255.0).round().to(torch.uint8)
    else:
        out = out.to(kind.dtype)
    return out.to(kind.device)


def compose_run_config(overrides: Sequence[str] = (), **values: Any) -> Any:
    """The run config the CLI would compose from ``overrides`` (Hydra syntax, e.g. ``method=invsr``),
    then ``values`` set on it (dotted keys, any string: no Hydra escaping), Hydra's own node included."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from srbench.cli import conf_dir

    if GlobalHydra.instance().is_initialized():  # e.g. inside a Hydra app: compose in a fresh context
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        for key, value in values.items():
            OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def evaluate(
    method: str,
    *,
    lr_dir: str | os.PathLike[str] | None = None,
    hr_dir: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    name: str | None = None,
    steps: int = 1,
    protocol: str = "full",
    metrics: str = "default",
    out_dir: str | os.PathLike[str] = "results/runs",
    device: str = "auto",
    overrides: Sequence[str] = (),
    **method_options: Any,
) -> dict[str, Any]:
    """Run ``method`` on a folder of LR images (``lr_dir``, with ``hr_dir`` for full-reference
    metrics; ``name``: the dataset's name in tables, default the folder's, or its parent's for a folder
    called LR) or a named ``dataset``, exactly as ``srbench method=... dataset=...`` does: records under
    ``out_dir``, a finished cell is not run again.  Returns the cell's summary (``summary["metrics"]
    ["psnr"]["mean"]``, ``summary["run_dir"]``...); a cell that fails or is skipped raises
    :class:`SRBenchError` with the reason.  ``overrides``: more settings in the CLI's syntax."""
    from omegaconf import OmegaConf

    from srbench.cli import missing_settings
    from srbench.runner import cell_dir, run_cell

    if lr_dir is not None and dataset is not None:
        raise SRBenchError("evaluate: give lr_dir (your folder) or dataset (a named set), not both")
    kind = "demo" if lr_dir is None and dataset is None else dataset or ("paired" if hr_dir else "lr_only")
    if hr_dir is not None and lr_dir is None:
        raise SRBenchError("evaluate: hr_dir needs lr_dir")
    values: dict[str, Any] = {"out_dir": str(out_dir), "steps": int(steps), "device": device}
    if lr_dir is not None:
        folder = Path(lr_dir).resolve()
        default = folder.parent.name if folder.name.lower() in ("lr", "input", "inputs") else folder.name
        values.update({"dataset.lr_dir": str(lr_dir), "dataset.name": name or default})
        if hr_dir is not None:
            values["dataset.hr_dir"] = str(hr_dir)
    values.update({f"method.{k}": v for k, v in method_options.items()})
    cfg = compose_run_config(
        [f"method={method}", f"dataset={kind}", f"protocol={protocol}", f"metrics={metrics}", *overrides],
        **values,
    )
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    unset = missing_settings(cfg)
    if unset:
        raise SRBenchError(f"evaluate: {unset}")
    run_dir = cell_dir(cfg)  # from the cell's identity, as the CLI
    outcome = run_cell(cfg, run_dir)
    if outcome.status not in ("done", "already_done") or outcome.summary is None:
        raise SRBenchError(f"evaluate: {outcome.status}: {outcome.reason or run_dir}")
    return {**outcome.summary, "run_dir": str(run_dir)}
