"""A cell's identity and the run directory derived from it.

Three records make a cell (all stored in ``cell.json``):

* :func:`outputs_identity` — what changes the SR images: method options (with ``lr_tile``), steps, seed,
  dtype, the dataset's configuration, the protocol.  (The dataset's *content* is the fingerprint, stored and
  compared on its own: a folder that changed resumes in the same directory, see :mod:`srbench.fingerprint`.)
* :func:`measurement_settings` — what changes the measured latency but not the images: ``speed.*`` and
  ``warmup``.
* :func:`scoring_identity` — the metric set.  It is not part of the directory: outputs and their scores are
  separate records, and a cell scored with one metric set is never silently mixed with another.

The directory is ``<dataset>/<protocol>/<label>[-<hash8>]/steps<N>[-seed<S>]``: ``label`` is ``run_name``
(the method's name by default); ``hash8`` is the first 8 hex digits of the sha256 of the options in which
the cell differs from the defaults of its config groups (``conf/method/<name>.yaml``,
``conf/dataset/<name or kind>.yaml``, ``conf/protocol/<name>.yaml``, ``conf/config.yaml``), and is absent when
it differs in none; ``-seed<S>`` is absent for the default seed.  So the default configuration keeps a short,
stable path, and a sweep over any key that changes a cell's numbers never puts two cells in one directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from srbench.interface import SRBenchError
from srbench.protocol import current_settings

FORMAT = 2  # cell.json layout (1: the flat identity of srbench before fingerprints)
UNSET = "<unset>"


def cell_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain data; generic LR tiling is folded into the method (it changes outputs)."""
    plain: dict[str, Any] = (
        OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)  # type: ignore[assignment]
    )
    if plain.get("lr_tile"):
        plain["method"] = {
            **plain["method"],
            "lr_tile": int(plain["lr_tile"]),
            "lr_tile_overlap": int(plain.get("lr_tile_overlap", 32)),
        }
    if isinstance(plain.get("method"), Mapping):
        plain["method"] = _real_weights_implicit(plain["method"])
    return plain


def _real_weights_implicit(method: Mapping[str, Any]) -> dict[str, Any]:
    """``tiny: false`` (every method config has it, for ``method.tiny=true`` sweeps) is the same cell as no
    ``tiny`` key: only ``tiny: true`` (random weights) is part of a cell's identity."""
    return {k: v for k, v in method.items() if not (k == "tiny" and v is False)}


def label(plain: Mapping[str, Any]) -> str:
    return str(plain.get("run_name") or plain["method"]["name"])


def speed_settings(plain: Mapping[str, Any]) -> dict[str, Any]:
    """Settings that change speed, not results (within fp tolerance): recorded in every summary."""
    speed = dict(plain.get("speed") or {})
    return {
        "attention": str(speed.get("attention", "default")),
        "channels_last": bool(speed.get("channels_last", False)),
        "compile": bool(speed.get("compile", False)),
        "compile_mode": speed.get("compile_mode"),
        "keep_freed_memory": bool(speed.get("keep_freed_memory", False)),
    }


def outputs_identity(plain: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs produce the same SR images (the dataset's content aside)."""
    return {
        "method": plain["method"],
        "steps": int(plain["steps"]),
        "seed": int(plain["seed"]),
        "dtype": str(plain.get("dtype") or "auto"),
        "dataset": plain["dataset"],
        "protocol": current_settings(plain["protocol"]),
    }


def measurement_settings(plain: Mapping[str, Any]) -> dict[str, Any]:
    """What changes the measured latency of the same outputs (``keep_freed_memory`` only speeds scoring)."""
    speed = {k: v for k, v in speed_settings(plain).items() if k != "keep_freed_memory"}
    return {"speed": speed, "warmup": int(plain.get("warmup", 1))}


def scoring_identity(plain: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two runs score the same outputs the same way (crop and Y channel come with the protocol)."""
    metrics = plain.get("metrics") or {}
    return {"metrics": sorted({str(m) for m in metrics.get("names", [])})}


# ---------------------------------------------------------------------------------------- defaults, hash


def _conf_root() -> Path | None:
    from srbench.cli import conf_dir

    try:
        return conf_dir()
    except SRBenchError:
        return None


@cache
def _group_defaults(group: str, name: str) -> dict[str, Any] | None:
    root = _conf_root()
    if root is None or not name or "/" in name or name.startswith("."):
        return None
    path = root / group / f"{name}.yaml" if group else root / f"{name}.yaml"
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _diff(prefix: str, values: Mapping[str, Any], defaults: Mapping[str, Any] | None) -> dict[str, Any]:
    fv, fd = _flat(values), _flat(defaults or {})
    out: dict[str, Any] = {}
    for k in sorted(set(fv) | set(fd)):
        if k == "name":  # in the path already
            continue
        if k not in fv:
            out[f"{prefix}.{k}"] = UNSET
        elif k not in fd or fv[k] != fd[k]:
            out[f"{prefix}.{k}"] = fv[k]
    return out


def variant_options(plain: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields (dotted keys) in which this cell differs from its config groups' defaults."""
    method, dataset, protocol = plain["method"], plain["dataset"], plain["protocol"]
    ds_defaults = _group_defaults("dataset", str(dataset.get("name"))) or _group_defaults(
        "dataset", str(dataset.get("kind"))
    )
    top = _group_defaults("", "config") or {}
    top_defaults = {
        "dtype": str(top.get("dtype") or "auto"),
        **measurement_settings({"speed": top.get("speed"), "warmup": top.get("warmup", 1)}),
    }
    top_values = {"dtype": str(plain.get("dtype") or "auto"), **measurement_settings(plain)}
    options = {
        **_diff(
            "method", method, _real_weights_implicit(_group_defaults("method", str(method["name"])) or {})
        ),
        **_diff("dataset", dataset, ds_defaults),
        **_diff("protocol", protocol, _group_defaults("protocol", str(protocol.get("name")))),
    }
    for k, v in _flat(top_values).items():
        if _flat(top_defaults).get(k, UNSET) != v:
            options[k] = v
    return options


def _default_seed() -> int:
    top = _group_defaults("", "config") or {}
    try:
        return int(top.get("seed", 0))
    except (TypeError, ValueError):
        return 0


def variant_hash(plain: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> str:
    """8 hex digits naming this cell's non-default options; empty for the defaults under the method's name."""
    options = variant_options(plain) if options is None else options
    name = str(plain["method"]["name"])
    if not options and label(plain) == name:
        return ""
    body = json.dumps(
        {"method": name, "options": options}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()[:8]


def cell_relpath(plain: Mapping[str, Any]) -> Path:
    """``<dataset>/<protocol>/<label>[-<hash8>]/steps<N>[-seed<S>]`` (see the module docstring)."""
    variant = variant_hash(plain)
    seed = int(plain["seed"])
    leaf = f"steps{int(plain['steps'])}" + ("" if seed == _default_seed() else f"-seed{seed}")
    name = label(plain) + (f"-{variant}" if variant else "")
    return Path(str(plain["dataset"]["name"])) / str(plain["protocol"]["name"]) / name / leaf


# ---------------------------------------------------------------------------------------- cell.json


@dataclass
class CellIdentity:
    label: str
    variant: str
    options: dict[str, Any]
    outputs: dict[str, Any]
    measurement: dict[str, Any]
    scoring: dict[str, Any]
    #: resolved at run time: precision (``dtype: auto`` is fp16 on CUDA) and device kind
    runtime: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, plain: Mapping[str, Any], runtime: Mapping[str, Any] | None = None) -> CellIdentity:
        options = variant_options(plain)
        return cls(
            label=label(plain),
            variant=variant_hash(plain, options),
            options=options,
            outputs=_jsonable(outputs_identity(plain)),
            measurement=_jsonable(measurement_settings(plain)),
            scoring=scoring_identity(plain),
            runtime=dict(runtime or {}),
        )

    def record(self) -> dict[str, Any]:
        return {"format": FORMAT, **_jsonable(asdict(self))}


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def from_legacy(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A cell.json written before fingerprints (one flat identity) in today's layout; unknown parts empty."""
    metrics = stored.get("metrics") or {}
    return {
        "format": FORMAT,
        "label": stored.get("run_name"),
        "outputs": {
            "method": stored.get("method"),
            "steps": stored.get("steps"),
            "seed": stored.get("seed"),
            "dtype": str(stored.get("dtype") or "auto"),
            "dataset": stored.get("dataset"),
            "protocol": current_settings(stored.get("protocol") or {}),
        },
        "scoring": {"metrics": sorted({str(m) for m in metrics.get("names", [])})},
    }


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def differences(stored: Mapping[str, Any], current: Mapping[str, Any], section: str) -> list[str]:
    """``key: stored -> current`` for each dotted key of ``section`` that differs (sections absent from a
    legacy record are not compared)."""
    if section not in stored:
        return []
    old, new = stored[section], current[section]
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return [] if old == new else [f"{section}: {_short(old)} -> {_short(new)}"]
    fo, fn = _flat(old, section), _flat(new, section)
    return [
        f"{k}: {_short(fo.get(k, UNSET))} -> {_short(fn.get(k, UNSET))}"
        for k in sorted(set(fo) | set(fn))
        if fo.get(k, UNSET) != fn.get(k, UNSET)
    ]
