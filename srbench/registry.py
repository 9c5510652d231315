"""Method registry in the style of timm's register_model / create_model.

Built-in methods live in the ``methods`` package and register on import; third-party plugins
register through the ``srbench.methods`` entry-point group (``name = "pkg.module:Class"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any, TypeVar

from srbench.interface import SRBenchError, SRMethod

_REGISTRY: dict[str, type[SRMethod]] = {}
_BUILTINS_LOADED = False
ENTRY_POINT_GROUP = "srbench.methods"

M = TypeVar("M", bound=type[SRMethod])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: ``@register_method("invsr")``."""

    def deco(cls: M) -> M:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise SRBenchError(f"method name '{name}' is already registered by {existing.__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    importlib.import_module("methods")  # its __init__ imports every built-in plugin
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY:
            continue
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, SRMethod)):
            raise SRBenchError(f"entry point '{ep.name}' ({ep.value}) is not an SRMethod subclass")
        register_method(ep.name)(cls)


def list_methods() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_method_class(name: str) -> type[SRMethod]:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SRBenchError(f"unknown method '{name}'; registered: {', '.join(sorted(_REGISTRY))}") from None


def create_method(name_or_cfg: str | Mapping[str, Any], **options: Any) -> SRMethod:
    """Build a method from its name, or from a config mapping with a ``name`` key (not loaded yet).

    The remaining keys of the mapping (and ``options``) go to the method's constructor; an option it
    does not take is an error listing the ones it does.  ``tiny=True`` builds the method on tiny random
    weights (written to a private folder, removed at exit), so it runs offline; its results are
    labelled ``random``.
    """
    if isinstance(name_or_cfg, str):
        name, opts = name_or_cfg, {}
    else:
        opts = dict(name_or_cfg)
        name = opts.pop("name")
    opts.update(options)
    cls = get_method_class(name)
    if opts.pop("tiny", False):
        from srbench.testing.factories import tiny_for_run

        return tiny_for_run(name, **opts)
    return cls(**opts)
