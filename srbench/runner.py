"""One cell = one (method, steps, dataset, protocol): data -> method -> metrics -> records.

Idempotent: a finished cell is skipped; an interrupted one resumes at the first image whose
row is not in ``per_image.jsonl`` (DESIGN.md, "Runs, records, leaderboard").
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import logging
import shutil
import traceback
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from srbench.data.folders import SRDataset, build_dataset
from srbench.data.images import ImageReadError, save_png
from srbench.environment import environment, resolve_device, resolve_dtype
from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps
from srbench.protocol import Protocol
from srbench.records import (
    CONFIG,
    PER_IMAGE_CSV,
    PER_IMAGE_LOG,
    SUMMARY,
    PerImageLog,
    atomic_write_text,
    mean_ci95,
    percentile,
    write_json,
    write_table,
)
from srbench.registry import create_method
from srbench.sweep import sweep_id
from srbench.timing import StageTimer
from srbench.wandb_log import WandbLogger

log = logging.getLogger("srbench")

CELL = "cell.json"
_METHODS: dict[str, SRMethod] = {}  # loaded once per process, shared by every cell (steps, datasets)
_METRICS: dict[str, Any] = {}


@dataclass
class CellOutcome:
    status: str  # done | already_done | skipped | failed
    run_dir: Path
    summary: dict[str, Any] | None = None
    reason: str = ""


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def cell_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs the same cell: a rerun with the same identity resumes; another is refused."""
    return {
        "run_name": cfg.get("run_name") or cfg["method"]["name"],
        "method": cfg["method"],
        "steps": cfg["steps"],
        "dataset": cfg["dataset"],
        "protocol": cfg["protocol"],
        "metrics": cfg["metrics"],
        "seed": cfg["seed"],
        "dtype": cfg.get("dtype"),
    }


def image_seed(seed: int, image_id: str) -> int:
    """Per-image seed, independent of image order, so resumed and full runs draw the same noise."""
    return (int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63


def speed_settings(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Settings that change speed, not results (within fp tolerance): recorded in every summary."""
    speed = dict(plain.get("speed") or {})
    return {
        "attention": str(speed.get("attention", "default")),
        "channels_last": bool(speed.get("channels_last", False)),
        "compile": bool(speed.get("compile", False)),
        "compile_mode": speed.get("compile_mode"),
        "keep_freed_memory": bool(speed.get("keep_freed_memory", False)),
    }


def _get_method(
    method_cfg: dict[str, Any], device: torch.device, dtype: torch.dtype, speed: dict[str, Any]
) -> SRMethod:
    key = json.dumps([method_cfg, str(device), str(dtype), speed], sort_keys=True)
    if key not in _METHODS:
        from srbench.bench import apply_speed

        method = create_method(method_cfg)
        method.load(device, dtype)
        apply_speed(method, **speed)
        _METHODS[key] = method
    return _METHODS[key]


def _get_metrics(metrics_cfg: dict[str, Any], protocol: Protocol, device: torch.device) -> Any:
    from srbench.metrics import MetricSuite

    key = json.dumps([metrics_cfg, protocol.crop_border, protocol.y_channel, str(device)], sort_keys=True)
    if key not in _METRICS:
        _METRICS[key] = MetricSuite(
            list(metrics_cfg.get("names", [])),
            device=device,
            crop_border=protocol.crop_border,
            y_channel=protocol.y_channel,
            on_missing=metrics_cfg.get("on_missing", "skip"),
        )
    return _METRICS[key]


def _prepare_run_dir(run_dir: Path, identity: dict[str, Any], overwrite: bool) -> None:
    cell_file = run_dir / CELL
    if overwrite:
        for name in (PER_IMAGE_LOG, PER_IMAGE_CSV, SUMMARY, CELL):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "images", ignore_errors=True)
    elif cell_file.is_file():
        stored = json.loads(cell_file.read_text())
        if stored != json.loads(json.dumps(identity)):
            diff = sorted(k for k in identity if stored.get(k) != json.loads(json.dumps(identity[k])))
            raise SRBenchError(
                f"{run_dir}: this run directory holds a different cell (differs in: {', '.join(diff)}). "
                "Pass overwrite=true to replace it, or run_name=<label> to keep both."
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(cell_file, identity)


def record_failure(run_dir: str | Path, exc: BaseException) -> None:
    """Mark a cell as failed (its finished per-image rows stay; a rerun retries the cell)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        run_dir / SUMMARY,
        {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
            "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
    )


def import_plugins(modules: list[str] | None) -> None:
    """Import extra plugin modules named in the config (``plugins=[mypkg.sr]``) so they register."""
    for name in modules or []:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SRBenchError(f"plugin module '{name}' cannot be imported: {exc}") from exc


def run_cell(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path) -> CellOutcome:
    """Run (or resume, or skip) one cell and write its records under ``run_dir``."""
    run_dir = Path(run_dir)
    plain: dict[str, Any] = _plain(cfg)
    if plain.get("lr_tile"):  # generic LR tiling is a method option (it changes the output)
        plain["method"] = {
            **plain["method"],
            "lr_tile": int(plain["lr_tile"]),
            "lr_tile_overlap": int(plain.get("lr_tile_overlap", 32)),
        }
    identity = cell_identity(plain)
    import_plugins(plain.get("plugins"))
    _prepare_run_dir(run_dir, identity, bool(plain.get("overwrite", False)))
    atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.create(plain)))

    summary_path = run_dir / SUMMARY
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") in ("done", "skipped"):
            log.info("cell already finished: %s (%s)", run_dir, summary["status"])
            return CellOutcome("already_done", run_dir, summary)

    steps = int(plain["steps"])
    method_cfg = dict(plain["method"])
    run_name = identity["run_name"]
    protocol = Protocol.from_config(plain["protocol"])
    device = resolve_device(plain.get("device"))
    dtype = resolve_dtype(plain.get("dtype"), device)
    dataset = build_dataset(plain["dataset"])

    probe = create_method(method_cfg)
    try:
        probe.check_steps(steps)
    except UnsupportedSteps as exc:
        summary = _base_summary(plain, run_name, dataset, protocol, device, dtype, None)
        summary.update(status="skipped", reason=str(exc))
        write_json(summary_path, summary)
        log.warning("skipped: %s", exc)
        return CellOutcome("skipped", run_dir, summary, str(exc))

    speed = speed_settings(plain)
    if speed["keep_freed_memory"]:
        from srbench import allocator

        allocator.keep_freed_memory()
    model_speed = {k: v for k, v in speed.items() if k != "keep_freed_memory"}  # a process setting
    method = _get_method(method_cfg, device, dtype, model_speed)
    metrics = _get_metrics(dict(plain["metrics"]), protocol, device)
    for name, message in metrics.skipped.items():
        log.warning("metric %s skipped: %s", name, message)

    plog = PerImageLog(run_dir / PER_IMAGE_LOG)
    rows = plog.rows()
    plog.repair(rows)  # drop a torn tail left by a kill, so appends start on a clean line
    retry = bool(plain.get("retry_failed", False))
    finished = {r["id"] for r in rows if r.get("status") == "ok" or not retry}
    rows = [r for r in rows if r["id"] in finished]
    if retry:
        plog.repair(rows)
    pending = [s for s in dataset if s.id not in finished]
    if rows:
        log.info("resuming %s: %d of %d images already finished", run_dir, len(rows), len(dataset))

    timer = StageTimer(device)
    method.timer = timer
    wb = WandbLogger(
        plain.get("wandb"),
        run_dir=run_dir,
        name=f"{run_name}-s{steps}-{dataset.name}-{protocol.name}",
        group=str(plain.get("sweep_name") or sweep_id() or "single-runs"),
        config=identity,
    )
    try:
        if pending:
            _warm_up(method, dataset, pending, protocol, steps, int(plain.get("warmup", 1)), device, timer)
        images_dir = run_dir / "images" if plain.get("save_images", True) else None
        for sample in pending:
            row, sr, lr = _process(
                sample,
                dataset,
                method,
                metrics,
                protocol,
                steps,
                int(plain["seed"]),
                device,
                timer,
                images_dir,
            )
            plog.append(row)
            rows.append(row)
            if sr is not None:
                wb.log_image(row, sr, lr)
            log.info(
                "[%d/%d] %s %s",
                len(rows),
                len(dataset),
                sample.id,
                _row_brief(row) if row["status"] == "ok" else "ERROR " + row["error"],
            )
    finally:
        method.timer = None

    write_table(run_dir / PER_IMAGE_CSV, rows)
    summary = _base_summary(plain, run_name, dataset, protocol, device, dtype, method)
    summary.update(_aggregate(rows, metrics))
    summary["metrics_skipped"] = dict(metrics.skipped)
    summary["metric_notes"] = dict(getattr(metrics, "notes", {}))
    summary["metric_options"] = dict(getattr(metrics, "options", {}))
    # False: a stand-in (e.g. random backbone) file was used; such scores are not results
    summary["metric_weights_verified"] = dict(getattr(metrics, "weights_verified", {}))
    summary["environment"]["pyiqa"] = (
        getattr(metrics, "pyiqa_version", None) or summary["environment"]["pyiqa"]
    )
    ok = summary["n_ok"]
    summary["status"] = "done" if ok > 0 or not rows else "failed"
    write_json(summary_path, summary)
    wb.finish(summary, rows)
    return CellOutcome(summary["status"], run_dir, summary)


def _warm_up(
    method: SRMethod,
    dataset: SRDataset,
    pending: list[Any],
    protocol: Protocol,
    steps: int,
    n: int,
    device: torch.device,
    timer: StageTimer,
) -> None:
    """Run the method ``n`` times on the first readable pending image, unrecorded (DESIGN.md, Latency)."""
    if n <= 0:
        return
    for sample in pending:
        try:
            lr, hr = dataset.load(sample)
            lr, _ = protocol.prepare(lr, hr, method.scale)
        except (ImageReadError, SRBenchError):
            continue
        method.timer = None
        try:
            for _ in range(n):
                method.upscale(lr[None], steps=steps, generator=torch.Generator("cpu").manual_seed(0))
        except Exception as exc:  # the real pass records the failure per image
            log.warning("warm-up failed on %s: %s", sample.id, exc)
        finally:
            method.timer = timer
        return


def _process(
    sample: Any,
    dataset: SRDataset,
    method: SRMethod,
    metrics: Any,
    protocol: Protocol,
    steps: int,
    seed: int,
    device: torch.device,
    timer: StageTimer,
    images_dir: Path | None,
) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor | None]:
    row: dict[str, Any] = {"id": sample.id}
    try:
        lr, hr = dataset.load(sample)
        lr, hr = protocol.prepare(lr, hr, method.scale)
    except (ImageReadError, SRBenchError) as exc:
        row.update(status="error", stage="read", error=str(exc))
        return row, None, None
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(gen_device).manual_seed(image_seed(seed, sample.id))
    timer.reset()
    try:
        with timer.stage("total"):
            sr = method.upscale(lr[None], steps=steps, generator=generator)
        latency = timer.finish()
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        row.update(status="error", stage="upscale", error=f"out of memory on {tuple(lr.shape)}: {exc}")
        return row, None, None
    except Exception as exc:
        log.debug("upscale failed on %s:\n%s", sample.id, traceback.format_exc())
        row.update(status="error", stage="upscale", error=f"{type(exc).__name__}: {exc}")
        return row, None, None
    sr = protocol.to_8bit(sr[0].cpu())  # round | floor | none, as the protocol's authors save PNGs
    row["quantize"] = protocol.quantize
    if images_dir is not None:
        save_png(sr, images_dir / f"{sample.id}.png")
    try:
        scores = metrics.score(sr, hr)
    except Exception as exc:
        row.update(status="error", stage="metrics", error=f"{type(exc).__name__}: {exc}")
        return row, None, None
    if getattr(metrics, "errors", None):
        row["metric_errors"] = dict(metrics.errors)  # those metrics scored NaN on this image
    row.update(status="ok", lr_h=int(lr.shape[1]), lr_w=int(lr.shape[2]))
    row.update(scores)
    row.update({f"latency_{k}_s": v for k, v in latency.items()})
    row["peak_mem_mb"] = timer.peak_memory_mb()
    return row, sr, lr


def _row_brief(row: dict[str, Any]) -> str:
    skip = {"id", "status", "lr_h", "lr_w", "peak_mem_mb"}
    return " ".join(f"{k}={v:.4g}" for k, v in row.items() if k not in skip and isinstance(v, float))


def _aggregate(rows: list[dict[str, Any]], metrics: Any) -> dict[str, Any]:
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict[str, Any] = {
        "n_images": len(rows),
        "n_ok": len(ok),
        "n_failed": len(rows) - len(ok),
        "failures": [
            {"id": r["id"], "stage": r.get("stage"), "error": r.get("error")}
            for r in rows
            if r.get("status") != "ok"
        ],
    }
    stats: dict[str, Any] = {}
    for name in metrics.available:
        values = [r[name] for r in ok if r.get(name) is not None]
        if not values:
            continue
        mean, ci = mean_ci95(values)
        stats[name] = {"mean": mean, "ci95": ci, "n": len(values), "lower_better": metrics.lower_better(name)}
    out["metrics"] = stats
    stages = sorted({k[len("latency_") : -2] for r in ok for k in r if k.startswith("latency_")})
    out["latency_s"] = {
        s: {
            "mean": mean_ci95([r[f"latency_{s}_s"] for r in ok if f"latency_{s}_s" in r])[0],
            "median": percentile([r[f"latency_{s}_s"] for r in ok if f"latency_{s}_s" in r], 50),
            "p90": percentile([r[f"latency_{s}_s"] for r in ok if f"latency_{s}_s" in r], 90),
        }
        for s in stages
    }
    mems = [r["peak_mem_mb"] for r in ok if r.get("peak_mem_mb") is not None]
    out["peak_mem_mb"] = max(mems) if mems else None
    return out


def _base_summary(
    plain: dict[str, Any],
    run_name: str,
    dataset: SRDataset,
    protocol: Protocol,
    device: torch.device,
    dtype: torch.dtype,
    method: SRMethod | None,
) -> dict[str, Any]:
    weights = method.weights_info() if method is not None else None
    return {
        "method": run_name,
        "method_name": plain["method"]["name"],
        "steps": int(plain["steps"]),
        "dataset": dataset.name,
        "dataset_size": len(dataset),
        "has_hr": dataset.has_hr,
        "protocol": protocol.name,
        "protocol_settings": protocol.as_dict(),
        "seed": plain["seed"],
        "warmup": plain.get("warmup", 1),
        "weights": None
        if weights is None
        else {"id": weights.id, "real": weights.real, "label": weights.label, "detail": weights.detail},
        "memory_kind": "cuda_allocator_peak" if device.type == "cuda" else "process_peak_rss",
        "speed": speed_settings(plain),
        "environment": environment(device, dtype),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
