"""Set-level metrics: FID is computed once per cell (SR set vs HR set) and shown as set-level.

FID's InceptionV3 weights (pt_inception-2015-12-05) are not on this machine: without them the metric is
skipped with a message naming the file, and a file that is not the published one (sha256) is refused before
anything unpickles it; with ``random_backbones=True`` (a RANDOM-WEIGHT InceptionV3 made in memory, no file
read) it builds and runs through pyiqa's own FID code (folder reading, clean-fid resizing, 2048-d Inception
features).  To keep the test seconds long, pyiqa's Frechet distance is replaced by the squared distance of
the feature means (its first term; the 2048x2048 matrix square root of the full formula takes over a minute
on one CPU thread).  Values are plumbing checks, not FID.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from srbench import metric_files
from srbench import metrics as metrics_module
from srbench.data.demo import centre_crop, load_photo
from srbench.leaderboard import write_leaderboard
from srbench.metrics import MetricSuite
from srbench.runner import _METHODS, _METRICS, cell_dir, run_cell
from srbench.score import compose

WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
PHOTOS = ("astronaut", "chelsea", "camera")


@pytest.fixture(scope="module")
def pyiqa_cache(tmp_path_factory) -> Path:
    """pyiqa's cache of this module only; FID metrics built here are built once (InceptionV3's random
    initialisation takes seconds) and handed out again, as a process that scores many cells would."""
    import pyiqa
    from pyiqa.utils import download_util

    cache = tmp_path_factory.mktemp("torch") / "hub" / "pyiqa"
    real_create = pyiqa.create_metric
    built: dict[str, object] = {}

    def create(name: str, **kw: object) -> object:
        if name != "fid":
            return real_create(name, **kw)
        if "fid" not in built:
            built["fid"] = real_create(name, **kw)
        return built["fid"]

    from pyiqa.archs import fid_arch

    def mean_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):  # see the module docstring
        return float(np.sum((np.asarray(mu1) - np.asarray(mu2)) ** 2))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(download_util, "DEFAULT_CACHE_DIR", str(cache))
        mp.setattr(pyiqa, "create_metric", create)
        mp.setattr(fid_arch, "frechet_distance", mean_distance)
        mp.setattr(metrics_module, "MetricSuite", _RandomBackbones)  # the suites runs build in this module
        _METRICS.clear()
        _METHODS.clear()
        yield cache
        _METRICS.clear()


class _RandomBackbones(MetricSuite):
    """The suite a run builds, with random stand-ins (``random_backbones=True``): plumbing only."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, random_backbones=True, **kwargs)  # type: ignore[arg-type]


def _images(folder: Path, shift: int = 0) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for name in PHOTOS:
        img = centre_crop(load_photo(name), 64).astype(np.int16) + shift
        out.append(folder / f"{name}.png")
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out[-1])
    return out


def test_fid_is_skipped_offline_refuses_a_pickle_and_runs_on_a_stand_in(
    pyiqa_cache: Path, tmp_path: Path
) -> None:
    suite = MetricSuite(["fid", "psnr"])
    assert suite.available == ["psnr"] and suite.set_level == []
    msg = suite.skipped["fid"]
    assert WEIGHTS in msg and str(pyiqa_cache / WEIGHTS) in msg and "https://" in msg
    assert metric_files.required_files("fid")[0].path == pyiqa_cache / WEIGHTS

    pyiqa_cache.mkdir(parents=True)  # anything but tensors must never reach pyiqa's weights_only=False load
    torch.save({"x": argparse.Namespace(code="not weights")}, pyiqa_cache / WEIGHTS)
    refused = MetricSuite(["fid"])
    msg = refused.skipped["fid"]
    assert refused.available == [] and str(pyiqa_cache / WEIGHTS) in msg and "sha256" in msg
    assert "does not load it" in msg

    built = MetricSuite(["fid"], random_backbones=True)  # the file above is not even opened
    assert built.set_level == ["fid"] and built.weights_verified["fid"] is False  # not the published file
    hr = _images(tmp_path / "hr")
    sr = _images(tmp_path / "sr", shift=40)
    assert built.score_set(hr, hr)["fid"] == 0.0  # the same files: the same features
    assert np.isfinite(built.score_set(sr, hr)["fid"]) and not built.errors
    assert built.score(torch.rand(3, 32, 32)) == {}  # never scored per image


def test_a_cell_scores_fid_once_and_the_leaderboard_says_set_level(pyiqa_cache: Path, tmp_path: Path) -> None:
    data, runs = tmp_path / "data", tmp_path / "runs"
    hr = _images(data / "HR")
    (data / "LR").mkdir()
    for p in hr:
        Image.open(p).resize((16, 16), Image.BICUBIC).save(data / "LR" / p.name)
    cfg_args = [
        "method=bicubic",
        "dataset=paired",
        f"dataset.lr_dir={data / 'LR'}",
        f"dataset.hr_dir={data / 'HR'}",
        "metrics.names=[psnr,fid]",
    ]
    cfg = compose([*cfg_args, f"out_dir={runs}"])
    cell = cell_dir(cfg, runs)
    assert run_cell(cfg, cell).status == "done"
    s = json.loads((cell / "summary.json").read_text())
    fid = s["metrics"]["fid"]
    assert fid["level"] == "set" and fid["ci95"] is None and fid["n"] == 3 and fid["lower_better"] is True
    assert np.isfinite(fid["mean"])
    assert "fid" not in pd.read_csv(cell / "per_image.csv") and s["metric_weights_verified"]["fid"] is False
    csv_path, _, md = write_leaderboard([runs], tmp_path / "lb", plots=False)
    row = pd.read_csv(csv_path).iloc[0]
    assert row["fid_ci95"] == "set-level" and row["fid_p"] == "set-level"
    assert re.search(r"\| [0-9.]+ \(set-level\) \|", re.sub(r" {2,}", " ", md))
    # quantize none scores the float SR per image; FID reads the 8-bit PNGs: the summary says so
    assert "quantize none" not in s["metric_notes"].get("fid", "")
    none = compose([*cfg_args, "protocol.quantize=none", f"out_dir={tmp_path / 'none'}"])
    cell = cell_dir(none, tmp_path / "none")
    assert run_cell(none, cell).status == "done"
    notes = json.loads((cell / "summary.json").read_text())["metric_notes"]
    assert "8-bit PNGs (quantize none" in notes["fid"] and "quantize" not in notes["psnr"]
