"""Peak memory of one upscale against image size, with each method's tiling on (and off, for contrast).

Measured with :func:`srbench.bench.run_bench` (the ``srbench bench`` machinery), one process, each method
loaded once and run on LR squares of growing size.  On CUDA the number is the allocator's peak above what
was held before the call; on CPU the process's peak resident set above the resident set before the call
(``malloc_trim`` + ``/proc/self/clear_refs``, Linux).  "Tiling on" means the tiling a user turns on for
large inputs:

==========  =============================================================
invsr       its own chopping (``chopping_size`` LR px tiles, the authors')
dmsr        its own LR tiles (``tile_size``; always on: inputs are padded to one tile at least)
realesrgan  its own tiles (``tile``, Real-ESRGAN's ``--tile``)
stablesr    srbench's generic LR tiling (``lr_tile``) around its latent aggregation
dossr       srbench's generic LR tiling (``lr_tile``)
bicubic     none (the output canvas is all it holds)
==========  =============================================================

``--tiny`` (default on a machine without the weights) uses tiny random models, so absolute MiB are the
plumbing's, not the published models'; what carries over is the shape of the curve: flat with tiling,
growing with the pixel count without.

    python benchmarks/memory.py                         # CPU, tiny models, LR 64..512 (-> 2048)
    python benchmarks/memory.py --device cuda --real    # on a GPU with the weights fetched
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: (method, tiling-on options, tiling-off options, steps); tile sizes are LR px
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, Any] | None, int]] = {
    "bicubic": ({}, None, 1),
    "realesrgan": ({"tile": 128, "tile_pad": 16}, {"tile": 0}, 1),
    "invsr": ({"chopping_size": 128}, {"chopping_size": 0}, 1),
    "dmsr": ({"tile_size": 128, "tile_stride": 64}, None, 1),  # pads to one tile: no "off" mode
    "dossr": ({"lr_tile": 128, "lr_tile_overlap": 32}, {}, 1),
    "stablesr": ({"lr_tile": 128, "lr_tile_overlap": 32}, {}, 2),
}


def measure(method: str, options: dict[str, Any], sizes: list[int], args: argparse.Namespace) -> list[dict]:
    from srbench.bench import BenchSettings, run_bench

    opts = dict(options)
    lr_tile = opts.pop("lr_tile", None)
    overlap = opts.pop("lr_tile_overlap", 32)
    settings = BenchSettings(
        method,
        steps=CONFIGS[method][2],
        sizes=sizes,
        warmup=0,
        repeats=1,
        device=args.device,
        dtype=args.dtype,
        lr_tile=lr_tile,
        lr_tile_overlap=overlap,
        tiny=not args.real and method not in ("bicubic", "realesrgan"),
        options=opts,
    )
    return run_bench(settings)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(CONFIGS))
    p.add_argument("--sizes", default="64,128,256,512", help="LR sides (x4 output)")
    p.add_argument("--max-untiled", type=int, default=256, help="largest LR side run without tiling")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--real", action="store_true", help="the published weights (fetched) instead of tiny ones")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    for method in args.methods.split(","):
        on, off, _ = CONFIGS[method]
        for mode, opts, sz in (("on", on, sizes), ("off", off, [s for s in sizes if s <= args.max_untiled])):
            if opts is None or not sz:
                continue
            t0 = time.perf_counter()
            for r in measure(method, opts, sz, args):
                rows.append(
                    {
                        "method": method,
                        "tiling": mode if method != "bicubic" else "n/a",
                        "options": opts,
                        "lr": r["lr_size"][-1],
                        "sr": r["sr_size"][-1],
                        "peak_mem_mb": r["peak_mem_mb"],
                        "held_mem_mb": r["held_mem_mb"],
                        "latency_s": r["latency_s"]["median"],
                        "mem_kind": r["mem_kind"],
                        "device_name": r["device_name"],
                        "weights": r["weights"]["label"],
                    }
                )
                row = rows[-1]
                print(
                    f"  {method:<10} tiling {row['tiling']:<3} LR {row['lr']:>4} -> {row['sr']:>4}: "
                    f"peak {row['peak_mem_mb']:.0f} MiB, {row['latency_s']:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"  ({method}, tiling {mode}: {time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    print(format_table(rows, sizes))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


def format_table(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    head = (
        f"{'method':<11}{'tiling':<7}" + "".join(f"{f'{s}->{4 * s}':>12}" for s in sizes) + f"{'growth':>9}"
    )
    lines = ["peak memory per call, MiB (above what was held before the call)", head]
    keys = dict.fromkeys((r["method"], r["tiling"]) for r in rows)
    for method, tiling in keys:
        by = {r["lr"]: r["peak_mem_mb"] for r in rows if (r["method"], r["tiling"]) == (method, tiling)}
        cells = "".join(f"{by[s]:>12.0f}" if by.get(s) is not None else f"{'-':>12}" for s in sizes)
        got = [by[s] for s in sizes if by.get(s) is not None]
        growth = f"{got[-1] / max(got[0], 1.0):>8.1f}x" if len(got) > 1 else f"{'':>9}"
        lines.append(f"{method:<11}{tiling:<7}{cells}{growth}")
    if rows:
        r0 = rows[0]
        lines.append(
            f"device: {r0['device_name']}; memory: {r0['mem_kind']}; weights: tiny random unless real"
        )
        lines.append("growth: largest measured size / smallest; 16x the pixels from 64 to 256, 64x to 512")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
