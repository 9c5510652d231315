"""Weights manifests: which files each method needs, where they come from, where they are here.

A method declares its files once (``methods/<name>/weights.py``) with :func:`register_weights`::

    register_weights(WeightsManifest("invsr", files=(
        WeightFile("noise_predictor_sd_turbo_v5.pth", repo_id="OAOA/InvSR", size=135_000_000),
        ...)))

Files with a ``repo_id`` live in the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) and are
fetched with ``huggingface_hub.hf_hub_download``, so diffusers / transformers find them later by repo
id, also with ``HF_HUB_OFFLINE=1``.  Files with a plain ``url`` go to ``<srbench cache>/weights/<subdir>``.

``srbench weights list``          the methods with manifests, their file count and total size
``srbench weights where NAME``    each file: present (path) or missing (where it is expected)
``srbench weights fetch NAME...`` download what is missing (needs network; refuses when offline)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import os
import pkgutil
import shutil
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from srbench.atomic import temp_file_beside
from srbench.interface import SRBenchError, WeightsMissing
from srbench.paths import weights_dir


@dataclass(frozen=True)
class WeightFile:
    """One file.  ``filename`` is its path inside the HF repo (e.g. ``unet/config.json``) or, for a
    URL download, the name it is saved under.  ``size`` in bytes; ``size_exact=False`` when it is
    the rounded figure a web page shows (checked only when exact).  ``sha256`` when known."""

    filename: str
    repo_id: str | None = None
    url: str | None = None
    revision: str | None = None
    size: int | None = None
    size_exact: bool = False
    sha256: str | None = None
    subdir: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if (self.repo_id is None) == (self.url is None):
            raise ValueError(f"{self.filename}: give exactly one of repo_id or url")

    @property
    def source(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" if self.repo_id else str(self.url)


@dataclass(frozen=True)
class WeightsManifest:
    method: str
    files: tuple[WeightFile, ...]
    description: str = ""
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. {"sd": (files...)}

    def find(self, filename: str, repo_id: str | None = None) -> WeightFile:
        matches = [
            f
            for f in self.files
            if filename in (f.filename, Path(f.filename).name) and (repo_id is None or f.repo_id == repo_id)
        ]
        if not matches:
            known = ", ".join(f.filename for f in self.files)
            raise SRBenchError(f"'{filename}' is not in the '{self.method}' weights manifest ({known})")
        return matches[0]

    @property
    def total_size(self) -> int:
        return sum(f.size or 0 for f in self.files)


_MANIFESTS: dict[str, WeightsManifest] = {}


def register_weights(manifest: WeightsManifest) -> WeightsManifest:
    _MANIFESTS[manifest.method] = manifest
    return manifest


def _load_builtin_manifests() -> None:
    # built-in methods register their manifests when the ``methods`` package is imported
    try:
        pkg = importlib.import_module("methods")
    except ImportError:  # srbench used without the methods package
        return
    # also each built-in's weights module, whether or not methods/__init__ imports the plugin yet
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        if info.ispkg:
            with contextlib.suppress(ImportError):
                importlib.import_module(f"methods.{info.name}.weights")


def list_manifests() -> list[str]:
    _load_builtin_manifests()
    return sorted(_MANIFESTS)


def get_manifest(method: str) -> WeightsManifest:
    if method not in _MANIFESTS:
        _load_builtin_manifests()
    if method not in _MANIFESTS and method.isidentifier():
        with contextlib.suppress(ImportError):  # a built-in not (yet) imported by methods/__init__
            importlib.import_module(f"methods.{method}")
    try:
        return _MANIFESTS[method]
    except KeyError:
        have = ", ".join(sorted(_MANIFESTS)) or "none"
        raise SRBenchError(f"no weights manifest for '{method}' (manifests: {have})") from None


# ---- where files are -----------------------------------------------------------------------
def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from srbench.diffusion.sd import hub_offline

    return hub_offline()


def expected_location(entry: WeightFile) -> str:
    """A human description of where ``entry`` is looked for."""
    if entry.repo_id:
        folder = "models--" + entry.repo_id.replace("/", "--")
        rev = entry.revision or "main"
        return f"{_hub_cache() / folder}/snapshots/<{rev}>/{entry.filename}"
    return str(weights_dir() / entry.subdir / entry.filename)


def local_path(entry: WeightFile) -> Path | None:
    """The file on this machine, or None."""
    if entry.repo_id:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(entry.repo_id, entry.filename, revision=entry.revision)
        return Path(found) if isinstance(found, str) and Path(found).is_file() else None
    path = weights_dir() / entry.subdir / entry.filename
    return path if path.is_file() else None


def _missing(method: str, entry: WeightFile, extra: str = "") -> WeightsMissing:
    return WeightsMissing(
        f"{method}: weights file '{entry.filename}' ({entry.source}) is not on this machine; "
        f"expected at {expected_location(entry)}. Run `srbench weights fetch {method}` on a machine "
        "with network access (same HF_HOME / SRBENCH_CACHE), or copy the file there." + extra
    )


def resolve(method: str, filename: str, *, repo_id: str | None = None) -> Path:
    """Local path of a manifest file, or :class:`WeightsMissing` naming it, where it is expected and
    the fetch command."""
    entry = get_manifest(method).find(filename, repo_id)
    path = local_path(entry)
    if path is None:
        raise _missing(method, entry)
    return path


def where(method: str) -> list[tuple[WeightFile, Path | None]]:
    return [(f, local_path(f)) for f in get_manifest(method).files]


# ---- fetching -------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(entry: WeightFile, path: Path) -> None:
    if entry.size is not None and entry.size_exact and path.stat().st_size != entry.size:
        raise SRBenchError(f"{path}: {path.stat().st_size} bytes, expected {entry.size}")
    if entry.sha256 and _sha256(path) != entry.sha256.lower():
        raise SRBenchError(f"{path}: sha256 does not match the manifest ({entry.sha256})")


def _download_url(entry: WeightFile) -> Path:
    dest = weights_dir() / entry.subdir / entry.filename
    fd, tmp = temp_file_beside(dest, suffix=".part")  # keeps the umask's mode once renamed
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(str(entry.url)) as resp:
            shutil.copyfileobj(resp, out, length=1 << 20)
        _verify(entry, Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def fetch(method: str, *, force: bool = False, log: bool = True) -> list[Path]:
    """Download every missing file of ``method``'s manifest; return all local paths.

    Raises :class:`WeightsMissing` (naming the first missing file) when downloads are off
    (``HF_HUB_OFFLINE=1``) and something is missing.
    """
    manifest = get_manifest(method)
    paths: list[Path] = []
    for entry in manifest.files:
        path = None if force else local_path(entry)
        if path is not None:
            paths.append(path)
            if log:
                print(f"  present  {entry.source} -> {path}")
            continue
        if entry.repo_id and _offline():
            raise _missing(method, entry, " (HF_HUB_OFFLINE=1 is set, so nothing is downloaded)")
        if log:
            size = f" ({_human(entry.size)})" if entry.size else ""
            print(f"  fetching {entry.source}{size} ...", flush=True)
        if entry.repo_id:
            from huggingface_hub import hf_hub_download

            path = Path(
                hf_hub_download(entry.repo_id, entry.filename, revision=entry.revision, force_download=force)
            )
            _verify(entry, path)
        else:
            try:
                path = _download_url(entry)
            except OSError as exc:  # URLError is an OSError: no network, 404, ...
                raise _missing(method, entry, f" (download failed: {exc})") from exc
        paths.append(path)
    return paths


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


# ---- CLI ------------------------------------------------------------------------------------
def weights_cli(argv: Iterable[str]) -> int:
    """``srbench weights list | where NAME | fetch NAME [NAME...] [--force]``; returns an exit code."""
    parser = argparse.ArgumentParser(prog="srbench weights", description="manage method weights")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="methods with a weights manifest")
    p_where = sub.add_parser("where", help="where each file of a method is (or is expected)")
    p_where.add_argument("name")
    p_fetch = sub.add_parser("fetch", help="download a method's weights (needs network)")
    p_fetch.add_argument("names", nargs="+")
    p_fetch.add_argument("--force", action="store_true", help="download again even if present")
    args = parser.parse_args(list(argv))

    if args.cmd == "list":
        for name in list_manifests():
            m = get_manifest(name)
            have = sum(local_path(f) is not None for f in m.files)
            print(f"{name:12s} {have}/{len(m.files)} files present, ~{_human(m.total_size)}  {m.description}")
        return 0
    if args.cmd == "where":
        rows = where(args.name)
        missing = 0
        for entry, path in rows:
            if path is None:
                missing += 1
                print(f"missing  {entry.source}\n         expected at {expected_location(entry)}")
            else:
                print(f"present  {entry.source}\n         {path}")
        if missing:
            print(f"{missing} of {len(rows)} files missing: run `srbench weights fetch {args.name}`")
        return 1 if missing else 0
    for name in args.names:
        print(f"{name}:")
        fetch(name, force=args.force)
    return 0
