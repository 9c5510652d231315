"""srbench data verify and the manifests: counts, pairing, sizes, checksums, validation of datasets/*.yaml."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from srbench.data.manifest import (
    INSTALL_RECORD,
    ManifestError,
    dataset_from_config,
    list_manifests,
    load_manifest,
    manifest_dir,
    parse_manifest,
    resolve,
)
from srbench.data.verify import verify_dataset

REPO_CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A paired set of 4 images (LR 8x8, HR 32x32) installed at <data>/toyset/main, and its manifest."""
    monkeypatch.setenv("SRBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SRBENCH_MANIFESTS", str(tmp_path / "manifests"))
    root = tmp_path / "data" / "toyset" / "main"
    files = []
    rng = np.random.default_rng(0)
    for sub, size in (("LR", 8), ("HR", 32)):
        (root / sub).mkdir(parents=True)
        for i in range(4):
            p = root / sub / f"im{i}_{sub}.png"
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
            files.append(
                {
                    "path": f"{sub}/{p.name}",
                    "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                    "bytes": p.stat().st_size,
                    "size": [size, size],
                }
            )
    write_manifest(tmp_path, {"files": files})
    return root


def write_manifest(tmp_path: Path, over: dict[str, Any], expected: dict[str, Any] | None = None) -> None:
    variant = {
        "kind": "paired",
        "layout": {"lr": "LR/*", "hr": "HR/*", "lr_suffix": "_LR", "hr_suffix": "_HR"},
        "expected": expected
        or {"count": 4, "lr_size": [8, 8], "hr_size": [32, 32], "hr_is_scale_x_lr": True},
        "sources": [{"id": "x", "kind": "archive", "url": "http://127.0.0.1:9/x", "filename": "x.zip"}],
    } | over
    d = tmp_path / "manifests"
    d.mkdir(exist_ok=True)
    m = {"name": "toyset", "scale": 4, "default_variant": "main", "variants": {"main": variant}}
    (d / "toyset.yaml").write_text(yaml.safe_dump(m))


def kinds(rep: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in rep.problems:
        out.setdefault(p.kind, []).append(p.message)
    return out


def test_a_good_set_passes_every_check(toy: Path) -> None:
    rep = verify_dataset("toyset")
    assert rep.ok, rep.format()
    assert (rep.n_lr, rep.n_hr) == (4, 4)
    text = rep.format()
    assert "count = 4" in text and "HR = 4 x LR" in text and "sha256 of the 8 files" in text and "OK" in text


def test_unpaired_count_and_missing_file(toy: Path) -> None:
    (toy / "HR" / "im2_HR.png").unlink()
    rep = verify_dataset("toyset")
    k = kinds(rep)
    assert k["unpaired"] == ["LR LR/im2_LR.png has no HR"]
    assert k["count"] == ["3 HR images, expected 4"]
    assert k["missing"] == ["HR/im2_HR.png is missing"]
    assert "FAILED: 3 problem(s)" in rep.format()


def test_wrong_size_and_checksum(toy: Path) -> None:
    Image.fromarray(np.zeros((30, 32, 3), np.uint8)).save(toy / "HR" / "im1_HR.png")
    rep = verify_dataset("toyset")
    k = kinds(rep)
    assert "HR HR/im1_HR.png is 32x30, expected 32x32" in k["size"]
    assert any("im1: HR 32x30 is not 4 x LR 8x8" in m for m in k["size"])
    assert any(m.startswith("HR/im1_HR.png:") for m in k["checksum"])
    assert not verify_dataset("toyset", checksums=False).ok  # sizes and bytes are still checked


def test_checksum_only_difference(toy: Path) -> None:
    p = toy / "LR" / "im0_LR.png"
    arr = np.asarray(Image.open(p)).copy()
    arr[0, 0, 0] ^= 1  # same size, maybe same byte count, different content
    Image.fromarray(arr).save(p)
    rep = verify_dataset("toyset")
    assert any("LR/im0_LR.png" in m for m in kinds(rep)["checksum"])
    unhashed = verify_dataset("toyset", checksums=False)
    assert not any("sha256" in p.message for p in unhashed.problems)


def test_unreadable_image_and_duplicate_ids(toy: Path) -> None:
    (toy / "LR" / "im3_LR.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(toy / "LR" / "im0_LR.jpg")
    k = kinds(verify_dataset("toyset", checksums=False))
    assert k["unreadable"] == ["LR/im3_LR.png is not a readable image"]
    assert k["duplicate"] == ["two files for one image id: im0: LR/im0_LR.jpg and LR/im0_LR.png"]


def test_expected_ids_and_the_fetch_time_record(toy: Path, tmp_path: Path) -> None:
    write_manifest(tmp_path, {}, {"count": 4, "ids": ["im0", "im1", "im2", "imX"]})
    k = kinds(verify_dataset("toyset"))
    assert k["ids"] == ["image id imX is missing", "image id im3 is not part of the set"]
    record = {"files": {"LR/im0_LR.png": "0" * 64, "HR/gone.png": "1" * 64}, "installed_at": "then"}
    (toy / INSTALL_RECORD).write_text(json.dumps(record))
    k = kinds(verify_dataset("toyset"))
    assert k["changed"] == [
        "HR/gone.png was removed after the fetch",
        "LR/im0_LR.png changed after the fetch",
    ]


def test_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRBENCH_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("SRBENCH_MANIFESTS", str(tmp_path / "manifests"))
    write_manifest(tmp_path, {})
    rep = verify_dataset("toyset")
    assert not rep.ok and "run `srbench data fetch toyset`" in rep.problems[0].message


def test_dataset_from_config_pairs_by_suffix_and_checks_the_count(toy: Path, tmp_path: Path) -> None:
    ds = dataset_from_config({"name": "toyset", "kind": "manifest", "limit": None})
    assert [s.id for s in ds.samples] == ["im0", "im1", "im2", "im3"]
    assert ds.samples[1].lr_path.name == "im1_LR.png" and ds.samples[1].hr_path.name == "im1_HR.png"
    assert ds.meta["manifest"] == "toyset" and ds.scale == 4
    (toy / "LR" / "im3_LR.png").unlink()
    (toy / "HR" / "im3_HR.png").unlink()
    with pytest.raises(Exception, match=r"3 images under .* expects 4.*srbench data verify toyset"):
        dataset_from_config({"name": "toyset"})
    assert len(dataset_from_config({"name": "toyset", "strict_count": False})) == 3
    other = tmp_path / "elsewhere"
    (other / "LR").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other / "LR" / "a_LR.png")
    with pytest.raises(Exception, match="no HR image for 1 LR image"):
        dataset_from_config({"name": "toyset", "root": str(other)})


# --------------------------------------------------------------------------------------- manifest rules


def _m(**variant: Any) -> dict[str, Any]:
    v = {
        "kind": "paired",
        "layout": {"lr": "a/*", "hr": "b/*"},
        "sources": [{"id": "s", "kind": "archive", "url": "http://x", "filename": "x.zip"}],
    } | variant
    return {"name": "okname", "scale": 4, "variants": {"main": v}}


@pytest.mark.parametrize(
    "data,match",
    [
        ({"scale": 4, "variants": {}}, "missing 'name'"),
        ({**_m(), "name": "Bad-Name"}, "lower-case"),
        ({**_m(), "scale": 0}, "scale must be a positive integer"),
        (_m(kind="both"), "must be paired or lr_only"),
        (_m(layout={"lr": "a/*"}), "needs an 'hr' glob"),
        (_m(sources=[]), "at least one source"),
        (_m(sources=[{"id": "s", "kind": "archive", "filename": "x.zip"}]), "needs 'url' unless"),
        (
            _m(sources=[{"id": "s", "kind": "archive", "url": "u", "filename": "x", "sha256": "abc"}]),
            "64 hex",
        ),
        (_m(sources=[{"id": "s", "kind": "archive", "url": "u", "filename": "../x"}]), "inside the dataset"),
        (_m(sources=[{"id": "s", "kind": "files", "url": "u"}]), "lists no files"),
        (_m(files=[{"path": "../../etc/passwd"}]), "inside the dataset"),
        (_m(files=[{"path": "/abs.png"}]), "inside the dataset"),
        (_m(expected={"count": -1}), "non-negative integer"),
        (_m(expected={"lr_size": [128]}), r"\[width, height\]"),
        (_m(expected={"count": 2, "ids": ["a"]}), "1 ids listed but count is 2"),
        ({**_m(), "default_variant": "nope"}, "is not a variant"),
        (_m(dataset_name="other"), "must carry the manifest's name"),
    ],
)
def test_malformed_manifests_are_refused_with_the_key(data: dict[str, Any], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        parse_manifest(data, "test.yaml")


def test_dataset_names_default_to_manifest_and_variant() -> None:
    data = _m()
    data["variants"]["crop"] = dict(data["variants"]["main"])
    m = parse_manifest(data)
    assert m.variant().dataset_name == "okname" and m.variant("crop").dataset_name == "okname_crop"
    with pytest.raises(ManifestError, match="no variant 'x'"):
        m.variant("x")


# ------------------------------------------------------------------------------- the shipped manifests


def test_shipped_manifests_are_valid_and_consistent() -> None:
    names = list_manifests()
    assert {"imagenet_test", "realsr", "drealsr", "realset80"} <= set(names), manifest_dir()
    datasets = {}
    for n in names:
        m = load_manifest(n)
        assert m.licence and m.citation and m.title, n
        for v in m.variants.values():
            datasets[v.dataset_name] = (m, v)
            assert v.description and v.sources, (n, v.name)
            if v.files:  # per-file facts: the listed files must be exactly what the layout and count say
                lr = [f for f in v.files if Path(f.path).match(v.layout.lr)]
                assert v.expected.count == len(lr), (n, v.name)
                assert all(f.sha256 and f.bytes and f.size for f in v.files), (n, v.name)
                if v.expected.lr_size:
                    assert {f.size for f in lr} == {v.expected.lr_size}
            for s in v.sources:
                if s.kind == "files":
                    assert (
                        s.url
                        and "/blob/" not in s.url
                        and s.url.startswith("https://raw.githubusercontent.com/")
                    )
    # every dataset has a Hydra config that resolves to the same manifest variant, and the reverse
    confs = {p.stem: yaml.safe_load(p.read_text()) for p in (REPO_CONF / "dataset").glob("*.yaml")}
    for name, (m, v) in datasets.items():
        assert name in confs, f"conf/dataset/{name}.yaml missing"
        c = confs[name]
        assert (c["kind"], c["name"], c["manifest"], c["variant"]) == ("manifest", name, m.name, v.name)
        assert resolve(name)[1] is not None and resolve(name)[1].name == v.name


def test_shipped_facts_that_are_known() -> None:
    rs80 = load_manifest("realset80").variant()
    assert rs80.kind == "lr_only" and rs80.expected.count == 80 and len(rs80.files) == 80
    small = sorted(f.path for f in rs80.files if min(f.size) < 128)  # type: ignore[arg-type]
    assert small == ["20.jpg", "48.jpg", "49.jpg", "52.jpg", "chip.png", "comic1.png"]
    assert [f.path for f in rs80.files if f.mode == "L"] == ["46.jpg"]
    assert sorted(f.path for f in rs80.files if f.mode == "RGBA") == ["flower2.jpeg", "penguin1.png"]
    crop = load_manifest("drealsr").variant("crop128")
    assert crop.dataset_name == "drealsr_crop128" and crop.expected.count == 93 and len(crop.files) == 186
    assert load_manifest("realsr").variant("crop128").expected.count == 100
    # what could not be verified stays null, never invented
    for name in ("imagenet_test", "realsr"):
        m = load_manifest(name)
        src = m.variant().sources[0]
        assert src.sha256 is None and src.bytes is None
