"""Run settings checked before a cell writes anything: a bad value is one :class:`ConfigError` naming the key.

:func:`validate_run_config` is the first thing :func:`srbench.runner.run_cell` does.  It checks the types and
ranges of the settings the runner reads (``steps=abc``, ``seed=abc``, ``steps=0``, ``device=tpu`` ...) and
every name that becomes a path (:mod:`srbench.names`).  Keys a config leaves out are not checked here (the
runner's own defaults apply).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from srbench.interface import ConfigError
from srbench.names import safe_name

#: device types srbench can run on (torch.device parses more, e.g. "xla", which srbench does not drive)
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")
DTYPES = ("auto", "fp32", "float32", "fp16", "float16", "bf16", "bfloat16")


def _int(value: Any, key: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: {value!r} is not an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: {value} must be >= {minimum}")
    return int(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not true or false")
    return value


def check_steps(value: Any) -> int:
    """``steps`` as a positive int; ``abc``, ``1.5``, ``0`` and ``-1`` are errors naming the key."""
    return _int(value, "steps", minimum=1)


def check_device(value: Any) -> str:
    """``auto`` or a device srbench can drive (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``xpu``)."""
    if value in (None, "", "auto"):
        return "auto"
    import torch

    text = str(value)
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in DEVICE_TYPES:
        raise ConfigError(
            f"device: {text!r} is not a device srbench can use (auto, cpu, cuda, cuda:N, mps or xpu)"
        )
    return text


def _get(cfg: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_run_config(plain: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming the first key whose value a run cannot use."""
    for key in ("steps", "seed", "method"):
        if key not in plain:
            raise ConfigError(f"{key}: missing from the run config")
    check_steps(plain["steps"])
    _int(plain["seed"], "seed")
    if not isinstance(plain["method"], Mapping):
        raise ConfigError("method: expected a mapping with a 'name'")
    safe_name(plain["method"].get("name"), "method.name")
    if plain.get("run_name") is not None:
        safe_name(plain["run_name"], "run_name")
    for key in ("dataset.name", "protocol.name"):
        present, value = _get(plain, key)
        if present and value is not None:
            safe_name(value, key)
    if "device" in plain:
        check_device(plain["device"])
    if plain.get("dtype") is not None and str(plain["dtype"]) not in DTYPES:
        raise ConfigError(f"dtype: {plain['dtype']!r} is not one of {', '.join(DTYPES)}")
    for key, minimum in (
        ("warmup", 0),
        ("lr_tile", 0),
        ("lr_tile_overlap", 0),
        ("max_pixels", 1),
        ("metrics.max_pixels", 1),
        ("dataset.limit", 0),
    ):
        present, value = _get(plain, key)
        if present and value is not None:
            _int(value, key, minimum=minimum)
    for key in ("save_images", "overwrite", "retry_failed"):
        if key in plain:
            _bool(plain[key], key)
    present, on_missing = _get(plain, "metrics.on_missing")
    if present and on_missing not in ("skip", "error"):
        raise ConfigError(f"metrics.on_missing: {on_missing!r} is not skip or error")
