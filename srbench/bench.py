"""``srbench bench METHOD``: the papers' latency protocol, with the speed settings recorded.

The protocol (InvSR Tab. 2/3, DM-SR Tab. 1, DoSSR Tab. 1, StableSR's efficiency table): one LR image of
128x128 px upscaled x4 to 512x512, batch 1, a few unrecorded warm-up calls, then timed calls — CUDA events
on GPU (:class:`srbench.timing.StageTimer`, one synchronisation per call), ``perf_counter`` on CPU.  Every
setting that changes speed is a flag and is written into the result: dtype (fp32/fp16/bf16), the attention
kernel of every diffusers model (``sdpa`` = ``AttnProcessor2_0``, ``math`` = the classic
matmul-softmax ``AttnProcessor``, ``default`` = as loaded), ``channels_last``, ``torch.compile`` of the
denoising networks, cuDNN autotuning and srbench's generic LR tiling.

Memory per call: on CUDA the allocator's peak (``max_memory_allocated``) above what was allocated before
the call; on CPU the process's peak resident set above the resident set before the call (glibc's
``malloc_trim`` first returns freed heap pages, then ``/proc/self/clear_refs`` resets the peak: Linux).
``--size`` may be given several times to get memory and latency against image size.  ``--tiny`` runs
the method on tiny random weights (speed plumbing only: the result is labelled ``weights: random``);
``--random-full-size`` on the released architectures at full size with random weights
(:mod:`srbench.testing.full_size`: written once in the released formats under ``<cache>/full_size`` and
loaded by the method's own ``load()``), so latency and peak memory are the real models' and nothing is
downloaded; every record and printout says ``random`` (the outputs are noise, never results).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from srbench.interface import SRBenchError, SRMethod
from srbench.timing import MemoryProbe, StageTimer

log = logging.getLogger(__name__)

ATTENTION = ("default", "sdpa", "math")
#: networks that ``--compile`` compiles: the denoisers (by class name), where the time goes
COMPILE_CLASSES = ("UNet2DConditionModel", "ControlNetModel", "LAControlNet", "SFTUNet", "RRDBNet")


# ---- finding a method's networks ---------------------------------------------------------------------
def method_modules(method: SRMethod, max_depth: int = 3) -> dict[str, torch.nn.Module]:
    """The top-level ``nn.Module``s a loaded method holds, by attribute path (e.g. ``sampler.unet``).

    Plain objects of srbench's and the methods' own classes (samplers, pipelines, SD component holders)
    are walked into; modules are not (their children come with them)."""
    found: dict[str, torch.nn.Module] = {}
    seen: set[int] = set()

    def visit(obj: Any, prefix: str, depth: int) -> None:
        items = obj.items() if isinstance(obj, dict) else vars(obj).items()
        for key, value in items:
            if id(value) in seen or not isinstance(key, str):
                continue
            if isinstance(value, torch.nn.Module):
                seen.add(id(value))
                found[prefix + key] = value
            elif depth < max_depth and (
                isinstance(value, dict)
                or (
                    hasattr(value, "__dict__")
                    and type(value).__module__.split(".")[0] in ("srbench", "methods")
                )
            ):
                seen.add(id(value))
                visit(value, f"{prefix}{key}.", depth + 1)

    visit(method, "", 0)
    return found


def set_attention(modules: dict[str, torch.nn.Module], kind: str) -> list[str]:
    """Put every diffusers attention layer on ``kind`` (sdpa | math); returns the models touched."""
    if kind == "default":
        return []
    if kind not in ATTENTION:
        raise SRBenchError(f"attention must be one of {ATTENTION}, got '{kind}'")
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    touched = []
    for name, top in modules.items():
        for sub_name, sub in top.named_modules():
            if hasattr(sub, "set_attn_processor") and getattr(sub, "attn_processors", None):
                sub.set_attn_processor(AttnProcessor2_0() if kind == "sdpa" else AttnProcessor())
                touched.append(f"{name}.{sub_name}".rstrip("."))
    return touched


def set_channels_last(modules: dict[str, torch.nn.Module]) -> list[str]:
    for m in modules.values():
        m.to(memory_format=torch.channels_last)
    return sorted(modules)


def compile_denoisers(modules: dict[str, torch.nn.Module], mode: str | None) -> list[str]:
    """``nn.Module.compile`` (in place) on the outermost module of each class in :data:`COMPILE_CLASSES`."""
    compiled: list[str] = []
    for name, top in modules.items():
        for sub_name, sub in top.named_modules():
            full = f"{name}.{sub_name}".rstrip(".")
            if type(sub).__name__ in COMPILE_CLASSES and not any(full.startswith(c + ".") for c in compiled):
                sub.compile(mode=mode)
                compiled.append(full)
    return compiled


def apply_speed(
    method: SRMethod,
    *,
    attention: str = "default",
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
) -> dict[str, list[str]]:
    """The speed settings on a loaded method's networks; returns the models each one touched."""
    modules = method_modules(method)
    return {
        "attention_models": set_attention(modules, attention),
        "channels_last_models": set_channels_last(modules) if channels_last else [],
        "compiled_models": compile_denoisers(modules, compile_mode) if compile else [],
    }


# ---- the input ---------------------------------------------------------------------------------------
def bench_image(size: int, batch: int = 1) -> torch.Tensor:
    """A real photo (scikit-image's astronaut) as (batch,3,size,size) in [0,1]."""
    from skimage import data

    img = torch.from_numpy(data.astronaut().copy()).permute(2, 0, 1).float().div(255)[None]
    img = torch.nn.functional.interpolate(
        img, size=(size, size), mode="bicubic", antialias=True, align_corners=False
    )
    return img.clamp(0, 1).expand(batch, -1, -1, -1).contiguous()


# ---- the measurement ---------------------------------------------------------------------------------
@dataclass
class BenchSettings:
    method: str
    steps: int | None = None
    sizes: list[int] = field(default_factory=lambda: [128])
    batch: int = 1
    warmup: int = 3
    repeats: int = 10
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "default"
    channels_last: bool = False
    compile: bool = False
    compile_mode: str | None = None
    cudnn_benchmark: bool = False
    lr_tile: int | None = None
    lr_tile_overlap: int = 32
    tiny: bool = False
    random_full_size: bool = False
    full_size_root: str | None = None
    keep_freed_memory: bool = False
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=10, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 9
    return {
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
        "p90": q[8],
        "min": ordered[0],
        "max": ordered[-1],
        "std": statistics.pstdev(ordered),
    }


@contextlib.contextmanager
def _built(settings: BenchSettings) -> Iterator[SRMethod]:
    from srbench.registry import create_method

    opts = dict(settings.options)
    if settings.lr_tile:
        opts.update(lr_tile=settings.lr_tile, lr_tile_overlap=settings.lr_tile_overlap)
    if settings.tiny and settings.random_full_size:
        raise SRBenchError("--tiny and --random-full-size exclude each other")
    if settings.random_full_size:
        from srbench.testing.full_size import METHODS, build_full_size

        if settings.method not in METHODS:
            raise SRBenchError(
                f"--random-full-size builds {list(METHODS)}; '{settings.method}' has real weights or none"
            )
        yield build_full_size(settings.method, settings.full_size_root, settings.seed, **opts)
        return
    if not settings.tiny:
        yield create_method(settings.method, **opts)
        return
    from srbench.testing.factories import build_tiny

    with tempfile.TemporaryDirectory(prefix=f"srbench-bench-{settings.method}-") as tmp:
        yield build_tiny(settings.method, tmp, **opts)


def run_bench(settings: BenchSettings) -> list[dict[str, Any]]:
    """Load the method once, then for each size: warm up, time ``repeats`` calls; one record per size."""
    from srbench.environment import dtype_name, environment, resolve_device, resolve_dtype

    if settings.attention not in ATTENTION:
        raise SRBenchError(f"attention must be one of {ATTENTION}, got '{settings.attention}'")
    if settings.warmup < 0 or settings.repeats < 1 or settings.batch < 1:
        raise SRBenchError("need warmup >= 0, repeats >= 1 and batch >= 1")
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if settings.keep_freed_memory:  # a process setting (glibc): speed.keep_freed_memory of runs
        from srbench.allocator import keep_freed_memory

        keep_freed_memory()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    records = []
    with _built(settings) as method:
        steps = method.resolve_steps(settings.steps)
        method.check_steps(steps)
        t0 = time.perf_counter()
        method.load(device, dtype)
        load_s = time.perf_counter() - t0
        touched = apply_speed(
            method,
            attention=settings.attention,
            channels_last=settings.channels_last,
            compile=settings.compile,
            compile_mode=settings.compile_mode,
        )
        info = method.weights_info()
        timer = StageTimer(device)
        probe = MemoryProbe(device, trim=not settings.keep_freed_memory)  # as runs do
        gen_device = device if device.type == "cuda" else torch.device("cpu")
        for size in settings.sizes:
            lr = bench_image(size, settings.batch).to(device)
            if settings.channels_last:
                lr = lr.contiguous(memory_format=torch.channels_last)

            def call(i: int, lr: torch.Tensor = lr) -> torch.Tensor:
                gen = torch.Generator(gen_device).manual_seed(settings.seed + i)
                return method.upscale(lr, steps=steps, generator=gen)

            method.timer = None
            first = []
            for i in range(settings.warmup):
                t0 = time.perf_counter()
                call(i)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                first.append(time.perf_counter() - t0)
            method.timer = timer
            totals: list[float] = []
            stages: dict[str, list[float]] = {}
            peaks: list[float] = []
            cpu: list[float] = []  # process CPU time per call: steadier than wall time on a shared machine
            held = 0.0
            out_shape: tuple[int, ...] = ()
            load_before = os.getloadavg()[0]
            for i in range(settings.repeats):
                timer.reset()
                probe.start()
                c0 = time.process_time()
                with timer.stage("total"):
                    out = call(settings.warmup + i)
                cpu.append(time.process_time() - c0)
                times = timer.finish()
                peak, held = probe.stop()
                if peak is not None:
                    peaks.append(peak)
                out_shape = tuple(out.shape)
                totals.append(times.pop("total"))
                for name, sec in times.items():
                    stages.setdefault(name, []).append(sec)
            method.timer = None
            lat = _summary(totals)
            records.append(
                {
                    "method": settings.method,
                    "weights": {"id": info.id, "real": info.real, "label": info.label},
                    "steps": steps,
                    "lr_size": [settings.batch, 3, size, size],
                    "sr_size": list(out_shape),
                    "batch": settings.batch,
                    "device": str(device),
                    "device_name": _device_name(device),
                    "dtype": dtype_name(dtype),
                    "attention": settings.attention,
                    "attention_models": touched["attention_models"],
                    "channels_last": settings.channels_last,
                    "channels_last_models": touched["channels_last_models"],
                    "compile": settings.compile,
                    "compile_mode": settings.compile_mode,
                    "compiled_models": touched["compiled_models"],
                    "cudnn_benchmark": settings.cudnn_benchmark if device.type == "cuda" else None,
                    "lr_tile": settings.lr_tile,
                    "lr_tile_overlap": settings.lr_tile_overlap if settings.lr_tile else None,
                    "options": settings.options,
                    "tiny": settings.tiny,
                    "random_full_size": settings.random_full_size,
                    "keep_freed_memory": settings.keep_freed_memory,
                    "timer": "cuda_events" if device.type == "cuda" else "perf_counter",
                    "warmup": settings.warmup,
                    "repeats": settings.repeats,
                    "load_s": load_s,
                    "warmup_s": first,
                    "latency_s": lat,
                    "cpu_s": _summary(cpu),
                    "load_avg_1min": [load_before, os.getloadavg()[0]],
                    "stages_median_s": {k: statistics.median(v) for k, v in stages.items()},
                    "images_per_s": settings.batch / lat["median"],
                    "peak_mem_mb": max(peaks) if peaks else None,
                    "held_mem_mb": held,
                    "mem_kind": probe.kind,
                    "torch_threads": torch.get_num_threads(),
                    "environment": environment(device, dtype),
                }
            )
    return records


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


# ---- the command line ----------------------------------------------------------------------------------
def _parse_option(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise SRBenchError(f"--option expects KEY=VALUE, got '{text}'")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srbench bench",
        description="Latency and memory of one method under the papers' protocol (128->512, batch 1).",
    )
    p.add_argument("method", help="a registered method (srbench methods)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the method's own)")
    p.add_argument(
        "--size", type=int, action="append", help="LR side in px; repeat for a curve (default 128)"
    )
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3, help="unrecorded calls first (default 3)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per size (default 10)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (fp16 on CUDA, fp32 on CPU) | fp32 | fp16 | bf16")
    p.add_argument("--attention", default="default", choices=ATTENTION)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the denoising networks")
    p.add_argument("--compile-mode", default=None, help="e.g. reduce-overhead, max-autotune")
    p.add_argument("--cudnn-benchmark", action="store_true")
    p.add_argument("--lr-tile", type=int, default=None, help="generic LR tiling (px); bounded memory")
    p.add_argument("--lr-tile-overlap", type=int, default=32)
    p.add_argument("--tiny", action="store_true", help="tiny random weights (plumbing speed only)")
    p.add_argument(
        "--random-full-size",
        action="store_true",
        help="the released architectures at full size with RANDOM weights (written once to the cache; "
        "real latency and memory, meaningless outputs)",
    )
    p.add_argument("--full-size-root", default=None, help="where --random-full-size writes (default: cache)")
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc keeps freed memory for reuse (fewer page faults on CPU; the process keeps its peak)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--option", "-o", action="append", default=[], help="method option KEY=VALUE (YAML value)")
    p.add_argument("--json", type=Path, default=None, help="append the records to this JSON-lines file")
    return p


def format_records(records: list[dict[str, Any]]) -> str:
    head = (
        f"{'method':<11}{'steps':>6}{'LR':>6}{'SR':>6}{'dtype':>6}{'attn':>8}{'cl':>4}{'comp':>5}"
        f"{'median ms':>11}{'p90 ms':>9}{'CPU ms':>9}{'img/s':>8}{'peak MiB':>10}  stages (median ms)"
    )
    lines = [head]
    for r in records:
        peak = "n/a" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.0f}"
        stages = " ".join(f"{k}={v * 1e3:.1f}" for k, v in r["stages_median_s"].items())
        lines.append(
            f"{r['method']:<11}{r['steps']:>6}{r['lr_size'][-1]:>6}{r['sr_size'][-1]:>6}{r['dtype']:>6}"
            f"{r['attention']:>8}{'y' if r['channels_last'] else 'n':>4}{'y' if r['compile'] else 'n':>5}"
            f"{r['latency_s']['median'] * 1e3:>11.1f}{r['latency_s']['p90'] * 1e3:>9.1f}"
            f"{r['cpu_s']['median'] * 1e3:>9.1f}{r['images_per_s']:>8.2f}{peak:>10}  {stages}"
        )
    r0 = records[0]
    lines.append(
        f"device: {r0['device_name']}; timer: {r0['timer']}; memory: {r0['mem_kind']}; "
        f"weights: {r0['weights']['label']} ({r0['weights']['id']}); "
        f"load average {r0['load_avg_1min'][0]:.1f} -> {r0['load_avg_1min'][1]:.1f}"
    )
    if r0.get("random_full_size"):
        lines.append(
            "RANDOM weights at the released full size: latency and memory of the real architecture; "
            "the outputs are noise, not results."
        )
    elif not r0["weights"]["real"]:
        lines.append("RANDOM weights: these are speed numbers of the plumbing, not of the published model.")
    return "\n".join(lines)


def bench_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    settings = BenchSettings(
        method=args.method,
        steps=args.steps,
        sizes=args.size or [128],
        batch=args.batch,
        warmup=args.warmup,
        repeats=args.repeats,
        device=args.device,
        dtype=args.dtype,
        attention=args.attention,
        channels_last=args.channels_last,
        compile=args.compile,
        compile_mode=args.compile_mode,
        cudnn_benchmark=args.cudnn_benchmark,
        lr_tile=args.lr_tile,
        lr_tile_overlap=args.lr_tile_overlap,
        tiny=args.tiny,
        random_full_size=args.random_full_size,
        full_size_root=args.full_size_root,
        keep_freed_memory=args.keep_freed_memory,
        seed=args.seed,
        options=dict(_parse_option(o) for o in args.option),
    )
    records = run_bench(settings)
    print(format_records(records))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as fh:
            for r in records:
                fh.write(json.dumps({"settings": asdict(settings), **r}, default=str) + "\n")
        print(f"appended {len(records)} record(s) to {args.json}", file=sys.stderr)
    return 0
