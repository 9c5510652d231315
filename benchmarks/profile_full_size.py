"""Where one full-size call spends its time: torch.profiler over ``upscale()`` on the released
architectures with random weights (``srbench.testing.full_size``), with the time of every operator
attributed to the innermost Python frame that called it.

Operators whose caller is srbench's own code (``srbench/``, ``methods/``) rather than the networks'
(``diffusers``, ``transformers``, ``torch.nn``, basicsr) are what srbench can change: copies, dtype round
trips, concatenations, per-step allocations.  Printed: the method's stages (median of the timed calls),
the top operators by self time, and srbench's own operators by source line.

    .venv/bin/python benchmarks/profile_full_size.py invsr --steps 1 --threads 2
    .venv/bin/python benchmarks/profile_full_size.py stablesr --steps 2 --json results/bench/profile.jsonl

Random weights: the times are the real architectures', the images are noise.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # srbench, methods when run from anywhere

OWN = ("srbench/", "methods/")
#: frames that are plumbing, not the caller: torch's own Python, contextlib, this script
SKIP = ("torch/", "<built-in", "contextlib.py", "profile_full_size.py")


def caller(evt: Any) -> str:
    """The innermost Python frame above an operator (the profiler records frames as parent events)
    that is neither torch's own code nor this script."""
    p = evt.cpu_parent
    while p is not None:
        name = p.name
        if ".py(" in name and not any(name.startswith(s) or f"/{s}" in name for s in SKIP):
            return name
        p = p.cpu_parent
    return "?"


def own(frame: str) -> bool:
    return any(frame.startswith(s) or f"/{s}" in frame for s in OWN) and "site-packages" not in frame


#: operators that move or convert data rather than compute: listed by caller wherever they come from
COPIES = ("aten::copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::fill_")


def profile_call(fn: Any) -> tuple[Any, float]:
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], with_stack=True, record_shapes=True) as prof:
        fn()
    return prof, time.perf_counter() - t0


def summarize(prof: Any, top: int) -> dict[str, Any]:
    by_op: dict[str, float] = collections.Counter()
    own_ops: dict[tuple[str, str, str], list[float]] = collections.defaultdict(lambda: [0.0, 0])
    copies: dict[str, float] = collections.Counter()
    total = 0.0
    for evt in prof.events():
        self_us = evt.self_cpu_time_total
        if self_us <= 0 or not evt.name.startswith("aten::"):
            continue
        total += self_us
        by_op[evt.name] += self_us
        where = caller(evt)
        if own(where):
            shapes = str(evt.input_shapes)[:80] if evt.input_shapes else ""
            rec = own_ops[(where, evt.name, shapes)]
            rec[0] += self_us
            rec[1] += 1
        if evt.name in COPIES:
            copies[f"{evt.name} <- {where}"] += self_us
    own_total = sum(v[0] for v in own_ops.values())
    return {
        "aten_self_s": total / 1e6,
        "top_ops": [(k, v / 1e6) for k, v in by_op.most_common(top)],
        "own_s": own_total / 1e6,
        "copies": [(k, v / 1e6) for k, v in copies.most_common(top)],
        "own_ops": sorted(
            ((f"{w}: {op} {shp}", t / 1e6, n) for (w, op, shp), (t, n) in own_ops.items()),
            key=lambda r: -r[1],
        )[:top],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=("invsr", "dmsr", "stablesr", "dossr"))
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--repeats", type=int, default=1, help="timed calls for the stage medians (0: time the profiled call)"
    )
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--full-size-root", default=None)
    p.add_argument("--tiny", action="store_true", help="tiny random models (checks this script only)")
    p.add_argument("-o", "--option", action="append", default=[], help="method option KEY=VALUE")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    import yaml

    from srbench.bench import bench_image
    from srbench.testing.full_size import build_full_size
    from srbench.timing import StageTimer

    torch.set_num_threads(args.threads)
    opts = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.tiny:
        import tempfile

        from srbench.testing.factories import build_tiny

        method = build_tiny(args.method, tempfile.mkdtemp(prefix="srbench-profile-"), **opts)
    else:
        method = build_full_size(args.method, args.full_size_root, **opts)
    method.load("cpu", torch.float32)
    lr = bench_image(args.size)

    def call() -> torch.Tensor:
        return method.upscale(lr, steps=args.steps, generator=torch.Generator().manual_seed(0))

    for _ in range(args.warmup):
        call()
    timer = StageTimer(torch.device("cpu"))
    method.timer = timer
    stages: dict[str, list[float]] = collections.defaultdict(list)
    totals = []
    for _ in range(args.repeats):
        timer.reset()
        t0 = time.perf_counter()
        call()
        totals.append(time.perf_counter() - t0)
        for k, v in timer.finish().items():
            stages[k].append(v)
    if not args.repeats:  # stage times of the profiled call itself (profiler overhead included)
        timer.reset()
    else:
        method.timer = None
    prof, prof_s = profile_call(call)
    if not args.repeats:
        totals.append(prof_s)
        for k, v in timer.finish().items():
            stages[k].append(v)
        method.timer = None
    summary = summarize(prof, args.top)
    record = {
        "method": args.method,
        "steps": args.steps,
        "options": opts,
        "threads": args.threads,
        "loadavg": os.getloadavg(),
        "total_s": sorted(totals)[len(totals) // 2],
        "stages_s": {k: sorted(v)[len(v) // 2] for k, v in stages.items()},
        "profiled_call_s": prof_s,
        **summary,
    }
    print(f"{args.method} {args.steps} step(s), {args.threads} threads, load {record['loadavg'][0]:.2f}")
    stages = ", ".join(f"{k} {v:.2f}" for k, v in record["stages_s"].items())
    print(f"total {record['total_s']:.2f} s; stages {stages}")
    print(
        f"profiled call {prof_s:.2f} s; aten self time {summary['aten_self_s']:.2f} s, "
        f"of which srbench's own code {summary['own_s']:.3f} s"
    )
    print("top operators (self s):")
    for name, sec in summary["top_ops"]:
        print(f"  {sec:9.3f}  {name}")
    print("copies / conversions by caller (self s):")
    for name, sec in summary["copies"]:
        print(f"  {sec:9.3f}  {name}")
    print("srbench's own operators (self s, calls):")
    for name, sec, n in summary["own_ops"]:
        print(f"  {sec:9.4f} {n:5d}  {name}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
