"""srbench against the authors' own code, on one shared set of weights: time ratio and max |Δ|.

For InvSR, StableSR and DoSSR: srbench's method is built on random weights at the released size
(``srbench.testing.full_size``, written once to the cache; ``--small`` for small random models that still
fit the authors' fixed layer widths), then the authors' inference path is built from a local checkout of
their repository (``--checkout DIR``; srbench never vendors it) with every network *sharing* srbench's
weight tensors (``official_harness.py``: import isolation, stubs, CPU mapping).  Both run the papers'
protocol: one LR image (scikit-image's astronaut, 8-bit) of ``--size`` px (128) upscaled x4, batch 1,
``--warmup`` unrecorded calls each, then ``--repeats`` timed pairs in ABBA order (srbench first on even
pairs, the authors' code first on odd ones) so that load drift cancels.  Each call gets the same seed:
the authors' code draws from the global RNG, srbench from a generator seeded alike, and where both draw
the same numbers in the same order the outputs agree to float round-off (printed as max |Δ|).

Reported per phase: median time of each code, the ratio of medians srbench/official, the median of the
per-pair ratios with a distribution-free 95 % CI, the ratio of the median process CPU times (charged only
while this process runs: steadier on a shared machine), max |Δ| of the last pair, and the 1-minute load
average at every sample (the machine is shared: read the ratios, not the absolute times).
``--keep-freed-memory`` sets srbench's glibc option for the whole process (both codes).  ``--speed`` adds
a phase with srbench's speed options (``srbench.bench.apply_speed``: ``--attention``, channels_last, optional
``--compile``) applied to srbench's networks only (channels_last gives srbench's conv weights their own
copy, so the authors' code keeps its layout).

    .venv/bin/python benchmarks/vs_official.py invsr --checkout ~/src/InvSR --steps 1 --repeats 5
    .venv/bin/python benchmarks/vs_official.py stablesr --checkout ~/src/StableSR --steps 4 --repeats 3
    .venv/bin/python benchmarks/vs_official.py dossr --checkout ~/src/DoSSR --steps 5 --repeats 3 --speed

Numbers from random weights are speed numbers only; the outputs are noise and never results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # official_harness (benchmarks/ is not a package)
sys.path.insert(0, str(HERE.parent))  # srbench, methods when run from anywhere

from official_harness import CHECKOUTS, RUNNERS, CheckoutError, require_checkout  # noqa: E402

#: srbench's options that select the authors' code path being compared (documented in README)
COMPARE_OPTIONS: dict[str, dict[str, Any]] = {
    "invsr": {},  # code defaults: chopping 128 (one call at 128 px), no colour fix
    # sr_val_ddpm_text_T_vqganfin_old.py: Resize(512) (bilinear) + CenterCrop, x_T ~ N(0, I); AdaIN as
    # the paper's tables (--colorfix_type adain); CFW w = 0.5 (--dec_w default)
    "stablesr": {"upsample": "bilinear", "init_latent": "noise", "color_fix": "adain"},
    "dossr": {"order": 3, "color_fix": "wavelet"},  # scripts/inference.py: shift_sample_3_order, wavelet
}
DEFAULT_STEPS = {"invsr": 1, "stablesr": 200, "dossr": 5}


# ---- building ------------------------------------------------------------------------------------
def build_method(name: str, args: argparse.Namespace) -> Any:
    opts = dict(COMPARE_OPTIONS[name])
    if args.small:
        from official_harness import build_small

        return build_small(name, Path(args.small_root), **opts)
    from srbench.testing.full_size import build_full_size

    return build_full_size(name, args.full_size_root, seed=args.seed, **opts)


def input_image(size: int) -> torch.Tensor:
    """The bench image rounded to 8 bits (the authors' scripts read 8-bit files)."""
    from srbench.bench import bench_image

    return (bench_image(size) * 255).round() / 255


def checkout_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() or "unknown (not a git work tree)"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---- timing --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Any, device: torch.device) -> tuple[float, float, Any]:
    """(wall s, process CPU s, result).  CPU time (all threads) is charged only while this process
    runs, so on a shared machine its ratio is steadier than the wall-clock one."""
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median (order statistics of binomial(n, 1/2))."""
    xs, n = sorted(values), len(values)
    alpha, cdf, k = (1.0 - level) / 2.0, 0.0, 0
    for i in range(n + 1):
        cdf += math.comb(n, i) / 2**n
        if cdf > alpha:
            k = i
            break
    return (xs[0], xs[-1]) if k == 0 else (xs[k - 1], xs[n - k])


def run_phase(
    label: str, method: Any, official: Any, lr: torch.Tensor, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    steps = args.steps

    def ours(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return method.upscale(lr, steps=steps, generator=gen)

    def theirs(seed: int) -> torch.Tensor:
        return official(lr, seed, steps)

    for i in range(args.warmup):
        ours(args.seed + i)
        theirs(args.seed + i)
    s_times: list[float] = []
    o_times: list[float] = []
    s_cpu: list[float] = []
    o_cpu: list[float] = []
    loads: list[float] = []
    out_s = out_o = None
    for i in range(args.repeats):
        seed = args.seed + 1000 + i
        order = ("s", "o") if i % 2 == 0 else ("o", "s")
        for who in order:
            loads.append(os.getloadavg()[0])
            if who == "s":
                t, c, out_s = timed(lambda seed=seed: ours(seed), device)
                s_times.append(t)
                s_cpu.append(c)
            else:
                t, c, out_o = timed(lambda seed=seed: theirs(seed), device)
                o_times.append(t)
                o_cpu.append(c)
            name = "srbench" if who == "s" else "official"
            print(
                f"  {label} pair {i + 1}/{args.repeats} {name}: {t:.2f} s (CPU {c:.1f} s), load "
                f"{loads[-1]:.2f}",
                file=sys.stderr,
                flush=True,
            )
    assert out_s is not None and out_o is not None
    out_s = out_s.float().cpu()
    if hasattr(official, "quantize"):  # the authors' code returns 8-bit images
        out_s = official.quantize(out_s)
    diff = (out_s - out_o.float().cpu()).abs().max().item()
    pair = [s / o for s, o in zip(s_times, o_times, strict=True)]
    lo, hi = median_ci(pair)
    return {
        "phase": label,
        "srbench_s": s_times,
        "official_s": o_times,
        "srbench_median_s": statistics.median(s_times),
        "official_median_s": statistics.median(o_times),
        "ratio_of_medians": statistics.median(s_times) / statistics.median(o_times),
        "pair_ratio_median": statistics.median(pair),
        "pair_ratio_ci95": [lo, hi],
        "srbench_cpu_s": s_cpu,
        "official_cpu_s": o_cpu,
        "cpu_ratio_of_medians": statistics.median(s_cpu) / statistics.median(o_cpu),
        "max_abs_diff": diff,
        "loadavg_1min": loads,
    }


# ---- the command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="srbench vs the authors' code on shared random weights: time ratio and max |Δ|."
    )
    p.add_argument("method", choices=sorted(CHECKOUTS))
    p.add_argument("--checkout", default=None, help="local clone of the authors' repository")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the paper's)")
    p.add_argument("--size", type=int, default=128, help="LR side in px (papers: 128 -> 512)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed ABBA pairs")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--dtype", default="fp32", help="weights' dtype shared by both codes (fp32 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", action="store_true", help="add a phase with srbench's speed options")
    p.add_argument("--attention", default="sdpa", choices=("default", "sdpa", "math"))
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true", help="also torch.compile srbench's denoisers")
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (srbench.allocator; process-wide: both codes get it)",
    )
    p.add_argument("--small", action="store_true", help="small random models (quick harness check)")
    p.add_argument("--small-root", default="results/bench/vs_official_small")
    p.add_argument("--full-size-root", default=None, help="where full-size random weights are cached")
    p.add_argument("--json", type=Path, default=None, help="append the record to this JSON-lines file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        root = require_checkout(args.method, args.checkout)  # before anything is built
    except CheckoutError as exc:
        print(exc, file=sys.stderr)
        return 2
    args.steps = args.steps or DEFAULT_STEPS[args.method]
    torch.set_num_threads(args.threads)
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()  # the offline tokenizer's "sequence too long" notes
    diffusers.logging.set_verbosity_error()
    device = torch.device(args.device)
    from srbench.bench import apply_speed
    from srbench.diffusion.sd import pick_dtype

    dtype = pick_dtype(device, args.dtype)
    if args.keep_freed_memory:
        from srbench.allocator import keep_freed_memory

        keep_freed_memory()
    t0 = time.perf_counter()
    method = build_method(args.method, args)
    method.load(device, dtype)
    official = RUNNERS[args.method](root, method, device)
    build_s = time.perf_counter() - t0
    lr = input_image(args.size).to(device)
    info = method.weights_info()
    phases = [run_phase("srbench", method, official, lr, args, device)]
    speed: dict[str, list[str]] = {}
    if args.speed:
        speed = apply_speed(
            method, attention=args.attention, channels_last=args.channels_last, compile=args.compile
        )
        lr_speed = lr.contiguous(memory_format=torch.channels_last) if args.channels_last else lr
        phases.append(run_phase("srbench+speed", method, official, lr_speed, args, device))
    record = {
        "method": args.method,
        "steps": args.steps,
        "lr_size": list(lr.shape),
        "weights": {"id": info.id, "real": info.real, "label": info.label},
        "small": args.small,
        "checkout": str(root),
        "checkout_commit": checkout_commit(root),
        "harness_tested_at": CHECKOUTS[args.method].tested,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU {platform.machine()} ({args.threads} threads, {os.cpu_count()} cores)",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "build_s": build_s,
        "keep_freed_memory": args.keep_freed_memory,
        "speed_settings": {
            "attention": args.attention,
            "channels_last": args.channels_last,
            "compile": args.compile,
            **speed,
        }
        if args.speed
        else None,
        "uptime": _uptime(),
        "phases": phases,
    }
    print(format_record(record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
    return 0


def _uptime() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def format_record(r: dict[str, Any]) -> str:
    lines = [
        f"{r['method']} x4 {r['lr_size'][-1]}->{4 * r['lr_size'][-1]}, {r['steps']} steps, batch 1, "
        f"{r['dtype']} on {r['device_name']}; weights: {r['weights']['label']} ({r['weights']['id']})",
        f"{'phase':<15}{'srbench s':>11}{'official s':>12}{'ratio':>8}{'pair ratio [95% CI]':>26}"
        f"{'CPU-time ratio':>16}{'max|Δ|':>10}{'load 1m':>14}",
    ]
    for ph in r["phases"]:
        lo, hi = ph["pair_ratio_ci95"]
        loads = ph["loadavg_1min"]
        lines.append(
            f"{ph['phase']:<15}{ph['srbench_median_s']:>11.3f}{ph['official_median_s']:>12.3f}"
            f"{ph['ratio_of_medians']:>8.3f}{ph['pair_ratio_median']:>10.3f} [{lo:.3f}, {hi:.3f}]"
            f"{ph['cpu_ratio_of_medians']:>16.3f}{ph['max_abs_diff']:>10.2e}{min(loads):>7.2f}-{max(loads):.2f}"
        )
    lines.append(f"uptime: {r['uptime']}")
    if not r["weights"]["real"]:
        lines.append("RANDOM weights: speed only; the outputs are noise, not results.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
