"""Full-size random builds (``srbench.testing.full_size``, ``srbench bench --random-full-size``).

The released sizes are checked on the meta device (nothing allocated); the writers and the bench path are
exercised with the SD 2.1 configs shrunk (the same code, the released formats, tiny files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from srbench.bench import bench_cli
from srbench.testing import full_size
from srbench.testing.full_size import (
    METHODS,
    RELEASED_PARAMETERS,
    build_full_size,
    empty_init,
    fill_random_,
    num_parameters,
    part_builders,
)


def test_released_parameter_counts_on_the_meta_device() -> None:
    """Every part of every method at its released size, without materialising a single weight."""
    seen: dict[str, int] = {}
    for method in ("sd", *METHODS):
        with empty_init():  # the SD parts once ("sd"), then each method's own
            parts = {n: b() for n, b in part_builders(method).items() if method == "sd" or n not in seen}
        for name, module in parts.items():
            assert all(p.is_meta for p in module.parameters()), f"{method}.{name} allocated weights"
            seen[name if method == "sd" else f"{method}.{name}"] = num_parameters(module)
    assert seen == RELEASED_PARAMETERS
    # the papers' totals: StableSR 105.51 M (encoder + SFT) and 149.91 M trainable (+ CFW)
    enc_sft = seen["stablesr.encoder"] + seen["stablesr.sft"]
    assert round(enc_sft / 1e6, 2) == 105.51
    assert round((enc_sft + seen["stablesr.cfw"]) / 1e6, 2) == 149.91


def test_sd21_unet_shapes() -> None:
    """SD 2.1 / SD-Turbo: 4 levels 320-640-1280-1280, 64-channel heads, 1024-d cross-attention."""
    with empty_init():
        unet = part_builders("invsr")["unet"]()
    attn = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert attn.to_k.weight.shape == (320, 1024) and attn.heads == 5
    assert unet.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 20
    assert unet.conv_in.weight.shape == (320, 4, 3, 3)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3)
        self.norm = nn.GroupNorm(4, 16)
        self.lin = nn.Linear(16, 4)
        self.register_buffer("table", torch.arange(5.0))


def test_fill_random_materialises_with_a_seeded_default_scale_fill() -> None:
    with empty_init():
        a, b, c = _Net(), _Net(), _Net()
    assert a.conv.weight.is_meta and not a.table.is_meta
    fill_random_(a, seed=3)
    fill_random_(b, seed=3)
    fill_random_(c, seed=4)
    assert not any(p.is_meta for p in a.parameters())
    assert torch.equal(a.conv.weight, b.conv.weight) and not torch.equal(a.conv.weight, c.conv.weight)
    bound = 1 / (8 * 3 * 3) ** 0.5  # PyTorch's default init scale: 1/sqrt(fan_in)
    assert a.conv.weight.abs().max() <= bound and a.conv.weight.abs().max() > 0.8 * bound
    assert a.conv.weight.std() > 0.5 * bound / 3**0.5
    assert torch.equal(a.norm.weight, torch.ones(16)) and torch.equal(a.norm.bias, torch.zeros(16))
    assert torch.equal(a.table, torch.arange(5.0))  # buffers keep their values
    assert not a.training and not any(p.requires_grad for p in a.parameters())


@pytest.fixture
def shrunk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The SD 2.1 configs at toy widths (same code paths, same formats, small files)."""
    from srbench.testing import tiny_sd

    monkeypatch.setattr(
        full_size,
        "SD21_UNET",
        {
            **full_size.SD21_UNET,
            "block_out_channels": (32, 32, 64, 64),
            "attention_head_dim": (1, 1, 2, 2),
            "cross_attention_dim": 32,
            "layers_per_block": 1,
        },
    )
    monkeypatch.setattr(full_size, "SD21_VAE", {**full_size.SD21_VAE, "block_out_channels": (32,) * 4})
    monkeypatch.setattr(
        tiny_sd,
        "SD2_TEXT_ENCODER_SIZES",
        {**tiny_sd.SD2_TEXT_ENCODER_SIZES, **tiny_sd.TINY_TEXT, "vocab_size": 600},
    )
    return tmp_path / "full_size"


#: the released noise predictor stays full size: one 32-px chop keeps its attention small
SMALL_INPUT = {"invsr": {"chopping_size": 32}, "dossr": {}}


@pytest.mark.parametrize("method", ["invsr", "dossr"])
def test_written_weights_load_through_the_method_and_say_random(shrunk: Path, method: str) -> None:
    m = build_full_size(method, shrunk, seed=1, **SMALL_INPUT[method])
    m.load("cpu", torch.float32)
    info = m.weights_info()
    assert info.real is False and info.label == "random"
    sr = m.upscale(torch.rand(1, 3, 32, 32), steps=1, generator=torch.Generator().manual_seed(0))
    assert sr.shape == (1, 3, 128, 128) and torch.isfinite(sr).all()
    stamp = shrunk / "sd21-arch" / "srbench_full_size.json"
    before = stamp.stat().st_mtime_ns
    build_full_size(method, shrunk, seed=1)  # cached: nothing rewritten
    assert stamp.stat().st_mtime_ns == before


def test_bench_random_full_size_is_labelled(
    shrunk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.jsonl"
    argv = ["invsr", "--random-full-size", "--full-size-root", str(shrunk), "--size", "32"]
    argv += ["-o", "chopping_size=32"]
    rc = bench_cli([*argv, "--warmup", "0", "--repeats", "1", "--json", str(out)])
    assert rc == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["random_full_size"] is True and rec["weights"]["real"] is False
    assert rec["weights"]["label"] == "random"
    text = capsys.readouterr().out
    assert "RANDOM weights at the released full size" in text


def test_random_full_size_refuses_methods_without_a_build_and_tiny() -> None:
    from srbench.bench import BenchSettings, run_bench
    from srbench.interface import SRBenchError

    with pytest.raises(SRBenchError, match="random-full-size builds"):
        run_bench(BenchSettings("bicubic", random_full_size=True))
    with pytest.raises(SRBenchError, match="exclude each other"):
        run_bench(BenchSettings("invsr", random_full_size=True, tiny=True))
