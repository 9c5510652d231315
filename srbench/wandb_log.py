"""Optional wandb logging of a cell: config, per-image scores, sample images, summary.

Off unless ``wandb.enabled=true``; ``wandb.mode=offline`` (the default when enabled) needs no
network or API key and can be uploaded later with ``wandb sync``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class WandbLogger:
    def __init__(
        self, cfg: Mapping[str, Any] | None, *, run_dir: Path, name: str, group: str, config: dict[str, Any]
    ) -> None:
        cfg = dict(cfg or {})
        self.enabled = bool(cfg.get("enabled", False))
        self.max_images = int(cfg.get("log_images", 4))
        self._images = 0
        self._run = None
        if not self.enabled:
            return
        import wandb

        self._wandb = wandb
        settings: dict[str, Any] = {"silent": True}
        if "start_method" in getattr(wandb.Settings, "model_fields", {}):
            # older wandb forks its service from a Hydra job and can hang: use a thread (issue #8);
            # wandb >= 0.2x removed the option because its service no longer forks
            settings["start_method"] = "thread"
        self._run = wandb.init(
            project=cfg.get("project") or "srbench",
            entity=cfg.get("entity"),
            mode=cfg.get("mode") or "offline",
            group=group,
            name=name,
            job_type="cell",
            config=config,
            dir=str(run_dir),
            reinit="finish_previous",
            settings=wandb.Settings(**settings),
        )

    def log_image(self, row: dict[str, Any], sr: torch.Tensor, lr: torch.Tensor) -> None:
        if not self._run:
            return
        data: dict[str, Any] = {
            k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if self._images < self.max_images:
            from srbench.data.images import to_uint8

            sr_u8 = to_uint8(sr) if sr.is_floating_point() else sr.permute(1, 2, 0).cpu().numpy()
            data["sr"] = self._wandb.Image(sr_u8, caption=f"{row['id']} SR")
            data["lr"] = self._wandb.Image(to_uint8(lr), caption=f"{row['id']} LR")
            self._images += 1
        self._run.log(data)

    def finish(self, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        if not self._run:
            return
        for name, stats in summary.get("metrics", {}).items():
            self._run.summary[name] = stats.get("mean")
        for stage, stats in summary.get("latency_s", {}).items():
            self._run.summary[f"latency_{stage}_median_s"] = stats.get("median")
        if rows:
            cols = sorted({k for r in rows for k in r})
            table = self._wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
            self._run.log({"per_image": table})
        self._run.summary["weights"] = summary.get("weights", {}).get("label")
        self._run.finish()
        self._run = None
