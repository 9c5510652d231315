"""wandb logging in offline mode: no network, no key, files written for a later `wandb sync`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from srbench.wandb_log import WandbLogger


def test_disabled_logger_does_nothing(tmp_path: Path) -> None:
    wb = WandbLogger({"enabled": False}, run_dir=tmp_path, name="x", group="g", config={})
    wb.log_image({"id": "a", "psnr": 1.0}, torch.rand(3, 8, 8), torch.rand(3, 2, 2))
    wb.finish({"metrics": {}}, [])
    assert not any(tmp_path.iterdir())


def test_offline_run_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wb = WandbLogger(
        {"enabled": True, "mode": "offline", "project": "srbench-test", "log_images": 1},
        run_dir=tmp_path,
        name="bicubic-s1-demo-full",
        group="sweep",
        config={"steps": 1},
    )
    for i in range(2):
        wb.log_image(
            {"id": f"im{i}", "status": "ok", "psnr": 20.0 + i}, torch.rand(3, 16, 16), torch.rand(3, 4, 4)
        )
    summary = {
        "metrics": {"psnr": {"mean": 20.5}},
        "latency_s": {"total": {"median": 0.1}},
        "weights": {"label": "real"},
    }
    wb.finish(summary, [{"id": "im0", "psnr": 20.0}, {"id": "im1", "psnr": 21.0}])
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())  # the record `wandb sync` uploads
