"""The built-in demo set: real bundled photos, deterministic x4 degradation, rebuilt on recipe change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from srbench.data.demo import DEMO_PHOTOS, build_demo, degrade
from srbench.data.folders import build_dataset


def test_demo_set_is_built_deterministically(tmp_path: Path) -> None:
    a = build_demo(tmp_path / "a", seed=0)
    b = build_demo(tmp_path / "b", seed=0)
    names = sorted(f"{n}.png" for n, _ in DEMO_PHOTOS)
    assert (
        sorted(p.name for p in (a / "HR").iterdir()) == names == sorted(p.name for p in (a / "LR").iterdir())
    )
    for name in names:
        assert (a / "LR" / name).read_bytes() == (b / "LR" / name).read_bytes()
        hr, lr = Image.open(a / "HR" / name), Image.open(a / "LR" / name)
        assert hr.size == (256, 256) and lr.size == (64, 64) and hr.mode == lr.mode == "RGB"
    c = build_demo(tmp_path / "c", seed=1)
    assert (c / "LR" / names[0]).read_bytes() != (a / "LR" / names[0]).read_bytes()  # the seed matters


def test_degradation_steps() -> None:
    hr = np.full((64, 64, 3), 128, dtype=np.uint8)
    clean = degrade(hr, seed=0, noise_sigma=0.0, jpeg_quality=100)
    assert clean.shape == (16, 16, 3) and np.abs(clean.astype(int) - 128).max() <= 1  # flat stays flat
    noisy = degrade(hr, seed=0)
    assert 1.0 < noisy.astype(float).std() < 12.0  # noise sigma 5/255 survives JPEG 75, roughly
    assert np.array_equal(noisy, degrade(hr, seed=0)) and not np.array_equal(noisy, degrade(hr, seed=1))


def test_stale_images_are_removed_when_the_recipe_changes(tmp_path: Path) -> None:
    root = build_demo(tmp_path / "d", seed=0, limit=2)
    (root / "HR" / "old.png").write_bytes((root / "HR" / f"{DEMO_PHOTOS[0][0]}.png").read_bytes())
    stamp = json.loads((root / "demo.json").read_text())
    assert stamp["limit"] == 2
    build_demo(root, seed=0, limit=3)
    assert len(list((root / "HR").iterdir())) == 3 and not (root / "HR" / "old.png").exists()


def test_demo_dataset_config(tmp_path: Path) -> None:
    ds = build_dataset({"kind": "demo", "name": "demo", "root": str(tmp_path / "demo"), "limit": 3})
    assert len(ds) == 3 and ds.has_hr
    lr, hr = ds.load(ds.samples[0])
    assert lr.shape == (3, 64, 64) and hr is not None and hr.shape == (3, 256, 256)
