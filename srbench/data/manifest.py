"""Dataset manifests (``datasets/<name>.yaml``): what a test set is, where it comes from, how to check it.

A manifest names one test set and one or more *variants* (e.g. RealSR full-size vs StableSR's 128-px
centre crops); each variant is installed under ``<data_dir>/<name>/<variant>/`` by ``srbench data fetch``
and is a dataset of its own in results (see ``conf/dataset/``).  Schema, per variant::

    kind: paired | lr_only
    layout: {lr: GLOB, hr: GLOB, lr_suffix: STR, hr_suffix: STR}   # globs relative to the variant root
    expected: {count: INT|null, lr_size: [W,H]|null, hr_size: [W,H]|null, hr_is_scale_x_lr: BOOL, ids: [...]}
    sources:                      # alternatives; `srbench data fetch` uses the first unless --source ID
      - id: STR
        kind: archive | files     # one archive, or every entry of `files` fetched from base_url + path
        url: STR                  # archive: the download link;  files: base_url
        page: STR                 # the human-facing page, when it differs from url
        filename, sha256, bytes   # archive only; null where not verifiable
        strip_to: STR             # archive: keep members below the first path component of this name
        include: [GLOB]           # archive: keep only members matching one of these (fnmatch)
        manual: BOOL              # no automatable download: the user passes --from PATH
    files: [{path, sha256, bytes, size: [W,H], mode}]   # per-file facts, where known

``null`` always means "not verifiable from here": never a guessed value.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from srbench.data.images import IMAGE_EXTENSIONS
from srbench.interface import SRBenchError
from srbench.names import name_problem, safe_name
from srbench.paths import data_dir

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
INSTALL_RECORD = ".srbench-install.json"


class ManifestError(SRBenchError):
    """A manifest file is missing or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str | None = None
    bytes: int | None = None
    size: tuple[int, int] | None = None  # (width, height)
    mode: str | None = None


@dataclass(frozen=True)
class Source:
    id: str
    kind: str  # archive | files
    url: str | None = None
    page: str | None = None
    filename: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    strip_to: str | None = None
    include: tuple[str, ...] = ()
    manual: bool = False
    licence: str | None = None
    note: str = ""


@dataclass(frozen=True)
class Layout:
    lr: str
    hr: str | None = None
    lr_suffix: str = ""
    hr_suffix: str = ""


@dataclass(frozen=True)
class Expected:
    count: int | None = None
    lr_size: tuple[int, int] | None = None
    hr_size: tuple[int, int] | None = None
    hr_is_scale_x_lr: bool = False
    ids: tuple[str, ...] | None = None
    note: str = ""


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    kind: str  # paired | lr_only
    layout: Layout
    expected: Expected
    sources: tuple[Source, ...]
    files: tuple[FileEntry, ...] = ()
    dataset_name: str = ""  # the name results carry (conf/dataset/<dataset_name>.yaml)
    notes: tuple[str, ...] = ()

    def source(self, source_id: str | None = None) -> Source:
        if not self.sources:
            raise ManifestError(f"variant '{self.name}' lists no sources")
        if source_id is None:
            return self.sources[0]
        for s in self.sources:
            if s.id == source_id:
                return s
        raise ManifestError(
            f"variant '{self.name}' has no source '{source_id}' "
            f"(sources: {', '.join(s.id for s in self.sources)})"
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    scale: int
    default_variant: str
    variants: dict[str, Variant]
    licence: str = ""
    citation: str = ""
    homepage: str = ""
    notes: tuple[str, ...] = ()
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def variant(self, name: str | None = None) -> Variant:
        name = name or self.default_variant
        if name not in self.variants:
            raise ManifestError(
                f"manifest '{self.name}' has no variant '{name}' (variants: {', '.join(self.variants)})"
            )
        return self.variants[name]


def manifest_dir() -> Path:
    """Where manifests live: ``$SRBENCH_MANIFESTS`` or the repository's ``datasets/``."""
    env = os.environ.get("SRBENCH_MANIFESTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "datasets"


def list_manifests(directory: Path | None = None) -> list[str]:
    d = directory or manifest_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def variant_root(name: str, variant: str) -> Path:
    """Where a fetched variant lives: ``<data_dir>/<name>/<variant>`` (both checked to be plain names)."""
    return data_dir() / safe_name(name, "dataset manifest name") / safe_name(variant, "manifest variant")


# ------------------------------------------------------------------------------------------------ parsing


def _err(where: str, msg: str) -> ManifestError:
    return ManifestError(f"{where}: {msg}")


def _opt_sha(v: Any, where: str) -> str | None:
    if v is None:
        return None
    s = str(v).lower()
    if not _SHA256.match(s):
        raise _err(where, f"sha256 must be 64 hex digits or null, got {v!r}")
    return s


def _opt_int(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _err(where, f"expected a non-negative integer or null, got {v!r}")
    return v


def _opt_size(v: Any, where: str) -> tuple[int, int] | None:
    if v is None:
        return None
    if not (isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int) and x > 0 for x in v)):
        raise _err(where, f"expected [width, height] or null, got {v!r}")
    return int(v[0]), int(v[1])


def _check_rel(path: str, where: str) -> str:
    p = Path(path)
    if p.is_absolute() or ".." in p.parts or not path:
        raise _err(where, f"path {path!r} must be relative and stay inside the dataset folder")
    return path


def _parse_source(d: Mapping[str, Any], where: str) -> Source:
    if not isinstance(d, Mapping) or "id" not in d:
        raise _err(where, "each source needs an 'id'")
    kind = d.get("kind", "archive")
    if kind not in ("archive", "files"):
        raise _err(where, f"source kind must be archive or files, got {kind!r}")
    unknown = set(d) - {f for f in Source.__dataclass_fields__}
    if unknown:
        raise _err(where, f"unknown source keys {sorted(unknown)}")
    manual = bool(d.get("manual", False))
    if not manual and not d.get("url"):
        raise _err(where, "a source needs 'url' unless it is 'manual: true'")
    if kind == "archive" and not d.get("filename"):
        raise _err(where, "an archive source needs 'filename'")
    if d.get("filename"):
        _check_rel(str(d["filename"]), where)
        if "/" in str(d["filename"]):
            raise _err(where, "'filename' is a plain file name")
    return Source(
        id=str(d["id"]),
        kind=kind,
        url=d.get("url"),
        page=d.get("page"),
        filename=d.get("filename"),
        sha256=_opt_sha(d.get("sha256"), f"{where}.sha256"),
        bytes=_opt_int(d.get("bytes"), f"{where}.bytes"),
        strip_to=d.get("strip_to"),
        include=tuple(d.get("include") or ()),
        manual=manual,
        licence=d.get("licence"),
        note=str(d.get("note") or ""),
    )


def _check_name(value: Any, where: str, what: str) -> str:
    """A name that becomes a folder (variant, dataset name): one plain path component, else an error."""
    problem = name_problem(value)
    if problem:
        raise _err(where, f"{what} {value!r} cannot be a folder name: it {problem}")
    return str(value)


def _parse_variant(name: Any, d: Mapping[str, Any], where: str) -> Variant:
    name = _check_name(name, where, "variant name")
    if not isinstance(d, Mapping):
        raise _err(where, "a variant is a mapping")
    kind = d.get("kind")
    if kind not in ("paired", "lr_only"):
        raise _err(f"{where}.kind", f"must be paired or lr_only, got {kind!r}")
    lay = d.get("layout") or {}
    if not lay.get("lr"):
        raise _err(f"{where}.layout", "needs an 'lr' glob")
    if kind == "paired" and not lay.get("hr"):
        raise _err(f"{where}.layout", "a paired variant needs an 'hr' glob")
    layout = Layout(
        lr=str(lay["lr"]),
        hr=lay.get("hr"),
        lr_suffix=str(lay.get("lr_suffix") or ""),
        hr_suffix=str(lay.get("hr_suffix") or ""),
    )
    ex = d.get("expected") or {}
    ids = ex.get("ids")
    expected = Expected(
        count=_opt_int(ex.get("count"), f"{where}.expected.count"),
        lr_size=_opt_size(ex.get("lr_size"), f"{where}.expected.lr_size"),
        hr_size=_opt_size(ex.get("hr_size"), f"{where}.expected.hr_size"),
        hr_is_scale_x_lr=bool(ex.get("hr_is_scale_x_lr", False)),
        ids=tuple(str(i) for i in ids) if ids is not None else None,
        note=str(ex.get("note") or ""),
    )
    if expected.ids is not None and expected.count is not None and len(expected.ids) != expected.count:
        raise _err(f"{where}.expected", f"{len(expected.ids)} ids listed but count is {expected.count}")
    sources = tuple(_parse_source(s, f"{where}.sources[{i}]") for i, s in enumerate(d.get("sources") or []))
    if not sources:
        raise _err(where, "needs at least one source")
    if len({s.id for s in sources}) != len(sources):
        raise _err(where, "source ids must be unique")
    files = []
    for i, f in enumerate(d.get("files") or []):
        fw = f"{where}.files[{i}]"
        if not isinstance(f, Mapping) or "path" not in f:
            raise _err(fw, "each file needs a 'path'")
        files.append(
            FileEntry(
                path=_check_rel(str(f["path"]), fw),
                sha256=_opt_sha(f.get("sha256"), fw),
                bytes=_opt_int(f.get("bytes"), fw),
                size=_opt_size(f.get("size"), fw),
                mode=f.get("mode"),
            )
        )
    if len({f.path for f in files}) != len(files):
        raise _err(where, "file paths must be unique")
    for s in sources:
        if s.kind == "files" and not files:
            raise _err(where, f"source '{s.id}' has kind 'files' but the variant lists no files")
    return Variant(
        name=name,
        description=str(d.get("description") or ""),
        kind=kind,
        layout=layout,
        expected=expected,
        sources=sources,
        files=tuple(files),
        dataset_name=_check_name(d["dataset_name"], where, "dataset_name") if d.get("dataset_name") else "",
        notes=tuple(d.get("notes") or ()),
    )


def parse_manifest(data: Mapping[str, Any], where: str = "<manifest>") -> Manifest:
    """Validate a manifest mapping; raises :class:`ManifestError` naming the offending key."""
    if not isinstance(data, Mapping):
        raise _err(where, "a manifest is a YAML mapping")
    for key in ("name", "scale", "variants"):
        if key not in data:
            raise _err(where, f"missing '{key}'")
    name = str(data["name"])
    if not re.match(r"^[a-z0-9_]+$", name):
        raise _err(where, f"name {name!r} must be lower-case letters, digits and _")
    scale = data["scale"]
    if not isinstance(scale, int) or scale < 1:
        raise _err(where, f"scale must be a positive integer, got {scale!r}")
    raw_variants = data["variants"]
    if not isinstance(raw_variants, Mapping) or not raw_variants:
        raise _err(where, "'variants' must be a non-empty mapping")
    variants = {str(k): _parse_variant(k, v, f"{where}: variants.{k}") for k, v in raw_variants.items()}
    default = str(data.get("default_variant") or next(iter(variants)))
    if default not in variants:
        raise _err(where, f"default_variant '{default}' is not a variant")
    # the name results carry: the manifest's for its default variant, <manifest>_<variant> otherwise, so
    # `srbench data fetch NAME` and `srbench dataset=NAME` always mean the same variant
    variants = {
        k: v if v.dataset_name else replace(v, dataset_name=name if k == default else f"{name}_{k}")
        for k, v in variants.items()
    }
    if variants[default].dataset_name != name:
        raise _err(
            where, f"the default variant '{default}' must carry the manifest's name '{name}' as dataset_name"
        )
    names = [v.dataset_name for v in variants.values()]
    if len(set(names)) != len(names):
        raise _err(where, f"dataset names must be unique: {names}")
    return Manifest(
        name=name,
        title=str(data.get("title") or name),
        scale=scale,
        default_variant=default,
        variants=variants,
        licence=str(data.get("licence") or ""),
        citation=str(data.get("citation") or ""),
        homepage=str(data.get("homepage") or ""),
        notes=tuple(data.get("notes") or ()),
        raw=dict(data),
    )


def load_manifest(name_or_path: str | os.PathLike[str]) -> Manifest:
    """Load ``datasets/<name>.yaml`` (or a path to a manifest file) and validate it."""
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = manifest_dir() / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(list_manifests()) or "none"
        raise ManifestError(f"no manifest '{name_or_path}' ({p} not found; known: {known})")
    st = p.stat()
    return _load_file(str(p.resolve()), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=64)
def _load_file(path: str, mtime_ns: int, size: int) -> Manifest:
    """Parse one manifest file (cached per path and modification time: manifests are read-only data)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ManifestError(f"{p}: not valid YAML ({exc})") from exc
    m = parse_manifest(data, str(p))
    if m.name != p.stem:
        raise ManifestError(f"{p}: name '{m.name}' differs from the file name '{p.stem}'")
    return Manifest(**{**m.__dict__, "path": p})


# ------------------------------------------------------------------------------------------ file layout


def _stem_key(path: Path, suffix: str) -> str:
    stem = path.stem
    return stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem


def _glob_images(root: Path, pattern: str) -> list[Path]:
    out = []
    for p in root.glob(pattern):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # staging folders, install records, macOS resource forks
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(p)
    return sorted(out)


@dataclass
class Collected:
    """The images a variant's layout finds under a root, keyed by image id."""

    lr: dict[str, Path]
    hr: dict[str, Path]
    duplicates: list[str]  # ids matched by more than one LR (or HR) file

    def pairs(self) -> list[tuple[str, Path, Path | None]]:
        return [(k, self.lr[k], self.hr.get(k)) for k in sorted(self.lr)]


def collect(variant: Variant, root: Path) -> Collected:
    dup: list[str] = []

    def index(pattern: str, suffix: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in _glob_images(root, pattern):
            k = _stem_key(p, suffix)
            if k in out:
                dup.append(f"{k}: {out[k].relative_to(root)} and {p.relative_to(root)}")
                continue
            out[k] = p
        return out

    lr = index(variant.layout.lr, variant.layout.lr_suffix)
    hr = (
        index(variant.layout.hr, variant.layout.hr_suffix)
        if variant.kind == "paired" and variant.layout.hr
        else {}
    )
    return Collected(lr, hr, dup)


def resolve(name: str, variant: str | None = None) -> tuple[Manifest, Variant]:
    """A manifest name (its default variant, or ``variant``) or a dataset name such as ``realsr_crop128``."""
    if (manifest_dir() / f"{name}.yaml").is_file() or Path(name).suffix in (".yaml", ".yml"):
        m = load_manifest(name)
        return m, m.variant(variant)
    for mname in list_manifests():
        m = load_manifest(mname)
        for v in m.variants.values():
            if v.dataset_name == name and variant in (None, v.name):
                return m, v
    known = sorted(
        {v.dataset_name for m in map(load_manifest, list_manifests()) for v in m.variants.values()}
    )
    raise ManifestError(
        f"no dataset or manifest named '{name}' (known datasets: {', '.join(known) or 'none'})"
    )


def fetch_hint(variant: Variant) -> str:
    return f"srbench data fetch {variant.dataset_name}"


def dataset_from_config(cfg: Mapping[str, Any]) -> Any:
    """Build an :class:`~srbench.data.folders.SRDataset` from a ``kind: manifest`` dataset config.

    Keys: ``name`` (a dataset name such as ``realsr_crop128``; resolved to its manifest and variant unless
    ``manifest`` / ``variant`` are given), ``root`` (default: ``<data_dir>/<manifest>/<variant>``),
    ``scale``, ``strict_count`` (default true: a count differing from the manifest's is an error).  A
    variant that is not installed is an error naming ``srbench data fetch <name>``.
    """
    from srbench.data.folders import DatasetError, Sample, SRDataset

    try:
        if cfg.get("manifest"):
            m = load_manifest(str(cfg["manifest"]))
            v = m.variant(cfg.get("variant"))
        else:
            m, v = resolve(str(cfg.get("name")), cfg.get("variant"))
    except ManifestError as exc:
        raise DatasetError(str(exc)) from exc
    name = str(cfg.get("name") or v.dataset_name)
    root = Path(cfg["root"]).expanduser() if cfg.get("root") else variant_root(m.name, v.name)
    hint = fetch_hint(v)
    if not root.is_dir():
        raise DatasetError(
            f"dataset '{name}' ({m.title}, variant {v.name}) is not installed: {root} does not exist. "
            f"Fetch it with `{hint}`, or set dataset.root=DIR to a copy you already have."
        )
    found = collect(v, root)
    if not found.lr:
        raise DatasetError(
            f"dataset '{name}': no LR images matching '{v.layout.lr}' under {root}. "
            f"Fetch it with `{hint}` (or check it with `srbench data verify {v.dataset_name}`)."
        )
    if found.duplicates:
        raise DatasetError(
            f"dataset '{name}': ambiguous image ids under {root}: {'; '.join(found.duplicates[:5])}"
        )
    if v.kind == "paired":
        missing = sorted(k for k in found.lr if k not in found.hr)
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetError(
                f"dataset '{name}': no HR image for {len(missing)} LR image(s) under {root}: {shown} "
                f"(run `srbench data verify {v.dataset_name}`)"
            )
    n = len(found.lr)
    if v.expected.count is not None and n != v.expected.count and cfg.get("strict_count", True):
        raise DatasetError(
            f"dataset '{name}': {n} images under {root}, the manifest expects {v.expected.count}. "
            f"Run `srbench data verify {v.dataset_name}` for details, or pass "
            "dataset.strict_count=false to use it anyway."
        )
    samples = [Sample(k, lr, hr) for k, lr, hr in found.pairs()]
    scale = int(cfg.get("scale") or m.scale)
    meta = {"manifest": m.name, "variant": v.name, "root": str(root), "title": m.title, "licence": m.licence}
    return SRDataset(name, samples, scale, meta)
