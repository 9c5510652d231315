"""``srbench score``: score a folder of SR images srbench did not produce, as a normal cell.

    srbench score SR_DIR --hr HR_DIR [--lr LR_DIR] --name NAME [--metrics psnr,ssim,niqe | --metrics-preset
                  paper] [--protocol P] [--out-dir DIR] [--dataset NAME] [--steps N] [KEY=VALUE ...]

It is the run ``srbench method=precomputed method.dir=SR_DIR run_name=NAME dataset=...`` (the same config,
the same cell directory, resume and refusal rules; :mod:`methods.precomputed`): per-image records, a
summary with ``source: external``, the SR folder's fingerprint and no latency.  The dataset is

* ``--hr`` and ``--lr``: a paired folder (``dataset=paired``), named ``--dataset`` (default ``paired``); its
  fingerprint is that of the LR/HR files, so the cell shares a leaderboard table with srbench's own cells
  on the same files under the same protocol;
* ``--hr`` only: ``dataset=hr_only`` (the LR geometry is derived from the HR: a table of its own);
* ``--lr`` only: ``dataset=lr_only`` (no-reference metrics);
* neither: ``--dataset NAME`` names a configured set (``conf/dataset/NAME.yaml``, e.g. ``realsr_crop128``).

SR files are paired with the dataset's images by stem after removing ``--sr-suffix`` (LR/HR suffixes as the
paired dataset's); images without an SR file are recorded as failed rows naming the file expected, and SR
files matching no image are listed in the summary (``external.extra``).  Extra ``KEY=VALUE`` arguments are
Hydra overrides (e.g. ``dataset.root=DIR``, ``device=cpu``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srbench.interface import SRBenchError


def _path(p: str) -> str:
    return str(Path(p).expanduser().resolve())


def overrides(args: argparse.Namespace) -> list[str]:
    """The Hydra overrides that make ``srbench score``'s cell (the same as the equivalent run's)."""
    out = [
        "method=precomputed",
        f"method.dir={_path(args.sr_dir)}",
        f"method.scale={args.scale}",
        f"run_name={args.name}",
        f"steps={args.steps}",
        f"protocol={args.protocol}",
        f"out_dir={_path(args.out_dir)}",
    ]
    if args.sr_suffix:
        out.append(f"method.sr_suffix={args.sr_suffix}")
    if args.hr and args.lr:
        out += ["dataset=paired", f"dataset.lr_dir={_path(args.lr)}", f"dataset.hr_dir={_path(args.hr)}"]
        out += [f"dataset.lr_suffix={args.lr_suffix}"] if args.lr_suffix else []
        out += [f"dataset.hr_suffix={args.hr_suffix}"] if args.hr_suffix else []
    elif args.hr:
        out += ["dataset=hr_only", f"dataset.hr_dir={_path(args.hr)}"]
        out += [f"dataset.hr_suffix={args.hr_suffix}"] if args.hr_suffix else []
    elif args.lr:
        out += ["dataset=lr_only", f"dataset.lr_dir={_path(args.lr)}"]
    elif args.dataset:
        out.append(f"dataset={args.dataset}")
    else:
        raise SRBenchError("give --hr HR_DIR (and --lr LR_DIR), --lr LR_DIR, or --dataset NAME")
    if args.dataset and (args.hr or args.lr):
        out.append(f"dataset.name={args.dataset}")
    if args.hr or args.lr:
        out.append(f"dataset.scale={args.scale}")
    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        out.append("metrics.names=[" + ",".join(names) + "]")
    elif args.metrics_preset:
        out.append(f"metrics={args.metrics_preset}")
    if args.no_save_images:
        out.append("save_images=false")
    if args.overwrite:
        out.append("overwrite=true")
    return out + list(args.extra)


def compose(overrides_: Sequence[str]) -> Any:
    """The run's config as ``srbench KEY=VALUE ...`` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from srbench.cli import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides_))


def score_cli(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="srbench score",
        description="Score a folder of SR images made outside srbench as a normal cell (source: external).",
    )
    p.add_argument("sr_dir", help="the folder of SR images")
    p.add_argument("--hr", help="HR folder (full-reference metrics)")
    p.add_argument("--lr", help="LR folder: with --hr the cell shares tables with srbench's cells on it")
    p.add_argument("--name", required=True, help="the method's label in tables (run_name)")
    p.add_argument("--dataset", help="dataset name; alone: a configured set (conf/dataset/NAME.yaml)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--metrics", help="comma-separated metric names (default: the metrics=default preset)")
    g.add_argument("--metrics-preset", help="a conf/metrics preset: default, fast, paper")
    p.add_argument("--protocol", default="full", help="a conf/protocol name (default: full)")
    p.add_argument("--out-dir", default="results/runs", help="results tree (default: results/runs)")
    p.add_argument("--steps", type=int, default=1, help="the step count the outputs were made with")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--sr-suffix", default="", help="removed from SR file stems before pairing")
    p.add_argument("--lr-suffix", default="", help="removed from LR file stems before pairing")
    p.add_argument("--hr-suffix", default="", help="removed from HR file stems before pairing")
    p.add_argument("--no-save-images", action="store_true", help="do not copy the scored SR images")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier cell of this name")
    p.add_argument("extra", nargs="*", metavar="KEY=VALUE", help="further Hydra overrides")
    args = p.parse_intermixed_args(list(argv))
    bad = [e for e in args.extra if "=" not in e]
    if bad:
        p.error(f"unexpected argument(s) {' '.join(bad)} (overrides are KEY=VALUE)")

    from srbench.claim import CellRefused
    from srbench.lock import CellBusy
    from srbench.runner import cell_dir, run_cell

    cfg = compose(overrides(args))
    run_dir = cell_dir(cfg, cfg.out_dir)
    try:
        outcome = run_cell(cfg, run_dir)
    except (CellRefused, CellBusy) as exc:
        print(f"[refused] {exc}", file=sys.stderr)
        return 1
    print(f"[{outcome.status}] {run_dir}" + (f": {outcome.reason}" if outcome.reason else ""))
    summary = outcome.summary or json.loads((run_dir / "summary.json").read_text())
    for name, stat in (summary.get("metrics") or {}).items():
        print(f"  {name:14s} {stat['mean']:.4f}" + (" (set-level)" if stat.get("level") == "set" else ""))
    ext = summary.get("external") or {}
    for what, text in (("missing", "image(s) without an SR file"), ("extra", "SR files matching no image")):
        if ext.get(what):
            shown = ", ".join(ext[what][:8]) + (" ..." if len(ext[what]) > 8 else "")
            print(f"  {len(ext[what])} {text}: {shown}")
    return 0 if outcome.status in ("done", "already_done") else 1
