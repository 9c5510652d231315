"""InvSR -- "Arbitrary-steps Image Super-resolution via Diffusion Inversion" (Yue, Liao, Loy; CVPR 2025).

SD-Turbo stays frozen; a small noise predictor f_w (33.84 M params) predicts the noise that puts the
LR latent on a diffusion trajectory at an intermediate step (Eq. 8), from which 1-5 sampler steps
give the HR image.  Files, read top to bottom:

- ``noise_predictor.py`` -- f_w rebuilt from diffusers blocks; strict loading of the official ``.pth``.
- ``pipeline.py``        -- timestep lists, one pipeline call, the whole-image driver (chopping, colour).
- ``method.py``          -- the ``invsr`` plugin (options = ``conf/method/invsr.yaml``).
- ``weights.py``         -- the weights manifest (``srbench weights fetch invsr``).

Follows the authors' code (zsyOAOA/InvSR @609788c) where it differs from the paper:
deterministic Euler steps instead of Alg. 1's fresh noise (``stochastic: true`` gives the paper's
variant), the code's timestep defaults per step count, tau-1 indexing, the prompt without its final
period.  Randomness comes only from the ``generator`` argument (the code uses one global RNG seeded
once with 12345, so its outputs depend on the order images are processed).
"""

from methods.invsr import weights  # noqa: F401  (registers the manifest)
from methods.invsr.method import InvSR

__all__ = ["InvSR"]
