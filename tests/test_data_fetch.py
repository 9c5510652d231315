"""srbench data fetch: resumable, checksummed download from a local HTTP server; safe extraction; install."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from srbench.data.cli import data_cli
from srbench.data.fetch import (
    ChecksumError,
    FetchError,
    UnsafeArchiveError,
    download,
    fetch_dataset,
    safe_extract,
    sha256_file,
)
from srbench.data.folders import DatasetError
from srbench.data.manifest import dataset_from_config

# ------------------------------------------------------------------------------------ local HTTP server


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        self.protocol_version = "HTTP/1.1" if self.server.chunked else "HTTP/1.0"
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        item = self.server.files.get(self.path)
        if item is None:
            self.send_response(404)
            self.end_headers()
            return
        body, ctype = item
        if rng and not self.server.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            part = body[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            part = body
            self.send_response(200)
        self.send_header("Content-Type", ctype)
        if self.server.chunked:  # HTTP/1.1 chunked body: a cut-off shows as a missing final chunk
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            cut = part[: self.server.drop_after] if self.server.drop_after is not None else part
            self.wfile.write(f"{len(cut):x}\r\n".encode() + cut + b"\r\n")
            if self.server.drop_after is None:
                self.wfile.write(b"0\r\n\r\n")
            self.server.drop_after = None
            self.close_connection = True
            return
        if self.server.no_length:  # close-delimited body: the end of the connection is the end of the file
            self.end_headers()
            cut = part[: self.server.drop_after] if self.server.drop_after is not None else part
            self.server.drop_after = None
            self.wfile.write(cut)
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if self.server.drop_after is not None:  # a dropped connection: part of the promised bytes
            part, self.server.drop_after = part[: self.server.drop_after], None
            self.close_connection = True
        # counted before the write: the client may return (and the test read this) as soon as it has the bytes
        self.server.bytes_sent += len(part)
        self.wfile.write(part)

    def log_message(self, *args: Any) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.httpd: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files, self.httpd.requests = {}, []
        self.httpd.ignore_range, self.httpd.bytes_sent, self.httpd.drop_after = False, 0, None
        self.httpd.no_length = self.httpd.chunked = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def add(self, path: str, body: bytes, ctype: str = "application/octet-stream") -> str:
        self.httpd.files[path] = (body, ctype)
        return self.url + path

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    t = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    t.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SRBENCH_MANIFESTS", str(tmp_path / "manifests"))


# ---------------------------------------------------------------------------------------------- helpers


def _png(seed: int, size: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _tar(members: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return buf.getvalue()


def _link(name: str, target: str, hard: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pairs(n: int = 3) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        out[f"wrapper/SetX/test_LR/img{i}.png"] = _png(i, 8)
        out[f"wrapper/SetX/test_HR/img{i}.png"] = _png(100 + i, 32)
    out["wrapper/OtherSet/test_LR/junk.png"] = _png(999, 8)  # must be left out by strip_to
    return out


def _write_manifest(tmp_path: Path, variant: dict[str, Any], name: str = "toyset") -> None:
    d = tmp_path / "manifests"
    d.mkdir(exist_ok=True)
    m = {
        "name": name,
        "title": "Toy set",
        "scale": 4,
        "default_variant": "main",
        "variants": {"main": variant},
    }
    (d / f"{name}.yaml").write_text(yaml.safe_dump(m))


def _archive_variant(url: str, sha: str | None, n: int = 3, **src: Any) -> dict[str, Any]:
    return {
        "kind": "paired",
        "description": "toy",
        "layout": {"lr": "test_LR/*", "hr": "test_HR/*"},
        "expected": {"count": n, "lr_size": [8, 8], "hr_size": [32, 32], "hr_is_scale_x_lr": True},
        "sources": [
            {
                "id": "web",
                "kind": "archive",
                "url": url,
                "filename": "toy.tar.gz",
                "sha256": sha,
                "strip_to": "SetX",
            }
            | src
        ],
    }


# --------------------------------------------------------------------------------------------- download


def test_download_verifies_checksum_and_skips_a_finished_file(server: Server, tmp_path: Path) -> None:
    body = _tar(_pairs())
    url = server.add("/toy.tar.gz", body)
    dest = tmp_path / "dl" / "toy.tar.gz"
    digest = download(url, dest, sha256=_sha(body), expected_bytes=len(body), progress=False)
    assert digest == _sha(body) and dest.read_bytes() == body
    assert not dest.with_name("toy.tar.gz.part").exists()
    n = len(server.requests)
    assert download(url, dest, sha256=_sha(body), progress=False) == _sha(body)
    assert len(server.requests) == n  # already there with the right checksum: no request


def test_download_resumes_a_partial_file_with_a_range_request(server: Server, tmp_path: Path) -> None:
    body = bytes(np.random.default_rng(1).integers(0, 256, size=300_000, dtype=np.uint8))
    url = server.add("/big.bin", body)
    dest = tmp_path / "big.bin"
    cut = 123_457
    dest.with_name("big.bin.part").write_bytes(body[:cut])  # an interrupted earlier download
    download(url, dest, sha256=_sha(body), progress=False)
    assert dest.read_bytes() == body
    assert server.requests == [("/big.bin", f"bytes={cut}-")]
    assert server.httpd.bytes_sent == len(body) - cut  # only the missing tail travelled


def test_a_dropped_connection_keeps_the_bytes_and_the_next_call_resumes(
    server: Server, tmp_path: Path
) -> None:
    body = bytes(np.random.default_rng(2).integers(0, 256, size=200_000, dtype=np.uint8))
    url = server.add("/big.bin", body)
    server.httpd.drop_after = 70_000
    dest = tmp_path / "big.bin"
    with pytest.raises(FetchError, match=r"connection lost after 70000 bytes of 200000.*rerun"):
        download(url, dest, sha256=_sha(body), progress=False)
    assert dest.with_name("big.bin.part").stat().st_size == 70_000 and not dest.exists()
    download(url, dest, sha256=_sha(body), progress=False)
    assert dest.read_bytes() == body and server.requests[-1] == ("/big.bin", "bytes=70000-")


def test_download_starts_over_when_the_server_ignores_range(server: Server, tmp_path: Path) -> None:
    body = b"0123456789" * 1000
    url = server.add("/f.bin", body)
    server.httpd.ignore_range = True
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(b"XXXXX")  # stale bytes that must not survive
    download(url, dest, sha256=_sha(body), progress=False)
    assert dest.read_bytes() == body


def test_download_of_an_already_complete_part_file(server: Server, tmp_path: Path) -> None:
    body = b"abc" * 100
    url = server.add("/done.bin", body)
    dest = tmp_path / "done.bin"
    dest.with_name("done.bin.part").write_bytes(body)  # all bytes arrived, the rename did not happen
    download(url, dest, sha256=_sha(body), progress=False)  # server answers 416 to the range
    assert dest.read_bytes() == body


def test_checksum_mismatch_raises_and_removes_the_bad_file(server: Server, tmp_path: Path) -> None:
    url = server.add("/f.bin", b"the real content")
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match=r"sha256 .* differs from the manifest's"):
        download(url, dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not dest.with_name("f.bin.part").exists()
    with pytest.raises(ChecksumError, match="bytes, the manifest says 3"):
        download(url, dest, expected_bytes=3, progress=False)


def test_a_web_page_instead_of_the_file_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    url = server.add("/drive", b"<html>quota exceeded</html>", ctype="text/html; charset=utf-8")
    with pytest.raises(FetchError, match=r"web page instead of .*--from PATH"):
        download(url, tmp_path / "x.zip", progress=False)


def test_http_errors_and_unreachable_hosts(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="HTTP 404"):
        download(server.url + "/nothing", tmp_path / "n.bin", progress=False)
    with pytest.raises(FetchError, match="cannot connect"):
        download("http://127.0.0.1:9/none", tmp_path / "n.bin", progress=False, timeout=2)


# ------------------------------------------------------------------------------------- safe extraction


def _assert_nothing_escaped(tmp_path: Path, target: Path) -> None:
    assert not any(target.rglob("*")), "a refused archive must not be partly extracted"
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "outside").exists()


@pytest.mark.parametrize(
    "members,extra,match",
    [
        ({"ok.png": b"1", "../evil.txt": b"x"}, [], "climbs out"),
        ({"ok.png": b"1", "/tmp/abs-evil.txt": b"x"}, [], "absolute path"),
        ({"ok.png": b"1"}, [_link("link", "../../outside")], "points outside"),
        ({"ok.png": b"1"}, [_link("link", "/etc/passwd")], "points outside"),
        ({"ok.png": b"1"}, [_link("sub/link", "../../x")], "points outside"),
        ({"ok.png": b"1"}, [_link("hard", "../evil.txt", hard=True)], "climbs out"),
    ],
)
def test_tar_traversal_and_outside_links_are_refused(
    tmp_path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo], match: str
) -> None:
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(_tar(members, extra))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(archive, target)
    _assert_nothing_escaped(tmp_path, target)


def test_tar_device_members_are_refused(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("dev")
    dev.type = tarfile.CHRTYPE
    archive = tmp_path / "dev.tar.gz"
    archive.write_bytes(_tar({"a.png": b"1"}, [dev]))
    with pytest.raises(UnsafeArchiveError, match="device"):
        safe_extract(archive, tmp_path / "t")


def _zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "entries,match",
    [
        ([("ok.png", b"1", None), ("../evil.txt", b"x", None)], "climbs out"),
        ([("ok.png", b"1", None), ("/abs-evil.txt", b"x", None)], "absolute path"),
        ([("ok.png", b"1", None), ("..\\evil.txt", b"x", None)], "climbs out"),
        ([("ok.png", b"1", None), ("C:/evil.txt", b"x", None)], "absolute path"),
        ([("link", b"../../outside", stat.S_IFLNK | 0o777), ("ok.png", b"1", None)], "points outside"),
        ([("link", b"/etc/passwd", stat.S_IFLNK | 0o777)], "points outside"),
    ],
)
def test_zip_traversal_and_outside_symlinks_are_refused(
    tmp_path: Path, entries: list[tuple[str, bytes, int | None]], match: str
) -> None:
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip(entries))
    target = tmp_path / "target"
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(archive, target)
    _assert_nothing_escaped(tmp_path, target)


def test_safe_members_extract_with_strip_to_and_inside_links(tmp_path: Path) -> None:
    files = _pairs(2)
    archive = tmp_path / "ok.tar.gz"
    archive.write_bytes(_tar(files, [_link("wrapper/SetX/test_LR/alias.png", "img0.png")]))
    target = tmp_path / "t"
    written = safe_extract(archive, target, strip_to="SetX")
    assert sorted(p.relative_to(target).as_posix() for p in written) == [
        "test_HR/img0.png",
        "test_HR/img1.png",
        "test_LR/img0.png",
        "test_LR/img1.png",
    ]
    assert (target / "test_LR" / "img1.png").read_bytes() == files["wrapper/SetX/test_LR/img1.png"]
    assert (target / "test_LR" / "alias.png").is_symlink()  # a link inside the target is fine
    assert not (target / "test_LR" / "junk.png").exists()  # OtherSet was left out
    zarchive = tmp_path / "ok.zip"
    zarchive.write_bytes(_zip([(k, v, None) for k, v in files.items()]))
    zt = tmp_path / "z"
    safe_extract(zarchive, zt, include=["*/SetX/*"])
    assert sorted(p.relative_to(zt).as_posix() for p in zt.rglob("*.png")) == [
        f"wrapper/SetX/{d}/img{i}.png" for d in ("test_HR", "test_LR") for i in range(2)
    ]


def test_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "x.zip"
    p.write_bytes(b"not an archive at all")
    with pytest.raises(FetchError, match="neither a zip nor a tar"):
        safe_extract(p, tmp_path / "t")


# -------------------------------------------------------------------------------------- whole install


def test_fetch_installs_verifies_and_builds_the_dataset(server: Server, tmp_path: Path) -> None:
    body = _tar(_pairs(3))
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.tar.gz", body), _sha(body)))
    res = fetch_dataset("toyset", progress=False)
    assert res.installed and res.report.ok, res.report.format()
    root = tmp_path / "data" / "toyset" / "main"
    assert res.root == root and sorted(p.name for p in (root / "test_LR").iterdir()) == [
        "img0.png",
        "img1.png",
        "img2.png",
    ]
    assert not list((tmp_path / "data" / "toyset").glob(".*staging*"))
    ds = dataset_from_config({"name": "toyset", "kind": "manifest"})
    assert len(ds) == 3 and ds.has_hr and ds.samples[0].hr_path == root / "test_HR" / "img0.png"
    n = len(server.requests)
    again = fetch_dataset("toyset", progress=False)
    assert not again.installed and len(server.requests) == n  # already installed: no network
    # a file damaged after the fetch is caught by the install record
    (root / "test_HR" / "img1.png").write_bytes(_png(5, 32))
    rep = fetch_dataset("toyset", progress=False).report
    assert not rep.ok and any(p.kind == "changed" and "img1.png" in p.message for p in rep.problems)


def test_fetch_with_a_wrong_published_checksum_installs_nothing(server: Server, tmp_path: Path) -> None:
    body = _tar(_pairs(3))
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.tar.gz", body), "f" * 64))
    with pytest.raises(ChecksumError):
        fetch_dataset("toyset", progress=False)
    assert not (tmp_path / "data" / "toyset" / "main").exists()


def test_fetch_of_an_unsafe_archive_installs_nothing(server: Server, tmp_path: Path) -> None:
    body = _tar({"wrapper/SetX/test_LR/a.png": _png(0, 8), "wrapper/SetX/../../../evil.txt": b"x"})
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.tar.gz", body), None))
    with pytest.raises(UnsafeArchiveError):
        fetch_dataset("toyset", progress=False)
    assert not (tmp_path / "data" / "toyset" / "main").exists() and not (tmp_path / "evil.txt").exists()


def test_fetch_per_file_source_and_unverified_archive_note(server: Server, tmp_path: Path) -> None:
    files = {"a b.png": _png(1, 16), "c.png": _png(2, 20)}
    for name, data in files.items():
        server.add("/set/" + name.replace(" ", "%20"), data)
    variant = {
        "kind": "lr_only",
        "layout": {"lr": "*"},
        "expected": {"count": 2},
        "sources": [{"id": "gh", "kind": "files", "url": server.url + "/set"}],
        "files": [{"path": k, "sha256": _sha(v), "bytes": len(v)} for k, v in files.items()],
    }
    _write_manifest(tmp_path, variant)
    res = fetch_dataset("toyset", progress=False)
    assert res.report.ok, res.report.format()
    assert (res.root / "a b.png").read_bytes() == files["a b.png"]
    ds = dataset_from_config({"name": "toyset"})
    assert [s.id for s in ds.samples] == ["a b", "c"] and not ds.has_hr


def test_manual_source_and_from_path(tmp_path: Path) -> None:
    variant = _archive_variant("", None, manual=True, page="https://example.org/dataset")
    del variant["sources"][0]["url"]
    _write_manifest(tmp_path, variant)
    with pytest.raises(
        FetchError, match=r"no automatic download(.|\n)*https://example.org/dataset(.|\n)*--from"
    ):
        fetch_dataset("toyset", progress=False)
    archive = tmp_path / "downloaded.tar.gz"
    archive.write_bytes(_tar(_pairs(3)))
    res = fetch_dataset("toyset", from_path=archive, progress=False)
    assert res.installed and res.report.ok and res.unverified  # no published checksum: reported
    unpacked = tmp_path / "unpacked"
    safe_extract(archive, unpacked)
    res = fetch_dataset("toyset", from_path=unpacked, force=True, progress=False)
    assert res.report.ok and (res.root / "test_HR" / "img2.png").is_file()


def test_missing_dataset_error_names_the_fetch_command(tmp_path: Path) -> None:
    _write_manifest(tmp_path, _archive_variant("http://127.0.0.1:9/x", None))
    with pytest.raises(DatasetError, match="srbench data fetch toyset"):
        dataset_from_config({"name": "toyset", "kind": "manifest"})


def test_cli_fetch_verify_list(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = _tar(_pairs(3))
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.tar.gz", body), _sha(body)))
    assert data_cli(["fetch", "toyset", "--no-progress"]) == 0
    assert data_cli(["verify", "toyset"]) == 0
    assert data_cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "toyset: installed at" in out and "OK" in out and "toyset" in out.splitlines()[-1]
    assert data_cli(["where", "toyset"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "data" / "toyset" / "main")
    (tmp_path / "data" / "toyset" / "main" / "test_HR" / "img0.png").unlink()
    assert data_cli(["verify", "toyset"]) == 1
    assert "LR test_LR/img0.png has no HR" in capsys.readouterr().out
    assert data_cli(["fetch", "nosuchset"]) == 1
    assert "no dataset or manifest named 'nosuchset'" in capsys.readouterr().err


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"hello")
    assert sha256_file(p) == _sha(b"hello")


# ------------------------------------------------------------------ hostile archives, names and downloads


def _tar_entries(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    """A tar with the same entries as :func:`_zip`: (name, data, mode); S_IFLNK mode = symlink to data."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, mode in entries:
            info = tarfile.TarInfo(name)
            if mode is not None and stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, data.decode()
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_LINK = stat.S_IFLNK | 0o777
# `a -> .`, then `a/a/a/esc -> ../../../X` (lexically inside: three folders down, three up), then a file `esc`
_CHAIN = [("a", b".", _LINK), ("a/a/a/esc", b"../../../X", _LINK), ("esc", b"pwned", None)]
# `l -> s/..` is inside while `s` does not exist; `s -> .` (inside too) then makes `l` lead to the parent
_LATE = [("l", b"s/..", _LINK), ("s", b".", _LINK), ("ok.png", b"1", None)]
# `f -> s/../X` is inside while `s` does not exist; `s -> .` makes it lead to ../X; then a file `f`
_ONTO = [("f", b"s/../X", _LINK), ("s", b".", _LINK), ("f", b"pwned", None)]
# `esc -> a/../X` with `a -> .`: inside by the letters, outside on disk
_VIA = [("a", b".", _LINK), ("esc", b"a/../X", _LINK)]


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("fmt", ["zip", "tar"])
@pytest.mark.parametrize(
    "entries,match",
    [
        (_CHAIN, r"'a/a/a/esc'.*written through 'a', which is a link"),
        (_LATE, r"'l'.*leads outside the target after extraction"),
        (_ONTO, r"'f'.*written onto a link"),
        (_VIA, r"'esc'.*points outside the target"),
    ],
)
def test_symlink_chains_cannot_write_or_lead_outside(
    tmp_path: Path, fmt: str, entries: list[tuple[str, bytes, int | None]], match: str
) -> None:
    """Links that pass a lexical check but lead outside on disk: refused at write time, nothing left."""
    box = tmp_path / "box"
    archive = box / f"bad.{fmt}"
    box.mkdir()
    archive.write_bytes(_zip(entries) if fmt == "zip" else _tar_entries(entries))
    target = box / "data" / "target"
    with pytest.raises(UnsafeArchiveError, match=match):
        safe_extract(archive, target)
    assert not target.exists() and not list((box / "data").iterdir())  # the private folder is gone too
    assert not (box / "X").exists() and not (box / "data" / "X").exists() and not (tmp_path / "X").exists()


def test_zip_symlink_chain_through_fetch_reports_nothing_installed(server: Server, tmp_path: Path) -> None:
    body = _zip([(f"wrapper/SetX/{n}", d, m) for n, d, m in _CHAIN])
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.zip", body), None, filename="toy.zip"))
    with pytest.raises(UnsafeArchiveError):
        fetch_dataset("toyset", progress=False)
    data = tmp_path / "data"
    assert not (data / "toyset" / "main").exists() and not (data / "X").exists()
    assert not (tmp_path / "X").exists() and not list(tmp_path.rglob("X"))


def test_a_zip_bomb_is_refused_by_the_default_limits_naming_the_member(tmp_path: Path, monkeypatch) -> None:
    """The issue's case: ~200 KB of deflated zeros that would expand to 200 MiB (ratio ~1000), refused from
    its declared sizes before a byte is written."""
    from srbench.data import fetch as fetch_mod

    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("readme.txt", b"hello")
        with zf.open("zeros.bin", "w") as f:
            block = bytes(1 << 20)
            for _ in range(200):
                f.write(block)
    assert archive.stat().st_size < 250_000

    def no_write(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bomb must be refused before anything is written")

    monkeypatch.setattr(fetch_mod._NoFollowWriter, "write", no_write)
    with pytest.raises(UnsafeArchiveError, match=r"'zeros.bin'.*more than 100 times.*archive bomb"):
        safe_extract(archive, tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_extract_limits_are_configurable_total_ratio_and_members(tmp_path: Path) -> None:
    from srbench.data.fetch import ExtractLimits

    files = {f"set/{i}.bin": bytes(64 * 1024) for i in range(8)}  # 512 KiB of zeros, gz-compressed
    archive = tmp_path / "z.tar.gz"
    archive.write_bytes(_tar(files))
    small = ExtractLimits(max_bytes=300 * 1024)
    with pytest.raises(UnsafeArchiveError, match=r"'set/4.bin' takes the expanded size past 307200 bytes"):
        safe_extract(archive, tmp_path / "a", limits=small)
    ratio = ExtractLimits(max_ratio=20, ratio_floor=100 * 1024)
    with pytest.raises(UnsafeArchiveError, match=r"more than 20 times"):
        safe_extract(archive, tmp_path / "b", limits=ratio)
    with pytest.raises(UnsafeArchiveError, match=r"more than 5 members"):
        safe_extract(archive, tmp_path / "c", limits=ExtractLimits(max_members=5))
    assert len(safe_extract(archive, tmp_path / "d")) == 8  # the defaults let it through
    assert not any((tmp_path / x).exists() for x in "abc")


def test_writes_count_real_bytes_not_the_declared_ones(tmp_path: Path, monkeypatch) -> None:
    """Declared sizes are checked before writing; the bytes actually written are counted as well."""
    from srbench.data import fetch as fetch_mod

    archive = tmp_path / "z.zip"
    archive.write_bytes(_zip([("a.bin", bytes(300_000), None)]))
    monkeypatch.setattr(fetch_mod, "_check_declared", lambda *a, **k: None)  # a header that lies
    with pytest.raises(UnsafeArchiveError, match=r"'a.bin' takes the expanded size past 100000 bytes"):
        safe_extract(archive, tmp_path / "t", limits=fetch_mod.ExtractLimits(max_bytes=100_000))


def test_extracted_and_downloaded_files_follow_the_umask(server: Server, tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    info = zipfile.ZipInfo("d/f.png")
    info.external_attr = (stat.S_IFREG | 0o600) << 16  # the archive asks for 0600: the umask decides
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, b"1")
    archive.write_bytes(buf.getvalue())
    old = os.umask(0o022)
    try:
        safe_extract(archive, tmp_path / "t")
        download(server.add("/f.bin", b"abc"), tmp_path / "dl" / "f.bin", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t" / "d" / "f.png").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "t" / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "dl" / "f.bin").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "variants,match",
    [
        ({"../../victim": None}, r"variant name '../../victim' cannot be a folder name"),
        ({"main": "../victim"}, r"dataset_name '../victim' cannot be a folder name"),
        ({".hidden": None}, r"starts with '.'"),
    ],
)
def test_a_manifest_name_that_is_a_path_is_refused_and_nothing_outside_is_touched(
    tmp_path: Path, variants: dict[str, str | None], match: str
) -> None:
    """A variant named ``../../victim`` once made fetch delete and replace a folder outside the data root."""
    from srbench.data.manifest import ManifestError

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    d = tmp_path / "manifests"
    d.mkdir()
    body = _tar(_pairs(3))
    variant = _archive_variant("http://127.0.0.1:9/toy.tar.gz", _sha(body))
    m = {"name": "toyset", "scale": 4, "variants": {}}
    for key, dataset_name in variants.items():
        m["variants"][key] = variant | ({"dataset_name": dataset_name} if dataset_name else {})
    m["default_variant"] = next(iter(variants))
    (d / "toyset.yaml").write_text(yaml.safe_dump(m))
    archive = tmp_path / "toy.tar.gz"
    archive.write_bytes(body)
    with pytest.raises((FetchError, ManifestError), match=match):
        fetch_dataset("toyset", from_path=archive, progress=False)
    assert (victim / "precious.txt").read_text() == "keep me"


def test_variant_root_refuses_names_that_are_paths() -> None:
    from srbench.data.manifest import variant_root
    from srbench.names import UnsafeName

    for name, variant in (("..", "x"), ("a", "../b"), ("a/b", "c"), ("a", "")):
        with pytest.raises(UnsafeName, match="cannot be used as a file or folder name"):
            variant_root(name, variant)


def test_a_cut_off_download_without_length_or_checksum_is_not_reused(server: Server, tmp_path: Path) -> None:
    """No Content-Length, no checksum, connection closed early: the truncated archive fails to extract, is
    deleted, and the next fetch downloads it again; --force also downloads again."""
    body = _tar(_pairs(3))
    url = server.add("/toy.tar.gz", body)
    _write_manifest(tmp_path, _archive_variant(url, None))
    server.httpd.no_length, server.httpd.drop_after = True, len(body) // 2
    cached = tmp_path / "data" / "_downloads" / "toyset" / "toy.tar.gz"
    with pytest.raises(FetchError, match=r"download may have been cut off: it was deleted; rerun"):
        fetch_dataset("toyset", progress=False)
    assert not cached.exists() and not (tmp_path / "data" / "toyset" / "main").exists()
    res = fetch_dataset("toyset", progress=False)  # the server now sends everything
    assert res.installed and res.report.ok and cached.read_bytes() == body
    n = len(server.requests)
    res = fetch_dataset("toyset", progress=False, force=True)
    assert res.installed and len(server.requests) == n + 1  # --force did not reuse the cached file


def test_a_cut_off_chunked_download_stays_part(server: Server, tmp_path: Path) -> None:
    body = bytes(np.random.default_rng(3).integers(0, 256, size=50_000, dtype=np.uint8))
    url = server.add("/big.bin", body)
    server.httpd.chunked, server.httpd.drop_after = True, 20_000
    dest = tmp_path / "big.bin"
    with pytest.raises(FetchError, match=r"connection lost after 20000 bytes.*kept"):
        download(url, dest, progress=False)
    assert not dest.exists() and dest.with_name("big.bin.part").stat().st_size == 20_000
    server.httpd.chunked = False
    download(url, dest, progress=False)
    assert dest.read_bytes() == body


def test_download_refuses_other_url_schemes(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with pytest.raises(FetchError, match="only http and https"):
        download(secret.as_uri(), tmp_path / "copy.txt", progress=False)
    assert not (tmp_path / "copy.txt").exists()


def test_cli_limits_reach_the_extraction(server: Server, tmp_path: Path, capsys) -> None:
    body = _tar(_pairs(3))
    _write_manifest(tmp_path, _archive_variant(server.add("/toy.tar.gz", body), _sha(body)))
    assert data_cli(["fetch", "toyset", "--no-progress", "--max-members", "2"]) == 1
    assert "more than 2 members" in capsys.readouterr().err
    assert not (tmp_path / "data" / "toyset" / "main").exists()
    assert data_cli(["fetch", "toyset", "--no-progress"]) == 0  # the defaults let the real set through
