"""Outputs srbench did not produce: ``srbench score`` and the ``precomputed`` method.

Fixtures: real photos (the demo set's sources), HR 64x64 crops, LR by PIL bicubic x1/4; the "third party's"
SR images are bicubic x4 of the LR written by the test (some named with a suffix, one missing, one extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from srbench.external import protocol_region
from srbench.interface import SRBenchError
from srbench.leaderboard import build_board, collect
from srbench.protocol import Protocol
from srbench.runner import _METHODS, cell_dir, run_cell
from srbench.score import compose, score_cli
from tests.paired_photos import PHOTOS, write_photo_pairs


@pytest.fixture(autouse=True)
def _fresh_methods() -> None:
    _METHODS.clear()


def _data(root: Path, size: int = 64) -> Path:
    return write_photo_pairs(root, size)


def _bicubic_sr(lr_dir: Path, out: Path, names: list[str], suffix: str = "") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        lr = Image.open(lr_dir / f"{name}.png")
        lr.resize((lr.width * 4, lr.height * 4), Image.BICUBIC).save(out / f"{name}{suffix}.png")
    return out


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_score_pairs_by_stem_reports_missing_and_extra_and_ranks_with_own_cells(
    tmp_path: Path, capsys
) -> None:
    data = _data(tmp_path / "data")
    sr = _bicubic_sr(data / "LR", tmp_path / "sr", list(PHOTOS[:3]), suffix="_out")  # camera missing
    Image.new("RGB", (64, 64)).save(sr / "stray_out.png")  # an SR file matching no image
    (sr / "notes.txt").write_text("not an image")
    runs = tmp_path / "runs"
    common = ["dataset=paired", "dataset.name=photos", f"dataset.lr_dir={data / 'LR'}"]
    common += [f"dataset.hr_dir={data / 'HR'}", "metrics.names=[psnr,ssim]", f"out_dir={runs}"]
    own = compose(["method=bicubic", *common])
    assert run_cell(own, cell_dir(own, runs)).status == "done"

    argv = [str(sr), "--hr", str(data / "HR"), "--lr", str(data / "LR"), "--name", "thirdparty"]
    argv += ["--dataset", "photos", "--metrics", "psnr,ssim", "--out-dir", str(runs), "--sr-suffix", "_out"]
    assert score_cli(argv) == 0
    out = capsys.readouterr().out
    assert "1 image(s) without an SR file: camera" in out and "stray_out.png" in out
    (cell,) = [p.parent for p in runs.rglob("summary.json") if "thirdparty" in str(p)]
    s = _summary(cell)
    assert s["source"] == "external" and s["method"] == "thirdparty" and s["weights"]["label"] == "real"
    assert s["external"]["missing"] == ["camera"] and s["external"]["extra"] == ["stray_out.png"]
    assert s["external"]["dir"] == str(sr.resolve()) and len(s["external"]["fingerprint"]) == 64
    assert s["latency_s"] == {} and s["peak_mem_mb"] is None
    assert s["n_ok"] == 3 and s["failures"][0]["id"] == "camera"
    assert "no SR image for 'camera'" in s["failures"][0]["error"]
    rows = pd.read_csv(cell / "per_image.csv")
    assert not [c for c in rows.columns if c.startswith("latency")]

    # the same image files, the same protocol: one fingerprint, one table; bicubic's own PNGs score the same
    mine = _summary(cell_dir(own, runs))
    assert s["dataset_fingerprint"] == mine["dataset_fingerprint"]
    own_rows = pd.read_csv(cell_dir(own, runs) / "per_image.csv").set_index("id")
    ext_rows = rows[rows["status"] == "ok"].set_index("id")
    diff = (ext_rows["psnr"] - own_rows.loc[ext_rows.index, "psnr"]).abs()
    assert diff.max() < 0.5  # PIL's bicubic vs torch's: close, not equal
    cells, lower = collect([runs])
    board, tables = build_board(cells, lower)
    assert len(tables) == 1 and set(board["label"]) == {"bicubic", "thirdparty"}

    # rerun: nothing to do; the SR folder changed: refused (another cell), nothing written
    assert score_cli(argv) == 0 and "[already_done]" in capsys.readouterr().out
    _bicubic_sr(data / "LR", sr, ["camera"], suffix="_out")
    assert score_cli(argv) == 1
    assert "external_outputs" in capsys.readouterr().err
    assert _summary(cell)["n_ok"] == 3


def test_precomputed_outputs_of_the_full_lr_are_cut_as_the_protocol_cuts(tmp_path: Path) -> None:
    """Under a protocol that centre-crops the LR, an SR image of the full LR is cut to the same region, so
    it scores exactly what srbench's own run of the same (local, nearest x4) method on the crop scores;
    other sizes are refused naming the file and the sizes."""
    data = _data(tmp_path / "data")
    runs = tmp_path / "runs"
    crop = ["protocol=stablesr_paper", "protocol.lr_centre_crop=8", "metrics.names=[psnr]", f"out_dir={runs}"]
    paired = ["dataset=paired", f"dataset.lr_dir={data / 'LR'}", f"dataset.hr_dir={data / 'HR'}"]
    nearest = ["method=bicubic", "method.name=slow_nearest", "plugins=[tests.sweep_plugins]"]
    own = compose([*nearest, *paired, *crop])
    assert run_cell(own, cell_dir(own, runs)).status == "done"
    full = tmp_path / "full"  # nearest x4 of the full 16x16 LR: 64x64 SR images
    full.mkdir()
    for name in PHOTOS:
        lr = Image.open(data / "LR" / f"{name}.png")
        lr.resize((64, 64), Image.NEAREST).save(full / f"{name}.png")
    Image.new("RGB", (40, 40)).save(full / "coffee.png")  # neither 4 x the crop nor 4 x the full LR
    ext = compose(["method=precomputed", f"method.dir={full}", "run_name=fromfull", *paired, *crop])
    assert run_cell(ext, cell_dir(ext, runs)).status == "done"
    own_rows = pd.read_csv(cell_dir(own, runs) / "per_image.csv").set_index("id")
    ext_rows = pd.read_csv(cell_dir(ext, runs) / "per_image.csv").set_index("id")
    ok = ext_rows[ext_rows["status"] == "ok"].index
    assert sorted(ok) == ["astronaut", "camera", "chelsea"]
    assert ext_rows.loc[ok, "psnr"].tolist() == own_rows.loc[ok, "psnr"].tolist()  # the same region
    err = ext_rows.loc["coffee", "error"]
    assert "coffee.png: SR 40x40 is neither 4 x the LR" in err and "(8x8 -> 32x32)" in err and "64x64" in err
    assert Image.open(cell_dir(ext, runs) / "images" / "astronaut.png").size == (32, 32)


def test_protocol_region_follows_every_rule_of_the_protocol() -> None:
    lr = torch.rand(3, 30, 41)
    centre = Protocol(name="c", lr_centre_crop=16)
    assert protocol_region(centre, lr, torch.rand(3, 120, 164), 4) == (7, 12, 16, 16)
    # HR one LR pixel short in height: common region first (top-left 29x41), then the centre crop of that
    mismatch = Protocol(name="m", lr_centre_crop=16, hr_mismatch="crop")
    assert protocol_region(mismatch, lr, torch.rand(3, 116, 164), 4) == (6, 12, 16, 16)
    assert protocol_region(Protocol(), lr, None, 4) == (0, 0, 30, 41)
    resize = Protocol(name="r", lr_resize_short_side=20, lr_centre_crop=16)
    assert protocol_region(resize, lr, None, 4) is None  # a resized LR has no region in the original


def test_precomputed_needs_a_folder_and_declares_its_steps(tmp_path: Path) -> None:
    from methods.precomputed import Precomputed

    with pytest.raises(SRBenchError, match=r"method\.dir"):
        Precomputed()
    m = Precomputed(dir=str(tmp_path), made_with_steps=1)
    assert m.supported_steps() == [1]
    with pytest.raises(SRBenchError, match="no image files"):
        m.outputs_fingerprint()  # an empty folder: nothing to score


def test_hr_alone_sets_the_lr_geometry_and_scores_as_the_paired_run(tmp_path: Path) -> None:
    """``--hr`` alone: each LR is made from its HR in memory (the runner reads such a dataset through its
    own ``load``, never the HR file as an LR), so an SR image of the full LR under a centre-crop protocol is
    cut as in the paired run of the same files and scores the same; the fingerprint is its own."""
    data = _data(tmp_path / "data")
    sr = _bicubic_sr(data / "LR", tmp_path / "sr", list(PHOTOS))
    runs = tmp_path / "runs"
    common = ["--metrics", "psnr", "--out-dir", str(runs), "--protocol", "stablesr_paper"]
    common += ["protocol.lr_centre_crop=8"]
    paired = [str(sr), "--hr", str(data / "HR"), "--lr", str(data / "LR"), "--name", "paired", *common]
    assert score_cli(paired) == 0
    assert score_cli([str(sr), "--hr", str(data / "HR"), "--name", "hronly", *common]) == 0
    cells = {_summary(p.parent)["method"]: p.parent for p in runs.rglob("summary.json")}
    a, b = cells["paired"], cells["hronly"]
    assert _summary(a)["n_ok"] == _summary(b)["n_ok"] == len(PHOTOS)
    assert _summary(a)["dataset_fingerprint"] != _summary(b)["dataset_fingerprint"]
    pa = pd.read_csv(a / "per_image.csv").set_index("id")["psnr"]
    pb = pd.read_csv(b / "per_image.csv").set_index("id")["psnr"]
    assert (pa.sort_index() == pb.sort_index()).all()
    # srbench's own method on the HR-only set runs on the LR made in memory, not on the HR file
    own = compose(["method=bicubic", "dataset=hr_only", f"dataset.hr_dir={data / 'HR'}", f"out_dir={runs}"])
    assert run_cell(own, cell_dir(own, runs)).status == "done"
    rows = pd.read_csv(cell_dir(own, runs) / "per_image.csv")
    assert (rows["status"] == "ok").all() and (rows["lr_h"] == 16).all() and (rows["lr_w"] == 16).all()
