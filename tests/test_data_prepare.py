"""srbench data prepare: HR folder -> HR/LR pairs, deterministic by seed, resumable, usable as a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from srbench.data.cli import data_cli
from srbench.data.folders import paired_folder
from srbench.data.prepare import PrepareError, prepare_folder, select, shape_hr


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three real photos (scikit-image's bundled files), non-square, one in a sub-folder."""
    d = tmp_path_factory.mktemp("hr")
    (d / "sub").mkdir()
    Image.fromarray(skdata.astronaut()[:96, :120]).save(d / "astronaut.png")
    Image.fromarray(skdata.chelsea()[:100, :90]).save(d / "sub" / "chelsea.jpg")
    Image.fromarray(skdata.coffee()[:90, :100]).save(d / "coffee.png")
    return d


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_prepare_is_deterministic_by_seed_and_gives_a_paired_set(hr_dir: Path, tmp_path: Path) -> None:
    a = prepare_folder(hr_dir, tmp_path / "a", preset="imagenet_test", hr_size=32, seed=3, progress=False)
    prepare_folder(hr_dir, tmp_path / "b", preset="imagenet_test", hr_size=32, seed=3, progress=False)
    prepare_folder(
        hr_dir, tmp_path / "c", preset="imagenet_test", hr_size=32, seed=4, limit=1, progress=False
    )
    assert (a.n_done, a.n_total, a.failures) == (3, 3, {})
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    first = "astronaut.png"
    assert (tmp_path / "c" / "HR" / first).read_bytes() == (tmp_path / "a" / "HR" / first).read_bytes()
    assert (tmp_path / "c" / "LR" / first).read_bytes() != (tmp_path / "a" / "LR" / first).read_bytes()
    for p in (tmp_path / "a" / "HR").iterdir():
        assert Image.open(p).size == (32, 32)
        assert Image.open(tmp_path / "a" / "LR" / p.name).size == (8, 8)
    ds = paired_folder("synthetic", tmp_path / "a" / "LR", tmp_path / "a" / "HR")
    assert [s.id for s in ds.samples] == ["astronaut", "chelsea", "coffee"]
    rows = [json.loads(x) for x in (tmp_path / "a" / "params.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"astronaut", "chelsea", "coffee"}
    assert all(r["params"]["pipeline"] == "resshift_test" and not r["params"]["second_order"] for r in rows)
    settings = json.loads((tmp_path / "a" / "prepare.json").read_text())
    assert (
        settings["hr_size"] == 32 and settings["pipeline"]["name"] == "resshift_test" and "torch" in settings
    )


def test_per_image_seed_does_not_depend_on_order_and_resume_skips(hr_dir: Path, tmp_path: Path) -> None:
    full = prepare_folder(hr_dir, tmp_path / "full", hr_size=32, seed=1, progress=False)
    part = prepare_folder(hr_dir, tmp_path / "part", hr_size=32, seed=1, limit=1, progress=False)
    assert part.n_done == 1 and full.n_done == 3
    name = "astronaut.png"
    assert (tmp_path / "part" / "LR" / name).read_bytes() == (tmp_path / "full" / "LR" / name).read_bytes()
    rest = prepare_folder(hr_dir, tmp_path / "part", hr_size=32, seed=1, progress=False)
    assert (rest.n_done, rest.n_skipped) == (2, 1)
    assert _bytes(tmp_path / "part") == _bytes(tmp_path / "full")
    with pytest.raises(PrepareError, match="prepared with other settings"):
        prepare_folder(hr_dir, tmp_path / "part", hr_size=32, seed=2, progress=False)
    again = prepare_folder(hr_dir, tmp_path / "part", hr_size=32, seed=2, overwrite=True, progress=False)
    assert again.n_done == 3


def test_shape_hr_and_selection() -> None:
    import torch

    img = torch.rand(3, 90, 130)
    out = shape_hr(img, 64, 4)
    assert out.shape == (3, 64, 64)
    assert shape_hr(img, None, 4).shape == (3, 88, 128)  # crop to a multiple of the scale
    with pytest.raises(PrepareError, match="not a multiple of the scale"):
        shape_hr(img, 66, 4)
    ids = [f"n{i:03d}" for i in range(50)]
    pick = select(ids, 10, 10000)
    assert pick == select(list(reversed(ids)), 10, 10000) and len(pick) == 10 and pick != ids[:10]
    assert select(ids, None, 0) == ids


def test_cli_prepare_and_bad_input(hr_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    rc = data_cli(
        [
            "prepare",
            "--hr",
            str(hr_dir),
            "--out",
            str(out),
            "--hr-size",
            "64",
            "--no-progress",
            "--pipeline",
            "resshift",
            "--jpeg",
            "cv2",
            "--num",
            "2",
        ]
    )
    assert rc == 0 and len(list((out / "LR").iterdir())) == 2
    assert "evaluate with: srbench dataset=paired" in capsys.readouterr().out
    bad = tmp_path / "badhr"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"nope")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(bad / "fine.png")
    assert data_cli(["prepare", "--hr", str(bad), "--out", str(tmp_path / "o2"), "--no-progress"]) == 1
    assert "failed broken" in capsys.readouterr().out and (tmp_path / "o2" / "LR" / "fine.png").is_file()
    assert data_cli(["prepare", "--hr", str(tmp_path / "none"), "--out", str(tmp_path / "o3")]) == 1
