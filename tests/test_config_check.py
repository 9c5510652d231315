"""Bad settings and names: one error naming the key, exit code 1, and nothing written anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from srbench.config_check import validate_run_config
from srbench.interface import ConfigError
from srbench.names import UnsafeName, safe_name


def _cfg(**over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "method": {"name": "bicubic"},
        "steps": 1,
        "seed": 0,
        "device": "cpu",
        "dtype": "auto",
        "dataset": {"name": "demo", "kind": "demo", "limit": None},
        "protocol": {"name": "full"},
        "metrics": {"names": ["psnr"], "on_missing": "skip"},
        "run_name": "bicubic",
        "warmup": 1,
        "save_images": True,
        "lr_tile": None,
        "max_pixels": 2**28,
    }
    cfg.update(over)
    return cfg


@pytest.mark.parametrize(
    "over,match",
    [
        ({"steps": "abc"}, r"^steps: 'abc' is not an integer$"),
        ({"steps": 0}, r"^steps: 0 must be >= 1$"),
        ({"steps": -1}, r"^steps: -1 must be >= 1$"),
        ({"steps": 1.5}, r"^steps: 1.5 is not an integer$"),
        ({"steps": True}, r"^steps: True is not an integer$"),
        ({"seed": "abc"}, r"^seed: 'abc' is not an integer$"),
        ({"device": "tpu"}, r"^device: 'tpu' is not a device srbench can use"),
        ({"device": "xla"}, r"^device: 'xla' is not a device srbench can use"),
        ({"dtype": "fp8"}, r"^dtype: 'fp8' is not one of"),
        ({"warmup": -1}, r"^warmup: -1 must be >= 0$"),
        ({"max_pixels": 0}, r"^max_pixels: 0 must be >= 1$"),
        ({"save_images": "abc"}, r"^save_images: 'abc' is not true or false$"),
        ({"run_name": "../../victim"}, r"^run_name '../../victim' cannot be used as a file or folder name"),
        ({"method": {"name": "a/b"}}, r"^method.name 'a/b' cannot be used"),
        ({"dataset": {"name": ".."}}, r"^dataset.name '..' cannot be used"),
        ({"protocol": {"name": "x\n"}}, r"^protocol.name 'x\\n' cannot be used"),
        ({"metrics": {"on_missing": "maybe"}}, r"^metrics.on_missing: 'maybe' is not skip or error$"),
    ],
)
def test_bad_values_name_their_key(over: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        validate_run_config(_cfg(**over))


def test_good_values_pass() -> None:
    validate_run_config(_cfg())
    validate_run_config(_cfg(device="cuda:1", run_name=5, dtype="bf16", lr_tile=256))
    validate_run_config(_cfg(device="auto", run_name=None))


def test_safe_name_rules() -> None:
    for ok in ("realsr_crop128", "invsr-wavelet", "a b", "Canon_001", "5", 5):
        assert safe_name(ok, "x") == str(ok)
    assert safe_name(".hidden", "image id", hidden_ok=True) == ".hidden"
    for bad in ("", ".", "..", "a/b", "a\\b", "../x", "x\x00", ".hidden", "é" * 200, None, True, 1.5):
        with pytest.raises(UnsafeName, match=r"cannot be used as a file or folder name"):
            safe_name(bad, "x")
    from srbench.runner import cell_dir

    path = cell_dir(_cfg(steps=4), "runs")
    assert path.parts[:3] == ("runs", "demo", "full") and path.name == "steps4"
    with pytest.raises(ConfigError, match="steps: 'abc' is not an integer"):
        cell_dir(_cfg(steps="abc"), "runs")
    with pytest.raises(UnsafeName, match=r"run_name '\.\./x' cannot be used"):
        cell_dir(_cfg(run_name="../x"), "runs")


def test_run_cell_refuses_before_writing(tmp_path: Path) -> None:
    from srbench.runner import run_cell

    run_dir = tmp_path / "runs" / "demo" / "full" / "bicubic" / "steps0"
    with pytest.raises(ConfigError, match="steps: 0 must be >= 1"):
        run_cell(_cfg(steps=0), run_dir)
    assert not (tmp_path / "runs").exists()


def _srbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "srbench.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=dict(os.environ), timeout=300)


@pytest.mark.parametrize(
    "override,message",
    [
        ("run_name=../../victim", "srbench: run_name '../../victim' cannot be used as a file or folder name"),
        ("steps=0", "srbench: steps: 0 must be >= 1"),
        ("device=tpu", "device: 'tpu' is not a device srbench can use"),
    ],
)
def test_cli_bad_setting_is_one_line_exit_1_and_writes_nothing_outside(
    tmp_path: Path, override: str, message: str
) -> None:
    runs = tmp_path / "work" / "runs"
    res = _srbench("method=bicubic", f"out_dir={runs}", "metrics=fast", override, cwd=tmp_path / "work")
    out = res.stderr + res.stdout
    assert res.returncode == 1 and message in out, out[-2000:]
    assert "Traceback" not in out and "weights_only" not in out
    assert not (tmp_path / "victim").exists() and not (tmp_path / "work" / "victim").exists()
    # refused before the cell's directory exists: at most Hydra's own log folder (runs/logs/<time>)
    assert not runs.exists() or sorted(p.name for p in runs.iterdir()) == ["logs"]
    assert not list(runs.rglob("summary.json")) and not list(runs.rglob("cell.json"))


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
