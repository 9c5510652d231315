"""DoSSR's schedules: SD's α_t/σ_t, the shifting sequence η_t, λ_t and the respaced timestep grid.

Paper: Cui et al., "Taming Diffusion Prior for Image Super-Resolution with Domain Shift SDEs"
(NeurIPS 2024).  Forward marginal (Eq. 2): ``x_t ~ N(α_t (η_t x̂0 + (1-η_t) x0), σ_t² I)`` with SD's
noise schedule (α_t = √ᾱ_t, σ_t = √(1-ᾱ_t)); the shifting sequence (Eq. 4) rises from 0 to 1 on
[0, t1] and is 1 after, so sampling starts at t1 from the noised LR latent (§3.1).
Prop. 3.1 works in ``λ_t = σ_t / (α_t (1-η_t))`` (increasing in t).

Two versions of η are kept apart (``variant``):

``"code"`` (default; what the released weights were trained and sampled with, official repo
    ``ldm/modules/diffusionmodules/util.py make_eta_schedule("trunc_12")``):
    η[i] = (1 - cos(π u_i)) / 2 with u = linspace(0.001, 0.999, t1) for i < t1, η[i] = 1 for i >= t1.
    So η[0] ≈ 2.5e-6 and η[t1-1] ≈ 1 - 2.5e-6: λ stays finite everywhere on the sampling grid, whose
    first point is t1 - 1 (``space_timesteps(t1, steps + 1)`` in ``model/shift_sampler.py``).
``"paper"`` (Eq. 4 as printed): η_t = (1 - cos(π t / t1)) / 2 for t <= t1, 1 after.  η(t1) = 1 exactly,
    so λ(t1) = ∞; the grid then runs over [0, t1] and the solvers use the r → 0 limit on the first
    step (see :mod:`methods.dossr.solvers`).

All tables are float64 numpy arrays (the official sampler computes its coefficients in float64 too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

EtaVariant = Literal["code", "paper"]
ETA_VARIANTS: tuple[str, ...] = ("code", "paper")
NUM_TRAIN_TIMESTEPS = 1000
#: t1 = T/2 (paper §4.3 / Tab. 2 default; code "trunc_12")
DEFAULT_T1 = 500
#: the code's u-range for the cosine ramp (``linspace(linear_start=0.001, linear_end=0.999, t1)``)
CODE_ETA_RANGE = (0.001, 0.999)


def _cfg(config: Any, key: str, default: Any) -> Any:
    if config is None:
        return default
    value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
    return default if value is None else value


def alphas_cumprod_from_config(config: Any = None) -> np.ndarray:
    """ᾱ_t (float64, ascending t) from a diffusers scheduler config (or None for SD's defaults).

    SD's schedule is ldm's ``linear`` = diffusers' ``scaled_linear``: β = linspace(√β0, √β1, T)².
    Computed in float64 as the official ``make_beta_schedule`` does (diffusers builds float32 tables).
    """
    n = int(_cfg(config, "num_train_timesteps", NUM_TRAIN_TIMESTEPS))
    b0 = float(_cfg(config, "beta_start", 0.00085))
    b1 = float(_cfg(config, "beta_end", 0.012))
    kind = str(_cfg(config, "beta_schedule", "scaled_linear"))
    if kind == "scaled_linear":
        betas = np.linspace(b0**0.5, b1**0.5, n, dtype=np.float64) ** 2
    elif kind == "linear":
        betas = np.linspace(b0, b1, n, dtype=np.float64)
    else:
        raise ValueError(f"DoSSR: unsupported beta_schedule '{kind}' (expected scaled_linear or linear)")
    return np.cumprod(1.0 - betas)


def eta_schedule(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, t1: int = DEFAULT_T1, variant: EtaVariant = "code"
) -> np.ndarray:
    """η_t for t = 0..T-1 (float64), see the module docstring for the two variants."""
    if not 1 < t1 <= num_train_timesteps:
        raise ValueError(f"t1 must be in (1, {num_train_timesteps}], got {t1}")
    eta = np.ones(num_train_timesteps, dtype=np.float64)
    if variant == "code":
        u = np.linspace(*CODE_ETA_RANGE, t1, dtype=np.float64)
        eta[:t1] = (1.0 - np.cos(np.pi * u)) / 2.0
    elif variant == "paper":  # Eq. (4)
        t = np.arange(min(t1 + 1, num_train_timesteps), dtype=np.float64)
        eta[: t.size] = (1.0 - np.cos(np.pi * t / t1)) / 2.0
    else:
        raise ValueError(f"unknown eta variant '{variant}'; choose from {ETA_VARIANTS}")
    return eta


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``[0, num_timesteps - 1]``, both ends included, ascending.

    The one-section case of guided-diffusion's ``respace.space_timesteps`` that the official sampler
    calls: a float stride ``(num_timesteps - 1) / (count - 1)`` accumulated and rounded with Python's
    ``round`` (half to even), so e.g. (500, 3) gives [0, 250, 499].
    """
    if count < 1 or count > num_timesteps:
        raise ValueError(f"cannot take {count} timesteps out of {num_timesteps}")
    stride = 1.0 if count <= 1 else (num_timesteps - 1) / (count - 1)
    cur, out = 0.0, []
    for _ in range(count):
        out.append(round(cur))
        cur += stride
    return sorted(set(out))


def max_steps(t1: int = DEFAULT_T1, variant: EtaVariant = "code") -> int:
    """The largest step count the grid allows: every timestep of [0, t1) ("code") or [0, t1] ("paper")."""
    return t1 - 1 if variant == "code" else t1


def sampling_timesteps(steps: int, t1: int = DEFAULT_T1, variant: EtaVariant = "code") -> np.ndarray:
    """The ``steps + 1`` timesteps the sampler visits, descending: start (t1 - 1, or t1 for "paper"), ..., 0.

    The network is evaluated at the first ``steps`` of them; the last (t = 0) is only a target.
    """
    if steps < 1 or steps > max_steps(t1, variant):
        raise ValueError(f"DoSSR needs 1 <= steps <= {max_steps(t1, variant)} (t1={t1}), got {steps}")
    span = t1 if variant == "code" else t1 + 1
    return np.array(space_timesteps(span, steps + 1)[::-1], dtype=np.int64)


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only (the cached schedule arrays are shared by every call)."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class DoSSchedule:
    """α, σ, η at the visited grid points (descending time), float64; index 0 is the start.

    ``timesteps`` are the integer training timesteps the network is conditioned on (None for a
    continuous test schedule).
    """

    alpha: np.ndarray
    sigma: np.ndarray
    eta: np.ndarray
    timesteps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.alpha)
        if n < 2 or len(self.sigma) != n or len(self.eta) != n:
            raise ValueError("DoSSchedule needs >= 2 points and alpha/sigma/eta of one length")
        if np.any(self.eta[1:] >= 1.0):
            raise ValueError("η must be < 1 at every target point (only the start may have η = 1)")
        lam = self.lam
        if not np.all(np.diff(lam) < 0):
            raise ValueError("λ must strictly decrease along the grid (time must run backwards)")

    @property
    def steps(self) -> int:
        return len(self.alpha) - 1

    @cached_property  # read every solver step: computed once per schedule
    def A(self) -> np.ndarray:
        return _frozen(self.alpha * (1.0 - self.eta))

    @cached_property
    def lam(self) -> np.ndarray:
        """λ_t = σ_t / (α_t (1-η_t)) (Prop. 3.1); +inf where η = 1."""
        with np.errstate(divide="ignore"):
            return _frozen(np.where(self.eta < 1.0, self.sigma / np.maximum(self.A, 1e-300), np.inf))

    @cached_property
    def k(self) -> np.ndarray:
        """η_t / (1 - η_t) (the DoSG coefficient's ratio); +inf where η = 1."""
        with np.errstate(divide="ignore"):
            return _frozen(np.where(self.eta < 1.0, self.eta / np.maximum(1.0 - self.eta, 1e-300), np.inf))

    @classmethod
    def from_alphas_cumprod(
        cls, alphas_cumprod: np.ndarray | Sequence[float], timesteps: np.ndarray, eta_table: np.ndarray
    ) -> DoSSchedule:
        ac = np.asarray(alphas_cumprod, dtype=np.float64)[timesteps]
        return cls(
            alpha=np.sqrt(ac),
            sigma=np.sqrt(1.0 - ac),
            eta=np.asarray(eta_table, dtype=np.float64)[timesteps],
            timesteps=np.asarray(timesteps),
        )

    @classmethod
    def build(
        cls,
        steps: int,
        *,
        alphas_cumprod: np.ndarray | None = None,
        t1: int = DEFAULT_T1,
        variant: EtaVariant = "code",
    ) -> DoSSchedule:
        """The official sampler's grid for ``steps`` (N=5: 499, 399, 299, 200, 100, 0)."""
        ac = alphas_cumprod_from_config(None) if alphas_cumprod is None else np.asarray(alphas_cumprod)
        ts = sampling_timesteps(steps, t1, variant)
        if ts[0] >= len(ac):
            raise ValueError(f"t1={t1} leaves no room in a {len(ac)}-step schedule for the '{variant}' grid")
        return cls.from_alphas_cumprod(ac, ts, eta_schedule(len(ac), t1, variant))
