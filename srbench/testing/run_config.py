"""A complete run config, as Hydra composes it from ``conf/config.yaml``, for calling ``run_cell`` directly
(tests and benchmarks that skip Hydra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def run_config(
    dataset: Mapping[str, Any],
    /,
    *,
    method: str = "bicubic",
    metric_names: Sequence[str] = ("psnr",),
    **over: Any,
) -> dict[str, Any]:
    """One cell: ``method`` at 1 step on ``dataset`` under the ``full`` protocol, on CPU in fp32, SR images
    saved; ``over`` replaces top-level keys (``dataset=``, ``metrics=`` a whole section)."""
    cfg: dict[str, Any] = {
        "method": {"name": method},
        "steps": 1,
        "dataset": dict(dataset),
        # the boolean quantize (= round) is also what checkouts before the quantize modes read
        "protocol": {"name": "full", "crop_border": 0, "y_channel": True, "quantize": True},
        "metrics": {"names": list(metric_names), "on_missing": "skip"},
        "seed": 0,
        "device": "cpu",
        "dtype": "fp32",
        "warmup": 0,
        "save_images": True,
        "overwrite": False,
        "run_name": None,
        "wandb": {"enabled": False},
    }
    cfg.update(over)
    return cfg
