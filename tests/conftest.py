"""Test session set-up: offline, private caches, few threads, wandb off."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="srbench-tests-"))
# Set before torch / diffusers / pyiqa are imported anywhere in the test session.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        "WANDB_SILENT": "true",
        "TORCH_HOME": str(_SESSION_CACHE / "torch"),
        "HF_HOME": str(_SESSION_CACHE / "hf"),
        "SRBENCH_CACHE": str(_SESSION_CACHE / "srbench"),
        "SRBENCH_DATA": str(_SESSION_CACHE / "srbench-data"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        # idle OpenMP threads must not spin: on 2 shared cores spinning slowed UNet calls ~100x
        "OMP_WAIT_POLICY": "PASSIVE",
    }
)

import pytest  # noqa: E402
import torch  # noqa: E402

# one thread: the test models are tiny, and on 2 shared cores a second thread made them 10-100x slower
torch.set_num_threads(1)

#: where tests leave images worth looking at (side-by-side SR crops); kept after the session
ARTIFACTS = Path(
    os.environ.get("SRBENCH_TEST_ARTIFACTS", Path(__file__).parent.parent / "results" / "test-artifacts")
)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Every test starts on one thread, whatever an earlier test left: tiny models gain nothing from a
    second thread, and on a shared 2-core box two OpenMP threads run ~10x slower whenever a core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def session_cache() -> Path:
    return _SESSION_CACHE
