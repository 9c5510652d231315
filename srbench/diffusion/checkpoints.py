"""Safe loading of PyTorch-Lightning checkpoint pickles (shared by the StableSR and DoSSR ports).

Official ldm-based checkpoints are Lightning pickles (``{"state_dict", "global_step", "callbacks", ...}``)
whose callbacks are keyed by Lightning classes, so ``torch.load(weights_only=True)`` refuses them.
:func:`load_lightning_checkpoint` reads them without importing pytorch_lightning: a restricted unpickler
that resolves only torch's own weights-only allow-list (tensor rebuild functions, storages, dtypes,
``OrderedDict``) and a few numpy reconstructors, and turns classes of training frameworks (Lightning
callbacks, omegaconf nodes, argparse namespaces) into inert stand-ins; any other global is refused with
an error naming it, so no code from the file can run.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import pickle
import types
from pathlib import Path
from typing import Any

import torch

from srbench.safe_load import WeightsFileRefused

#: module prefixes whose classes are replaced by inert stand-ins (never imported, never called)
_INERT_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "argparse.Namespace",
    "__main__.",  # callbacks defined in a training script (ldm's main.py)
    "main.",
)
_NUMPY_ALLOWED = {
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.dtype",
    "numpy.ndarray",
}


def _torch_allowed_globals() -> dict[str, Any]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except (ImportError, AttributeError):  # pragma: no cover - older/newer torch: a minimal list
        import collections

        return {
            "collections.OrderedDict": collections.OrderedDict,
            "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
            "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
            "torch.Size": torch.Size,
        }


class _Inert:
    """Stand-in for a training-framework class found in a checkpoint; keeps its pickled state only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


_STUBS: dict[str, type] = {}


def _stub(full_name: str) -> type:
    if full_name not in _STUBS:
        module, _, name = full_name.rpartition(".")
        _STUBS[full_name] = type(name, (_Inert,), {"__module__": f"srbench_stub.{module}"})
    return _STUBS[full_name]


class _RestrictedUnpickler(pickle.Unpickler):
    _allowed = _torch_allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles use Python-2 names (``__builtin__``); map them as pickle's fix_imports does
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full in self._allowed:
            return self._allowed[full]
        if full in _NUMPY_ALLOWED:
            return getattr(importlib.import_module(module), name)
        if any(full.startswith(p) for p in _INERT_PREFIXES):
            return _stub(full)
        raise pickle.UnpicklingError(
            f"refusing to load global '{full}' from a checkpoint (only tensors, containers and inert "
            "training-framework objects are allowed)"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


#: what ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` class and a ``load`` function
RESTRICTED_PICKLE = types.SimpleNamespace(
    __name__="srbench_restricted_pickle", Unpickler=_RestrictedUnpickler, load=_restricted_load
)


def load_lightning_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a Lightning ``.ckpt`` (or a plain state-dict pickle), loaded safely.

    Tensors are memory-mapped where the file format allows it, so the optimizer states of a 6.5 GB
    checkpoint are never read into RAM.  ``meta`` holds the scalar entries (``global_step``, ``epoch``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        mmap = torch.serialization._is_zipfile(f)
    try:
        ckpt = torch.load(
            path, map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False, mmap=mmap
        )
    except pickle.UnpicklingError as exc:  # srbench's own refusal: the file names code, not tensors
        raise WeightsFileRefused(f"{path}: {exc}; srbench never runs code from a weights file") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    state = ckpt.get("state_dict", ckpt)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{path}: no tensors found in the checkpoint's state_dict")
    meta = {k: v for k, v in ckpt.items() if isinstance(v, int | float | str) and k != "state_dict"}
    return tensors, meta
