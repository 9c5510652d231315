"""Which files each pyiqa metric needs, where they must lie, and where they come from.

pyiqa downloads its weights lazily, from four places, into four caches (research/env.md §5):

* pyiqa's own checkpoints: ``pyiqa.utils.download_util.DEFAULT_CACHE_DIR`` (``torch.hub.get_dir()/pyiqa``),
  fetched from ``huggingface.co/chaofengc/IQA-PyTorch-Weights``;
* torchvision ImageNet backbones (LPIPS, DISTS): ``torch.hub.get_dir()/checkpoints``;
* OpenAI CLIP (CLIPIQA, LIQE): ``torch.hub.get_dir()/clip``, checked against the SHA256 in the URL;
* timm backbones (MANIQA, TOPIQ, NIMA): the Hugging Face hub cache.

With no network, a missing file makes pyiqa hang in retries and then fail, so
:class:`srbench.metrics.MetricSuite` checks these files first.  File names and URLs are read at run time
from pyiqa, torchvision and timm themselves (their ``default_model_urls`` tables, weight enums and
pretrained configs), never typed in by hand here.

Trust: pyiqa and torchvision unpickle their files with ``torch.load(weights_only=False)``, which runs any
code a file names.  So a file is handed to them only when :meth:`RequiredFile.refusal` finds nothing
wrong: its SHA256 matches the hash the publisher put in its name (torchvision, pyiqa: a 8-12 hex digit
prefix) or its URL (CLIP: the full hash), and, for every file those loaders unpickle, srbench's own
weights-only load succeeds (:func:`srbench.safe_load.check_tensors_only`), which also covers the files
no hash is published for (BRISQUE's SVM, MANIQA's and LIQE's checkpoints, a timm ``pytorch_model.bin``)
and LIQE's text-feature cache.  A file that fails is never loaded: the metric is skipped (or the run
stops) with a message naming the file, its hash and the expected one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from srbench.paths import cache_dir
from srbench.safe_load import PICKLE_SUFFIXES, check_tensors_only

Source = Literal["pyiqa", "pyiqa-cache", "torchvision", "clip", "timm"]

# srbench metric name -> the files pyiqa's arch needs, as (source, key...) references resolved lazily:
#   ("pyiqa", "<arch module>", "<key in its default_model_urls>"[, "<package>", "<file in it>"])
#   ("pyiqa_url", "<arch module>", "<module attribute holding the URL>")
#       the optional package file is an identical copy, accepted when its SHA256 matches the hash in the name
#   ("torchvision", "<weights enum in torchvision.models>"): IMAGENET1K_V1, hard-coded in pyiqa's archs
#   ("clip", "<backbone name in pyiqa.archs.clip_model._MODELS>")
#   ("timm", "<timm model name passed by the arch with pretrained=True>")
_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "psnr": (),
    "psnr-rgb": (),
    "ssim": (),
    # the lpips package ships byte-identical copies of pyiqa's LPIPS linear layers (same SHA256): a stand-in
    "lpips": (
        ("torchvision", "AlexNet_Weights"),
        ("pyiqa", "lpips_arch", "0.1_alex", "lpips", "weights/v0.1/alex.pth"),
    ),
    "lpips-vgg": (
        ("torchvision", "VGG16_Weights"),
        ("pyiqa", "lpips_arch", "0.1_vgg", "lpips", "weights/v0.1/vgg.pth"),
    ),
    "dists": (("torchvision", "VGG16_Weights"), ("pyiqa", "dists_arch", "url")),
    "niqe": (("pyiqa", "niqe_arch", "url"),),
    # PI = (10 - NRQM + NIQE) / 2; pyiqa's PI takes no path for either part, so both must be in pyiqa's cache
    "pi": (("pyiqa", "nrqm_arch", "url"), ("pyiqa", "niqe_arch", "url")),
    "brisque": (("pyiqa", "brisque_arch", "url"),),
    "clipiqa": (("clip", "RN50"),),
    "musiq": (("pyiqa", "musiq_arch", "koniq10k"),),
    "maniqa": (("timm", "vit_base_patch8_224"), ("pyiqa", "maniqa_arch", "koniq")),
    "maniqa-pipal": (("timm", "vit_base_patch8_224"), ("pyiqa", "maniqa_arch", "pipal")),
    "topiq_nr": (("timm", "resnet50"), ("pyiqa", "topiq_arch", "cfanet_nr_koniq_res50")),
    "topiq_fr": (("timm", "resnet50"), ("pyiqa", "topiq_arch", "cfanet_fr_kadid_res50")),
    # LIQE caches its CLIP text features in pyiqa's folder and unpickles that file when it is there
    "liqe": (("clip", "ViT-B/32"), ("pyiqa", "liqe_arch", "koniq"), ("pyiqa-cache", "liqe_text_feat.pt")),
    "nima": (("timm", "inception_resnet_v2"), ("pyiqa", "nima_arch", "inception_resnet_v2-ava")),
    # set-level: pyiqa's FID InceptionV3 (pytorch-fid's port of the TF 2015-12-05 graph)
    "fid": (("pyiqa_url", "inception", "FID_WEIGHTS_URL"),),
}

_TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's HF loader looks for, in that order
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.ext


@dataclass(frozen=True)
class RequiredFile:
    """One file a metric needs before it can be built without network."""

    source: Source
    filename: str
    url: str
    path: Path  # the full path where it must be placed (timm: the HF-cache path, with <commit> left open)
    what: str  # a few words saying what the file is
    sha256: str | None = None  # full hash, checked by the loader itself (CLIP): a mismatch counts as missing
    hf_repo: str | None = None  # timm: the HF repo id
    alternatives: tuple[Path, ...] = ()  # identical copies shipped by other packages (accepted on hash match)
    optional: bool = False  # a cache the metric makes itself when absent (checked only when present)

    @property
    def hash_prefix(self) -> str | None:
        """SHA256 prefix promised by the file name (torchvision, pyiqa), or the full CLIP hash."""
        if self.sha256:
            return self.sha256
        m = _HASH_IN_NAME.search(self.filename)
        return m.group(1) if m else None

    def locate(self) -> Path | None:
        """The file on disk when it is present, else None (whether it may be loaded: :meth:`refusal`).

        An alternative copy counts only when its SHA256 matches the prefix in the expected file name.
        """
        if self.source == "timm":
            from huggingface_hub import try_to_load_from_cache

            for name in _TIMM_FILES:
                hit = try_to_load_from_cache(self.hf_repo, name)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
            return None
        if self.path.is_file():
            return self.path
        prefix = self.hash_prefix
        for alt in self.alternatives:
            if prefix and alt.is_file() and sha256_of(alt).startswith(prefix):
                return alt
        return None

    @property
    def unpickled(self) -> bool:
        """Does the loader (pyiqa, torchvision, timm) unpickle this file with ``torch.load``?"""
        return self.source != "clip" and self.filename.lower().endswith(PICKLE_SUFFIXES)

    def refusal(self, located: Path) -> str | None:
        """Why ``located`` must not be handed to its loader, or None when it may be.

        Refused: a SHA256 that differs from the published one (message: the file, its hash, the expected
        one), and, for a file the loader unpickles, content srbench's weights-only load rejects.
        """
        expected = self.hash_prefix
        if expected is not None and self.source != "timm":
            digest = sha256_of(located)
            if not digest.startswith(expected):
                return (
                    f"{located} is not the published {self.what}: its sha256 is {digest}, the published "
                    f"one {'is' if len(expected) == 64 else 'starts with'} {expected}; srbench does not load "
                    f"it. Replace it with the file from {self.url}"
                )
        if self.unpickled:
            why = check_tensors_only(located)
            if why is not None:
                return f"{self.what}: {why} (srbench will not let {self.source} unpickle it)"
        return None

    def verified(self, located: Path) -> bool | None:
        """True when the located file's SHA256 matched a published hash, None when none is published."""
        if self.hash_prefix is None or self.source == "timm":
            return None
        return sha256_of(located).startswith(self.hash_prefix)

    def problem(self) -> str:
        """Message for a missing file: which file, the full path to place it at, its URL."""
        if self.source == "timm":
            return (
                f"missing {self.what}: {self.filename} of Hugging Face repo {self.hf_repo}, expected in "
                f"the HF hub cache at {self.path} (run `hf download {self.hf_repo} {self.filename}` on a "
                f"machine with network and copy the cache; set HF_HUB_OFFLINE=1 to read it offline); "
                f"URL {self.url}"
            )
        return f"missing {self.what}: {self.filename}; place it at {self.path}; download it from {self.url}"


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """SHA256 of a file, memoised on (path, size, mtime): backbones are hundreds of MB."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def pyiqa_cache_dir() -> Path:
    """The directory pyiqa's ``load_file_from_url`` reads and writes (fixed when pyiqa is imported)."""
    from pyiqa.utils.download_util import DEFAULT_CACHE_DIR

    return Path(DEFAULT_CACHE_DIR)


def _package_file(package: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # does not import the package
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / rel).is_file():
            return Path(root) / rel
    return None


def _resolve(ref: tuple[str, ...]) -> RequiredFile:
    source = ref[0]
    if source == "pyiqa":
        module, key = ref[1], ref[2]
        url = importlib.import_module(f"pyiqa.archs.{module}").default_model_urls[key]
        name = url.rsplit("/", 1)[-1]
        alt = _package_file(ref[3], ref[4]) if len(ref) == 5 else None
        return RequiredFile(
            "pyiqa",
            name,
            url,
            pyiqa_cache_dir() / name,
            f"pyiqa checkpoint ({module} {key})",
            alternatives=(alt,) if alt else (),
        )
    if source == "pyiqa_url":
        module, attr = ref[1], ref[2]
        url = getattr(importlib.import_module(f"pyiqa.archs.{module}"), attr)
        name = url.rsplit("/", 1)[-1]
        what = f"pyiqa checkpoint ({module} {attr})"
        return RequiredFile("pyiqa", name, url, pyiqa_cache_dir() / name, what)
    if source == "pyiqa-cache":
        name = ref[1]
        return RequiredFile(
            "pyiqa-cache", name, "", pyiqa_cache_dir() / name, "pyiqa cache file", optional=True
        )
    if source == "torchvision":
        import torchvision.models as tvm

        url = getattr(tvm, ref[1]).IMAGENET1K_V1.url
        name = url.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        return RequiredFile("torchvision", name, url, path, f"torchvision {ref[1]}.IMAGENET1K_V1 backbone")
    if source == "clip":
        from pyiqa.archs.clip_model import _MODELS

        url = _MODELS[ref[1]]
        name = url.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "clip" / name
        return RequiredFile(
            "clip", name, url, path, f"OpenAI CLIP {ref[1]} backbone", sha256=url.split("/")[-2]
        )
    if source == "timm":
        import timm
        from huggingface_hub import constants, hf_hub_url

        repo = timm.models.get_pretrained_cfg(ref[1]).hf_hub_id
        name = _TIMM_FILES[0]
        folder = "models--" + repo.replace("/", "--")
        path = Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "<commit>" / name
        return RequiredFile(
            "timm", name, hf_hub_url(repo, name), path, f"timm {ref[1]} backbone", hf_repo=repo
        )
    raise ValueError(f"unknown file source {source!r}")


def known(name: str) -> bool:
    return name in _FILES


def required_files(name: str) -> list[RequiredFile]:
    """All files the srbench metric ``name`` needs (empty for psnr/ssim)."""
    if name not in _FILES:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(_FILES)}")
    return [_resolve(ref) for ref in _FILES[name]]


def missing_files(name: str) -> list[RequiredFile]:
    """The files of :func:`required_files` that are not on this machine (optional caches aside)."""
    return [f for f in required_files(name) if not f.optional and f.locate() is None]


# ---- NIQE offline: basicsr ships the same pristine model as pyiqa's niqe_modelparameters.mat ----


def basicsr_niqe_npz() -> Path | None:
    """basicsr's ``metrics/niqe_pris_params.npz`` (found without importing basicsr, which takes seconds)."""
    return _package_file("basicsr", "metrics/niqe_pris_params.npz")


def niqe_params_from_basicsr() -> Path | None:
    """Convert basicsr's NIQE pristine parameters to the .mat layout pyiqa's NIQE reads, once.

    pyiqa's ``NIQE`` reads ``scipy.io.loadmat(path)`` keys ``mu_prisparam`` (36,) and ``cov_prisparam``
    (36, 36); basicsr's npz names them ``mu_pris_param`` / ``cov_pris_param``.  Written atomically to
    ``<srbench cache>/metrics/niqe_pris_params_basicsr.mat``; returns None when basicsr is not installed.
    """
    src = basicsr_niqe_npz()
    if src is None:
        return None
    dst = cache_dir() / "metrics" / "niqe_pris_params_basicsr.mat"
    if dst.is_file():
        return dst
    import numpy as np
    import scipy.io

    with np.load(src) as z:
        mu, cov = np.asarray(z["mu_pris_param"], np.float64), np.asarray(z["cov_pris_param"], np.float64)
    if mu.size != 36 or cov.shape != (36, 36):
        raise ValueError(f"{src}: unexpected NIQE parameter shapes {mu.shape}, {cov.shape}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        scipy.io.savemat(f, {"mu_prisparam": mu.reshape(1, 36), "cov_prisparam": cov})
    os.replace(tmp, dst)
    return dst
