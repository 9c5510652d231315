"""Fetch a test set into the data cache: download (resumable), checksum, safe extraction, install record.

``srbench data fetch NAME`` = :func:`fetch_dataset`.  The data lands in ``<data_dir>/<manifest>/<variant>/``
(``$SRBENCH_DATA``, default under the user cache), never in the repository.  Downloads are kept in
``<data_dir>/_downloads/`` so an interrupted fetch resumes (HTTP ``Range``) and a re-install needs no network.

Downloads: only ``http``/``https``.  Bytes go to ``NAME.part`` and become ``NAME`` only when the transfer
ended cleanly (every promised byte, a complete chunked body, the published size and sha256 where known).
A server that sends neither a length nor a checksum cannot show a cut-off transfer: such a file is
reported as unverified, ``--force`` downloads it again, and an archive that turns out truncated is deleted
so the next fetch does not reuse it.

Safety: an archive is checked member by member before anything is written.  An absolute path, a ``..``
component, a link (symbolic or hard) whose target leaves the extraction folder, a device/FIFO member, or an
expanded size beyond :class:`ExtractLimits` (archive bombs) makes the whole archive refused
(:class:`UnsafeArchiveError`).  Zip and tar members are then written by one writer that never follows a
symbolic link (``O_NOFOLLOW`` on every path component) and re-checks every link on disk at the end: at
least as strict as ``tarfile``'s ``filter="data"`` (which this Python, 3.11.7, has with known link-chain
bypasses, CVE-2025-4517), for zip as for tar.  Extraction goes to a private folder that becomes the target
only when every member passed.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import hashlib
import http.client
import json
import logging
import lzma
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

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
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"{url}: only http and https downloads are allowed, not {scheme or 'a bare path'!r}")
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
    force: bool = False,
) -> str:
    """Download ``url`` to ``dest`` and return the file's sha256.

    Bytes go to ``dest + ".part"`` first and become ``dest`` only after a clean end of the transfer; a
    later call resumes the ``.part`` with an HTTP ``Range`` request (a server that ignores ranges makes it
    start over).  A finished ``dest`` with the right checksum is not fetched again; ``force`` discards
    ``dest`` and any ``.part`` and downloads from scratch.  A size or sha256 mismatch raises
    :class:`ChecksumError` and deletes the bad bytes, so the next call starts clean.  A web page where a
    file was expected (Google Drive's quota or confirmation page) is a :class:`FetchError` that says so.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if force:
        dest.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    if dest.is_file():
        digest = sha256_file(dest)
        if sha256 is None or digest == sha256:
            return digest
        log.warning("%s: checksum differs from the manifest, downloading it again", dest)
        dest.unlink()
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
                except http.client.IncompleteRead as exc:  # a chunked body cut short: keep what came
                    fh.write(exc.partial)
                    got += len(exc.partial)
                    cause: BaseException | None = exc
                except (OSError, http.client.HTTPException) as exc:  # the bytes so far stay in .part
                    cause = exc
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


@dataclass(frozen=True)
class ExtractLimits:
    """Caps on what one archive may expand to (archive bombs).  The defaults are generous for the real test
    sets (StableSR's 3 GB zip of PNGs expands about 1:1): 64 GiB in all, 1,000,000 members, and at most 100
    times the archive's own size once more than 64 MiB came out.  Declared sizes are checked before anything
    is written, the bytes actually written as they are written."""

    max_bytes: int = 64 * 2**30
    max_ratio: float = 100.0
    ratio_floor: int = 64 * 2**20
    max_members: int = 1_000_000

    def check(self, archive: Path, member: str, total: int, count: int, archive_bytes: int) -> None:
        if count > self.max_members:
            raise UnsafeArchiveError(
                f"{archive}: more than {self.max_members} members (at {member!r}); refused as an archive "
                "bomb, nothing was installed (limit: --max-members)"
            )
        if total > self.max_bytes:
            raise UnsafeArchiveError(
                f"{archive}: member {member!r} takes the expanded size past {self.max_bytes} bytes; refused "
                "as an archive bomb, nothing was installed (limit: --max-expanded-gb)"
            )
        if total > self.ratio_floor and total > self.max_ratio * max(archive_bytes, 1):
            raise UnsafeArchiveError(
                f"{archive}: member {member!r} takes the expanded size to {total} bytes, more than "
                f"{self.max_ratio:g} times the archive's {archive_bytes} bytes; refused as an archive bomb, "
                "nothing was installed (limit: --max-ratio)"
            )


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class _NoFollowWriter:
    """Writes archive members under ``root`` without ever following a symbolic link.

    Every folder on the way to a member is opened component by component with ``O_NOFOLLOW`` relative to
    its parent's descriptor, and files are created with ``O_NOFOLLOW`` too: a link anywhere on the path
    (one the archive made, or one that was there) refuses the archive instead of redirecting the write.
    A symbolic link member is made only when its target, resolved on disk at that moment, stays inside
    ``root``, and every link is resolved once more at the end (a later member can change where an earlier
    link leads).  Files and folders get the modes the user's umask gives (0666 / 0777 masked).
    """

    def __init__(self, root: Path, archive: Path, limits: ExtractLimits, progress: bool = True) -> None:
        self.root = Path(os.path.realpath(root))
        self.archive = archive
        self.limits = limits
        self.progress = progress  # the members bar (a terminal only; off with --no-progress / --quiet)
        self.archive_bytes = archive.stat().st_size
        self.total = 0
        self.count = 0
        self.files: list[Path] = []
        self.links: list[tuple[Path, str]] = []

    def _refuse(self, member: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(f"{self.archive}: member {member!r} {why}; nothing was installed")

    def _open_dir(self, parts: tuple[str, ...], member: str) -> int:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, name in enumerate(parts):
                flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                try:
                    nfd = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    os.mkdir(name, 0o777, dir_fd=fd)
                    nfd = os.open(name, flags, dir_fd=fd)
                except OSError as exc:  # ELOOP: a symbolic link; ENOTDIR: a file
                    where = "/".join(parts[: i + 1])
                    raise self._refuse(
                        member, f"would be written through {where!r}, which is a link or a file, not a folder"
                    ) from exc
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _account(self, member: str, nbytes: int, new_member: bool = False) -> None:
        self.total += nbytes
        self.count += int(new_member)
        self.limits.check(self.archive, member, self.total, self.count, self.archive_bytes)

    def mkdir(self, parts: tuple[str, ...], member: str) -> None:
        self._account(member, 0, new_member=True)
        os.close(self._open_dir(parts, member))

    def write(self, parts: tuple[str, ...], src: Any, member: str) -> None:
        """Copy the file object ``src`` to ``root/parts``, counting bytes against the limits."""
        self._account(member, 0, new_member=True)
        dfd = self._open_dir(parts[:-1], member)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(parts[-1], flags, 0o666, dir_fd=dfd)
            except OSError as exc:  # ELOOP: the name is a link; EISDIR: a folder
                raise self._refuse(member, "would be written onto a link or a folder") from exc
        finally:
            os.close(dfd)
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: src.read(CHUNK), b""):
                self._account(member, len(block))
                out.write(block)
        self.files.append(self.root.joinpath(*parts))

    def copy(self, src_parts: tuple[str, ...], parts: tuple[str, ...], member: str) -> None:
        """A hard link member: a copy of an earlier member's file (never a link to a file on disk)."""
        dfd = self._open_dir(src_parts[:-1], member)
        try:
            fd = os.open(src_parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            raise self._refuse(member, "is a hard link to a member that is not a file here") from exc
        finally:
            os.close(dfd)
        with os.fdopen(fd, "rb") as src:
            self.write(parts, src, member)

    def symlink(self, parts: tuple[str, ...], target: str, member: str) -> None:
        self._account(member, 0, new_member=True)
        if os.path.isabs(target) or target.replace("\\", "/").startswith("/"):
            raise self._refuse(member, f"is a symbolic link to the absolute path {target!r} (points outside)")
        dfd = self._open_dir(parts[:-1], member)
        try:
            where = self.root.joinpath(*parts[:-1])  # reached without links: this is its real path
            if not _within(os.path.realpath(where / target), str(self.root)):
                raise self._refuse(
                    member, f"is a symbolic link to {target!r}, which points outside the target"
                )
            try:
                os.unlink(parts[-1], dir_fd=dfd)
            except FileNotFoundError:
                pass
            except OSError as exc:  # a folder of that name
                raise self._refuse(member, "would replace a folder with a link") from exc
            os.symlink(target, parts[-1], dir_fd=dfd)
        finally:
            os.close(dfd)
        self.links.append((self.root.joinpath(*parts), member))

    def finish(self) -> list[Path]:
        for link, member in self.links:  # links made earlier may lead elsewhere now
            if not _within(os.path.realpath(link), str(self.root)):
                raise self._refuse(
                    member, "is a symbolic link that leads outside the target after extraction"
                )
        return sorted(self.files)


def safe_extract(
    archive: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    strip_to: str | None = None,
    include: Sequence[str] = (),
    limits: ExtractLimits | None = None,
    progress: bool = True,
) -> list[Path]:
    """Extract a zip or tar (any compression) into ``target`` (absent or empty); returns the files written.

    Every member is checked first (see the module docstring); one unsafe member refuses the archive.
    ``include`` keeps members matching one of the fnmatch patterns; ``strip_to`` keeps members below the
    first path component of that name and re-roots them there.  Zip and tar go through the same writer
    (:class:`_NoFollowWriter`), at least as strict as ``tarfile``'s ``filter="data"``: no absolute paths,
    no ``..``, no devices, links only inside the target, and no write ever follows a link.  Members are
    written to a private folder beside ``target`` that replaces ``target`` only when all of them passed:
    a refused archive leaves nothing behind.
    """
    archive, target = Path(archive), Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FetchError(f"{target}: extract into a new or empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = target.parent / f".{target.name}.extract-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        writer = _NoFollowWriter(work, archive, limits or ExtractLimits(), progress)
        mapper = _mapper(strip_to, include)
        if archive_format(archive) == "zip":
            _extract_zip(archive, writer, mapper)
        else:
            _extract_tar(archive, writer, mapper)
        files = writer.finish()
        if target.exists():
            target.rmdir()
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [target / f.relative_to(writer.root) for f in files]


def _check_declared(writer: _NoFollowWriter, sizes: Sequence[tuple[str, int]]) -> None:
    """Refuse a bomb from its declared sizes, before a byte is written."""
    total = 0
    for i, (name, size) in enumerate(sizes, start=1):
        total += max(size, 0)
        writer.limits.check(writer.archive, name, total, i, writer.archive_bytes)


def _members_bar(members: list[Any], writer: _NoFollowWriter) -> Any:
    """The members to extract, with a progress bar on a terminal (srbench.progress)."""
    from srbench.progress import progress

    return progress(
        members,
        total=len(members),
        desc=f"extract {writer.archive.name}",
        unit="file",
        disable_if=not writer.progress,
    )


def _extract_tar(
    archive: Path, writer: _NoFollowWriter, mapper: Callable[[PurePosixPath], PurePosixPath | None]
) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        renamed: dict[str, PurePosixPath] = {}
        for m in members:
            name = _clean_name(m.name, archive)
            if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
                kind = "a device or FIFO" if m.isdev() or m.isfifo() else "not a file, folder or link"
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is {kind}; nothing was extracted")
            if m.issym() and not _inside(name, m.linkname):
                raise UnsafeArchiveError(
                    f"{archive}: symlink {m.name!r} -> {m.linkname!r} points outside the target; "
                    "nothing was extracted"
                )
            if m.islnk():
                _clean_name(m.linkname, archive)  # hard links name another member: same rules
            new = mapper(name)
            if new is not None and new.parts:
                renamed[m.name] = new
        chosen = [m for m in members if m.name in renamed]
        _check_declared(writer, [(m.name, m.size) for m in chosen if m.isreg()])
        for m in _members_bar(chosen, writer):
            parts = renamed[m.name].parts
            if m.isdir():
                writer.mkdir(parts, m.name)
            elif m.isreg():
                src = tf.extractfile(m)
                assert src is not None
                with src:
                    writer.write(parts, src, m.name)
            elif m.issym():
                if not _inside(renamed[m.name], m.linkname):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {m.name!r} -> {m.linkname!r} leaves the target after re-rooting"
                    )
                writer.symlink(parts, m.linkname, m.name)
            else:  # hard link: a copy of the member it names, which must have been extracted before
                if m.linkname not in renamed:
                    raise UnsafeArchiveError(
                        f"{archive}: hard link {m.name!r} targets a member that is not extracted"
                    )
                writer.copy(renamed[m.linkname].parts, parts, m.name)


def _extract_zip(
    archive: Path, writer: _NoFollowWriter, mapper: Callable[[PurePosixPath], PurePosixPath | None]
) -> None:
    with zipfile.ZipFile(archive) as zf:
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath, str | None]] = []
        for info in zf.infolist():
            name = _clean_name(info.filename, archive)
            mode = info.external_attr >> 16
            link = None
            if stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {info.filename!r} has a {info.file_size}-byte target"
                    )
                link = zf.read(info).decode("utf-8", "replace")
                if not _inside(name, link):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {info.filename!r} -> {link!r} points outside the target; "
                        "nothing was extracted"
                    )
            elif stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no Unix type recorded
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is not a regular file")
            new = mapper(name)
            if new is not None and new.parts:
                if link is not None and not _inside(new, link):
                    raise UnsafeArchiveError(
                        f"{archive}: symlink {info.filename!r} leaves the target after re-rooting"
                    )
                plan.append((info, new, link))
        _check_declared(
            writer, [(i.filename, i.file_size) for i, _, lk in plan if lk is None and not i.is_dir()]
        )
        for info, rel, link in _members_bar(plan, writer):
            if info.is_dir():
                writer.mkdir(rel.parts, info.filename)
            elif link is not None:
                writer.symlink(rel.parts, link, info.filename)
            else:
                with zf.open(info) as src:
                    writer.write(rel.parts, src, info.filename)


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
        shutil.copyfile(p, out)  # contents only: the new file gets the user's umask, not the source's mode


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
    v: Variant,
    s: Source,
    staging: Path,
    cache: Path,
    from_path: Path | None,
    progress: bool,
    timeout: float,
    force: bool = False,
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
            shutil.copyfile(src, out)
            continue
        assert s.url
        url = s.url.rstrip("/") + "/" + urllib.parse.quote(f.path)
        cached = cache.joinpath(*PurePosixPath(f.path).parts)
        download(
            url, cached, sha256=f.sha256, expected_bytes=f.bytes, progress=False, timeout=timeout, force=force
        )
        shutil.copyfile(cached, out)


def _extract_download(
    archive: Path,
    staging: Path,
    s: Source,
    limits: ExtractLimits | None,
    *,
    downloaded: bool,
    progress: bool = True,
) -> None:
    """Extract; an unreadable archive that no checksum vouched for is deleted from the download cache
    (a cut-off transfer the server could not show), so the next fetch downloads it again."""
    try:
        safe_extract(
            archive, staging, strip_to=s.strip_to, include=s.include, limits=limits, progress=progress
        )
    except UnsafeArchiveError:
        raise
    except (FetchError, zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        if downloaded and s.sha256 is None and s.bytes is None:
            archive.unlink(missing_ok=True)
            raise FetchError(
                f"{archive}: cannot be extracted ({type(exc).__name__}: {exc}). The manifest has no "
                "checksum for it, so the download may have been cut off: it was deleted; rerun to download "
                "it again"
            ) from exc
        raise FetchError(f"{archive}: cannot be extracted ({type(exc).__name__}: {exc})") from exc


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
    limits: ExtractLimits | None = None,
) -> FetchResult:
    """Install a dataset variant (``name``: a dataset name such as ``realsr_crop128`` or a manifest name).

    Already installed (an install record exists) and not ``force``: nothing is fetched, it is verified.
    Otherwise the source is downloaded (or taken from ``from_path``: an archive file or an unpacked
    folder), checked against the manifest, extracted safely into a staging folder and moved into place.
    ``force`` also downloads again what the download cache holds; ``limits`` caps archive expansion.
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
        try:
            mapper = _mapper(s.strip_to, s.include)
            if s.kind == "files":
                staging.mkdir(parents=True)
                _install_files(v, s, staging, cache / v.name, src_path, progress, timeout, force)
            elif src_path is not None and src_path.is_dir():
                staging.mkdir(parents=True)
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
                        force=force,
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
                _extract_download(archive, staging, s, limits, downloaded=src_path is None, progress=progress)
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
