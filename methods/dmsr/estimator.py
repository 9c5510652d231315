"""DM-SR's timestep estimator T (paper §3.1, App. A.1, Eq. 10).

T maps the bicubic-upsampled LR image I_LR to a timestep t̂ ∈ [0, 499]:

* features: "the first five convolutional blocks of VGG19" = all of torchvision's ``vgg19().features``
  (16 conv + ReLU, 5 max-pools, stride 32);
* head (unspecified in the paper; brief §6.6 default): global average pool → ``Linear(512, 500)`` = the
  logits F ∈ ℝ^500;
* t̂ = Σ_k softmax(F)_k · k over k = 0…499 (Eq. 10 prints the bin vector as "[0, 1, …, 488, 499]", a typo
  for 0…499), a soft-argmax in fp32, so t̂ is continuous in [0, 499].

The denoiser needs an integer timestep (§4.5): :func:`discretize_timestep` rounds half up and clamps to
[0, ``t_max``]; the same integer indexes ``alphas_cumprod`` (0-based, diffusers convention) and is fed to the
UNet and to the encoder's t-embedding.

Input convention (brief §6.3 default): I_LR in [0, 1] RGB, normalised with the ImageNet mean/std as for a
pretrained VGG.  ImageNet initialisation: :meth:`TimestepEstimator.load_imagenet_vgg19` takes torchvision's
``VGG19_Weights.IMAGENET1K_V1`` file from the torch hub cache (``$TORCH_HOME/hub/checkpoints``); it never
downloads unless asked to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as _VGG_CFGS
from torchvision.models.vgg import make_layers

from srbench.interface import WeightsMissing
from srbench.safe_load import load_tensors

NUM_BINS = 500  # paper App. A.1: F ∈ ℝ^500, t̂ ∈ [0, 499]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features(width_div: int = 1) -> nn.Sequential:
    """torchvision's VGG19 ``features``: ``make_layers(cfgs["E"])`` with VGG's own init, i.e. exactly
    ``torchvision.models.vgg19(weights=None).features`` without building the 102M-parameter classifier.
    ``width_div`` > 1 divides every conv width (tiny test models; layer indices and keys stay the same)."""
    cfg = [v if v == "M" else max(1, int(v) // width_div) for v in _VGG_CFGS["E"]]
    features = make_layers(cfg, batch_norm=False)
    for m in features.modules():  # torchvision.models.VGG.__init__ initialisation of conv layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def discretize_timestep(t_hat: torch.Tensor, t_max: int = NUM_BINS - 1) -> torch.Tensor:
    """Continuous t̂ → integer timestep: round half up, clamp to [0, t_max] (brief §6.5 default)."""
    return torch.floor(t_hat.float() + 0.5).clamp_(0, t_max).long()


class TimestepEstimator(nn.Module):
    """VGG19 features → global average pool → Linear → 500 logits → soft-argmax t̂ (Eq. 10)."""

    def __init__(self, num_bins: int = NUM_BINS, width_div: int = 1) -> None:
        super().__init__()
        self.num_bins, self.width_div = int(num_bins), int(width_div)
        self.features = vgg19_features(self.width_div)
        feat_ch = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.head = nn.Linear(feat_ch, self.num_bins)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("bins", torch.arange(self.num_bins, dtype=torch.float32), persistent=False)

    @property
    def t_max(self) -> int:
        return self.num_bins - 1

    def config(self) -> dict[str, Any]:
        return {"num_bins": self.num_bins, "width_div": self.width_div}

    def logits(self, img: torch.Tensor) -> torch.Tensor:
        """F ∈ ℝ^{B×num_bins} for I_LR (B,3,H,W) in [0, 1]."""
        x = (img - self.mean.to(img.dtype)) / self.std.to(img.dtype)
        feat = self.features(x)
        return self.head(feat.mean(dim=(2, 3)))

    def expectation(self, logits: torch.Tensor) -> torch.Tensor:
        """Eq. 10: t̂ = Σ softmax(F)·[0..num_bins-1], computed in fp32."""
        return F.softmax(logits.float(), dim=-1) @ self.bins

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Continuous t̂ (B,) in [0, num_bins-1], fp32."""
        return self.expectation(self.logits(img))

    # ---- ImageNet initialisation -------------------------------------------------------------
    def load_imagenet_vgg19(self, *, download: bool = False) -> Path:
        """Copy torchvision's ImageNet VGG19 conv weights into ``features`` (the head stays as is).

        The file is looked up in the torch hub cache; with ``download=True`` torchvision fetches it
        when absent.  Raises :class:`WeightsMissing` (naming the path) otherwise.
        """
        if self.width_div != 1:
            raise ValueError("ImageNet VGG19 weights only fit width_div=1")
        url = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if not path.is_file():
            if not download:
                raise WeightsMissing(
                    f"ImageNet VGG19 weights not found at {path}; download {url} there "
                    "(or allow the download) to initialise DM-SR's timestep estimator"
                )
            # torchvision's file: the sha256 prefix in its name is checked, nothing is unpickled here
            prefix = path.stem.rsplit("-", 1)[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
        state = load_tensors(path)
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        self.features.load_state_dict(feats, strict=True)
        return path
