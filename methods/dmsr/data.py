"""Paired HR/LR training data for DM-SR (§4.1): 512² HR crops from image folders (DF2K, LSDIR), LR made on
the fly with the Real-ESRGAN/ResShift degradation (:mod:`methods.dmsr.degradation`), or read from a folder of
pre-made LR images with the same file stems.

Sampling is *with replacement* and a pure function of (seed, sample number k): sample k draws its image,
crop, flip and degradation from ``numpy.random.default_rng([seed, k])``.  Any number of DataLoader workers
gives the same batches, and a resumed run continues the exact sequence by starting at k = iteration·batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from methods.dmsr.degradation import DegradationConfig, realesrgan_degrade

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"training image folder {root} does not exist")
        files += sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {[str(f) for f in folders]}")
    return files


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class PairedSRDataset(Dataset):
    """``ds[k]`` → ``{"hr": (3,S,S), "lr": (3,S/sf,S/sf)}`` float in [0,1] (S = ``gt_size``)."""

    def __init__(
        self,
        hr_dirs: Sequence[str | Path],
        *,
        gt_size: int = 512,
        scale: int = 4,
        seed: int = 0,
        lr_dir: str | Path | None = None,
        use_hflip: bool = True,
        degradation: DegradationConfig | dict[str, Any] | None = None,
        backend: str = "cv2",
    ) -> None:
        if gt_size % scale:
            raise ValueError(f"gt_size {gt_size} is not a multiple of the scale {scale}")
        self.files = list_images(hr_dirs)
        self.gt_size, self.scale, self.seed = int(gt_size), int(scale), int(seed)
        self.use_hflip = bool(use_hflip)
        self.lr_dir = Path(lr_dir).expanduser() if lr_dir else None
        if backend not in ("cv2", "srbench"):
            raise ValueError(f"degradation backend must be cv2|srbench, got {backend}")
        self.backend = backend
        if backend == "srbench":  # srbench.data.degradations: the authors' torch ops (DiffJPEG), slower
            self.degradation_spec = dict(degradation or {}) | {"sf": self.scale}
        else:
            cfg = (
                degradation
                if isinstance(degradation, DegradationConfig)
                else DegradationConfig.from_dict(degradation)
            )
            cfg.sf = self.scale
            self.degradation = cfg

    def __len__(self) -> int:  # samples are drawn with replacement; k may exceed this
        return len(self.files)

    def _lr_path(self, hr_path: Path) -> Path:
        assert self.lr_dir is not None
        for ext in IMAGE_EXTS:
            p = self.lr_dir / f"{hr_path.stem}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"no LR image for {hr_path.name} in {self.lr_dir}")

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, int(k)])
        path = self.files[int(rng.integers(len(self.files)))]
        hr = _read_rgb(path)
        s, sf = self.gt_size, self.scale
        if self.lr_dir is not None:  # pre-made pairs: crop aligned windows
            lr = _read_rgb(self._lr_path(path))
            if hr.shape[0] != lr.shape[0] * sf or hr.shape[1] != lr.shape[1] * sf:
                raise ValueError(f"{path.name}: HR {hr.shape[:2]} is not {sf}x the LR {lr.shape[:2]}")
            ls = s // sf
            if min(lr.shape[:2]) < ls:
                raise ValueError(f"{path.name}: LR {lr.shape[:2]} smaller than the crop {ls}")
            top, left = int(rng.integers(lr.shape[0] - ls + 1)), int(rng.integers(lr.shape[1] - ls + 1))
            lr = lr[top : top + ls, left : left + ls]
            hr = hr[top * sf : (top + ls) * sf, left * sf : (left + ls) * sf]
            if self.use_hflip and rng.random() < 0.5:
                hr, lr = hr[:, ::-1], lr[:, ::-1]
        else:
            if min(hr.shape[:2]) < s:  # pad small images by reflection (as Real-ESRGAN's dataset does)
                ph, pw = max(0, s - hr.shape[0]), max(0, s - hr.shape[1])
                hr = np.pad(hr, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            top, left = int(rng.integers(hr.shape[0] - s + 1)), int(rng.integers(hr.shape[1] - s + 1))
            hr = hr[top : top + s, left : left + s]
            if self.use_hflip and rng.random() < 0.5:
                hr = hr[:, ::-1]
            if self.backend == "srbench":
                from srbench.data.degradations import degrade

                lr, _ = degrade(np.ascontiguousarray(hr), rng, self.degradation_spec)
            else:
                lr = realesrgan_degrade(np.ascontiguousarray(hr), rng, self.degradation)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0  # noqa: E731
        return {"hr": to_t(hr), "lr": to_t(lr)}


class CounterSampler(Sampler[int]):
    """Yields sample numbers ``start, start+1, …, stop-1`` (see the module docstring)."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
