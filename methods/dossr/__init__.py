"""DoSSR (Cui et al., NeurIPS 2024): SD 2.1-base + LAControlNet, sampling with DoS-SDE solvers.

Modules: :mod:`.schedule` (α, σ, η, λ, the timestep grid), :mod:`.solvers` (orders 1-3, tensor math),
:mod:`.network` (diffusers UNet + LAControlNet wiring, cond encoder), :mod:`.convert` (official
checkpoint ↔ diffusers layout), :mod:`.preprocess` (RRDBNet pre-restoration), :mod:`.weights`
(manifest), :mod:`.method` (the registered plugin), :mod:`.testing` (tiny random models).
"""

from methods.dossr import weights  # noqa: F401  (registers the manifest)
from methods.dossr.method import DoSSR

__all__ = ["DoSSR"]
