"""Datasets: paired LR/HR folders, LR-only folders, and the built-in demo set."""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from srbench.data.images import IMAGE_EXTENSIONS, read_image
from srbench.interface import SRBenchError
from srbench.paths import data_dir


class DatasetError(SRBenchError):
    """A dataset could not be opened: missing folder, no images, unpaired files."""


@dataclass(frozen=True)
class Sample:
    id: str
    lr_path: Path
    hr_path: Path | None = None


@dataclass
class SRDataset:
    name: str
    samples: list[Sample]
    scale: int = 4
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_hr(self) -> bool:
        return any(s.hr_path is not None for s in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @staticmethod
    def load(sample: Sample) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(LR, HR or None) as (3,H,W) RGB float in [0,1]; raises ImageReadError naming the file."""
        lr = read_image(sample.lr_path)
        hr = read_image(sample.hr_path) if sample.hr_path is not None else None
        return lr, hr


def _unusable(path: Path) -> str | None:
    """Why a folder entry cannot be one of the dataset's images (None when it can)."""
    if path.name.startswith("."):
        return "hidden file"
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "dangling symlink (its target does not exist)"
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISDIR(st.st_mode):
        return "a folder (sub-folders are not searched)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file (extension '{path.suffix}')" if path.suffix else "not an image file"
    return None


def _image_files(folder: Path, unused: list[dict[str, str]] | None = None) -> list[Path]:
    """The image files of ``folder``; every other entry goes to ``unused`` with the reason."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    files = []
    for p in sorted(folder.iterdir()):
        reason = _unusable(p)
        if reason is None:
            files.append(p)
        elif unused is not None:
            unused.append({"path": str(p), "reason": reason})
    if not files:
        raise DatasetError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _key(path: Path, suffix: str) -> str:
    stem = path.stem
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem


def _by_id(files: list[Path], suffix: str, unused: list[dict[str, str]]) -> dict[str, Path]:
    """Files by image id; of several files with one id (``a.png`` + ``a.jpg``) the first extension of
    IMAGE_EXTENSIONS is used (lossless formats come first) and the others are listed as unused."""
    groups: dict[str, list[Path]] = {}
    for p in files:
        groups.setdefault(_key(p, suffix), []).append(p)
    out: dict[str, Path] = {}
    for key, group in groups.items():
        group.sort(key=lambda p: (IMAGE_EXTENSIONS.index(p.suffix.lower()), p.name))
        out[key] = group[0]
        unused.extend(
            {"path": str(p), "reason": f"same image id '{key}' as {group[0].name}, which is used"}
            for p in group[1:]
        )
    return out


def paired_folder(
    name: str,
    lr_dir: str | Path,
    hr_dir: str | Path,
    *,
    lr_suffix: str = "",
    hr_suffix: str = "",
    scale: int = 4,
) -> SRDataset:
    """LR and HR folders paired by file stem, after removing ``lr_suffix`` / ``hr_suffix``
    (RealSR: ``Canon_001_LR4.png`` ↔ ``Canon_001_HR.png`` with suffixes ``_LR4`` / ``_HR``)."""
    unused: list[dict[str, str]] = []
    lr_files = _by_id(_image_files(Path(lr_dir), unused), lr_suffix, unused)
    hr_files = _by_id(_image_files(Path(hr_dir), unused), hr_suffix, unused)
    missing = sorted(set(lr_files) - set(hr_files))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DatasetError(f"{hr_dir}: no HR image for {len(missing)} LR image(s) of {lr_dir}: {shown}")
    unused.extend(
        {"path": str(hr_files[k]), "reason": f"no LR image with id '{k}'"}
        for k in sorted(set(hr_files) - set(lr_files))
    )
    samples = [Sample(k, lr_files[k], hr_files[k]) for k in sorted(lr_files)]
    return SRDataset(name, samples, scale, {"lr_dir": str(lr_dir), "hr_dir": str(hr_dir), "unused": unused})


def lr_only_folder(name: str, lr_dir: str | Path, *, scale: int = 4) -> SRDataset:
    """A folder of LR images without ground truth (RealSet80-style): no-reference metrics only."""
    unused: list[dict[str, str]] = []
    files = _by_id(_image_files(Path(lr_dir), unused), "", unused)
    samples = [Sample(k, files[k]) for k in sorted(files)]
    return SRDataset(name, samples, scale, {"lr_dir": str(lr_dir), "unused": unused})


class HROnlyDataset(SRDataset):
    """HR images only (scoring SR images made elsewhere against them): each LR is made from its HR in memory
    by antialiased bicubic downscaling by ``scale``; it sets the geometry the protocol crops."""

    lr_in_memory: ClassVar[bool] = True  # the runner reads samples through :meth:`load`, not the LR file

    def load(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor | None]:
        import torch.nn.functional as F

        hr = read_image(sample.lr_path)
        _, h, w = hr.shape
        size = (max(1, h // self.scale), max(1, w // self.scale))
        lr = F.interpolate(hr[None], size=size, mode="bicubic", antialias=True, align_corners=False)
        return lr[0].clamp(0, 1), hr


def hr_only_folder(name: str, hr_dir: str | Path, *, hr_suffix: str = "", scale: int = 4) -> SRDataset:
    """A folder of HR images without LR (``srbench score SR --hr HR``); its fingerprint has the HR hash in
    the LR place too, so it never shares a table with a paired set."""
    unused: list[dict[str, str]] = []
    files = _by_id(_image_files(Path(hr_dir), unused), hr_suffix, unused)
    samples = [Sample(k, files[k], files[k]) for k in sorted(files)]
    meta = {"hr_dir": str(hr_dir), "unused": unused, "lr": f"bicubic x1/{scale} of each HR, in memory"}
    return HROnlyDataset(name, samples, scale, meta)


def demo_dataset(name: str = "demo", *, root: str | Path | None = None, seed: int = 0) -> SRDataset:
    """The built-in demo set (see :mod:`srbench.data.demo`), built on first use in the data cache."""
    from srbench.data.demo import build_demo

    root = build_demo(Path(root) if root else data_dir() / "demo", seed=seed)
    ds = paired_folder(name, root / "LR", root / "HR")
    ds.meta["source"] = "photos bundled in scikit-image and matplotlib, degraded by srbench.data.demo"
    return ds


def build_dataset(cfg: Mapping[str, Any]) -> SRDataset:
    """Build a dataset from ``conf/dataset/*.yaml``: ``kind`` is demo | paired | lr_only | manifest."""
    kind = cfg.get("kind")
    name = cfg.get("name") or kind
    scale = int(cfg.get("scale", 4))
    if kind == "demo":
        ds = demo_dataset(name, root=cfg.get("root"), seed=int(cfg.get("seed", 0)))
    elif kind == "paired":
        ds = paired_folder(
            name,
            _need(cfg, "lr_dir"),
            _need(cfg, "hr_dir"),
            lr_suffix=cfg.get("lr_suffix") or "",
            hr_suffix=cfg.get("hr_suffix") or "",
            scale=scale,
        )
    elif kind == "lr_only":
        ds = lr_only_folder(name, _need(cfg, "lr_dir"), scale=scale)
    elif kind == "hr_only":
        ds = hr_only_folder(name, _need(cfg, "hr_dir"), hr_suffix=cfg.get("hr_suffix") or "", scale=scale)
    elif kind == "manifest":  # a named test set installed by `srbench data fetch NAME`
        from srbench.data.manifest import dataset_from_config

        ds = dataset_from_config(cfg)
    else:
        raise DatasetError(
            f"dataset '{name}': unknown kind '{kind}' (expected demo, paired, lr_only, hr_only or manifest)"
        )
    limit = cfg.get("limit")
    if limit:
        ds.meta["beyond_limit"] = max(0, len(ds.samples) - int(limit))  # counted, not listed as unused
        ds.samples = ds.samples[: int(limit)]
    return ds


def _need(cfg: Mapping[str, Any], key: str) -> str:
    value = cfg.get(key)
    if not value:
        raise DatasetError(
            f"dataset '{cfg.get('name')}': '{key}' is not set (e.g. dataset.{key}=/path/to/images)"
        )
    return str(value)
