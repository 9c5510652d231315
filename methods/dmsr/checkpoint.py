"""srbench's own DM-SR checkpoint format (no official one exists; see README.md in this folder).

A checkpoint is a directory::

    <dir>/dmsr.json          hyper-parameters (:class:`DMSRConfig`), UTF-8 JSON
    <dir>/dmsr.safetensors   trained weights: ``estimator.*`` (T) and ``encoder.*`` (E_θ)

Only the two trained networks are stored; the frozen SD parts (UNet, VAE decoder, text encoder) are
loaded from ``base_model`` (a Hugging Face id or a local diffusers folder).  The safetensors header
carries ``{"format": "srbench-dmsr", "format_version": "1"}`` as well.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from methods.dmsr.encoder import TimestepAwareEncoder
from methods.dmsr.estimator import NUM_BINS, TimestepEstimator
from srbench.atomic import file_mode, temp_file_beside
from srbench.interface import SRBenchError, WeightsMissing

FORMAT = "srbench-dmsr"
FORMAT_VERSION = 1
CONFIG_FILE = "dmsr.json"
WEIGHTS_FILE = "dmsr.safetensors"

#: the fixed prompt of the paper (§3.3, footnote 1)
PAPER_PROMPT = (
    "High-quality, high-contrast, photo-realistic, clean, sharp, highly-detailed, perfect, 8k, ultra HD"
)
DEFAULT_BASE_MODEL = "stabilityai/sd-turbo"  # §4.1


@dataclass
class DMSRConfig:
    """Everything needed to rebuild T and E_θ and to run them the way they were trained."""

    estimator: dict[str, Any] = field(default_factory=lambda: {"num_bins": NUM_BINS, "width_div": 1})
    encoder: dict[str, Any] = field(default_factory=dict)  # TimestepAwareEncoder kwargs
    base_model: str = DEFAULT_BASE_MODEL  # the frozen SD the encoder was trained against
    prompt: str = PAPER_PROMPT
    t_max: int = NUM_BINS - 1  # t̂ is clamped to [0, t_max]
    scale: int = 4
    upsample: str = "bicubic"  # I_LR = F.interpolate(lr, x4, bicubic, align_corners=False).clamp(0, 1)
    #: True only for weights trained on the real base model (never for tiny/random test models)
    real: bool = False
    training: dict[str, Any] = field(default_factory=dict)  # iterations per stage, seed, recipe, ...
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "") -> DMSRConfig:
        if d.get("format") != FORMAT:
            raise SRBenchError(f"{where}: not a DM-SR checkpoint config (format={d.get('format')!r})")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise SRBenchError(
                f"{where}: format_version {d['format_version']} is newer than this srbench ({FORMAT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise SRBenchError(f"{where}: unknown keys {unknown}")
        return cls(**d)


@dataclass
class DMSRCheckpoint:
    config: DMSRConfig
    estimator: TimestepEstimator
    encoder: TimestepAwareEncoder
    path: Path | None = None


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = temp_file_beside(path)
    os.close(fd)
    try:
        write(tmp)
        # whatever mode the writer left (safetensors recreates the file 0600), others may read a checkpoint
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    estimator: TimestepEstimator,
    encoder: TimestepAwareEncoder,
    config: DMSRConfig,
) -> Path:
    """Write ``dmsr.safetensors`` and ``dmsr.json`` into directory ``path`` (created); atomic per file."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config.estimator = estimator.config()
    config.encoder = encoder.config()
    tensors: dict[str, torch.Tensor] = {}
    for prefix, module in (("estimator", estimator), ("encoder", encoder)):
        for k, v in module.state_dict().items():
            tensors[f"{prefix}.{k}"] = v.detach().to("cpu", torch.float32).contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    _atomic_write(out / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))
    text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
    _atomic_write(out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out


def read_config(path: str | os.PathLike[str]) -> DMSRConfig:
    """The hyper-parameters of the checkpoint directory ``path``."""
    cfg_path = Path(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise WeightsMissing(
            f"no DM-SR checkpoint at {Path(path)} (missing {CONFIG_FILE}); no official DM-SR weights exist: "
            "train one with `srbench train dmsr` (see methods/dmsr/README.md)"
        )
    try:
        d = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SRBenchError(f"{cfg_path}: unreadable DM-SR config: {exc}") from exc
    return DMSRConfig.from_dict(d, where=str(cfg_path))


def _split(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in state.items() if k.startswith(p)}


def load_checkpoint(path: str | os.PathLike[str], *, device: torch.device | str = "cpu") -> DMSRCheckpoint:
    """Rebuild T and E_θ from a checkpoint directory (fp32, eval mode, on ``device``)."""
    root = Path(path)
    config = read_config(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsMissing(f"{weights}: missing (the checkpoint has {CONFIG_FILE} but no weights)")
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise SRBenchError(f"{weights}: not a DM-SR weights file (format={meta.get('format')!r})")
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    estimator = TimestepEstimator(**config.estimator)
    encoder = TimestepAwareEncoder(**config.encoder)
    for name, module in (("estimator", estimator), ("encoder", encoder)):
        try:
            module.load_state_dict(_split(state, name), strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[:3]
            raise SRBenchError(
                f"{weights}: {name} weights do not match {CONFIG_FILE}: {' '.join(first)}"
            ) from exc
    estimator.to(device).eval()
    encoder.to(device).eval()
    return DMSRCheckpoint(config=config, estimator=estimator, encoder=encoder, path=root)
