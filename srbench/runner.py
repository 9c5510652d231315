"""One cell = one (method, steps, dataset, protocol): data -> method -> metrics -> records.

Idempotent: a finished cell is skipped; an interrupted one resumes at the first image whose
row is not in ``per_image.jsonl`` (DESIGN.md, "Runs, records, leaderboard").

On a terminal the images of a cell show as a progress bar with ETA (:mod:`srbench.progress`), the
per-image log lines above it; elsewhere one line per image.  Memory per image is the peak of the call
above the memory held before it (``peak_mem_mb``; ``held_mem_mb`` = weights and caches), as ``srbench
bench`` measures it: on CPU the process's RSS holds the libraries and the model, which said nothing about
the method (bicubic "used" 1 GB).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib
import json
import logging
import math
import shutil
import traceback
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from srbench.claim import CELL, RECORDS, check_claim, reconcile_dataset, write_cell
from srbench.config_check import validate_run_config
from srbench.data.folders import SRDataset, build_dataset
from srbench.data.images import DEFAULT_MAX_PIXELS, ImageReadError, check_pixels, image_size
from srbench.environment import device_name, dtype_name, environment, resolve_device, resolve_dtype
from srbench.fingerprint import FINGERPRINT_FILE, Fingerprint, dataset_fingerprint
from srbench.identity import CellIdentity, cell_config, cell_relpath, speed_settings
from srbench.interface import SRBenchError, SRMethod, UnsupportedSteps
from srbench.lock import CellLock, LockLost
from srbench.names import safe_name
from srbench.progress import image_progress
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
from srbench.rescore import rescore_claimed, score_rows
from srbench.sample_io import read_sample, save_sr_png
from srbench.scoring import add_set, metric_stat, ordered, score_set_level, set_index, set_stat, stored_sets
from srbench.sweep import parallel_workers, sweep_id
from srbench.timing import MemoryProbe, StageTimer, memory_kind
from srbench.wandb_log import WandbLogger

log = logging.getLogger("srbench")

__all__ = ["CELL", "CellOutcome", "cell_dir", "cell_identity", "check_config", "image_seed", "run_cell"]

_METHODS: dict[str, SRMethod] = {}  # loaded once per process, shared by every cell (steps, datasets)
_METRICS: dict[str, Any] = {}


@dataclass
class CellOutcome:
    status: str  # done | already_done | skipped | failed
    run_dir: Path
    summary: dict[str, Any] | None = None
    reason: str = ""


def cell_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs the same cell (without the run-time precision and device): see
    :mod:`srbench.identity`.  A rerun with the same identity resumes; another is refused."""
    return CellIdentity.from_config(cell_config(cfg)).record()


def cell_dir(cfg: DictConfig | Mapping[str, Any], out_dir: str | Path | None = None) -> Path:
    """Where a cell lives: ``<out_dir>/<dataset>/<protocol>/<label>[-<hash8>]/steps<N>[-seed<S>]``."""
    plain = cell_config(cfg)
    validate_run_config(plain)  # every part of the path is a checked name (srbench/names.py)
    return Path(out_dir if out_dir is not None else plain.get("out_dir", "results/runs")) / cell_relpath(
        plain
    )


def image_seed(seed: int, image_id: str) -> int:
    """Per-image seed, independent of image order, so resumed and full runs draw the same noise."""
    return (int(seed) * 1_000_003 + zlib.crc32(image_id.encode())) % 2**63


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


#: why a full-reference metric has no score on a dataset without HR images
NO_HR = "full-reference metric: the dataset has no HR images"


def _get_metrics(
    metrics_cfg: dict[str, Any], protocol: Protocol, device: torch.device, has_hr: bool = True
) -> Any:
    """The metric suite, built once per process (a metric that cannot be built says so once, then);
    without HR images only the no-reference metrics are built."""
    from srbench.metrics import MetricSuite, metric_specs

    names = [n for n in metrics_cfg.get("names", []) if has_hr or metric_specs()[n].kind == "nr"]
    key = json.dumps(
        [names, metrics_cfg, protocol.crop_border, protocol.y_channel, str(device)], sort_keys=True
    )
    if key not in _METRICS:
        _METRICS[key] = MetricSuite(
            names,
            device=device,
            crop_border=protocol.crop_border,
            y_channel=protocol.y_channel,
            on_missing=metrics_cfg.get("on_missing", "skip"),
            max_pixels=metrics_cfg.get("max_pixels"),
        )
    return _METRICS[key]


def record_failure(run_dir: str | Path, exc: BaseException, cell: Mapping[str, Any] | None = None) -> None:
    """Mark a cell this process holds as failed (its finished per-image rows stay; a rerun retries it).

    Only :func:`run_cell` calls this, after it has claimed and locked the cell: a run that was refused
    (another cell in the directory, a busy lock, a config error) never writes into the directory."""
    write_json(
        Path(run_dir) / SUMMARY,
        {
            **(cell or {}),
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


@dataclass
class _Setup:
    """A cell's configuration, checked before anything is written."""

    plain: dict[str, Any]
    protocol: Protocol
    device: torch.device
    dtype: torch.dtype
    probe: SRMethod


def check_config(plain: dict[str, Any]) -> _Setup:
    """Every check a config can fail without running anything; raises SRBenchError naming the key."""
    from srbench.metrics import metric_specs

    validate_run_config(plain)  # value checks naming the key (steps, seed, device, names, ...)
    import_plugins(plain.get("plugins"))
    for key in ("method", "dataset", "protocol"):
        if not isinstance(plain.get(key), Mapping):
            raise SRBenchError(f"config: '{key}' must be a group of options, got {plain.get(key)!r}")
    names = (plain.get("metrics") or {}).get("names") or []
    unknown = sorted(str(n) for n in names if str(n) not in metric_specs())
    if unknown:
        raise SRBenchError(
            f"config: unknown metric(s) {', '.join(unknown)} in metrics.names; "
            f"known: {', '.join(metric_specs())}"
        )
    on_missing = (plain.get("metrics") or {}).get("on_missing", "skip")
    if on_missing not in ("skip", "error"):
        raise SRBenchError(f"config: metrics.on_missing must be skip or error, got {on_missing!r}")
    protocol = Protocol.from_config(plain["protocol"])
    device = resolve_device(plain.get("device"))
    dtype = resolve_dtype(plain.get("dtype"), device)
    probe = create_method(dict(plain["method"]))  # unknown method or bad option: raised here
    return _Setup(plain, protocol, device, dtype, probe)


def _device_kind(device: torch.device) -> str:
    """The device a cell's latencies were measured on, by kind and model (not index: sweeps reassign it)."""
    return "cpu" if device.type == "cpu" else f"{device.type}:{device_name(device)}"


def run_cell(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path) -> CellOutcome:
    """Run (or resume, or skip) one cell and write its records under ``run_dir``.

    Order: the config is checked and the dataset fingerprinted (nothing written); a directory holding
    another cell is refused (nothing written); the cell is locked (:mod:`srbench.lock`) and checked again;
    only then is anything written.  A failure after that point is recorded in the cell's summary."""
    run_dir = Path(run_dir)
    setup = check_config(cell_config(cfg))
    plain = setup.plain
    dataset = build_dataset(plain["dataset"])
    unused = dataset.meta.get("unused") or []
    if unused:
        log.warning(
            "dataset %s: %d file(s) in its folders are not used (listed with the reason in summary.json "
            "'dataset_unused')",
            dataset.name,
            len(unused),
        )
    fingerprint = dataset_fingerprint(dataset.samples)
    runtime = {"precision": dtype_name(setup.dtype), "device": _device_kind(setup.device)}
    if setup.probe.source == "external":  # outputs made elsewhere: changed files are another cell
        runtime["external_outputs"] = setup.probe.outputs_fingerprint()  # type: ignore[attr-defined]
    ident = CellIdentity.from_config(plain, runtime)
    overwrite = bool(plain.get("overwrite", False))
    if not overwrite:
        check_claim(run_dir, ident)
    with CellLock(run_dir, wait=bool(plain.get("wait_for_lock", False))) as lock:
        if overwrite:
            for name in RECORDS:
                (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "images", ignore_errors=True)
        stored = None if overwrite else check_claim(run_dir, ident)  # again, now that the cell is ours
        cell = _cell_fields(ident, dataset, fingerprint)
        try:
            return _run_claimed(setup, ident, dataset, fingerprint, stored, cell, run_dir, lock)
        except (KeyboardInterrupt, SystemExit, LockLost):
            raise
        except Exception as exc:
            record_failure(run_dir, exc, cell)
            raise


def _cell_fields(ident: CellIdentity, dataset: SRDataset, fingerprint: Fingerprint) -> dict[str, Any]:
    """What every summary of this cell says about which cell it is (done, skipped or failed)."""
    out = ident.outputs
    return {
        "method": ident.label,
        "method_name": out["method"]["name"],
        "variant": ident.variant,
        "options": ident.options,
        "steps": out["steps"],
        "seed": out["seed"],
        "dataset": dataset.name,
        "dataset_fingerprint": fingerprint.brief(),
        "protocol": out["protocol"].get("name"),
        "protocol_settings": Protocol.from_config(out["protocol"]).as_dict(),
        "metric_set": ident.scoring["metrics"],
        "source": "external" if "external_outputs" in ident.runtime else "srbench",
    }


def _run_claimed(
    setup: _Setup,
    ident: CellIdentity,
    dataset: SRDataset,
    fingerprint: Fingerprint,
    stored: dict[str, Any] | None,
    cell: dict[str, Any],
    run_dir: Path,
    lock: CellLock,
) -> CellOutcome:
    plain, protocol, device, dtype = setup.plain, setup.protocol, setup.device, setup.dtype
    for folder in (run_dir, run_dir / "images"):  # temp files of writes a kill cut short (the cell is ours)
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    plog = PerImageLog(run_dir / PER_IMAGE_LOG)
    change = reconcile_dataset(run_dir, stored, fingerprint, plog)  # drops the summary if images changed
    # scores are their own record (srbench/scoring.py): the cell holds the union of its metric sets, and
    # metrics this run adds are scored on the saved images of finished rows, never by running the model
    requested = list(ident.scoring["metrics"])
    before, sets = stored_sets(stored)
    added = sorted(set(requested) - set(before)) if stored is not None else []
    names = sorted(set(before) | set(requested))
    summary_path = run_dir / SUMMARY
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError):
            summary = {}
        if isinstance(summary, dict) and summary.get("status") == "done" and added:
            done = rescore_claimed(
                run_dir,
                added,
                dataset=dataset,
                protocol=protocol,
                scale=setup.probe.scale,
                device=device,
                on_missing=str((plain.get("metrics") or {}).get("on_missing", "skip")),
                how="run",
            )
            why = f"added {', '.join(done) or 'no metric (see the log)'} from the saved images; model not run"
            log.info("%s: %s", run_dir, why)
            return CellOutcome("done", run_dir, json.loads(summary_path.read_text()), why)
        if isinstance(summary, dict) and summary.get("status") in ("done", "skipped"):
            log.info("cell already finished: %s (%s)", run_dir, summary["status"])
            return CellOutcome("already_done", run_dir, summary)  # nothing (re)written
    if stored is None:
        add_set(sets, requested, "run", None)
    elif added:
        add_set(sets, added, "run", None)
    ident.scoring = {"metrics": names, "sets": sets}
    cell["metric_set"] = names
    history = list((stored or {}).get("dataset_changes") or []) + ([change] if change else [])
    cell["dataset_changes"] = history
    write_json(run_dir / FINGERPRINT_FILE, fingerprint.to_json())
    record = {**ident.record(), "dataset_fingerprint": fingerprint.brief(), "dataset_changes": history}
    write_cell(run_dir, record)
    atomic_write_text(run_dir / CONFIG, OmegaConf.to_yaml(OmegaConf.create(plain)))

    steps = int(plain["steps"])
    method_cfg = dict(plain["method"])
    try:
        setup.probe.check_steps(steps)
    except UnsupportedSteps as exc:
        summary = _base_summary(plain, cell, dataset, protocol, device, dtype, None)
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
    metrics = _get_metrics({**plain["metrics"], "names": ordered(names)}, protocol, device, dataset.has_hr)
    not_applicable = [n for n in names if n not in metrics.names]
    external = method.source == "external"
    external_record = (
        method.bind([s.id for s in dataset], protocol)  # type: ignore[attr-defined]
        if external
        else None
    )

    rows = plog.rows()
    retry = bool(plain.get("retry_failed", False))
    finished = {r["id"] for r in rows if r.get("status") == "ok" or not retry}
    kept = [r for r in rows if r["id"] in finished]
    if plog.needs_repair() or len(kept) != len(rows):
        plog.repair(kept)  # drop a torn tail left by a kill (and retried rows), so appends start clean
    rows = kept
    pending = [s for s in dataset if s.id not in finished]
    if rows:
        log.info("resuming %s: %d of %d images already finished", run_dir, len(rows), len(dataset))
    if added and any(r.get("status") == "ok" for r in rows):  # new metrics for the finished images
        log.info("%s: adding %s to %d finished image(s) from their saved images", run_dir, added, len(rows))
        adding = _get_metrics({**plain["metrics"], "names": added}, protocol, device, dataset.has_hr)
        score_rows(rows, adding, run_dir, dataset, protocol, method.scale)
        plog.repair(rows)

    timer = StageTimer(device)
    memory = MemoryProbe(device, trim=not speed["keep_freed_memory"])
    method.timer = timer
    wb = WandbLogger(
        plain.get("wandb"),
        run_dir=run_dir,
        name=f"{ident.label}-s{steps}-{dataset.name}-{protocol.name}",
        group=str(plain.get("sweep_name") or sweep_id() or "single-runs"),
        config=ident.record(),
    )
    try:
        if pending and not external:
            _warm_up(method, dataset, pending, protocol, steps, int(plain.get("warmup", 1)), device, timer)
        images_dir = run_dir / "images" if plain.get("save_images", True) else None
        with image_progress(len(dataset), len(rows), f"{ident.label} steps={steps}") as bar:
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
                    int(plain.get("max_pixels") or DEFAULT_MAX_PIXELS),
                    memory,
                    external,
                )
                lock.check()  # never append to a cell another process has taken over
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
                bar.update(1)
    finally:
        method.timer = None

    lock.check()
    write_table(run_dir / PER_IMAGE_CSV, rows)
    summary = _base_summary(plain, cell, dataset, protocol, device, dtype, method)
    summary.update(_aggregate(rows, metrics))
    summary["metrics_skipped"] = {**dict(metrics.skipped), **dict.fromkeys(not_applicable, NO_HR)}
    if metrics.set_level:  # whole-set metrics (FID): once per cell, over the saved SR images
        ok_ids = [r["id"] for r in rows if r.get("status") == "ok"]
        values, why = score_set_level(metrics, run_dir, ok_ids, dataset, protocol, method.scale)
        for name, value in values.items():
            if not math.isnan(value):
                summary["metrics"][name] = set_stat(value, len(ok_ids), metrics.lower_better(name))
        summary["metrics_skipped"].update(why)
    for name, stat in summary["metrics"].items():
        stat["set"] = set_index(sets, name)
    summary["metric_sets"] = sets
    if external_record is not None:
        summary["external"] = external_record
    summary["metric_notes"] = dict(getattr(metrics, "notes", {}))
    if protocol.quantize == "none":  # set-level metrics read the saved PNGs, which are 8-bit
        notes = summary["metric_notes"]
        for name in [n for n in summary["metrics"] if n in (metrics.set_level or [])]:
            note = "from the saved 8-bit PNGs (quantize none: the per-image metrics scored the float SR)"
            notes[name] = "; ".join(filter(None, [notes.get(name), note]))
    summary["metric_options"] = dict(getattr(metrics, "options", {}))
    # False: a stand-in (e.g. random backbone) file was used; such scores are not results
    summary["metric_weights_verified"] = dict(getattr(metrics, "weights_verified", {}))
    summary["environment"]["pyiqa"] = (
        getattr(metrics, "pyiqa_version", None) or summary["environment"]["pyiqa"]
    )
    ok = summary["n_ok"]
    summary["status"] = "done" if ok > 0 or not rows else "failed"
    if summary["status"] == "failed":
        first = summary["failures"][0]
        summary["reason"] = f"every image failed ({len(rows)}); first: {first['id']}: {first['error']}"
    write_json(summary_path, summary)
    wb.finish(summary, rows)
    return CellOutcome(summary["status"], run_dir, summary, summary.get("reason", ""))


def _upscale_for(method: SRMethod, protocol: Protocol) -> Any:
    """The upscale call that gives the SR the protocol scores: 8-bit by ``protocol.quantize`` or float."""
    if protocol.quantize == "none":
        return method.upscale
    return functools.partial(method.upscale_uint8, mode=protocol.quantize)


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
            lr, _ = read_sample(sample, protocol, method.scale)  # never warms up on an over-size image
        except (ImageReadError, SRBenchError):
            continue
        method.timer = None
        upscale = _upscale_for(method, protocol)
        try:
            for _ in range(n):
                upscale(lr[None], steps=steps, generator=torch.Generator("cpu").manual_seed(0))
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
    max_pixels: int = DEFAULT_MAX_PIXELS,
    memory: MemoryProbe | None = None,
    external: bool = False,
) -> tuple[dict[str, Any], torch.Tensor | None, torch.Tensor | None]:
    row: dict[str, Any] = {"id": sample.id}
    try:  # an id that is not a plain file name, or an image over max_pixels: an error for this image only
        safe_name(sample.id, "image id", hidden_ok=True)
        if external or getattr(dataset, "lr_in_memory", False):  # the dataset's own reader, full images
            for path, what in ((sample.lr_path, "LR"), (sample.hr_path, "HR")):
                if path is not None:
                    check_pixels(Path(path), image_size(path), max_pixels, what)
            lr_full, hr_full = dataset.load(sample)
            lr, hr = protocol.prepare(lr_full, hr_full, method.scale)
            if external:  # the stored SR image of this id, cut to what the protocol scores
                method.select(sample.id, lr_full, hr_full, lr)  # type: ignore[attr-defined]
        else:
            lr, hr = read_sample(sample, protocol, method.scale, max_pixels)
    except (ImageReadError, SRBenchError) as exc:
        row.update(status="error", stage="read", error=str(exc))
        return row, None, None
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    generator = torch.Generator(gen_device).manual_seed(image_seed(seed, sample.id))
    memory = memory or MemoryProbe(device)
    memory.start()  # before the timer: trimming the heap is not the method's time
    timer.reset()
    # with quantize round | floor (every paper protocol) the SR is made as 8 bits the way the protocol's
    # authors save PNGs: no full-size float copy of it exists; quantize none scores the float output
    upscale = _upscale_for(method, protocol)
    try:
        with timer.stage("total"):
            sr = upscale(lr[None], steps=steps, generator=generator)
        latency = timer.finish()
        peak_mb, held_mb = memory.stop()
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        row.update(status="error", stage="upscale", error=f"out of memory on {tuple(lr.shape)}: {exc}")
        return row, None, None
    except Exception as exc:
        log.debug("upscale failed on %s:\n%s", sample.id, traceback.format_exc())
        row.update(status="error", stage="upscale", error=f"{type(exc).__name__}: {exc}")
        return row, None, None
    sr = sr[0].cpu()  # uint8 (round | floor), float for quantize none
    row["quantize"] = protocol.quantize
    if images_dir is not None:
        save_sr_png(sr, images_dir / f"{sample.id}.png")
    try:
        scores = metrics.score(sr, hr)
    except Exception as exc:
        row.update(status="error", stage="metrics", error=f"{type(exc).__name__}: {exc}")
        return row, None, None
    if getattr(metrics, "errors", None):
        row["metric_errors"] = dict(metrics.errors)  # those metrics scored NaN on this image
    row.update(status="ok", lr_h=int(lr.shape[1]), lr_w=int(lr.shape[2]))
    row.update(scores)
    if not external:  # an external method's "latency" would be a file read
        row.update({f"latency_{k}_s": v for k, v in latency.items()})
        row["peak_mem_mb"], row["held_mem_mb"] = peak_mb, held_mb  # the call's increase; what was held before
    return row, sr, lr


def _row_brief(row: dict[str, Any]) -> str:
    skip = {"id", "status", "lr_h", "lr_w", "peak_mem_mb", "held_mem_mb"}
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
        stat = metric_stat(ok, name, metrics.lower_better(name))
        if stat is not None:
            stats[name] = stat
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
    held = [r["held_mem_mb"] for r in ok if r.get("held_mem_mb") is not None]
    out["held_mem_mb"] = max(held) if held else None
    return out


def _base_summary(
    plain: dict[str, Any],
    cell: dict[str, Any],
    dataset: SRDataset,
    protocol: Protocol,
    device: torch.device,
    dtype: torch.dtype,
    method: SRMethod | None,
) -> dict[str, Any]:
    weights = method.weights_info() if method is not None else None
    return {
        **cell,
        "dataset_size": len(dataset),
        "dataset_unused": dataset.meta.get("unused") or [],
        "dataset_beyond_limit": dataset.meta.get("beyond_limit", 0),
        "has_hr": dataset.has_hr,
        "protocol": protocol.name,
        "protocol_settings": protocol.as_dict(),
        "scale": method.scale if method is not None else None,  # x2 and x4 cells never share a table
        "warmup": plain.get("warmup", 1),
        "weights": None
        if weights is None
        else {"id": weights.id, "real": weights.real, "label": weights.label, "detail": weights.detail},
        # the peak of one call above what was held before it (srbench bench's measure); see MemoryProbe
        "memory_kind": memory_kind(device, speed_settings(plain)["keep_freed_memory"]),
        "parallel_workers": parallel_workers() if device.type == "cpu" else 1,
        "speed": speed_settings(plain),
        "environment": environment(device, dtype),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
