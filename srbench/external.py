"""SR images made outside srbench: a folder paired with a dataset by image id, cropped as the protocol crops.

A third party's outputs are paired with the dataset's images by file stem, after removing ``suffix``, the
way :func:`srbench.data.folders.paired_folder` pairs LR and HR.  Images of the dataset without an SR file,
and SR files matching no image, are listed (:class:`SRFolder`).

Protocols crop the LR (``lr_centre_crop``; ``hr_mismatch: crop``) and srbench's own methods then only see
the crop.  An external SR image may be the output of the cropped LR (what the protocol feeds a method) or of
the full LR: :func:`protocol_region` finds where the protocol's LR crop lies in the full LR, and
:func:`fit_to_protocol` cuts the same region (times the scale) out of a full-size SR image.  A protocol that
*resizes* the LR (``lr_resize_short_side`` on LR-only sets) has no such region: only outputs of the resized
LR can then be scored, and any other size is refused naming the file and the sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from srbench.data.folders import _by_id, _image_files
from srbench.fingerprint import HashCache, digest
from srbench.interface import SRBenchError
from srbench.protocol import Protocol


@dataclass
class SRFolder:
    """A folder of SR images by image id (``<id><suffix>.<ext>``)."""

    root: Path
    suffix: str = ""
    files: dict[str, Path] = field(default_factory=dict)
    unused: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def open(cls, root: str | Path, suffix: str = "") -> SRFolder:
        root = Path(root).expanduser()
        unused: list[dict[str, str]] = []
        try:
            files = _by_id(_image_files(root, unused), suffix, unused)
        except SRBenchError as exc:
            raise SRBenchError(f"external SR images: {exc}") from None
        return cls(root, suffix, files, unused)

    def fingerprint(self, cache: HashCache | None = None) -> str:
        """sha256 over the sorted ``id, file sha256`` lines (file hashes cached as for datasets)."""
        cache = cache if cache is not None else HashCache()
        out = digest({k: [cache.sha256(p), None] for k, p in self.files.items()})
        cache.save()
        return out

    def pairing(self, ids: list[str]) -> dict[str, list[str]]:
        """Dataset images without an SR file (``missing``) and SR files matching no image (``extra``)."""
        wanted = set(ids)
        return {
            "missing": sorted(wanted - set(self.files)),
            "extra": sorted(str(self.files[k].name) for k in set(self.files) - wanted),
        }


def protocol_region(
    protocol: Protocol, lr: torch.Tensor, hr: torch.Tensor | None, scale: int
) -> tuple[int, int, int, int] | None:
    """``(top, left, height, width)`` of the LR region the protocol keeps, in full-LR pixels; None when the
    protocol resizes the LR (no region of the full LR corresponds to what a method sees).

    Found by running :meth:`Protocol.prepare` itself on an image whose pixels hold their own coordinates,
    so it follows every rule of the protocol (centre crop, common region on an HR mismatch) exactly.
    """
    _, h, w = lr.shape
    ys = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    grid = torch.stack([ys, xs, torch.zeros_like(ys)])
    kept, _ = protocol.prepare(grid, hr, scale)
    _, kh, kw = kept.shape
    top, left = kept[0, 0, 0].item(), kept[1, 0, 0].item()
    expected_y = torch.arange(kh, dtype=torch.float64).view(kh, 1) + top
    expected_x = torch.arange(kw, dtype=torch.float64).view(1, kw) + left
    if (
        top != int(top)
        or left != int(left)
        or not (
            torch.equal(kept[0], expected_y.expand(kh, kw))
            and torch.equal(kept[1], expected_x.expand(kh, kw))
        )
    ):
        return None  # resized: the kept pixels are not a block of the original grid
    return int(top), int(left), kh, kw


def fit_to_protocol(
    sr: torch.Tensor,
    path: Path,
    lr_full: torch.Tensor,
    hr_full: torch.Tensor | None,
    lr_kept: torch.Tensor,
    protocol: Protocol,
    scale: int,
) -> torch.Tensor:
    """The SR image as the protocol scores it: as is when it is ``scale`` x the LR the protocol keeps; the
    protocol's region when it is ``scale`` x the full LR; otherwise an error naming the file and sizes."""
    _, sh, sw = sr.shape
    _, kh, kw = lr_kept.shape
    if (sh, sw) == (kh * scale, kw * scale):
        return sr
    _, fh, fw = lr_full.shape
    region = protocol_region(protocol, lr_full, hr_full, scale)
    if (sh, sw) == (fh * scale, fw * scale) and region is not None:
        top, left, h, w = region
        return sr[:, top * scale : (top + h) * scale, left * scale : (left + w) * scale]
    why = (
        f"nor {scale} x the full LR ({fw}x{fh} -> {fw * scale}x{fh * scale})"
        if region is not None
        else f"and protocol '{protocol.name}' resizes the LR, so only outputs of the resized LR can be scored"
    )
    raise SRBenchError(
        f"{path}: SR {sw}x{sh} is neither {scale} x the LR as protocol '{protocol.name}' prepares it "
        f"({kw}x{kh} -> {kw * scale}x{kh * scale}) {why}"
    )
