"""Records on disk: damaged logs keep their valid rows, unused dataset files are listed, config errors write
nothing, written files follow the umask, fingerprints are cached, cells from older srbench are kept."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest

from srbench.claim import CellRefused, check_claim
from srbench.fingerprint import HashCache, dataset_fingerprint
from srbench.identity import CellIdentity, cell_config
from srbench.interface import SRBenchError
from srbench.records import PER_IMAGE_LOG, PerImageLog
from srbench.runner import run_cell
from tests.test_runner import Counting, _cfg, _counting, _dataset  # noqa: F401  (_counting: autouse fixture)


def test_a_garbage_line_in_the_middle_keeps_every_valid_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _dataset(tmp_path / "data")
    Counting.die_on = 5  # four images finished
    with pytest.raises(KeyboardInterrupt):
        run_cell(_cfg(data), tmp_path / "run")
    log = tmp_path / "run" / PER_IMAGE_LOG
    lines = log.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    # line 3 is garbage (a half-written line from another tool, a bad merge); a torn tail follows the rows
    log.write_text("".join([*lines[:2], "{not json\n", *lines[2:], '{"id": "img4", "st']))
    Counting.die_on, Counting.calls = None, 0
    with caplog.at_level(logging.WARNING, logger="srbench"):
        out = run_cell(_cfg(data), tmp_path / "run")
    assert out.status == "done" and Counting.calls == 1  # only img4 ran again
    assert "per_image.jsonl line 3: not JSON" in caplog.text
    assert [r["id"] for r in PerImageLog(log).rows()] == [f"img{i}" for i in range(5)]
    (aside,) = [
        json.loads(x) for x in (tmp_path / "run" / "per_image.rejected.jsonl").read_text().splitlines()
    ]
    assert aside["line"] == 3 and aside["text"] == "{not json"


def test_duplicate_rows_keep_the_first(tmp_path: Path) -> None:
    log = tmp_path / PER_IMAGE_LOG
    log.write_text('{"id": "a", "v": 1}\n{"id": "b"}\n{"id": "a", "v": 2}\n[1, 2]\n')
    plog = PerImageLog(log)
    assert plog.rows() == [{"id": "a", "v": 1}, {"id": "b"}]
    assert [(r["line"], r["reason"]) for r in plog.rejected] == [
        (3, "a second row for image 'a' (first on line 1)"),
        (4, "no image id"),
    ]


def test_files_the_run_does_not_use_are_listed_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _dataset(tmp_path / "data", n=3)
    lr, hr = data / "LR", data / "HR"
    (lr / "img0.jpg").write_bytes((lr / "img0.png").read_bytes())  # one id, two files
    (lr / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (lr / "loop.png").symlink_to(lr / "loop.png")
    (lr / "notes.txt").write_text("where these came from")
    (lr / ".DS_Store").write_bytes(b"\0")
    (lr / "extra").mkdir()
    (hr / "img9.png").write_bytes((hr / "img0.png").read_bytes())  # HR without LR
    with caplog.at_level(logging.WARNING, logger="srbench"):
        out = run_cell(_cfg(data), tmp_path / "run")
    assert out.summary is not None and out.summary["n_ok"] == 3
    unused = {Path(u["path"]).name: u["reason"] for u in out.summary["dataset_unused"]}
    assert unused == {
        ".DS_Store": "hidden file",
        "dangling.png": "dangling symlink (its target does not exist)",
        "extra": "a folder (sub-folders are not searched)",
        "img0.jpg": "same image id 'img0' as img0.png, which is used",
        "loop.png": "symlink loop",
        "notes.txt": "not an image file (extension '.txt')",
        "img9.png": "no LR image with id 'img9'",
    }
    assert "7 file(s) in its folders are not used" in caplog.text


@pytest.mark.parametrize(
    "over",
    [
        {"metrics": {"names": ["psnr", "sharpness9000"]}},
        {"metrics": {"names": ["psnr"], "on_missing": "maybe"}},
        {"protocol": {"name": "full", "crop_border": -1}},
        {"method": "no_such_method"},
        {"dtype": "fp64"},
    ],
)
def test_a_config_error_leaves_nothing_behind(tmp_path: Path, over: dict) -> None:
    data = _dataset(tmp_path / "data", n=1)
    with pytest.raises(SRBenchError):
        run_cell(_cfg(data, **over), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert run_cell(_cfg(data), tmp_path / "run").status == "done"  # the corrected command runs


def _private_tar(path: Path) -> Path:
    """A tar whose folder is 0700 and whose image is 0600 (as packed on a private machine)."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tf:
        d = tarfile.TarInfo("HR")
        d.type, d.mode = tarfile.DIRTYPE, 0o700
        tf.addfile(d)
        f = tarfile.TarInfo("HR/a.png")
        f.size, f.mode = 3, 0o600
        tf.addfile(f, io.BytesIO(b"png"))
    return path


def test_every_file_written_follows_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from srbench import weights as W
    from srbench.atomic import atomic_write_bytes
    from srbench.data.fetch import safe_extract

    old = os.umask(0o002)  # a shared group on a cluster: files should come out rw-rw-r--
    try:
        data = _dataset(tmp_path / "data", n=2)
        run_cell(_cfg(data), tmp_path / "run")
        atomic_write_bytes(tmp_path / "x" / "atomic.bin", b"1")
        monkeypatch.setenv("SRBENCH_CACHE", str(tmp_path / "cache"))
        blob = tmp_path / "blob.bin"
        blob.write_bytes(b"weights")
        got = W._download_url(W.WeightFile("blob.bin", url=blob.as_uri(), subdir="umask"))
        from methods.dmsr.checkpoint import DMSRConfig, save_checkpoint
        from tests.test_dmsr_networks import _trained_like_pair

        est, enc = _trained_like_pair()
        ckpt = save_checkpoint(tmp_path / "ckpt", estimator=est, encoder=enc, config=DMSRConfig())
        extracted = safe_extract(_private_tar(tmp_path / "set.tar"), tmp_path / "set")
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    written += [tmp_path / "x" / "atomic.bin", got, *ckpt.iterdir(), *extracted]
    assert stat.S_IMODE((tmp_path / "set" / "HR").stat().st_mode) == 0o775  # the archive said 0700
    assert {"summary.json", "cell.json", "fingerprint.json", "per_image.csv", "img0.png"} <= {
        p.name for p in written
    }
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert {k: oct(v) for k, v in modes.items() if v != 0o664} == {}


def test_fingerprints_are_cached_and_name_what_changed(tmp_path: Path) -> None:
    from srbench.data.folders import paired_folder
    from srbench.fingerprint import compare

    data = _dataset(tmp_path / "data", n=4)
    cache = HashCache(tmp_path / "cache")
    ds = paired_folder("toy", data / "LR", data / "HR")
    first = dataset_fingerprint(ds.samples, cache)
    assert cache.hashed == 8 and first.n_images == 4
    again = HashCache(tmp_path / "cache")  # a new process: the cache on disk, no file read
    assert dataset_fingerprint(ds.samples, again) == first and again.hashed == 0
    (data / "HR" / "img2.png").write_bytes((data / "HR" / "img1.png").read_bytes())
    third = HashCache(tmp_path / "cache")
    changed = dataset_fingerprint(ds.samples, third)
    assert third.hashed == 1 and changed.sha256 != first.sha256
    assert compare(first, changed).modified == ["img2"]


def test_a_cell_from_an_older_srbench_is_kept(tmp_path: Path) -> None:
    """A flat cell.json without fingerprint (before this change): its rows are kept, nothing is rerun."""
    data = _dataset(tmp_path / "data", n=3)
    run = tmp_path / "run"
    run_cell(_cfg(data), run)
    plain = cell_config(_cfg(data))
    legacy = {
        "run_name": "counting",
        "method": plain["method"],
        "steps": 1,
        "dataset": plain["dataset"],
        "protocol": plain["protocol"],
        "metrics": plain["metrics"],
        "seed": 0,
        "dtype": "fp32",
    }
    (run / "cell.json").write_text(json.dumps(legacy))
    (run / "fingerprint.json").unlink()
    rows = PerImageLog(run / PER_IMAGE_LOG).rows()
    Counting.calls = 0
    out = run_cell(_cfg(data), run)
    assert out.status == "done" and Counting.calls == 0
    assert PerImageLog(run / PER_IMAGE_LOG).rows() == rows
    assert json.loads((run / "cell.json").read_text())["dataset_fingerprint"]["n_images"] == 3


def test_a_cell_measured_in_another_precision_is_refused(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=1)
    run_cell(_cfg(data), tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "cell.json").read_text())
    assert stored["runtime"] == {"precision": "fp32", "device": "cpu"}
    ident = CellIdentity.from_config(cell_config(_cfg(data)), {"precision": "fp16", "device": "cuda:H100"})
    with pytest.raises(CellRefused, match=r"runtime.precision: \"fp32\" -> \"fp16\""):
        check_claim(tmp_path / "run", ident)


def test_temp_files_of_a_killed_write_are_removed_when_the_cell_is_claimed(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    run_cell(_cfg(data), tmp_path / "run")
    for stray in (
        tmp_path / "run" / ".summary.json.k9x1.tmp",
        tmp_path / "run" / "images" / ".img0.png.a1.tmp",
    ):
        stray.write_bytes(b"half a file")
    assert run_cell(_cfg(data), tmp_path / "run").status == "already_done"
    assert not list((tmp_path / "run").rglob(".*.tmp"))


def test_rerunning_a_finished_cell_writes_nothing(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=2)
    run_cell(_cfg(data), tmp_path / "run")
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    # settings that are not part of the cell's identity do not make another cell, nor touch this one
    out = run_cell(_cfg(data, save_images=False, retry_failed=True), tmp_path / "run")
    assert out.status == "already_done" and Counting.calls == 2
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def test_a_missing_data_folder_leaves_nothing_behind(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", n=1)
    cfg = _cfg(data)
    cfg["dataset"] = {**cfg["dataset"], "lr_dir": str(tmp_path / "nowhere")}
    with pytest.raises(SRBenchError, match="nowhere: folder not found"):
        run_cell(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
