"""Where StableSR's pixels go: the upsampled size, the padding to a multiple of 32, image patches.

Two geometries, one per family of the authors' scripts (IceClear/StableSR ``scripts/``):

* ``"upscale"`` (the arbitrary-size scripts ``sr_val_ddpm_text_T_vqganfin_oldcanvas_tile.py``,
  ``sr_val_ddim_text_T_negativeprompt_canvas_tile.py``): the LR is upsampled by
  s = max(input_size / min(h, w), upscale) to (int(h·s), int(w·s)), reflect-padded right/bottom to a
  multiple of 32, and the output is cropped back and, when s > upscale, resized to exactly
  upscale × LR.  (The scripts resize the *padded* image and then crop with the pre-resize size, which
  crops nothing: a 20×26 LR at input_size 128 comes out 100×120 instead of 80×104.  srbench crops
  first and returns exactly upscale × LR: a deliberate deviation from that bug.)
* ``"centre_crop"`` (the 128→512 script ``sr_val_ddpm_text_T_vqganfin_old.py``): the LR is
  LANCZOS-resized to sides floored to a multiple of 32, its short side is resized to input_size
  (torchvision ``Resize``, bilinear) and the result centre-cropped to input_size × input_size, so every
  output is input_size².  That is upscale × LR only for a square LR of input_size / upscale px (a
  multiple of 32), on which the LANCZOS resize and the crop are identities; any other LR is refused
  with the sizes the script would have produced, since srbench's interface returns upscale × LR.

Padding rules (``pad``):

* ``"authors"``: the scripts pad *both* sides by ``(n // 32 + 1) * 32 - n`` when either side is not a
  multiple of 32, so a side that already is one gains a full 32 px (32×45 LR at input_size 128:
  upsampled 128×180 → padded 160×192, latent 20×24).
* ``"minimal"``: each side gets only what it lacks, ``-n mod 32`` (128×180 → 128×192, latent 16×24).
"""

from __future__ import annotations

from dataclasses import dataclass

from srbench.diffusion.tiling import tile_starts
from srbench.interface import SRBenchError

GEOMETRIES = ("upscale", "centre_crop")
PAD_RULES = ("authors", "minimal")
#: the scripts pad the upsampled image to a multiple of this (the SD VAE's 8 × 4 for the UNet)
PAD_MULTIPLE = 32


def pad_amounts(h: int, w: int, rule: str) -> tuple[int, int]:
    """Bottom and right padding of an ``h × w`` image to a multiple of 32 under ``rule``."""
    m = PAD_MULTIPLE
    if rule == "minimal":
        return (-h) % m, (-w) % m
    if rule == "authors":  # the tile script: both sides padded as soon as one is misaligned
        if h % m == 0 and w % m == 0:
            return 0, 0
        return (h // m + 1) * m - h, (w // m + 1) * m - w
    raise ValueError(f"pad must be one of {PAD_RULES}, got '{rule}'")


@dataclass(frozen=True)
class Plan:
    """Sizes of one call: LR ``lr``, upsampling factor, upsampled ``size``, padding, output."""

    lr: tuple[int, int]
    factor: float  # s: the LR is upsampled by this (input_size / short side, at least upscale)
    size: tuple[int, int]  # upsampled, before padding
    pad: tuple[int, int]  # bottom, right
    upscale: int

    @property
    def padded(self) -> tuple[int, int]:
        return self.size[0] + self.pad[0], self.size[1] + self.pad[1]

    @property
    def latent(self) -> tuple[int, int]:
        return self.padded[0] // 8, self.padded[1] // 8

    @property
    def output(self) -> tuple[int, int]:
        return self.lr[0] * self.upscale, self.lr[1] * self.upscale


def plan_upscale(h: int, w: int, *, input_size: int, upscale: int, pad: str) -> Plan:
    """The arbitrary-size scripts' sizes: s = max(input_size / min(h, w), upscale), then padding."""
    s = max(input_size / min(h, w), float(upscale))
    size = (int(h * s), int(w * s))
    return Plan((h, w), s, size, pad_amounts(*size, pad), upscale)


def centre_crop_script_sizes(h: int, w: int, input_size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """What the 128→512 script does to an ``h × w`` LR: (LANCZOS-aligned size, resized size); the
    centre crop then takes input_size × input_size of the resized image."""
    ah, aw = h - h % PAD_MULTIPLE, w - w % PAD_MULTIPLE
    if min(ah, aw) == 0:
        return (ah, aw), (0, 0)
    short, long = min(ah, aw), max(ah, aw)
    long_new = int(input_size * long / short)  # torchvision Resize(int): short side -> size
    return (ah, aw), ((input_size, long_new) if ah <= aw else (long_new, input_size))


def plan_centre_crop(h: int, w: int, *, input_size: int, upscale: int) -> Plan:
    """The 128→512 script's sizes, accepted only where its input_size² output is upscale × LR."""
    side = input_size // upscale
    if side * upscale != input_size or side % PAD_MULTIPLE or (h, w) != (side, side):
        aligned, resized = centre_crop_script_sizes(h, w, input_size)
        raise SRBenchError(
            f"stablesr geometry=centre_crop (the 128->512 script): an LR of {w}x{h} would be LANCZOS-resized "
            f"to {aligned[1]}x{aligned[0]}, resized to {resized[1]}x{resized[0]} and centre-cropped to "
            f"{input_size}x{input_size}, which is not {upscale} x the LR; this geometry needs a square LR "
            f"of input_size/upscale = {input_size / upscale:g} px (a multiple of 32): use "
            "protocol=stablesr_paper (LR centre crop 128) or geometry=upscale (method=stablesr_tile)"
        )
    return Plan((h, w), float(upscale), (input_size, input_size), (0, 0), upscale)


def image_patches(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Patches ``(top, left, h, w)`` of the scripts' image-space tiling (``ImageSpliterTh``).

    Starts per axis as ``ImageSpliterTh.extract_starts`` (:func:`~srbench.diffusion.tiling.tile_starts`:
    every ``stride``, the last one flush with the border); the order is column-major (all rows of the
    first column first), as the script iterates them, which fixes the order of the blending sums.  A
    side no longer than ``tile`` gets one patch of its own length (the script would fail there: its
    weight map is always ``tile × tile``).
    """
    rows, cols = tile_starts(height, tile, stride), tile_starts(width, tile, stride)
    ph, pw = min(tile, height), min(tile, width)
    return [(top, left, ph, pw) for left in cols for top in rows]
