"""Weights files that would run code: refused by every srbench loader, in srbench's words."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
import torch

from srbench.safe_load import WeightsFileRefused, check_tensors_only, load_tensors


class _Payload:
    """Unpickled without restrictions, this creates the file named by $SRBENCH_EVIL_MARKER."""

    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['SRBENCH_EVIL_MARKER'], 'w').close()",))


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("SRBENCH_EVIL_MARKER", str(marker))
    path = tmp_path / "weights.pth"
    torch.save({"params": {"conv.weight": torch.zeros(1)}, "x": _Payload()}, path)
    return path, marker


def _loaders():
    from methods.invsr.noise_predictor import read_checkpoint
    from srbench.archs.rrdbnet import load_rrdbnet_checkpoint

    return {"load_tensors": load_tensors, "rrdbnet": load_rrdbnet_checkpoint, "invsr": read_checkpoint}


@pytest.mark.parametrize("loader", ["load_tensors", "rrdbnet", "invsr"])
def test_a_pickle_naming_code_is_refused_without_advice_to_turn_safety_off(evil, loader: str) -> None:
    path, marker = evil
    with pytest.raises(WeightsFileRefused) as e:
        _loaders()[loader](path)
    text = "".join(traceback.format_exception(e.value))  # what a summary.json traceback would hold
    assert str(path) in str(e.value) and "names the Python object 'exec'" in str(e.value)
    assert "weights_only" not in text and "Weights only load failed" not in text and not marker.exists()


def test_tensor_files_load_and_the_check_is_memoised(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"w": torch.arange(3.0)}, good)
    assert torch.equal(load_tensors(good)["w"], torch.arange(3.0))
    assert check_tensors_only(good) is None
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle")
    assert "junk.pth" in (check_tensors_only(junk) or "")
    os.utime(junk, ns=(1, 1))  # another mtime: checked again, same answer
    assert check_tensors_only(junk) is not None


def test_a_refusal_inside_pyiqa_is_reported_in_srbench_words(monkeypatch: pytest.MonkeyPatch) -> None:
    """If pyiqa's own torch.load refuses a file, the skip message is srbench's, without torch's advice."""
    import pickle

    import pyiqa

    from srbench.metrics import MetricSuite

    def refusing(*args, **kwargs):
        raise pickle.UnpicklingError(
            "Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will "
            "likely succeed, but it can result in arbitrary code execution.\n\tWeightsUnpickler error: "
            "Unsupported global: GLOBAL os.system was not an allowed global by default."
        )

    monkeypatch.setattr(pyiqa, "create_metric", refusing)
    suite = MetricSuite(["psnr"])
    why = suite.skipped["psnr"]
    assert "names the Python object 'os.system'" in why and "weights_only" not in why
    with pytest.raises(Exception, match=r"os\.system") as e:
        MetricSuite(["psnr"], on_missing="error")
    assert "weights_only" not in "".join(traceback.format_exception(e.value))
