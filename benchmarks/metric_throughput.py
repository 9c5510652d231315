"""Metric scoring throughput (images/second): metrics rebuilt per image vs built once vs batched.

For each metric alone and for the whole suite, one run measures:

(a) naive     a fresh :class:`srbench.metrics.MetricSuite` (so ``pyiqa.create_metric``) built for every image,
              as a careless script does; over ``--naive-images`` images only, since it is slow;
(b) once      the suite built once, :meth:`MetricSuite.score` image by image;
(c) batched   the suite built once, :meth:`MetricSuite.score_batch` with ``chunk=--batch``;

and the ratios (b)/(a) and (c)/(b).  Metric models stay on the device; the images are moved there once,
before any timing.  Each way is warmed up (one untimed call) first.  ``max rel diff`` compares (c) with
(b): 0 means the batched scores are bit-identical to the per-image ones.

Images: real photos of the demo set (scikit-image / matplotlib wheels), centre-cropped and resized to
``--size`` px as HR; SR = HR downscaled x4 (antialiased) and upscaled again (bicubic), as a weak SR output.

    python benchmarks/metric_throughput.py                               # the offline-buildable metrics
    python benchmarks/metric_throughput.py --device cuda --json out.json
    python benchmarks/metric_throughput.py --lpips-stand-in              # time LPIPS without its weights

``--lpips-stand-in``: where the AlexNet weights are missing, LPIPS is built on a randomly initialised
AlexNet made in memory (``MetricSuite(random_backbones=True)``): the same network and cost, meaningless
values.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a download: missing weights are skipped

import numpy as np
import torch

DEFAULT_METRICS = ("psnr", "ssim", "lpips", "niqe")


def load_images(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(SR, HR), each (n,3,size,size) float32 in [0,1] on the CPU, from the demo photos (cycled)."""
    import torch.nn.functional as F
    from PIL import Image

    from srbench.data.demo import DEMO_PHOTOS, centre_crop, load_photo

    photos = []
    for _, loader in DEMO_PHOTOS:
        img = centre_crop(load_photo(loader), 10**6)  # the largest centre square
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC))
        photos.append(torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255.0)
    hr = torch.stack([photos[i % len(photos)] for i in range(n)])
    lr = F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False)
    sr = F.interpolate(lr, size=(size, size), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return sr.contiguous(), hr.contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def measure(
    names: list[str],
    sr: torch.Tensor,
    hr: torch.Tensor,
    device: torch.device,
    batch: int,
    naive_images: int,
    repeats: int = 1,
    random_backbones: bool = False,
) -> dict[str, Any]:
    """Throughput of (a) naive, (b) once, (c) batched for one set of metrics; sr/hr already on device."""
    from srbench.metrics import MetricSuite

    n = sr.shape[0]
    k = min(naive_images, n)

    def naive() -> list[dict[str, float]]:
        return [MetricSuite(names, device=device, random_backbones=rb).score(sr[i], hr[i]) for i in range(k)]

    rb = random_backbones
    naive_one = MetricSuite(names, device=device, random_backbones=rb)  # warm-up: imports, lookups
    naive_one.score(sr[0], hr[0])
    del naive_one
    t_naive, _ = timed(naive, device)

    suite = MetricSuite(names, device=device, random_backbones=rb)
    suite.score(sr[0], hr[0])  # warm-up
    suite.score_batch(sr[: min(batch, n)], hr[: min(batch, n)])  # warm-up at the timed batch size
    t_once = t_batch = math.inf
    for _ in range(repeats):  # best of `repeats`: the machine may be shared
        t, single = timed(lambda: [suite.score(sr[i], hr[i]) for i in range(n)], device)
        t_once = min(t_once, t)
        t, batched = timed(lambda: suite.score_batch(sr, hr, chunk=batch), device)
        t_batch = min(t_batch, t)

    diffs = {}
    for name in names:
        d = [abs(b[name] - s[name]) / max(abs(s[name]), 1e-12) for b, s in zip(batched, single, strict=True)]
        diffs[name] = max(d) if all(map(math.isfinite, d)) else math.nan
    return {
        "metrics": names,
        "naive_images": k,
        "naive_s": t_naive,
        "once_images": n,
        "once_s": t_once,
        "batch_images": n,
        "batch_s": t_batch,
        "naive_ips": k / t_naive,
        "once_ips": n / t_once,
        "batch_ips": n / t_batch,
        "once_over_naive": (n / t_once) / (k / t_naive),
        "batch_over_once": t_once / t_batch,
        "max_rel_diff": diffs,
        "errors": dict(suite.errors),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated (default: those of {','.join(DEFAULT_METRICS)} buildable offline here)",
    )
    ap.add_argument("--images", type=int, default=16, help="images for (b) and (c)")
    ap.add_argument("--naive-images", type=int, default=3, help="images for (a), rebuilt per image")
    ap.add_argument("--size", type=int, default=512, help="HR = SR side, px")
    ap.add_argument("--batch", type=int, default=8, help="score_batch chunk size for (c)")
    ap.add_argument("--repeats", type=int, default=3, help="(b) and (c): best of this many timed passes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc: serve large blocks from the heap and never give freed memory back (mallopt), "
        "so big tensors do not cost fresh page faults on every allocation",
    )
    ap.add_argument("--lpips-stand-in", action="store_true", help="random AlexNet if its weights are missing")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    args = ap.parse_args(argv)
    if min(args.images, args.naive_images, args.batch, args.repeats) < 1 or args.size < 8:
        ap.error("--images, --naive-images, --batch and --repeats must be >= 1, --size >= 8")
    if args.keep_freed_memory:
        from srbench.allocator import keep_freed_memory

        if not keep_freed_memory():
            print("--keep-freed-memory: no glibc mallopt here; allocator unchanged")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    else:
        device = torch.device(args.device)

    import pyiqa

    from srbench.metrics import MetricSuite

    wanted = args.metrics.split(",") if args.metrics else list(DEFAULT_METRICS)
    stand_in = False
    probe = MetricSuite(wanted, device="cpu")
    if args.lpips_stand_in and "lpips" in probe.skipped:
        stand_in = True
        probe = MetricSuite(wanted, device="cpu", random_backbones=True)
    names, skipped = probe.available, dict(probe.skipped)
    del probe
    if not names:
        print(f"no metric of {wanted} can be built here: {skipped}", file=sys.stderr)
        return 1
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")
    if stand_in:
        print("lpips: RANDOM AlexNet stand-in (made in memory): timings are LPIPS's, values are not")

    sr, hr = load_images(args.images, args.size)
    sr, hr = sr.to(device), hr.to(device)  # once, before any timing
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"device {device} ({dev_name}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"pyiqa {pyiqa.__version__}; {args.images} images {args.size}x{args.size} "
        f"(naive: {min(args.naive_images, args.images)}), batch {args.batch}, best of {args.repeats}"
        + (", glibc keeps freed memory" if args.keep_freed_memory else "")
    )

    logging.getLogger("srbench").setLevel(logging.ERROR)  # the probe said it all; rebuilds would repeat it
    rows: list[dict[str, Any]] = []
    groups = [[n] for n in names] + ([names] if len(names) > 1 else [])
    for group in groups:
        label = group[0] if len(group) == 1 else "suite (" + ",".join(group) + ")"
        with contextlib.redirect_stdout(io.StringIO()):  # pyiqa prints a line per weights file it loads
            row = measure(group, sr, hr, device, args.batch, args.naive_images, args.repeats, stand_in)
        row["label"] = label
        rows.append(row)
        print(f"  measured {label}", flush=True)

    head = ["metrics", "(a) naive img/s", "(b) once img/s", "(c) batched img/s", "(b)/(a)", "(c)/(b)"]
    head.append("max rel diff (c) vs (b)")
    table = [head]
    for r in rows:
        d = max(r["max_rel_diff"].values())
        table.append(
            [
                r["label"],
                f"{r['naive_ips']:.3f}",
                f"{r['once_ips']:.3f}",
                f"{r['batch_ips']:.3f}",
                f"{r['once_over_naive']:.1f}x",
                f"{r['batch_over_once']:.2f}x",
                "0 (identical)" if d == 0 else f"{d:.1e}",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    print()
    for j, row in enumerate(table):
        print(
            " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if j == 0:
            print("-+-".join("-" * w for w in widths))
    last = rows[-1]
    worst = max(v for r in rows for v in r["max_rel_diff"].values())
    print(
        f"\nsummary: {last['label']} on {device}, {args.size}px: naive {last['naive_ips']:.2f} img/s -> "
        f"built once {last['once_ips']:.2f} img/s ({last['once_over_naive']:.1f}x) -> "
        f"batched x{args.batch} {last['batch_ips']:.2f} img/s ({last['batch_over_once']:.2f}x more); "
        + (
            "batched scores bit-identical to per-image"
            if worst == 0
            else f"batched vs per-image scores: max rel diff {worst:.1e}"
        )
    )
    if args.json:
        report = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "device": str(device),
            "device_name": dev_name,
            "torch": torch.__version__,
            "pyiqa": pyiqa.__version__,
            "threads": torch.get_num_threads(),
            "metrics": names,
            "skipped": skipped,
            "lpips_stand_in": stand_in,
            "rows": rows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
