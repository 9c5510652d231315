"""Fetch a test set into the data cache: download (resumable), checksum, safe extraction, install record.

``srbench data fetch NAME`` = :func:`fetch_dataset`.  The data lands in ``<data_dir>/<manifest>/<variant>/``
(``$SRBENCH_DATA``, default under the user cache), never in the repository.  Downloads are kept in
``<data_dir>/_downloads/`` so an interrupted fetch resumes (HTTP ``Range``) and a re-install needs no network.

Safety: an archive is checked member by member before anything is written.  An absolute path, a ``..``
component, a link (symbolic or hard) whose target leaves the extraction folder, or a device/FIFO member
makes the whole archive refused (:class:`UnsafeArchiveError`).  Tar members are then extracted with
``tarfile``'s ``filter="data"`` as a second line of defence; zip members are written by this module,
each path re-checked after resolution.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from srbench.atomic import tar_data_filter
from srbench.data.manifest import (
    INSTALL_RECORD,
    Manifest,
    ManifestError,
    Source,
    Variant,
    resolve,
    variant_root,
)
from srbench.interface import SRBenchError
from srbench.paths import data_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "srbench-data-fetch"


class FetchError(SRBenchError):
    """A download or an installation failed; the message says what to do next."""


class ChecksumError(FetchError):
    """A file's sha256 (or byte count) differs from the manifest's."""


class UnsafeArchiveError(FetchError):
    """An archive member would land outside the target folder (or is a device file): nothing was extracted."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- download


def _progress(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from srbench.progress import progress  # a terminal only, and not with --quiet

    return progress(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable_if=not enabled,
    )


def _open(url: str, start: int, timeout: float) -> Any:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    expected_bytes: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> str:
    """Download ``url`` to ``dest`` and return the file's sha256.

    Bytes go to ``dest + ".part"`` first; a later call resumes it with an HTTP ``Range`` request (a server
    that ignores ranges makes it start over).  A finished ``dest`` with the right checksum is not fetched
    again.  A size or sha256 mismatch raises :class:`ChecksumError` and deletes the bad bytes, so the next
    call starts clean.  A web page where a file was expected (Google Drive's quota or confirmation page) is
    a :class:`FetchError` that says so.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        digest = sha256_file(dest)
        if sha256 is None or digest == sha256:
            return digest
        log.warning("%s: checksum differs from the manifest, downloading it again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    if expected_bytes is not None and start > expected_bytes:
        part.unlink()
        start = 0
    try:
        resp = _open(url, start, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the partial file is (at least) complete
            resp = None
        else:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{url}: cannot connect ({reason}); rerun the same command to resume") from exc
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            ctype = resp.headers.get("Content-Type", "") or ""
            if ctype.split(";")[0].strip().lower() == "text/html" and dest.suffix.lower() not in (
                ".html",
                ".htm",
            ):
                raise FetchError(
                    f"{url}: the server sent a web page instead of {dest.name} (a sign-in, quota or "
                    "confirmation page). Download the file in a browser and pass it with --from PATH."
                )
            if start and status == 206:
                crange = resp.headers.get("Content-Range", "")
                if not crange.startswith(f"bytes {start}-"):
                    raise FetchError(
                        f"{url}: server answered range {crange!r} to a request from byte {start}"
                    )
                mode = "ab"
            else:  # 200: a fresh start (or a server that ignores Range)
                if start:
                    log.info("%s: server ignores Range; downloading from the start", url)
                start, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            promised = int(length) if length and length.isdigit() else None
            total = start + promised if promised is not None else expected_bytes
            got = 0
            with open(part, mode) as fh, _progress(total, start, dest.name, progress) as bar:
                try:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        fh.write(block)
                        got += len(block)
                        bar.update(len(block))
                except (OSError, http.client.HTTPException) as exc:  # the bytes so far stay in .part
                    cause: BaseException | None = exc
                else:
                    cause = None
            # a dropped connection can also look like a clean end: compare with what was promised
            if cause is not None or (promised is not None and got < promised):
                raise FetchError(
                    f"{url}: connection lost after {start + got} bytes"
                    + (f" of {start + promised}" if promised is not None else "")
                    + "; the bytes so far are kept: rerun the same command to resume"
                ) from cause
    size = part.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        if size < expected_bytes:
            raise FetchError(
                f"{url}: got {size} of {expected_bytes} bytes (connection dropped?); rerun to resume"
            )
        part.unlink()
        raise ChecksumError(
            f"{url}: {size} bytes, the manifest says {expected_bytes}; the bad file was removed"
        )
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise ChecksumError(
            f"{url}: sha256 {digest} differs from the manifest's {sha256}; the bad file was removed "
            "(a changed upstream file or a corrupted transfer)"
        )
    os.replace(part, dest)
    return digest


# ----------------------------------------------------------------------------------- safe extraction


def _clean_name(name: str, archive: Path) -> PurePosixPath:
    """A member name as a relative POSIX path; refuses absolute paths, drive letters and ``..``."""
    raw = name.replace("\\", "/")
    p = PurePosixPath(raw)
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":") or p.is_absolute():
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; nothing was extracted")
    if ".." in p.parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} climbs out with '..'; nothing was extracted")
    return PurePosixPath(*[part for part in p.parts if part not in ("", ".")])


def _inside(base: PurePosixPath, link: str) -> bool:
    """Does ``link`` (relative to the folder holding ``base``) stay inside the extraction root?"""
    if link.startswith("/") or (len(link) > 1 and link[1] == ":"):
        return False
    depth = 0
    for part in (*base.parent.parts, *PurePosixPath(link.replace("\\", "/")).parts):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def _mapper(strip_to: str | None, include: Sequence[str]) -> Callable[[PurePosixPath], PurePosixPath | None]:
    """Member path -> installed path (None = skip): ``include`` filters, ``strip_to`` re-roots."""

    def f(p: PurePosixPath) -> PurePosixPath | None:
        s = p.as_posix()
        if include and not any(fnmatch.fnmatch(s, pat) or fnmatch.fnmatch(s + "/", pat) for pat in include):
            return None
        if strip_to:
            if strip_to not in p.parts:
                return None
            i = p.parts.index(strip_to)
            rest = p.parts[i + 1 :]
            return PurePosixPath(*rest) if rest else None
        return p

    return f


def archive_format(path: Path) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise FetchError(f"{path}: neither a zip nor a tar archive")


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    strip_to: str | None = None,
    include: Sequence[str] = (),
) -> list[Path]:
    """Extract a zip or tar (any compression) into ``target``; returns the files written.

    Every member is checked first (see the module docstring); one unsafe member refuses the archive.
    ``include`` keeps members matching one of the fnmatch patterns; ``strip_to`` keeps members below the
    first path component of that name and re-roots them there.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    mapper = _mapper(strip_to, include)
    fmt = archive_format(archive)
    return _extract_zip(archive, target, mapper) if fmt == "zip" else _extract_tar(archive, target, mapper)


def _members_bar(members: list[Any], archive: Path) -> Any:
    """The members to extract, with a progress bar on a terminal (srbench.progress)."""
    from srbench.progress import progress

    return progress(members, total=len(members), desc=f"extract {archive.name}", unit="file")


def _extract_tar(
    archive: Path, target: Path, mapper: Callable[[PurePosixPath], PurePosixPath | None]
) -> list[Path]:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        renamed: dict[str, str] = {}
        for m in members:
            name = _clean_name(m.name, archive)
            if m.isdev() or m.isfifo():
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a device or FIFO; nothing was extracted"
                )
            if m.issym() and not _inside(name, m.linkname):
                raise UnsafeArchiveError(
                    f"{archive}: symlink {m.name!r} -> {m.linkname!r} points outside the target; "
                    "nothing was extracted"
                )
            if m.islnk():
                _clean_name(m.linkname, archive)  # hard links name another member: same rules
            new = mapper(name)
            if new is not None:
                renamed[m.name] = new.as_posix()
        chosen = []
        for m in members:
            if m.name not in renamed:
                continue
            new_m = m.replace(name=renamed[m.name], deep=False)
            if m.islnk():
                if m.linkname not in renamed:
                    raise UnsafeArchiveError(
                        f"{archive}: hard link {m.name!r} targets a member that is not extracted"
                    )
                new_m = new_m.replace(linkname=renamed[m.linkname], deep=False)
            elif m.issym() and not _inside(PurePosixPath(renamed[m.name]), m.linkname):
                raise UnsafeArchiveError(
                    f"{archive}: symlink {m.name!r} -> {m.linkname!r} leaves the target after re-rooting"
                )
            chosen.append(new_m)
        try:
            members = _members_bar(chosen, archive)
            tf.extractall(target, members=members, filter=tar_data_filter)  # "data", modes from the umask
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"{archive}: {exc}; extraction stopped") from exc
    return sorted(target / m.name for m in chosen if m.isfile())


def _extract_zip(
    archive: Path, target: Path, mapper: Callable[[PurePosixPath], PurePosixPath | None]
) -> list[Path]:
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath, str | None]] = []
        for info in zf.infolist():
            name = _clean_name(info.filename, archive)
            mode = info.external_attr >> 16
            link = None
            if stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8", "replace")
                if not _inside(name, link):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {info.filename!r} -> {link!r} points outside the target; "
                        "nothing was extracted"
                    )
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix type recorded
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is not a regular file")
            new = mapper(name)
            if new is not None:
                if link is not None and not _inside(new, link):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {info.filename!r} leaves the target after re-rooting"
                    )
                plan.append((info, new, link))
        written = []
        for info, rel, link in _members_bar(plan, archive):
            out = target.joinpath(*rel.parts)
            # resolve the parent: an earlier (inside) symlink must not lead the write outside
            if not out.parent.resolve().is_relative_to(root):
                raise UnsafeArchiveError(f"{archive}: {info.filename!r} would be written outside {target}")
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if link is not None:
                if out.is_symlink() or out.exists():
                    out.unlink()
                os.symlink(link, out)
                continue
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            written.append(out)
    return sorted(written)


# --------------------------------------------------------------------------------------------- install


@dataclass
class FetchResult:
    manifest: str
    variant: str
    dataset: str
    root: Path
    source: str
    installed: bool  # False: it was already there
    observed_sha256: dict[str, str] = field(default_factory=dict)
    unverified: list[str] = field(default_factory=list)  # downloads the manifest has no checksum for
    report: Any = None  # verify.VerifyReport


def _manual_message(m: Manifest, v: Variant, s: Source) -> str:
    where = s.page or s.url or m.homepage or "(see the manifest)"
    lines = [
        f"{m.title} ({v.dataset_name}) has no automatic download for source '{s.id}'.",
        f"Get it from: {where}",
    ]
    if s.note:
        lines.append(s.note)
    lines.append(
        f"then run: srbench data fetch {v.dataset_name} --from PATH   (PATH = the downloaded archive "
        "or the unpacked folder)"
    )
    others = [
        o.dataset_name for o in m.variants.values() if o is not v and not all(x.manual for x in o.sources)
    ]
    if others:
        lines.append(f"Variants with an automatic download: {', '.join(others)}")
    if m.path is not None:
        lines.append(f"Manifest: {m.path}")
    return "\n".join(lines)


def _copy_tree(src: Path, dst: Path, mapper: Callable[[PurePosixPath], PurePosixPath | None]) -> None:
    for p in sorted(src.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        new = mapper(PurePosixPath(p.relative_to(src).as_posix()))
        if new is None:
            continue
        out = dst.joinpath(*new.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, out)


def _image_hashes(root: Path) -> dict[str, str]:
    from srbench.data.images import IMAGE_EXTENSIONS

    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        hidden = any(part.startswith(".") for part in rel.parts)
        if p.is_file() and not p.is_symlink() and p.suffix.lower() in IMAGE_EXTENSIONS and not hidden:
            out[rel.as_posix()] = sha256_file(p)
    return out


def _install_files(
    v: Variant, s: Source, staging: Path, cache: Path, from_path: Path | None, progress: bool, timeout: float
) -> None:
    from srbench.progress import progress as progress_bar

    for f in progress_bar(v.files, desc=f"{v.dataset_name} files", unit="file", disable_if=not progress):
        out = staging.joinpath(*PurePosixPath(f.path).parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        if from_path is not None:
            src = from_path.joinpath(*PurePosixPath(f.path).parts)
            if not src.is_file():
                raise FetchError(f"{from_path}: {f.path} is missing (expected the manifest's layout)")
            digest = sha256_file(src)
            if f.sha256 and digest != f.sha256:
                raise ChecksumError(f"{src}: sha256 {digest} differs from the manifest's {f.sha256}")
            shutil.copy2(src, out)
            continue
        assert s.url
        url = s.url.rstrip("/") + "/" + urllib.parse.quote(f.path)
        cached = cache.joinpath(*PurePosixPath(f.path).parts)
        download(url, cached, sha256=f.sha256, expected_bytes=f.bytes, progress=False, timeout=timeout)
        shutil.copy2(cached, out)


def fetch_dataset(
    name: str,
    variant: str | None = None,
    *,
    source: str | None = None,
    from_path: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    verify: bool = True,
) -> FetchResult:
    """Install a dataset variant (``name``: a dataset name such as ``realsr_crop128`` or a manifest name).

    Already installed (an install record exists) and not ``force``: nothing is fetched, it is verified.
    Otherwise the source is downloaded (or taken from ``from_path``: an archive file or an unpacked
    folder), checked against the manifest, extracted safely into a staging folder and moved into place.
    """
    try:
        m, v = resolve(name, variant)
    except ManifestError as exc:
        raise FetchError(str(exc)) from exc
    s = v.source(source)
    root = variant_root(m.name, v.name)
    src_path = Path(from_path).expanduser() if from_path is not None else None
    if src_path is not None and not src_path.exists():
        raise FetchError(f"--from {src_path}: no such file or folder")
    result = FetchResult(m.name, v.name, v.dataset_name, root, s.id, installed=False)
    if (root / INSTALL_RECORD).is_file() and not force:
        log.info("%s is already installed at %s (pass --force to fetch again)", v.dataset_name, root)
    else:
        if s.manual and src_path is None:
            raise FetchError(_manual_message(m, v, s))
        cache = data_dir() / "_downloads" / m.name
        staging = root.parent / f".{root.name}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            mapper = _mapper(s.strip_to, s.include)
            if s.kind == "files":
                _install_files(v, s, staging, cache / v.name, src_path, progress, timeout)
            elif src_path is not None and src_path.is_dir():
                _copy_tree(src_path, staging, mapper)
            else:
                if src_path is not None:
                    archive = src_path
                    digest = sha256_file(archive)
                    if s.sha256 and digest != s.sha256:
                        raise ChecksumError(
                            f"{archive}: sha256 {digest} differs from the manifest's {s.sha256}"
                        )
                else:
                    assert s.url and s.filename
                    archive = cache / s.filename
                    digest = download(
                        s.url,
                        archive,
                        sha256=s.sha256,
                        expected_bytes=s.bytes,
                        progress=progress,
                        timeout=timeout,
                    )
                result.observed_sha256[archive.name] = digest
                if s.sha256 is None:
                    result.unverified.append(f"{archive.name} sha256={digest}")
                    log.warning(
                        "%s: the manifest has no checksum for this file (not verifiable from where it was "
                        "written); observed sha256 %s is kept in the install record",
                        archive.name,
                        digest,
                    )
                safe_extract(archive, staging, strip_to=s.strip_to, include=s.include)
            record = {
                "manifest": m.name,
                "variant": v.name,
                "dataset": v.dataset_name,
                "source": s.id,
                "url": s.url,
                "from_path": str(src_path) if src_path is not None else None,
                "archive_sha256": result.observed_sha256,
                "published_sha256": s.sha256,
                "installed_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "files": _image_hashes(staging),
            }
            (staging / INSTALL_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
            if root.exists():
                shutil.rmtree(root)
            os.replace(staging, root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result.installed = True
    if verify:
        from srbench.data.verify import verify_variant

        result.report = verify_variant(m, v, root)
    return result
