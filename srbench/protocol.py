"""Evaluation protocols as data: how LR/HR are cropped and how metrics are computed (DESIGN.md).

Named protocols live in ``conf/protocol/*.yaml``; every run records its protocol's name and settings, and
the leaderboard only ranks rows of the same (dataset, protocol).  :meth:`Protocol.prepare` applies, in
order: the LR-only short-side resize, the HR-size check (error, or crop to the common region), and the
LR centre crop (with the matching HR region).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from srbench.interface import SRBenchError

HR_MISMATCH = ("error", "crop")
#: how the SR image goes to 8 bits before scoring: "round" (skimage.img_as_ubyte, diffusers' numpy_to_pil:
#: InvSR), "floor" (``(x * 255).astype(uint8)`` truncation: StableSR, DoSSR, and torchvision's
#: ToPILImage used by OSEDiff), "none" (score the float output)
QUANTIZE = ("round", "floor", "none")


def quantize_8bit(img: torch.Tensor, mode: str = "round") -> torch.Tensor:
    """``img`` in [0,1] on the 8-bit grid as saving it the ``mode`` way and reading it back would give
    (values k/255, float); "none" returns it unchanged."""
    if mode == "none":
        return img
    scaled = img.clamp(0, 1).mul(255.0)
    if mode == "round":
        return scaled.round().div(255.0)
    if mode == "floor":
        return scaled.floor().div(255.0)
    raise SRBenchError(f"quantize must be one of {QUANTIZE}, got {mode!r}")


def current_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Protocol settings as recorded today: the boolean ``quantize`` of records written before the modes
    existed reads as the mode it meant (True: round, False: none), so those cells still match."""
    out = dict(settings)
    if isinstance(out.get("quantize"), bool):
        out["quantize"] = "round" if out["quantize"] else "none"
    return out


@dataclass(frozen=True)
class Protocol:
    name: str = "full"
    #: crop the LR to a centred square of this size (and the HR to the matching region); None = full image
    lr_centre_crop: int | None = None
    #: pixels removed from each border before PSNR/SSIM
    crop_border: int = 0
    #: PSNR/SSIM on the Y channel of YCbCr (BT.601) instead of RGB
    y_channel: bool = True
    #: SR to 8 bits before scoring as the authors' code saves PNGs: round | floor | none (:data:`QUANTIZE`;
    #: the booleans of older configs mean round / none)
    quantize: str = "round"
    description: str = ""
    #: HR not exactly scale x LR: "error" (name the sizes) or "crop" (LR and HR to their common top-left
    #: region on the LR grid: InvSR's cal_metrics_ref.py crops SR and GT to the common top-left min size)
    hr_mismatch: str = "error"
    #: LR-only sets: resize the LR (bicubic, antialiased) so its short side is this many pixels before the
    #: centre crop (StableSR §4.2 for real images without GT); ignored when an HR exists
    lr_resize_short_side: int | None = None
    #: where the protocol comes from (paper section, script)
    reference: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.quantize, bool):  # protocols written before the modes existed
            object.__setattr__(self, "quantize", "round" if self.quantize else "none")
        if self.quantize not in QUANTIZE:
            raise SRBenchError(
                f"protocol '{self.name}': quantize must be one of {QUANTIZE}, got '{self.quantize}'"
            )
        if self.hr_mismatch not in HR_MISMATCH:
            raise SRBenchError(
                f"protocol '{self.name}': hr_mismatch must be one of {HR_MISMATCH}, got '{self.hr_mismatch}'"
            )
        for key in ("lr_centre_crop", "lr_resize_short_side"):
            v = getattr(self, key)
            if v is not None and int(v) < 1:
                raise SRBenchError(
                    f"protocol '{self.name}': {key} must be a positive integer or null, got {v}"
                )
        if int(self.crop_border) < 0:
            raise SRBenchError(f"protocol '{self.name}': crop_border must be >= 0, got {self.crop_border}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Protocol:
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise SRBenchError(f"protocol '{cfg.get('name')}': unknown keys {sorted(unknown)}")
        return cls(**{k: cfg[k] for k in cfg if k in known})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_8bit(self, sr: torch.Tensor) -> torch.Tensor:
        """The SR image as this protocol scores it (:func:`quantize_8bit` with :attr:`quantize`)."""
        return quantize_8bit(sr, self.quantize)

    def _resize_short_side(self, lr: torch.Tensor) -> torch.Tensor:
        size = int(self.lr_resize_short_side)  # type: ignore[arg-type]
        _, h, w = lr.shape
        if min(h, w) == size:
            return lr
        s = size / min(h, w)
        new = (size, max(1, round(w * s))) if h <= w else (max(1, round(h * s)), size)
        out = F.interpolate(lr[None].float(), size=new, mode="bicubic", antialias=True, align_corners=False)
        return out[0].clamp(0, 1).to(lr.dtype)

    def _match_hr(self, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, h, w = lr.shape
        _, hh, hw = hr.shape
        if (hh, hw) == (h * scale, w * scale):
            return lr, hr
        if self.hr_mismatch == "error":
            raise SRBenchError(
                f"protocol '{self.name}': HR {hw}x{hh} is not {scale} x LR {w}x{h} "
                f"(use a protocol with hr_mismatch: crop to score the common region)"
            )
        ch, cw = min(h, hh // scale), min(w, hw // scale)
        if ch < 1 or cw < 1:
            raise SRBenchError(f"protocol '{self.name}': HR {hw}x{hh} is smaller than one LR pixel x {scale}")
        return lr[:, :ch, :cw], hr[:, : ch * scale, : cw * scale]

    def prepare(
        self, lr: torch.Tensor, hr: torch.Tensor | None, scale: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Apply the protocol's resizing and cropping to one (3,h,w) LR and its HR."""
        if hr is None and self.lr_resize_short_side is not None:
            lr = self._resize_short_side(lr)
        if hr is not None:
            lr, hr = self._match_hr(lr, hr, scale)
        if self.lr_centre_crop is None:
            return lr, hr
        size = int(self.lr_centre_crop)
        _, h, w = lr.shape
        if h < size or w < size:
            raise SRBenchError(f"protocol '{self.name}': LR {w}x{h} is smaller than the centre crop {size}")
        top, left = (h - size) // 2, (w - size) // 2
        lr = lr[:, top : top + size, left : left + size]
        if hr is not None:
            hr = hr[:, top * scale : (top + size) * scale, left * scale : (left + size) * scale]
        return lr, hr
