"""Peak memory of one evaluation cell on one large photo: a 3000x4000 LR (12 MP) whose x4 SR has 192 MP.

Each measurement runs :func:`srbench.runner.run_cell` in a fresh process (bicubic, ``lr_tile``, default
metrics, SR PNG saved) on a one-image dataset made here from a real photo (scikit-image's astronaut,
resized to the LR size with Lanczos), and reports that process's peak resident set (``ru_maxrss``, which
includes the ~0.5 GB of torch/pyiqa imports) and wall time.  ``--srbench PATH`` measures another checkout
(e.g. the code before the 8-bit canvas) with the same script.

    python benchmarks/large_image_memory.py                        # 4000x3000 LR, lr_tile=256, LR only
    python benchmarks/large_image_memory.py --lr 2000x1500 --srbench /path/to/older/checkout
    python benchmarks/large_image_memory.py --paired               # with a 16000x12000 HR as well

CPU only (the quantity is host memory); numbers in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from srbench.testing.run_config import run_config

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys, time
import srbench
from srbench.runner import run_cell
cfg, run_dir = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
out = run_cell(cfg, run_dir)
rows = [json.loads(l) for l in open(run_dir + "/per_image.jsonl")]
print(json.dumps({
    "status": out.status, "wall_s": time.perf_counter() - t0, "rows": rows,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "srbench": srbench.__file__,
}))
"""


def make_data(root: Path, lr_w: int, lr_h: int, paired: bool, scale: int = 4) -> dict:
    import numpy as np
    import skimage.data
    from PIL import Image

    photo = Image.fromarray(skimage.data.astronaut())
    (root / "LR").mkdir(parents=True)
    photo.resize((lr_w, lr_h), Image.Resampling.LANCZOS).save(root / "LR" / "photo.png")
    if not paired:
        return {"name": "large", "kind": "lr_only", "lr_dir": str(root / "LR")}
    (root / "HR").mkdir()
    hr = photo.resize((lr_w * scale, lr_h * scale), Image.Resampling.BICUBIC)
    hr.save(root / "HR" / "photo.png", compress_level=1)
    del hr, np
    return {"name": "large", "kind": "paired", "lr_dir": str(root / "LR"), "hr_dir": str(root / "HR")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", default="4000x3000", help="LR WIDTHxHEIGHT (default 4000x3000)")
    ap.add_argument("--lr-tile", type=int, default=256, help="generic LR tiling (0: off)")
    ap.add_argument("--paired", action="store_true", help="add an HR of 4x the LR size (PSNR/SSIM scored)")
    ap.add_argument("--metrics", default="psnr,ssim,lpips,niqe", help="comma-separated metric names")
    ap.add_argument("--srbench", type=Path, default=ROOT, help="the srbench checkout to measure")
    ap.add_argument("--json", type=Path, default=None, help="append the record to this JSON-lines file")
    args = ap.parse_args()
    lr_w, lr_h = (int(v) for v in args.lr.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="srbench-large-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        dataset = make_data(tmp_path / "data", lr_w, lr_h, args.paired)
        print(f"made the data in {time.perf_counter() - t0:.0f} s", flush=True)
        cfg = run_config(
            dataset,
            metric_names=args.metrics.split(","),
            lr_tile=args.lr_tile or None,
            lr_tile_overlap=32,
        )
        env = {**os.environ, "PYTHONPATH": str(args.srbench.resolve()), "OMP_WAIT_POLICY": "PASSIVE"}
        env.setdefault("SRBENCH_DATA", str(tmp_path / "cache"))
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(cfg), str(tmp_path / "run")],
            env=env,
            cwd=tmp,  # not a checkout: PYTHONPATH decides which srbench is imported
            capture_output=True,
            text=True,
        )
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            print(f"child failed (exit {res.returncode}); its peak RSS was {child_peak:.0f} MiB")
            return 1
        out = json.loads(res.stdout.strip().splitlines()[-1])
    row = out["rows"][0]
    record = {
        "srbench": out["srbench"],
        "lr": [lr_w, lr_h],
        "sr": [lr_w * 4, lr_h * 4],
        "paired": args.paired,
        "lr_tile": args.lr_tile,
        "metrics": args.metrics,
        "status": out["status"],
        "image_status": row["status"],
        "scores": {k: v for k, v in row.items() if k in args.metrics.split(",")},
        "metric_errors": row.get("metric_errors", {}),
        "peak_rss_mib": round(out["peak_rss_mb"]),
        "wall_s": round(out["wall_s"], 1),
        "torch_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print(json.dumps(record, indent=1))
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
