"""Write checkpoints the way PyTorch Lightning 1.x does, for tests of the safe loader
(:func:`srbench.diffusion.checkpoints.load_lightning_checkpoint`) and of the ports that read official
ldm-based ``.ckpt`` files (StableSR, DoSSR).  Needs no pytorch_lightning: the callback class is faked.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import torch


class _FakeModelCheckpoint:
    """Pickled under Lightning's name, as real checkpoints carry ``{ModelCheckpoint: state}``."""


def write_lightning_checkpoint(
    path: str | Path, state_dict: dict[str, torch.Tensor], global_step: int = 0
) -> Path:
    """Write ``state_dict`` the way PyTorch Lightning 1.x does (class-keyed callbacks, optimizer states)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mod_name = "pytorch_lightning.callbacks.model_checkpoint"
    fake = types.ModuleType(mod_name)
    cls = type("ModelCheckpoint", (_FakeModelCheckpoint,), {"__module__": mod_name})
    fake.ModelCheckpoint = cls  # type: ignore[attr-defined]
    first = next(iter(state_dict.values()))
    ckpt = {
        "epoch": global_step // 100,
        "global_step": global_step,
        "pytorch-lightning_version": "1.4.2",
        "state_dict": state_dict,
        "callbacks": {cls: {"monitor": None, "best_model_score": torch.tensor(0.5)}},
        "optimizer_states": [
            {"state": {0: {"exp_avg": torch.zeros_like(first)}}, "param_groups": [{"lr": 5e-5}]}
        ],
        "lr_schedulers": [],
    }
    saved = {k: sys.modules.get(k) for k in ("pytorch_lightning", "pytorch_lightning.callbacks", mod_name)}
    try:
        for k in saved:
            sys.modules[k] = fake if k == mod_name else types.ModuleType(k)
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return path
