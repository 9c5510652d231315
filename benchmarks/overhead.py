"""srbench's ``upscale()`` path vs a bare loop over the same modules, per method, on tiny CPU models.

(a) Overhead.  Every method is built on tiny random weights (``srbench.testing.factories.build_tiny``;
Real-ESRGAN x4plus with its real weights), loaded on CPU in fp32 and warmed up, with the options of
``bare_loops.bench_options`` (one tile for InvSR / DM-SR / StableSR).  Then, ``--repeats`` times, the
srbench call — ``method.upscale(lr, steps=..., generator=...)`` with a ``StageTimer`` attached, reset
before and ``finish()``-ed after each call, inside a ``total`` stage, exactly as ``srbench.runner`` times
an image — and the bare loop of ``benchmarks/bare_loops.py`` are timed, interleaved in ABBA order
(srbench first on even repeats, second on odd ones) so that drift and position effects cancel.  Each
sample is the minimum of ``--inner`` back-to-back calls (default 3; ``--inner 1`` gives plain per-call
times): on a shared machine other processes only ever add time, and the min of a few calls removes most
of it.  Both paths get a freshly seeded ``torch.Generator`` (made outside the timed region) and so
compute the same image; the max abs difference is reported (0 means bit-identical).

Two clocks: wall time (``time.perf_counter``, what a user waits) and the thread's CPU time
(``time.thread_time``; with ``--threads 1`` all of torch's work runs on the calling thread), which is not
charged while the scheduler runs another process.  Per method: median, min and IQR of both series, the
ratio of medians and of minima, the median srbench - bare difference, the overhead = median over the
pairs of srbench/bare - 1 with a distribution-free 95 % confidence interval (order statistics of the
binomial), and the median pair ratio split by which path ran first (an order check).  The overhead is
"resolved <= 1 %" when the interval's upper end is at most 1 %, "> 1 %" when its lower end is above 1 %,
and "unresolved" otherwise: on 2 shared cores the interval is often wider than 1 %.

(b) Per-stage breakdown: the StageTimer stages of every srbench call (median), the time outside every
method stage (``other``: ``upscale()``'s checks, the method's unstaged code), and a ``metrics`` stage timed
around ``srbench.metrics.MetricSuite([...]).score(sr, hr)`` on the 8-bit rounded SR image (as the runner
scores it), once per repeat, after the pair and outside both timed calls; metrics whose weights are not
on this machine are skipped and listed.

``--profile N`` also runs both paths under cProfile and lists the functions called more often on the
srbench path (what the overhead is made of).

    .venv/bin/python benchmarks/overhead.py --repeats 30 --size 32 --steps 4 --threads 1 \
        --json results/overhead.json
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bare_loops (benchmarks/ is not a package)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # srbench, methods when run from anywhere

from bare_loops import BARE, METHODS, bench_options, method_steps

METRICS = ("psnr", "ssim", "lpips", "niqe")


# ---- statistics -----------------------------------------------------------------------------------------
def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: order statistics ``(k, n - k + 1)`` with
    ``k`` the largest index whose binomial(n, 1/2) tail is at most (1 - level) / 2."""
    xs = sorted(values)
    n = len(xs)
    alpha, cdf, k = (1.0 - level) / 2.0, 0.0, 0
    for i in range(n + 1):
        cdf += math.comb(n, i) / 2**n
        if cdf > alpha:
            k = i  # P(X <= i - 1) <= alpha
            break
    if k == 0:  # too few samples for this level: the whole range
        return xs[0], xs[-1]
    return xs[k - 1], xs[n - k]


def summary(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    q1, q3 = quantile(values, 0.25), quantile(values, 0.75)
    return {"median": med, "min": min(values), "q1": q1, "q3": q3, "iqr_pct": 100.0 * (q3 - q1) / med}


# ---- inputs ---------------------------------------------------------------------------------------------
def make_pair(size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A textured synthetic HR (1,3,4s,4s) in [0,1] and its LR (antialiased bicubic ÷4)."""
    g = torch.Generator().manual_seed(seed)
    n = 4 * size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, n), torch.linspace(0, 1, n), indexing="ij")
    base = torch.stack(
        [
            0.5 + 0.3 * torch.sin(2 * math.pi * (3 * xx + 2 * yy)),
            0.5 + 0.3 * torch.cos(2 * math.pi * (5 * xx * yy + yy)),
            0.5 + 0.3 * torch.sin(2 * math.pi * (7 * xx - 4 * yy * yy)),
        ]
    )[None]
    hr = (base + 0.08 * torch.randn(base.shape, generator=g)).clamp(0.0, 1.0)
    lr = F.interpolate(hr, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    return lr.clamp(0.0, 1.0), hr


# ---- one method -----------------------------------------------------------------------------------------
def srbench_call(
    method: Any, timer: Any, lr: torch.Tensor, steps: int, seed: int
) -> tuple[torch.Tensor, dict, tuple[float, float]]:
    """One image as ``srbench.runner._process`` times it: reset, ``total`` stage, finish."""
    g = torch.Generator("cpu").manual_seed(seed)
    c0, t0 = time.thread_time(), time.perf_counter()
    timer.reset()
    with timer.stage("total"):
        sr = method.upscale(lr, steps=steps, generator=g)
    stages = timer.finish()
    t1, c1 = time.perf_counter(), time.thread_time()
    return sr, stages, (t1 - t0, c1 - c0)


def bare_call(fn: Any, method: Any, lr: torch.Tensor, steps: int, seed: int) -> tuple[torch.Tensor, tuple]:
    g = torch.Generator("cpu").manual_seed(seed)
    c0, t0 = time.thread_time(), time.perf_counter()
    out = fn(method, lr, steps, g)
    t1, c1 = time.perf_counter(), time.thread_time()
    return out, (t1 - t0, c1 - c0)


def profile_calls(fn: Any, n: int) -> pstats.Stats:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    return pstats.Stats(prof, stream=io.StringIO())


def _by_function(st: pstats.Stats) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for (file, line, name), (_cc, ncalls, tottime, _ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{line}({name})" if file != "~" else name
        t, c = out.get(key, (0.0, 0))
        out[key] = (t + tottime, c + ncalls)
    return out


def profile_report(s_stats: pstats.Stats, b_stats: pstats.Stats, n: int, top: int) -> list[dict[str, Any]]:
    """Functions called more often on the srbench path than in the bare loop (structural extra work),
    by their extra own time (tottime) per call.  Compute kernels called equally often on both paths are
    left out: their tottime difference is timing noise."""
    s_tab, b_tab = _by_function(s_stats), _by_function(b_stats)
    rows = []
    for key, (t, c) in s_tab.items():
        bt, bc = b_tab.get(key, (0.0, 0))
        if c > bc:
            rows.append(
                {
                    "function": key,
                    "extra_ms_per_call": 1e3 * (t - bt) / n,
                    "srbench_calls": c / n,
                    "bare_calls": bc / n,
                }
            )
    rows.sort(key=lambda r: -r["extra_ms_per_call"])
    return rows[:top]


def cumulative_report(stats: pstats.Stats, n: int, top: int) -> list[dict[str, Any]]:
    """Cumulative time per call of srbench's and the methods' own functions (where the time goes)."""
    rows = []
    for (file, line, name), (_cc, ncalls, _tt, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        parts = Path(file).parts
        for root in ("srbench", "methods"):
            if root in parts:
                rel = "/".join(parts[parts.index(root) :])
                rows.append(
                    {
                        "function": f"{rel}:{line}({name})",
                        "cum_ms_per_call": 1e3 * cumtime / n,
                        "calls": ncalls / n,
                    }
                )
                break
    rows.sort(key=lambda r: -r["cum_ms_per_call"])
    return rows[:top]


def compare(s_times: list[float], b_times: list[float]) -> dict[str, Any]:
    """Summaries of both series and the paired overhead (median of srbench/bare - 1, with its CI)."""
    ratios = [s / b for s, b in zip(s_times, b_times, strict=True)]
    lo, hi = median_ci(ratios)
    ci = (100.0 * (lo - 1.0), 100.0 * (hi - 1.0))
    verdict = "<=1% (resolved)" if ci[1] <= 1.0 else (">1% (resolved)" if ci[0] > 1.0 else "unresolved")
    s_sum, b_sum = summary(s_times), summary(b_times)
    return {
        "srbench_s": s_sum,
        "bare_s": b_sum,
        "ratio_of_medians": s_sum["median"] / b_sum["median"],
        "ratio_of_mins": s_sum["min"] / b_sum["min"],
        "overhead_pct": 100.0 * (statistics.median(ratios) - 1.0),
        "overhead_ci95_pct": ci,
        "pair_ratio_iqr_pct": 100.0 * (quantile(ratios, 0.75) - quantile(ratios, 0.25)),
        "extra_ms_median": 1e3 * statistics.median(s - b for s, b in zip(s_times, b_times, strict=True)),
        # position check: pairs where srbench ran first (even repeats) vs second; equal when order is neutral
        "ratio_srbench_first": statistics.median(ratios[0::2]),
        "ratio_srbench_second": statistics.median(ratios[1::2]),
        "verdict": verdict,
    }


def bench_method(name: str, args: argparse.Namespace, root: Path, metrics: Any) -> dict[str, Any]:
    from srbench.data.images import quantize
    from srbench.testing.factories import build_tiny
    from srbench.timing import StageTimer

    steps = method_steps(name, args.steps)
    options = bench_options(name, args.size)
    method = build_tiny(name, root / name, **options)
    method.load("cpu", torch.float32)
    timer = StageTimer("cpu")
    method.timer = timer
    bare = BARE[name]
    lr, hr = make_pair(args.size, args.seed)
    seed = args.seed + 1

    for _ in range(args.warmup):
        sr = srbench_call(method, timer, lr, steps, seed)[0]
        bare_call(bare, method, lr, steps, seed)
        if metrics is not None:
            metrics.score(quantize(sr[0]), hr[0])

    wall: dict[str, list[float]] = {"s": [], "b": []}
    cpu: dict[str, list[float]] = {"s": [], "b": []}
    stage_rows: list[dict[str, float]] = []
    metric_times: list[float] = []
    max_diff = 0.0
    gc.collect()  # once: a gc.collect() before every pair evicted caches and slowed the pair's first call
    k = args.inner

    def run_srbench() -> tuple[torch.Tensor, tuple[float, float]]:
        times = []
        for _ in range(k):
            sr, stages, t = srbench_call(method, timer, lr, steps, seed)
            stage_rows.append(stages)
            times.append(t)
        return sr, (min(t[0] for t in times), min(t[1] for t in times))

    def run_bare() -> tuple[torch.Tensor, tuple[float, float]]:
        times = []
        for _ in range(k):
            out, t = bare_call(bare, method, lr, steps, seed)
            times.append(t)
        return out, (min(t[0] for t in times), min(t[1] for t in times))

    for r in range(args.repeats):
        if r % 2 == 0:  # ABBA: srbench first on even repeats, the bare loop first on odd ones
            sr, ts = run_srbench()
            out, tb = run_bare()
        else:
            out, tb = run_bare()
            sr, ts = run_srbench()
        wall["s"].append(ts[0])
        wall["b"].append(tb[0])
        cpu["s"].append(ts[1])
        cpu["b"].append(tb[1])
        max_diff = max(max_diff, (sr - out).abs().max().item())
        if metrics is not None:  # after the pair, outside both timed calls
            img = quantize(sr[0].cpu())
            t0 = time.perf_counter()
            metrics.score(img, hr[0])
            metric_times.append(time.perf_counter() - t0)

    names = [s for s in method.stages if any(s in row for row in stage_rows)]
    breakdown = {s: statistics.median(row.get(s, 0.0) for row in stage_rows) for s in names}
    breakdown["other (outside method stages)"] = statistics.median(
        row["total"] - sum(row.get(s, 0.0) for s in names) for row in stage_rows
    )
    total_med = statistics.median(row["total"] for row in stage_rows)
    if metric_times:
        breakdown["metrics"] = statistics.median(metric_times)
    result: dict[str, Any] = {
        "method": name,
        "steps": steps,
        "options": options,
        "lr_size": args.size,
        "wall": compare(wall["s"], wall["b"]),
        "cpu": compare(cpu["s"], cpu["b"]),
        "max_abs_diff": max_diff,
        "stages_s": breakdown,
        "upscale_total_s": total_med,
        "image_total_s": total_med + breakdown.get("metrics", 0.0),
        "raw": {
            "srbench_wall_s": wall["s"],
            "bare_wall_s": wall["b"],
            "srbench_cpu_s": cpu["s"],
            "bare_cpu_s": cpu["b"],
            "stages": stage_rows,
            "metrics_s": metric_times,
        },
    }
    if args.profile:
        n = max(3, args.repeats // 3)
        s_stats = profile_calls(lambda: srbench_call(method, timer, lr, steps, seed), n)
        b_stats = profile_calls(lambda: bare_call(bare, method, lr, steps, seed), n)
        result["profile_extra"] = profile_report(s_stats, b_stats, n, args.profile)
        result["profile_cumulative"] = cumulative_report(s_stats, n, args.profile)
    method.timer = None
    return result


# ---- output ---------------------------------------------------------------------------------------------
def fmt_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    out = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for r in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(out)


def overhead_table(results: list[dict[str, Any]], clock: str) -> str:
    header = [
        "method", "steps", "srbench med ms", "bare med ms", "srbench min ms", "bare min ms", "IQR % s / b",
        "med ratio", "min ratio", "s 1st / 2nd", "extra ms", "overhead %", "95% CI %", "verdict", "max|Δ|",
    ]  # fmt: skip
    rows = []
    for r in results:
        c = r[clock]
        s, b = c["srbench_s"], c["bare_s"]
        rows.append(
            [
                r["method"],
                str(r["steps"]),
                f"{1e3 * s['median']:.3f}",
                f"{1e3 * b['median']:.3f}",
                f"{1e3 * s['min']:.3f}",
                f"{1e3 * b['min']:.3f}",
                f"{s['iqr_pct']:.1f} / {b['iqr_pct']:.1f}",
                f"{c['ratio_of_medians']:.4f}",
                f"{c['ratio_of_mins']:.4f}",
                f"{c['ratio_srbench_first']:.3f} / {c['ratio_srbench_second']:.3f}",
                f"{c['extra_ms_median']:+.3f}",
                f"{c['overhead_pct']:+.2f}",
                f"[{c['overhead_ci95_pct'][0]:+.2f}, {c['overhead_ci95_pct'][1]:+.2f}]",
                c["verdict"],
                f"{r['max_abs_diff']:.1e}",
            ]
        )
    return fmt_table(header, rows)


def stage_table(r: dict[str, Any]) -> str:
    total = r["image_total_s"]
    rows = [[k, f"{v:.5f}", f"{100.0 * v / total:.1f}"] for k, v in r["stages_s"].items()]
    what = "upscale total + metrics" if "metrics" in r["stages_s"] else "upscale total"
    rows.append([f"= per image ({what})", f"{total:.5f}", "100.0"])
    return fmt_table([f"{r['method']} (steps={r['steps']}) stage", "median s", "% of image"], rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}"
    )
    ap.add_argument("--repeats", type=int, default=30, help="timed (srbench, bare) pairs per method")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls of each before timing")
    ap.add_argument(
        "--inner",
        type=int,
        default=3,
        help="each timed sample is the min of this many back-to-back calls (1 = plain per-call times)",
    )
    ap.add_argument("--size", type=int, default=32, help="LR side in px (a multiple of 16)")
    ap.add_argument("--steps", type=int, default=4, help="sampling steps of the diffusion methods")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--metrics", default=",".join(METRICS), help="MetricSuite names for the metrics stage ('' = none)"
    )
    ap.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also cProfile both paths; top N rows"
    )
    ap.add_argument("--json", type=Path, default=None, help="write every number (and the raw timings) here")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(BARE))
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {list(BARE)}")
    if args.repeats < 2 or args.inner < 1:
        ap.error("--repeats must be >= 2 and --inner >= 1")
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)

    metrics = None
    metric_names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    skipped: dict[str, str] = {}
    if metric_names:
        from srbench.metrics import MetricSuite

        metrics = MetricSuite(metric_names, device="cpu", on_missing="skip")
        skipped = dict(metrics.skipped)
        if not metrics.available:
            metrics = None

    load0 = os.getloadavg()[0]
    print(
        f"srbench overhead: LR {args.size} px -> {4 * args.size} px, steps {args.steps}, "
        f"threads {torch.get_num_threads()}, repeats {args.repeats} (ABBA-interleaved), each the min of "
        f"{args.inner} calls, warmup {args.warmup}"
        f"; torch {torch.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load avg {load0:.2f} at start",
        flush=True,
    )
    print(
        f"metrics stage: {metrics.available if metrics else []}; skipped: {sorted(skipped) or 'none'}",
        flush=True,
    )
    results = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="srbench-overhead-") as tmp:
        for name in methods:
            t0 = time.perf_counter()
            r = bench_method(name, args, Path(tmp), metrics)
            results.append(r)
            w, c = r["wall"], r["cpu"]
            print(
                f"  {name}: overhead wall {w['overhead_pct']:+.2f} % [{w['overhead_ci95_pct'][0]:+.2f}, "
                f"{w['overhead_ci95_pct'][1]:+.2f}], cpu {c['overhead_pct']:+.2f} % "
                f"[{c['overhead_ci95_pct'][0]:+.2f}, {c['overhead_ci95_pct'][1]:+.2f}], "
                f"max|Δ| {r['max_abs_diff']:.1e} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    load1 = os.getloadavg()[0]

    print("\n(a) srbench upscale() with a StageTimer vs the bare loop, per call, CPU fp32")
    print("\nwall clock (time.perf_counter):\n")
    print(overhead_table(results, "wall"))
    print("\nthread CPU time (time.thread_time: not charged while another process runs):\n")
    print(overhead_table(results, "cpu"))
    print(
        "\noverhead % = median over the pairs of srbench/bare - 1; 95% CI: distribution-free, of that"
        " median;\nextra ms = median of srbench - bare; IQR % = interquartile range / median of each series"
        " (the noise);\ns 1st / 2nd = median pair ratio when srbench ran first / second in its pair"
        " (order check)."
    )
    print("\n(b) per-stage breakdown of the srbench call (StageTimer, median over the repeats)\n")
    for r in results:
        print(stage_table(r))
        print()
    if skipped:
        print("metrics skipped (not buildable offline):")
        for k, v in skipped.items():
            print(f"  {k}: {v}")
    if args.profile:
        for r in results:
            print(
                f"\nprofile {r['method']}: functions called more often on the srbench path"
                " (extra ms per call)"
            )
            rows = [
                [
                    p["function"],
                    f"{p['extra_ms_per_call']:+.4f}",
                    f"{p['srbench_calls']:.0f}",
                    f"{p['bare_calls']:.0f}",
                ]
                for p in r["profile_extra"]
            ]
            print(fmt_table(["function", "extra ms", "calls s", "calls b"], rows))
            print(f"\nprofile {r['method']}: srbench / methods functions by cumulative time (ms per call)")
            rows = [
                [p["function"], f"{p['cum_ms_per_call']:.3f}", f"{p['calls']:.0f}"]
                for p in r["profile_cumulative"]
            ]
            print(fmt_table(["function", "cum ms", "calls"], rows))
    print(f"\nload avg {load0:.2f} at start, {load1:.2f} at end; wall {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_avg": [load0, load1],
            "metrics_available": metrics.available if metrics else [],
            "metrics_skipped": skipped,
            "results": results,
        }
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
