"""``srbench data list|fetch|verify|prepare|where``, wired into the console script as ``srbench data``."""

from __future__ import annotations

import argparse
import logging
import sys

from srbench.interface import SRBenchError


def _list(args: argparse.Namespace) -> int:
    from srbench.data.manifest import (
        INSTALL_RECORD,
        list_manifests,
        load_manifest,
        manifest_dir,
        variant_root,
    )

    names = list_manifests()
    if not names:
        print(f"no manifests in {manifest_dir()}")
        return 1
    print(f"{'dataset':24s} {'kind':8s} {'count':>6s}  {'installed':9s} {'download':9s} description")
    for n in names:
        m = load_manifest(n)
        for v in m.variants.values():
            inst = "yes" if (variant_root(m.name, v.name) / INSTALL_RECORD).is_file() else "no"
            auto = "manual" if all(s.manual for s in v.sources) else "auto"
            count = str(v.expected.count) if v.expected.count is not None else "?"
            print(
                f"{v.dataset_name:24s} {v.kind:8s} {count:>6s}  {inst:9s} {auto:9s} "
                f"{v.description.strip()[:70]}"
            )
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from srbench.data.fetch import ExtractLimits, fetch_dataset

    limits = ExtractLimits(
        max_bytes=int(args.max_expanded_gb * 2**30), max_ratio=args.max_ratio, max_members=args.max_members
    )
    res = fetch_dataset(
        args.name,
        args.variant,
        source=args.source,
        from_path=args.from_path,
        force=args.force,
        progress=not args.no_progress,
        verify=not args.no_verify,
        limits=limits,
    )
    print(
        f"{res.dataset}: {'installed' if res.installed else 'already installed'} at {res.root} "
        f"(source {res.source})"
    )
    for u in res.unverified:
        print(f"  no published checksum, observed {u} (recorded in the install record)")
    if res.report is not None:
        print(res.report.format())
        return 0 if res.report.ok else 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from srbench.data.verify import verify_dataset

    rep = verify_dataset(args.name, args.variant, args.root, checksums=not args.no_checksums)
    print(rep.format(max_per_kind=args.max_per_kind))
    return 0 if rep.ok else 1


def _prepare(args: argparse.Namespace) -> int:
    from srbench.data.prepare import prepare_folder

    res = prepare_folder(
        args.hr,
        args.out,
        preset=args.preset,
        pipeline=args.pipeline,
        hr_size=args.hr_size,
        seed=args.seed,
        num=args.num,
        select_seed=args.select_seed,
        jpeg=args.jpeg,
        limit=args.limit,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"{res.out_dir}: {res.n_done} prepared, {res.n_skipped} already there, {len(res.failures)} failed "
        f"of {res.n_total}"
    )
    for image_id, msg in list(res.failures.items())[:20]:
        print(f"  failed {image_id}: {msg}")
    print(
        f"evaluate with: srbench dataset=paired dataset.lr_dir={res.out_dir / 'LR'} "
        f"dataset.hr_dir={res.out_dir / 'HR'} dataset.name=<name>"
    )
    return 0 if not res.failures else 1


def _where(args: argparse.Namespace) -> int:
    from srbench.data.manifest import resolve, variant_root

    m, v = resolve(args.name, args.variant)
    print(variant_root(m.name, v.name))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from srbench.data.degradations import PIPELINES
    from srbench.data.fetch import ExtractLimits
    from srbench.data.prepare import PRESETS

    p = argparse.ArgumentParser(prog="srbench data", description="Test sets: list, fetch, verify, prepare.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="datasets the manifests describe, and which are installed")

    f = sub.add_parser("fetch", help="download, check and install a dataset into $SRBENCH_DATA")
    f.add_argument("name", help="dataset name (e.g. realsr_crop128) or manifest name")
    f.add_argument("--variant", default=None, help="manifest variant (default: the one NAME means)")
    f.add_argument("--source", default=None, help="source id from the manifest (default: the first)")
    f.add_argument("--from", dest="from_path", default=None, help="a downloaded archive or unpacked folder")
    f.add_argument("--force", action="store_true", help="fetch and install again even if installed")
    f.add_argument("--no-progress", action="store_true")
    f.add_argument("--no-verify", action="store_true", help="skip the check after installing")
    lim = ExtractLimits()
    f.add_argument(
        "--max-expanded-gb",
        type=float,
        default=lim.max_bytes / 2**30,
        help="refuse an archive that expands to more GiB than this (default %(default)g)",
    )
    f.add_argument(
        "--max-ratio",
        type=float,
        default=lim.max_ratio,
        help="refuse an archive expanding to more than this many times its size (default %(default)g)",
    )
    f.add_argument(
        "--max-members", type=int, default=lim.max_members, help="refuse archives with more members"
    )

    v = sub.add_parser("verify", help="check an installed dataset against its manifest")
    v.add_argument("name")
    v.add_argument("--variant", default=None)
    v.add_argument("--root", default=None, help="check this folder instead of the installed one")
    v.add_argument("--no-checksums", action="store_true", help="skip sha256 (counts, pairing, sizes only)")
    v.add_argument("--max-per-kind", type=int, default=10, help="problems shown per kind")

    r = sub.add_parser("prepare", help="synthesize LR from a folder of HR images")
    r.add_argument("--hr", required=True, help="folder of HR images (searched recursively)")
    r.add_argument("--out", required=True, help="output folder (gets HR/, LR/, params.jsonl, prepare.json)")
    r.add_argument("--preset", choices=sorted(PRESETS), default=None, help="pipeline + HR size preset")
    r.add_argument("--pipeline", choices=sorted(PIPELINES), default=None, help="degradation pipeline")
    r.add_argument("--hr-size", type=int, default=None, help="shortest side to N (INTER_AREA) + centre crop")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument(
        "--num", type=int, default=None, help="pick N images (ResShift's shuffle; see --select-seed)"
    )
    r.add_argument("--select-seed", type=int, default=10000)
    r.add_argument(
        "--jpeg", choices=["diffjpeg", "cv2"], default=None, help="JPEG simulation (default diffjpeg)"
    )
    r.add_argument("--limit", type=int, default=None, help="only the first N (after --num)")
    r.add_argument("--overwrite", action="store_true")
    r.add_argument("--no-progress", action="store_true")

    w = sub.add_parser("where", help="print the folder a dataset is installed in")
    w.add_argument("name")
    w.add_argument("--variant", default=None)
    return p


def data_cli(argv: list[str]) -> int:
    """``srbench data ...``; returns the exit status (0 ok, 1 failed check or error, 2 usage)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    handlers = {"list": _list, "fetch": _fetch, "verify": _verify, "prepare": _prepare, "where": _where}
    try:
        return handlers[args.cmd](args)
    except SRBenchError as exc:
        print(f"srbench data {args.cmd}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(data_cli(sys.argv[1:]))
