"""``precomputed``: SR images made outside srbench (a paper's released outputs) in runs and sweeps.

``srbench method=precomputed method.dir=DIR run_name=osediff steps=1 dataset=... protocol=...`` returns, for
each image of the dataset, the stored SR image ``DIR/<id><sr_suffix>.<ext>`` (cropped to the protocol's
region when it is the output of the full LR, see :mod:`srbench.external`).  It draws nothing and its latency
is not measured: the runner records ``source: external`` and no timings.  Its weights label is ``real``:
the images come from the authors' trained model, not from random weights; ``source`` says who made them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch

from srbench.data.images import read_image
from srbench.external import SRFolder, fit_to_protocol
from srbench.interface import SRBenchError, SRMethod, WeightsInfo
from srbench.protocol import Protocol
from srbench.registry import register_method

log = logging.getLogger("srbench")


@register_method("precomputed")
class Precomputed(SRMethod):
    """SR images made elsewhere, read from a folder (paired by image id; source: external)."""

    source: ClassVar[str] = "external"

    def __init__(
        self,
        dir: str | None = None,
        sr_suffix: str = "",
        scale: int = 4,
        made_with_steps: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not dir or str(dir) == "???":
            raise SRBenchError("method 'precomputed': set method.dir=<folder of SR images>")
        self.dir = Path(str(dir)).expanduser()
        self.sr_suffix = str(sr_suffix or "")
        self.scale = int(scale)
        self.made_with_steps = None if made_with_steps is None else int(made_with_steps)
        self._folder: SRFolder | None = None
        self._protocol = Protocol()
        self._current: torch.Tensor | None = None
        self.pairing: dict[str, list[str]] = {}

    def supported_steps(self) -> list[int] | None:
        # the step count the outputs were made with, when declared: a sweep over steps skips the others
        return None if self.made_with_steps is None else [self.made_with_steps]

    @property
    def folder(self) -> SRFolder:
        if self._folder is None:
            self._folder = SRFolder.open(self.dir, self.sr_suffix)
        return self._folder

    def outputs_fingerprint(self) -> str:
        """The SR folder's content digest: part of the cell's record, so changed outputs are never mixed."""
        return self.folder.fingerprint()

    def load(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self._folder = SRFolder.open(self.dir, self.sr_suffix)  # the folder as it is now
        self._mark_loaded(device, dtype)

    def weights_info(self) -> WeightsInfo:
        return WeightsInfo(
            id=f"precomputed:{self.dir}",
            real=True,
            detail="SR images made outside srbench (source: external) by the authors' trained model",
        )

    # ---- called by the runner for external methods ----
    def bind(self, ids: list[str], protocol: Protocol) -> dict[str, Any]:
        """Pair the folder with the dataset's image ids; returns the record kept in the summary."""
        self._protocol = protocol
        self.pairing = self.folder.pairing(ids)
        for what, names in self.pairing.items():
            if names:
                shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
                log.warning(
                    "%s: %d %s (%s)",
                    self.dir,
                    len(names),
                    "image(s) of the dataset have no SR file"
                    if what == "missing"
                    else "SR file(s) match no image of the dataset",
                    shown,
                )
        return {
            "dir": str(self.dir),
            "sr_suffix": self.sr_suffix,
            "fingerprint": self.folder.fingerprint(),
            "n_files": len(self.folder.files),
            **self.pairing,
            "unused": self.folder.unused,
        }

    def select(
        self, image_id: str, lr_full: torch.Tensor, hr_full: torch.Tensor | None, lr_kept: torch.Tensor
    ) -> None:
        """Read the SR image of ``image_id``, cut to what the protocol scores (raises naming the file)."""
        self._current = None
        path = self.folder.files.get(image_id)
        if path is None:
            raise SRBenchError(
                f"{self.dir}: no SR image for '{image_id}' (expected {image_id}{self.sr_suffix}.<ext>)"
            )
        sr = read_image(path)
        self._current = fit_to_protocol(sr, path, lr_full, hr_full, lr_kept, self._protocol, self.scale)

    def _upscale(self, lr: torch.Tensor, steps: int, generator: torch.Generator | None) -> torch.Tensor:
        if self._current is None:
            raise SRBenchError("method 'precomputed': no image selected (it runs inside srbench's runner)")
        if lr.shape[0] != 1:
            raise SRBenchError("method 'precomputed' returns one stored image per call (batch size 1)")
        return self._current[None].to(lr.device)
