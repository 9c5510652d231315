"""Load Stable Diffusion parts with diffusers / transformers from a Hugging Face id or a local folder.

One call, :func:`load_sd_components`, brings in any subset of the five parts of an SD-style diffusers
folder (``model_index.json`` + ``unet/ vae/ text_encoder/ tokenizer/ scheduler/``).  It honours
``HF_HOME`` / ``HF_HUB_CACHE`` (where huggingface_hub keeps downloads) and ``HF_HUB_OFFLINE`` (no
network: only what is cached is used), and turns every "file not there" error into
:class:`~srbench.interface.WeightsMissing` with the repo, the part and the command that fetches it.

diffusers and transformers are imported lazily: importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from srbench.interface import SRBenchError, WeightsMissing

log = logging.getLogger(__name__)

PARTS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


@dataclass
class SDComponents:
    """The parts of a Stable Diffusion model; a part not asked for is None."""

    unet: Any = None  # diffusers.UNet2DConditionModel
    vae: Any = None  # diffusers.AutoencoderKL
    text_encoder: Any = None  # transformers.CLIPTextModel
    tokenizer: Any = None  # transformers.CLIPTokenizer
    scheduler: Any = None  # a diffusers scheduler (config and tables; samplers may step by hand)
    source: str = ""  # the HF id or folder they came from
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def require(self, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise SRBenchError(f"SD components from '{self.source}' lack {missing}; load them with parts=...")


def pick_dtype(device: torch.device | str, requested: torch.dtype | str | None = None) -> torch.dtype:
    """fp16 / bf16 only on an accelerator; fp32 on CPU whatever was asked (half-precision convs on
    CPU are slow or missing). ``None`` / ``"auto"`` means fp16 on CUDA, fp32 elsewhere."""
    dev = torch.device(device)
    if requested is None or requested == "auto":
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    elif isinstance(requested, torch.dtype):
        dtype = requested
    else:
        try:
            dtype = _DTYPE_NAMES[str(requested).lower().removeprefix("torch.")]
        except KeyError:
            raise SRBenchError(f"unknown dtype '{requested}'; use auto, fp32, fp16 or bf16") from None
    if dev.type == "cpu" and dtype != torch.float32:
        log.info("dtype %s requested on CPU: using float32", dtype)
        return torch.float32
    return dtype


def hub_offline() -> bool:
    """True when huggingface_hub must not touch the network (``HF_HUB_OFFLINE=1``)."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - very old huggingface_hub
        return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def missing_weights_message(
    what: str, model: str | Path, *, reason: str = "", fetch_hint: str | None = None
) -> str:
    """The text of a WeightsMissing error: what is missing, where it was looked for, how to get it."""
    local = Path(model).expanduser().is_dir() or str(model).startswith(("/", ".", "~"))
    lines = [f"{what} could not be loaded from '{model}'" + (f": {reason}" if reason else "")]
    if local:
        lines.append(
            f"'{model}' is used as a local folder; it must be a diffusers folder "
            "(model_index.json and unet/, vae/, text_encoder/, tokenizer/, scheduler/ subfolders)."
        )
    else:
        state = "downloads are off (HF_HUB_OFFLINE=1)" if hub_offline() else "the download failed"
        lines.append(
            f"Looked in the Hugging Face cache {hub_cache_dir()} (set by HF_HOME/HF_HUB_CACHE); {state}."
        )
        how = f"`srbench weights fetch {fetch_hint}`" if fetch_hint else f"`hf download {model}`"
        lines.append(
            f"Fetch it on a connected machine with {how} using the same HF_HOME, then copy that cache "
            "here, or point the method's `model` option at a local diffusers folder."
        )
    return " ".join(lines)


def _resolve_file(
    model: str | Path, filename: str, local_files_only: bool, revision: str | None = None
) -> Path:
    """Path of one file of a local folder or HF repo (downloading it unless local_files_only)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(model), filename, local_files_only=local_files_only, revision=revision))


def config_with_defaults(model_cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers model config as diffusers completes it: ``model_cls.from_config(config).config``, built
    on the meta device (no weights, ~0.1 s for SD's UNet).  Hub files written by old diffusers lack every
    key added since (SD 2.1-base's unet/config.json, diffusers 0.10, has no ``num_attention_heads``,
    ``class_embed_type``, ``mid_block_type`` ...); code that reads a raw dict must go through this."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = model_cls.from_config(dict(config))
    return dict(model.config)


def _load_tokenizer(model: str | Path, subfolder: str, local_files_only: bool, revision: str | None) -> Any:
    from transformers import CLIPTokenizer

    # transformers 5 silently builds a 2-token tokenizer when vocab/merges are absent: resolve them first
    for name in ("vocab.json", "merges.txt"):
        _resolve_file(model, f"{subfolder}/{name}", local_files_only, revision)
    tok = CLIPTokenizer.from_pretrained(
        str(model), subfolder=subfolder, local_files_only=local_files_only, revision=revision
    )
    if len(tok) < 3 or not 0 < tok.model_max_length <= 4096:
        raise OSError(
            f"tokenizer in {subfolder}/ is incomplete (vocab size {len(tok)}, "
            f"model_max_length {tok.model_max_length}); tokenizer_config.json must set model_max_length"
        )
    return tok


def _scheduler_class(model: str | Path, subfolder: str, local_files_only: bool, revision: str | None) -> type:
    import diffusers

    # every diffusers scheduler reads the same scheduler_config.json; any class can load the dict
    config = diffusers.DDPMScheduler.load_config(
        str(model), subfolder=subfolder, local_files_only=local_files_only, revision=revision
    )
    name = config.get("_class_name", "")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise SRBenchError(f"scheduler class '{name}' in {model}/{subfolder} is not in diffusers")
    return cls


def load_sd_components(
    model: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    parts: Sequence[str] = PARTS,
    scheduler_cls: type | None = None,
    local_files_only: bool | None = None,
    variant: str | None = None,
    revision: str | None = None,
    subfolders: dict[str, str] | None = None,
    fetch_hint: str | None = None,
) -> SDComponents:
    """Load SD parts from a HF id (e.g. ``stabilityai/sd-turbo``) or a local diffusers folder.

    ``parts``: any of ``unet, vae, text_encoder, tokenizer, scheduler``.  Networks are put on
    ``device`` in ``dtype`` (use :func:`pick_dtype`), in eval mode with gradients off.
    ``scheduler_cls``: a diffusers scheduler class built from the folder's scheduler config; default
    the class named there.  ``local_files_only``: default ``HF_HUB_OFFLINE``.  ``variant``: e.g.
    ``"fp16"`` for the half-size files of a hub repo.  ``subfolders`` overrides a part's folder name.
    ``fetch_hint``: a method name, so a WeightsMissing error says ``srbench weights fetch <method>``.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown SD parts {sorted(unknown)}; choose from {PARTS}")
    if local_files_only is None:
        local_files_only = hub_offline()
    sub = {p: p for p in PARTS} | dict(subfolders or {})
    dev = torch.device(device)
    out = SDComponents(source=str(model), dtype=dtype, device=dev)
    common: dict[str, Any] = {"local_files_only": local_files_only}
    if revision is not None:
        common["revision"] = revision

    for part in parts:
        try:
            if part == "unet":
                from diffusers import UNet2DConditionModel

                net = UNet2DConditionModel.from_pretrained(
                    str(model), subfolder=sub[part], torch_dtype=dtype, variant=variant, **common
                )
            elif part == "vae":
                from diffusers import AutoencoderKL

                net = AutoencoderKL.from_pretrained(
                    str(model), subfolder=sub[part], torch_dtype=dtype, variant=variant, **common
                )
            elif part == "text_encoder":
                from transformers import CLIPTextModel

                net = CLIPTextModel.from_pretrained(
                    str(model), subfolder=sub[part], variant=variant, **common
                )
                net = net.to(dtype=dtype)
            elif part == "tokenizer":
                out.tokenizer = _load_tokenizer(model, sub[part], local_files_only, revision)
                continue
            else:  # scheduler
                cls = scheduler_cls or _scheduler_class(model, sub[part], local_files_only, revision)
                out.scheduler = cls.from_pretrained(str(model), subfolder=sub[part], **common)
                continue
        except WeightsMissing:
            raise
        except (OSError, ValueError) as exc:  # OSError covers the hub's offline / not-found errors
            # ValueError: raised by diffusers/transformers for a missing variant file; others propagate
            if isinstance(exc, ValueError) and "variant" not in str(exc) and "not found" not in str(exc):
                raise
            msg = missing_weights_message(
                f"SD part '{part}' ({sub[part]}/)", model, reason=_first_line(exc), fetch_hint=fetch_hint
            )
            raise WeightsMissing(msg) from exc
        net = net.to(dev).eval().requires_grad_(False)
        setattr(out, part, net)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
