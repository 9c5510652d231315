"""The Python API: ``srbench.load`` / ``method(image)`` / ``srbench.evaluate``, options checked against
each method's constructor (and every key of ``conf/method/*.yaml``), and ``tiny=True`` random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import srbench
from srbench.api import compose_run_config
from srbench.cli import conf_dir
from srbench.data.images import read_image, to_uint8
from srbench.interface import SRBenchError, SRMethod
from srbench.registry import create_method, get_method_class, list_methods


@pytest.fixture(scope="module")
def bicubic() -> SRMethod:
    return srbench.load("bicubic", device="cpu")


def _expected(method: SRMethod, chw: torch.Tensor) -> torch.Tensor:
    return method.upscale(chw[None], steps=1)[0]


def test_call_returns_the_kind_it_was_given(bicubic: SRMethod, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    want = _expected(bicubic, chw)

    out = bicubic(rgb)  # uint8 (h,w,3) -> uint8 (4h,4w,3), rounded as PNGs are
    assert out.dtype == np.uint8 and out.shape == (24, 20, 3)
    np.testing.assert_array_equal(out, to_uint8(want))

    out = bicubic(rgb.astype(np.float32) / 255.0)  # float in, float out, not rounded
    assert out.dtype == np.float32 and out.shape == (24, 20, 3)
    np.testing.assert_allclose(out, want.permute(1, 2, 0).numpy(), atol=1e-6)

    out = bicubic(rgb.astype(np.uint16) * 257)  # 16-bit keeps 16 bits
    assert out.dtype == np.uint16 and out.shape == (24, 20, 3)

    gray = rgb[..., 0]
    out = bicubic(gray)  # (h,w) in, (4h,4w) out
    assert out.shape == (24, 20) and out.dtype == np.uint8
    batch = np.stack([rgb, rgb[::-1]])
    assert bicubic(batch).shape == (2, 24, 20, 3)

    out = bicubic(chw)  # tensors: channels first, same dtype and device
    assert out.shape == (3, 24, 20) and out.dtype == torch.float32
    torch.testing.assert_close(out, want)
    assert bicubic(chw[None].double()).dtype == torch.float64
    out8 = bicubic((chw * 255).round().to(torch.uint8))
    assert out8.dtype == torch.uint8 and out8.shape == (3, 24, 20)

    pil = bicubic(Image.fromarray(rgb))  # PIL in, PIL out
    assert isinstance(pil, Image.Image) and pil.size == (20, 24)
    np.testing.assert_array_equal(np.asarray(pil), to_uint8(want))

    Image.fromarray(rgb).save(tmp_path / "x.png")
    from_path = bicubic(tmp_path / "x.png")  # a path reads with srbench's file rules; PIL out
    assert isinstance(from_path, Image.Image)
    np.testing.assert_array_equal(
        np.asarray(from_path), to_uint8(_expected(bicubic, read_image(tmp_path / "x.png")))
    )
    assert isinstance(bicubic(str(tmp_path / "x.png")), Image.Image)


def test_call_refuses_what_it_cannot_read(bicubic: SRMethod) -> None:
    with pytest.raises(SRBenchError, match="channels last"):
        bicubic(np.zeros((3, 8, 8), np.uint8))  # a channels-first array
    with pytest.raises(SRBenchError, match="channels first"):
        bicubic(torch.zeros(8, 8, 3))
    with pytest.raises(SRBenchError, match="cannot upscale a list"):
        bicubic([[0.0]])
    with pytest.raises(SRBenchError, match="int64"):
        bicubic(np.zeros((4, 4, 3), np.int64))


def test_load_gives_a_ready_method_with_default_steps() -> None:
    m = srbench.load("invsr", tiny=True, steps=2, device="cpu")
    assert m._loaded and m.default_steps == 2 and not m.weights_info().real  # random weights, labelled
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = m(lr)  # steps=2 and seed=0 unless the call says otherwise
    ref = m.upscale(lr, steps=2, generator=torch.Generator("cpu").manual_seed(0))
    torch.testing.assert_close(out, ref)
    assert not torch.equal(m(lr, steps=1), out)
    with pytest.raises(srbench.UnsupportedSteps):
        srbench.load("bicubic", steps=2)  # checked at load, not at the first image


def test_unknown_option_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(SRBenchError, match=r"unknown option colour_fix \(did you mean color_fix\?\)") as err:
        create_method("invsr", colour_fix="wavelet")
    assert "known options:" in str(err.value) and "chopping_size" in str(err.value)
    with pytest.raises(SRBenchError, match="unknown options"):
        srbench.load("bicubic", sharpen=1, blur=2)


@pytest.mark.parametrize("name", sorted(set(list_methods()) - {"slow_nearest"}))
def test_every_method_refuses_unknown_options(name: str) -> None:
    with pytest.raises(SRBenchError, match=f"method '{name}': unknown option no_such_option"):
        create_method(name, no_such_option=1)


def _method_configs() -> list[str]:
    return sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml"))


#: keys a preset leaves mandatory (``???``): what a user must pass for the method to build
REQUIRED = {"precomputed": ["method.dir=."]}  # the folder of SR images made elsewhere


@pytest.mark.parametrize("preset", _method_configs())
def test_every_config_key_is_a_constructor_option(preset: str) -> None:
    """``conf/method/<preset>.yaml`` composed as the CLI does: every key is an option its method takes
    (or ``name``/``tiny``, which the registry handles), and the method builds from it (with the keys it
    leaves mandatory set)."""
    overrides = [f"method={preset}", *REQUIRED.get(preset, [])]
    cfg = OmegaConf.to_container(compose_run_config(overrides).method, resolve=True)
    cls = get_method_class(cfg["name"])
    assert set(cfg) - {"name", "tiny"} <= set(cls.known_options()), set(cfg) - set(cls.known_options())
    create_method(cfg)


def test_tiny_from_a_run_config_uses_toy_sizes() -> None:
    """``method.tiny=true``: the tiny files replace the weight locations; sizes left at the yaml's values
    become the toy sizes the tiny networks are built for, sizes the user set are kept."""
    cfg = OmegaConf.to_container(
        compose_run_config(["method=invsr", "method.tiny=true"]).method, resolve=True
    )
    m = create_method(cfg)
    assert m.chopping["chopping_size"] == 32 and m.model != cfg["model"] and m.noise_predictor_path
    m = create_method({**cfg, "chopping_size": 64})
    assert m.chopping["chopping_size"] == 64


def test_tiny_false_is_no_option_and_tiny_true_its_own_cell() -> None:
    """Every method config has ``tiny: false`` (so ``-m method=a,b method.tiny=true`` composes); it names
    no option and changes no directory, while ``tiny: true`` (random weights) is a cell of its own."""
    from srbench.identity import cell_config, cell_relpath

    def plain(*overrides: str) -> dict:
        cfg = compose_run_config(["method=invsr", *overrides])
        return cell_config(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))

    assert "tiny" not in plain()["method"] and cell_relpath(plain()).parts[2] == "invsr"
    assert cell_relpath(plain("method.tiny=true")).parts[2].startswith("invsr-")
    assert "tiny" not in plain("method.name=myplugin")["method"]  # a plugin on another method's config


def test_tiny_runs_are_labelled_random(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "LR").mkdir()
    Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).save(tmp_path / "LR" / "a.png")
    summary = srbench.evaluate(
        "invsr", lr_dir=tmp_path / "LR", tiny=True, steps=2, out_dir=tmp_path / "runs", metrics="fast"
    )
    assert summary["status"] == "done" and summary["n_ok"] == 1 and summary["dataset"] == tmp_path.name
    assert summary["weights"]["label"] == "random"  # never presented as a result
    assert Path(summary["run_dir"]).parent.parent.parent == tmp_path / "runs" / tmp_path.name  # as the CLI
    assert (Path(summary["run_dir"]) / "summary.json").is_file()
    with pytest.raises(SRBenchError, match="not set"):
        srbench.evaluate("bicubic", dataset="paired", out_dir=tmp_path / "runs")


def test_package_import_is_light() -> None:
    """``import srbench`` and the CLI's help do not import torch (the names load on first use)."""
    import subprocess
    import sys

    code = "import sys, srbench, srbench.cli; srbench.cli.help_page(); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
