"""Visual comparisons: LR | each method | HR for chosen images, with the same zoomed crop in every column.

Images are chosen by id, or automatically: the images on which the table's methods disagree most (per metric,
per-image scores standardised over the table, then the spread across methods, averaged over metrics).  The
zoom box is where the methods' SR images differ most (the largest mean per-pixel standard deviation across
methods over a box a quarter of the image's short side).  The LR and HR come from the cell's dataset as its
protocol prepares them (the LR enlarged by nearest neighbour to the HR size); where the dataset is not on
this machine those columns are left out and the grid says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from srbench.cellindex import Scores
from srbench.data.images import ImageReadError, read_image
from srbench.metrics import set_level

log = logging.getLogger("srbench")


@dataclass
class Column:
    title: str
    run_dir: Path


def discriminative(scores: Mapping[str, Scores], metrics: Sequence[str], k: int) -> list[str]:
    """The ``k`` image ids on which the methods' per-image scores spread most (see the module docstring)."""
    ids = sorted(set.intersection(*(set(s.ids) for s in scores.values()))) if scores else []
    if not ids:
        return []
    spread = np.zeros(len(ids))
    used = 0
    for m in metrics:
        if set_level(m) or not all(m in s.values for s in scores.values()):
            continue
        mat = np.vstack(
            [pd.Series(s.values[m], index=s.ids).reindex(ids).to_numpy() for s in scores.values()]
        )
        sd = np.nanstd(mat)
        if not np.isfinite(sd) or sd == 0:
            continue
        spread += np.nan_to_num(np.nanstd((mat - np.nanmean(mat)) / sd, axis=0))
        used += 1
    order = np.argsort(-spread, kind="stable") if used else np.arange(len(ids))
    return [ids[i] for i in order[:k]]


def _zoom_box(images: list[torch.Tensor]) -> tuple[int, int, int]:
    """(top, left, size) of the box where the SR images differ most."""
    stack = torch.stack(images)  # (k, 3, H, W)
    _, _, h, w = stack.shape
    size = max(8, min(h, w) // 4)
    if stack.shape[0] < 2:
        return (h - size) // 2, (w - size) // 2, size
    dev = stack.std(dim=0).mean(dim=0)[None, None]  # (1, 1, H, W)
    mean = torch.nn.functional.avg_pool2d(dev, size, stride=max(1, size // 4))
    idx = int(mean.flatten().argmax())
    stride = max(1, size // 4)
    top, left = divmod(idx, mean.shape[-1])
    return top * stride, left * stride, size


def _lr_hr(run_dir: Path, image_id: str) -> tuple[torch.Tensor | None, torch.Tensor | None, str]:
    """The cell's LR and HR of ``image_id`` as its protocol prepares them (None, None, why if unavailable)."""
    from srbench.data.folders import build_dataset
    from srbench.protocol import Protocol
    from srbench.registry import create_method
    from srbench.runner import import_plugins

    try:
        plain = yaml.safe_load((run_dir / "config.yaml").read_text())
        import_plugins(plain.get("plugins"))
        dataset = build_dataset(plain["dataset"])
        sample = next(s for s in dataset if s.id == image_id)
        scale = int(create_method(dict(plain["method"])).scale)
        lr, hr = dataset.load(sample)
        lr, hr = Protocol.from_config(plain["protocol"]).prepare(lr, hr, scale)
        return lr, hr, ""
    except (OSError, StopIteration, KeyError, ValueError, ImageReadError, RuntimeError) as exc:
        return None, None, f"LR/HR not shown: {type(exc).__name__}: {exc}"


def comparison_grid(image_id: str, columns: Sequence[Column], title: str, path: Path) -> Path | None:
    """One PNG: the full images (zoom box drawn) over the zoomed crops; None if no method saved the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    srs: list[tuple[str, torch.Tensor | None]] = []
    for c in columns:
        try:
            srs.append((c.title, read_image(c.run_dir / "images" / f"{image_id}.png")))
        except ImageReadError:
            srs.append((c.title, None))
    present = [t for _, t in srs if t is not None]
    if not present:
        return None
    shape = present[0].shape
    lr, hr, why = _lr_hr(columns[0].run_dir, image_id)
    if hr is not None and tuple(hr.shape) != tuple(shape):
        lr, hr, why = None, None, f"LR/HR not shown: HR {tuple(hr.shape)} differs from SR {tuple(shape)}"
    same = [t for t in present if t.shape == shape]
    top, left, size = _zoom_box(same)
    panels: list[tuple[str, torch.Tensor | None]] = []
    if lr is not None:
        up = torch.nn.functional.interpolate(lr[None], size=shape[-2:], mode="nearest")[0]
        panels.append(("LR (nearest)", up))
    panels += srs
    if hr is not None:
        panels.append(("HR", hr))
    fig, axes = plt.subplots(2, len(panels), figsize=(2.2 * len(panels), 4.6), squeeze=False)
    for k, (name, img) in enumerate(panels):
        for row in (0, 1):
            ax = axes[row][k]
            ax.set_xticks([])
            ax.set_yticks([])
            if img is None or img.shape != shape:
                ax.text(0.5, 0.5, "no image", ha="center", va="center", transform=ax.transAxes)
                continue
            arr = img.permute(1, 2, 0).clamp(0, 1).numpy()
            if row == 0:
                ax.imshow(arr, interpolation="nearest")
                ax.add_patch(Rectangle((left, top), size, size, fill=False, ec="red", lw=1.2))
            else:
                ax.imshow(arr[top : top + size, left : left + size], interpolation="nearest")
        axes[0][k].set_title(name, fontsize=8)
    fig.suptitle(f"{title} — {image_id}" + (f"\n{why}" if why else ""), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
