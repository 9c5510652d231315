"""`srbench bench` and generic LR tiling: what is recorded, that speed settings keep outputs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srbench import create_method
from srbench.bench import (
    BenchSettings,
    bench_cli,
    compile_denoisers,
    format_records,
    method_modules,
    run_bench,
    set_attention,
    set_channels_last,
)
from srbench.interface import SRBenchError
from srbench.testing.factories import build_tiny


@pytest.fixture(scope="module")
def tiny_invsr(tmp_path_factory: pytest.TempPathFactory):
    method = build_tiny("invsr", tmp_path_factory.mktemp("invsr"), chopping_size=0)
    method.load("cpu")
    return method


def _sr(method, lr: torch.Tensor, seed: int = 3) -> torch.Tensor:
    return method.upscale(lr, steps=1, generator=torch.Generator().manual_seed(seed))


def test_bench_cli_records_settings_per_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.jsonl"
    rc = bench_cli(
        ["bicubic", "--size", "16", "--size", "24", "--warmup", "1", "--repeats", "3", "--json", str(out)]
    )
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["lr_size"] for r in records] == [[1, 3, 16, 16], [1, 3, 24, 24]]
    assert [r["sr_size"] for r in records] == [[1, 3, 64, 64], [1, 3, 96, 96]]
    for r in records:
        assert r["dtype"] == "fp32" and r["attention"] == "default" and r["timer"] == "perf_counter"
        assert r["channels_last"] is False and r["compile"] is False and r["steps"] == 1
        lat = r["latency_s"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"]
        assert r["images_per_s"] == pytest.approx(1 / lat["median"])
        assert r["repeats"] == 3 and len(r["warmup_s"]) == 1
        assert r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0  # Linux: VmHWM
        assert r["environment"]["torch"] == torch.__version__
        assert r["settings"]["sizes"] == [16, 24]
    text = capsys.readouterr().out
    assert "bicubic" in text and "perf_counter" in text


def test_bench_records_process_cpu_time_apart_from_wall_time(capsys: pytest.CaptureFixture[str]) -> None:
    import tests.sweep_plugins  # noqa: F401  (registers slow_nearest: it sleeps 0.2 s per call)

    (r,) = run_bench(BenchSettings("slow_nearest", sizes=[8], warmup=0, repeats=2, options={"delay": 0.2}))
    assert r["latency_s"]["min"] >= 0.2  # the sleep is wall time ...
    assert 0 <= r["cpu_s"]["max"] < 0.1  # ... but no CPU time
    assert len(r["load_avg_1min"]) == 2 and all(x >= 0 for x in r["load_avg_1min"])
    print(format_records([r]))
    out = capsys.readouterr().out
    assert "CPU ms" in out and "load average" in out


def test_bench_tiny_diffusion_labels_random_and_times_stages() -> None:
    (r,) = run_bench(BenchSettings("invsr", sizes=[32], warmup=1, repeats=2, tiny=True))
    assert r["weights"]["real"] is False and r["weights"]["label"] == "random"
    assert set(r["stages_median_s"]) == {"noise_predict", "encode", "denoise", "decode"}
    assert sum(r["stages_median_s"].values()) <= r["latency_s"]["max"] * 1.05
    assert r["sr_size"] == [1, 3, 128, 128]


def test_bench_keep_freed_memory_is_applied_and_not_undone_by_the_memory_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from srbench import allocator, timing

    applied: list[int] = []
    trims: list[int] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: applied.append(1) or True)
    monkeypatch.setattr(timing, "malloc_trim", lambda: trims.append(1))
    (r,) = run_bench(BenchSettings("bicubic", sizes=[16], warmup=0, repeats=2, keep_freed_memory=True))
    assert applied == [1] and trims == [] and r["keep_freed_memory"] is True
    run_bench(BenchSettings("bicubic", sizes=[16], warmup=0, repeats=2))
    assert len(trims) == 2  # by default freed pages go back before each timed call, as in runs


def test_method_modules_finds_the_networks(tiny_invsr) -> None:
    mods = method_modules(tiny_invsr)
    names = {type(m).__name__ for m in mods.values()}
    assert {"UNet2DConditionModel", "AutoencoderKL"} <= names
    assert any("noise_predictor" in k for k in mods)
    assert len({id(m) for m in mods.values()}) == len(mods)  # each network once


def test_attention_kernels_and_channels_last_keep_the_output(tmp_path: Path) -> None:
    method = build_tiny("invsr", tmp_path, chopping_size=0)
    method.load("cpu")
    lr = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = _sr(method, lr)
    mods = method_modules(method)
    touched = set_attention(mods, "math")
    assert touched, "no diffusers attention layer was switched"
    unet = next(m for m in mods.values() if type(m).__name__ == "UNet2DConditionModel")
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor"}
    torch.testing.assert_close(_sr(method, lr), ref, atol=1e-5, rtol=0)
    set_attention(mods, "sdpa")
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    torch.testing.assert_close(_sr(method, lr), ref, atol=1e-5, rtol=0)
    set_channels_last(mods)
    conv = next(m for m in unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(_sr(method, lr), ref, atol=1e-5, rtol=0)
    with pytest.raises(SRBenchError, match="attention must be one of"):
        set_attention(mods, "flash9")


def test_compile_targets_the_denoiser_only(tiny_invsr) -> None:
    mods = method_modules(tiny_invsr)
    compiled = compile_denoisers(mods, None)  # lazy: nothing is compiled until the next forward
    assert len(compiled) == 1 and compiled[0].endswith("unet")
    unet = mods[compiled[0]]
    assert type(unet).__name__ == "UNet2DConditionModel"
    assert unet._compiled_call_impl is not None
    unet._compiled_call_impl = None  # undo, so the shared fixture stays eager


def test_bench_refuses_half_precision_on_cpu_and_bad_options() -> None:
    with pytest.raises(SRBenchError, match="fp16 is not supported on CPU"):
        run_bench(BenchSettings("bicubic", sizes=[16], dtype="fp16", device="cpu"))
    with pytest.raises(SRBenchError, match="KEY=VALUE"):
        bench_cli(["bicubic", "--option", "scale"])
    with pytest.raises(SRBenchError, match="repeats >= 1"):
        run_bench(BenchSettings("bicubic", sizes=[16], repeats=0))


# ---- generic LR tiling -----------------------------------------------------------------------------
def test_lr_tiling_runs_tiles_no_larger_than_the_tile_and_blends() -> None:
    method = create_method("bicubic")
    method.load("cpu")
    seen: list[tuple[int, int]] = []
    inner = method._upscale

    def spy(x, steps, gen):
        seen.append(tuple(x.shape[-2:]))
        return inner(x, steps, gen)

    method._upscale = spy  # type: ignore[method-assign]
    lr = torch.rand(1, 3, 70, 50, generator=torch.Generator().manual_seed(1))
    whole = method.upscale(lr)
    assert seen == [(70, 50)]
    method.set_lr_tiling(32, overlap=8, batch=2)
    seen.clear()
    tiled = method.upscale(lr)
    assert seen and all(h <= 32 and w <= 32 for h, w in seen)
    assert tiled.shape == whole.shape
    # bicubic differs only near tile borders; the Gaussian blend keeps seams small
    assert (tiled - whole).abs().mean() < 2e-3 and (tiled - whole).abs().max() < 0.1
    method.set_lr_tiling(128)  # a tile larger than the image: the whole-image path, exactly
    torch.testing.assert_close(method.upscale(lr), whole, atol=0, rtol=0)


def test_lr_tiling_is_a_method_option_with_clear_errors() -> None:
    method = create_method("bicubic", lr_tile=64, lr_tile_overlap=16)
    assert (method.lr_tile, method.lr_tile_overlap) == (64, 16)
    assert "lr_tile" not in method.options
    with pytest.raises(SRBenchError, match="lr_tile=32, lr_tile_overlap=32"):
        create_method("bicubic", lr_tile=32, lr_tile_overlap=32)
    with pytest.raises(SRBenchError, match="batch >= 1"):
        create_method("bicubic", lr_tile=32, lr_tile_batch=0)


def test_lr_tiling_bounds_working_memory_of_a_diffusion_method(tmp_path: Path) -> None:
    method = build_tiny("dossr", tmp_path)
    method.load("cpu")
    biggest: list[int] = []
    inner = method._upscale

    def spy(x, steps, gen):
        biggest.append(x.shape[-2] * x.shape[-1])
        return inner(x, steps, gen)

    method._upscale = spy  # type: ignore[method-assign]
    method.set_lr_tiling(32, overlap=8)
    lr = torch.rand(1, 3, 72, 72, generator=torch.Generator().manual_seed(2))
    out = method.upscale(lr, steps=1, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 288, 288) and max(biggest) == 32 * 32 and len(biggest) == 9
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
