"""``srbench data verify NAME``: is an installed test set what its manifest says?

Checks, each reported with the files concerned: the folder exists; every LR has its HR (and the reverse);
the image count and, where the manifest lists them, the image ids; image sizes (fixed LR/HR sizes, HR =
scale x LR); every listed file's byte count and sha256; and every image against the sha256 recorded at
fetch time (which catches later corruption even where the manifest could publish no checksum).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from srbench.data.manifest import (
    INSTALL_RECORD,
    Manifest,
    Variant,
    collect,
    fetch_hint,
    resolve,
    variant_root,
)


@dataclass
class Issue:
    kind: str  # missing | unpaired | count | ids | size | unreadable | checksum | changed | duplicate
    message: str


@dataclass
class VerifyReport:
    dataset: str
    manifest: str
    variant: str
    root: Path
    n_lr: int = 0
    n_hr: int = 0
    problems: list[Issue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, message: str) -> None:
        self.problems.append(Issue(kind, message))

    def format(self, max_per_kind: int = 10) -> str:
        head = f"{self.dataset} ({self.manifest}/{self.variant}) at {self.root}: "
        head += f"{self.n_lr} LR" + (f", {self.n_hr} HR" if self.n_hr else "") + " images"
        lines = [head]
        lines += [f"  checked: {c}" for c in self.checked]
        lines += [f"  warning: {w}" for w in self.warnings]
        by_kind: dict[str, list[str]] = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p.message)
        for kind, msgs in by_kind.items():
            lines.append(f"  PROBLEM [{kind}] x{len(msgs)}:")
            lines += [f"    - {m}" for m in msgs[:max_per_kind]]
            if len(msgs) > max_per_kind:
                lines.append(f"    ... and {len(msgs) - max_per_kind} more")
        lines.append("  OK" if self.ok else f"  FAILED: {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _size(path: Path) -> tuple[int, int] | None:
    from srbench.data.images import ImageReadError, image_size

    try:
        return image_size(path)  # from the header: no decompression-bomb refusal for large photos
    except ImageReadError:
        return None


def verify_variant(
    m: Manifest, v: Variant, root: str | os.PathLike[str] | None = None, *, checksums: bool = True
) -> VerifyReport:
    """Check an installed variant (default location, or ``root``) against its manifest."""
    from srbench.data.fetch import sha256_file

    root = Path(root) if root is not None else variant_root(m.name, v.name)
    rep = VerifyReport(v.dataset_name, m.name, v.name, root)
    if not root.is_dir():
        rep.add("missing", f"{root} does not exist: run `{fetch_hint(v)}`")
        return rep
    found = collect(v, root)
    rep.n_lr, rep.n_hr = len(found.lr), len(found.hr)
    for d in found.duplicates:
        rep.add("duplicate", f"two files for one image id: {d}")
    if not found.lr:
        rep.add("missing", f"no LR image matches '{v.layout.lr}' under {root}: run `{fetch_hint(v)}`")
        return rep

    # pairing
    if v.kind == "paired":
        rep.checked.append(f"pairing LR '{v.layout.lr}' with HR '{v.layout.hr}'")
        for k in sorted(set(found.lr) - set(found.hr)):
            rep.add("unpaired", f"LR {found.lr[k].relative_to(root)} has no HR")
        for k in sorted(set(found.hr) - set(found.lr)):
            rep.add("unpaired", f"HR {found.hr[k].relative_to(root)} has no LR")

    # count and ids
    if v.expected.count is not None:
        rep.checked.append(f"count = {v.expected.count}")
        if rep.n_lr != v.expected.count:
            rep.add("count", f"{rep.n_lr} LR images, expected {v.expected.count}")
        if v.kind == "paired" and rep.n_hr != v.expected.count:
            rep.add("count", f"{rep.n_hr} HR images, expected {v.expected.count}")
    else:
        rep.warnings.append("the manifest gives no image count (not verifiable from where it was written)")
    if v.expected.ids is not None:
        rep.checked.append(f"the {len(v.expected.ids)} image ids listed in the manifest")
        want = set(v.expected.ids)
        for k in sorted(want - set(found.lr)):
            rep.add("ids", f"image id {k} is missing")
        for k in sorted(set(found.lr) - want):
            rep.add("ids", f"image id {k} is not part of the set")

    # sizes
    ex = v.expected
    size_rules = []
    if ex.lr_size:
        size_rules.append(f"LR {ex.lr_size[0]}x{ex.lr_size[1]}")
    if ex.hr_size:
        size_rules.append(f"HR {ex.hr_size[0]}x{ex.hr_size[1]}")
    if ex.hr_is_scale_x_lr:
        size_rules.append(f"HR = {m.scale} x LR")
    rep.checked.append("readable image headers" + (f"; sizes: {', '.join(size_rules)}" if size_rules else ""))
    for k, lr, hr in found.pairs():
        s_lr = _size(lr)
        if s_lr is None:
            rep.add("unreadable", f"{lr.relative_to(root)} is not a readable image")
            continue
        if ex.lr_size and s_lr != ex.lr_size:
            rep.add(
                "size",
                f"LR {lr.relative_to(root)} is {s_lr[0]}x{s_lr[1]}, expected {ex.lr_size[0]}x{ex.lr_size[1]}",
            )
        if hr is None:
            continue
        s_hr = _size(hr)
        if s_hr is None:
            rep.add("unreadable", f"{hr.relative_to(root)} is not a readable image")
            continue
        if ex.hr_size and s_hr != ex.hr_size:
            rep.add(
                "size",
                f"HR {hr.relative_to(root)} is {s_hr[0]}x{s_hr[1]}, expected {ex.hr_size[0]}x{ex.hr_size[1]}",
            )
        if ex.hr_is_scale_x_lr and s_hr != (s_lr[0] * m.scale, s_lr[1] * m.scale):
            rep.add(
                "size",
                f"{k}: HR {s_hr[0]}x{s_hr[1]} is not {m.scale} x LR {s_lr[0]}x{s_lr[1]}",
            )

    # per-file facts from the manifest
    if v.files:
        what = "byte counts, sizes" + (" and sha256" if checksums else "")
        rep.checked.append(f"{what} of the {len(v.files)} files listed in the manifest")
        for f in v.files:
            p = root.joinpath(*PurePosixPath(f.path).parts)
            if not p.is_file():
                rep.add("missing", f"{f.path} is missing")
                continue
            if f.bytes is not None and p.stat().st_size != f.bytes:
                rep.add("checksum", f"{f.path}: {p.stat().st_size} bytes, expected {f.bytes}")
                continue
            if f.size is not None:
                s = _size(p)
                if s is not None and s != f.size:
                    rep.add("size", f"{f.path} is {s[0]}x{s[1]}, expected {f.size[0]}x{f.size[1]}")
            if checksums and f.sha256 is not None:
                digest = sha256_file(p)
                if digest != f.sha256:
                    rep.add("checksum", f"{f.path}: sha256 {digest}, expected {f.sha256}")
    # the record written at fetch time
    record_path = root / INSTALL_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        files: dict[str, str] = record.get("files", {})
        if checksums and files:
            rep.checked.append(
                f"sha256 of the {len(files)} images recorded at fetch time ({record.get('installed_at')})"
            )
            for rel, digest in sorted(files.items()):
                p = root.joinpath(*PurePosixPath(rel).parts)
                if not p.is_file():
                    rep.add("changed", f"{rel} was removed after the fetch")
                elif sha256_file(p) != digest:
                    rep.add("changed", f"{rel} changed after the fetch")
        if not v.files and not record.get("published_sha256"):
            rep.warnings.append(
                "no published checksum for this variant: the fetched files are only checked against "
                "their own state at fetch time"
            )
    else:
        rep.warnings.append(f"no {INSTALL_RECORD}: not installed by `srbench data fetch` (checked as found)")
        if not v.files:
            rep.warnings.append("no checksums available for this variant")
    return rep


def verify_dataset(
    name: str,
    variant: str | None = None,
    root: str | os.PathLike[str] | None = None,
    *,
    checksums: bool = True,
) -> VerifyReport:
    """``name``: a dataset name (``realsr_crop128``) or a manifest name (its default variant)."""
    m, v = resolve(name, variant)
    return verify_variant(m, v, root, checksums=checksums)
