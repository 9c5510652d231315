"""The cost of trustworthy records: dataset fingerprints (first run vs cached rerun) and the leaderboard.

(a) fingerprint  ``--images`` LR/HR pairs of ``--lr-kib`` / ``--hr-kib`` random bytes (hashing does not
                 decode images; the defaults are the sizes of ImageNet-Test's 128-px LR and 512-px HR PNGs):
                 the first fingerprint (every file read and hashed), then a rerun in a fresh cache object
                 (what a new process pays: stat every file, read the cache file), then one modified file.
(b) leaderboard  ``--cells`` synthetic finished cells (summary.json + per_image.csv with ``--cell-images``
                 rows, psnr/ssim/lpips), in tables of ``--rows`` rows (methods x 5 steps) x ``--seeds``
                 seeds: collect + paired tests + ranks + markdown/CSV (plots off), first with an empty
                 cell index (every cell read: cold), then again (warm); then ``srbench report`` (warm).

    python benchmarks/records.py                       # 3000 images, 10,000 cells
    python benchmarks/records.py --skip-fingerprint --cells 10000 --rows 50 --seeds 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from srbench.data.folders import paired_folder
from srbench.fingerprint import HashCache, dataset_fingerprint
from srbench.leaderboard import write_leaderboard


def _files(root: Path, n: int, lr_kib: int, hr_kib: int) -> None:
    rng = np.random.default_rng(0)
    for sub, kib in (("LR", lr_kib), ("HR", hr_kib)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            (root / sub / f"{i:05d}.png").write_bytes(rng.bytes(kib * 1024))


def bench_fingerprint(tmp: Path, n: int, lr_kib: int, hr_kib: int) -> dict[str, float]:
    _files(tmp / "data", n, lr_kib, hr_kib)
    ds = paired_folder("bench", tmp / "data" / "LR", tmp / "data" / "HR")
    out: dict[str, float] = {}
    for name in ("first", "cached"):
        cache = HashCache(tmp / "cache")
        t = time.perf_counter()
        dataset_fingerprint(ds.samples, cache)
        out[name] = time.perf_counter() - t
        out[f"{name}_files_read"] = cache.hashed
    (tmp / "data" / "HR" / "00007.png").write_bytes(b"changed")
    cache = HashCache(tmp / "cache")
    t = time.perf_counter()
    dataset_fingerprint(ds.samples, cache)
    out["one_modified"], out["one_modified_files_read"] = time.perf_counter() - t, cache.hashed
    return out


def make_cells(root: Path, cells: int, images: int, rows: int, seeds: int = 1) -> None:
    """``cells`` finished cells: tables of ``rows`` rows (methods x steps), each row over ``seeds`` seeds."""
    rng = np.random.default_rng(0)
    ids = [f"im{i}" for i in range(images)]
    per_table = rows * seeds
    for c in range(cells):
        table, k = divmod(c, per_table)
        row, seed = divmod(k, seeds)
        method, steps = f"m{row // 5}", 1 + row % 5
        d = root / f"set{table}" / "full" / method / (f"steps{steps}" + (f"-seed{seed}" if seed else ""))
        d.mkdir(parents=True)
        scores = {
            m: rng.normal(mu + 0.1 * row, sd, images)
            for m, mu, sd in (("psnr", 24, 2), ("ssim", 0.7, 0.05), ("lpips", 0.3, 0.05))
        }
        lines = ["id,status," + ",".join(scores)]
        lines += [f"{i},ok," + ",".join(repr(float(scores[m][k])) for m in scores) for k, i in enumerate(ids)]
        (d / "per_image.csv").write_text("\n".join(lines) + "\n")
        summary = {
            "status": "done",
            "method": method,
            "steps": steps,
            "seed": seed,
            "dataset": f"set{table}",
            "protocol": "full",
            "dataset_fingerprint": {"sha256": f"{table:064d}", "n_images": images},
            "weights": {"label": "real"},
            "n_ok": images,
            "n_failed": 0,
            "latency_s": {"total": {"median": 0.1 * (row + 1), "p90": 0.2}},
            "metrics": {
                m: {"mean": float(v.mean()), "ci95": 0.1, "n": images, "lower_better": m == "lpips"}
                for m, v in scores.items()
            },
        }
        (d / "summary.json").write_text(json.dumps(summary))


def _timed(fn: Any) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def bench_leaderboard(tmp: Path, cells: int, images: int, rows: int, seeds: int = 1) -> dict[str, float]:
    """Leaderboard (plots off) and report on a fresh cell index (cold), then again (warm): wall, CPU s."""
    from srbench.report import write_report

    make_cells(tmp / "runs", cells, images, rows, seeds)
    out: dict[str, float] = {}
    os.environ["SRBENCH_CACHE"] = str(tmp / "cache")  # a fresh index: the first run reads every cell
    for run in ("cold", "warm"):
        out[f"leaderboard_{run}"], out[f"leaderboard_{run}_cpu"] = _timed(
            lambda run=run: write_leaderboard([tmp / "runs"], tmp / f"lb-{run}", plots=False)
        )
    out["report_warm"], out["report_warm_cpu"] = _timed(lambda: write_report([tmp / "runs"], tmp / "report"))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--lr-kib", type=int, default=40)
    p.add_argument("--hr-kib", type=int, default=400)
    p.add_argument("--cells", type=int, default=10000)
    p.add_argument("--cell-images", type=int, default=100)
    p.add_argument("--rows", type=int, default=10, help="rows per leaderboard table (methods x 5 steps)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per row")
    p.add_argument("--skip-fingerprint", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="srbench-records-bench-"))
    try:
        if not args.skip_fingerprint:
            fp = bench_fingerprint(tmp / "fp", args.images, args.lr_kib, args.hr_kib)
            mib = args.images * (args.lr_kib + args.hr_kib) / 1024
            print(f"fingerprint of {args.images} pairs ({mib:.0f} MiB):")
            print(f"  first run     {fp['first']:7.3f} s  ({fp['first_files_read']:.0f} files read)")
            print(f"  cached rerun  {fp['cached']:7.3f} s  ({fp['cached_files_read']:.0f} files read)")
            one = fp["one_modified"]
            print(f"  one modified  {one:7.3f} s  ({fp['one_modified_files_read']:.0f} file read)")
        lb = bench_leaderboard(tmp / "lb", args.cells, args.cell_images, args.rows, args.seeds)
        print(
            f"{args.cells} cells x {args.cell_images} images, {args.rows} rows per table x {args.seeds} "
            "seed(s), paired tests on (wall s / CPU s):"
        )
        for name in ("leaderboard_cold", "leaderboard_warm", "report_warm"):
            print(f"  {name:18s} {lb[name]:7.2f} / {lb[name + '_cpu']:6.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"(cpu: {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
