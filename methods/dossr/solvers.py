"""DoS-SDE solvers of order 1, 2 and 3 (paper App. A.6 Eq. 42/44/47, App. B Alg. 1-3): tensor math only.

One update from grid point s to the next point t < s (Prop. 3.1, Eq. 11 with x_θ Taylor-expanded in λ),
writing A = α(1-η), λ = σ/A, k = η/(1-η), r = λ_t/λ_s and z ~ N(0, I):

    x_t =  (A_t/A_s) r² x_s                       linear term
         + A_t (k_t - k_s r²) x̂0                  Domain Shift Guidance (DoSG)
         + A_t (1 - r²) x_θ(x_s)                  prediction approximation term (PAT), order 1
         - A_t (λ_t - λ_s)² / λ_s · D1            order >= 2 (Eq. 44), D1 ≈ dx_θ/dλ
         + A_t [(λ_s-3λ_t)(λ_s-λ_t)/2 - λ_t² ln(λ_t/λ_s)] · D2     order 3 (Eq. 47), D2 ≈ d²x_θ/dλ²
         + A_t √(λ_t² - λ_t² r²) z                noise term

with the backward differences of Eq. 45/48-49 over the previous network outputs (r > s > ... in time):
``D1_s = (x_θ,s - x_θ,r)/(λ_s - λ_r)`` and ``D2_s = (D1_s - D1_r) / ((λ_s - λ_q)/2)``.  The first
update is order 1 and the second at most order 2 (no history yet), as in Alg. 2-3 and the official
``shift_sample_{1,2,3}_order``.  The official code implements exactly these formulas (checked line by
line); the only differences from Alg. 1-3 as printed are typos there: the "Noise Term" multiplies
x̂0 where it must be z ~ N(0, I), and the loop's "t_{i-1}" is the update's source point.

Coefficients are computed in float64 from the schedule and applied to the tensors as Python floats.
When the start has η = 1 (the paper's Eq. 4 at t = t1), λ_s = ∞ and the first update uses its
r → 0 limit ``x_t = α_t η_t x̂0 + A_t x_θ(x_s) + σ_t z`` instead of 0·∞; a difference whose older
point has λ = ∞ is 0 (its limit).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from methods.dossr.schedule import DoSSchedule
from srbench.progress import sampler_steps

Parameterization = Literal["code", "paper"]
ORDERS = (1, 2, 3)


@dataclass(frozen=True)
class StepCoefficients:
    """The float64 scalars of one update (see the module docstring for what each multiplies)."""

    linear: float
    dosg: float
    pat: float
    noise: float
    d1: float
    d2: float


def step_coefficients(schedule: DoSSchedule, i: int) -> StepCoefficients:
    """Coefficients of the update from grid point ``i`` (s) to ``i + 1`` (t)."""
    if not 0 <= i < schedule.steps:
        raise IndexError(f"update {i} out of range for {schedule.steps} steps")
    A, lam, k = schedule.A, schedule.lam, schedule.k
    a_t, lam_t, k_t = float(A[i + 1]), float(lam[i + 1]), float(k[i + 1])
    a_s, lam_s, k_s = float(A[i]), float(lam[i]), float(k[i])
    if math.isinf(lam_s):  # η_s = 1: the r → 0 limit (A_s r² → 0, k_s r² → 0); D1/D2 unused here
        return StepCoefficients(linear=0.0, dosg=a_t * k_t, pat=a_t, noise=a_t * lam_t, d1=0.0, d2=0.0)
    r2 = (lam_t / lam_s) ** 2
    return StepCoefficients(
        linear=a_t / a_s * r2,  # Eq. 42, first term
        dosg=a_t * (k_t - k_s * r2),  # Eq. 42 / Eq. 12 DoSG
        pat=a_t * (1.0 - r2),  # Eq. 41
        noise=a_t * math.sqrt(lam_t**2 - lam_t**2 * r2),  # Eq. 42, last term
        d1=-a_t * (lam_t - lam_s) ** 2 / lam_s,  # Eq. 43
        d2=a_t * ((lam_s - 3 * lam_t) * (lam_s - lam_t) / 2 - lam_t**2 * math.log(lam_t / lam_s)),  # Eq. 46
    )


def _inv_gap(lam_new: float, lam_old: float, halved: bool = False) -> float:
    """1 / (λ_new - λ_old) (or 2 / ... for D2); 0 when the older point has λ = ∞ (the limit)."""
    if math.isinf(lam_old):
        return 0.0
    gap = lam_new - lam_old
    return (2.0 if halved else 1.0) / gap


def predict_x0(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    *,
    alpha: float,
    sigma: float,
    eta: float = 0.0,
    x_hat0: torch.Tensor | None = None,
    parameterization: Parameterization = "code",
) -> torch.Tensor:
    """x_θ(x_t, x̂0, t) from the network output ``u`` at a point with (α, σ, η).

    ``"code"``: ``(x_t - σ u) / α``, the standard DDPM x0 formula the official sampler uses
        (``_predict_xstart_from_eps``) and the released checkpoints were trained through (L1 loss on
        this x0, ``ControlLDM.predict_x0_out_mix``).  Use it with the released weights.
    ``"paper"``: Eq. 9 / A.4 with u read as the DoS noise ε_θ: ``(x_t - α η x̂0 - σ ε) / (α (1-η))``.
        Correct for a network trained with the paper's Eq. 8; unstable where η → 1 (α(1-η) ≈ 1e-6 at
        the start of the code grid).
    """
    if parameterization == "code":
        return (x_t - sigma * model_output) / alpha
    if parameterization == "paper":
        if x_hat0 is None:
            raise ValueError("the paper's x_θ form needs x̂0")
        if eta >= 1.0:
            raise ValueError("the paper's x_θ form is undefined where η = 1")
        return (x_t - alpha * eta * x_hat0 - sigma * model_output) / (alpha * (1.0 - eta))
    raise ValueError(f"unknown parameterization '{parameterization}'; choose 'code' or 'paper'")


def start_state(x_hat0: torch.Tensor, schedule: DoSSchedule, noise: torch.Tensor) -> torch.Tensor:
    """x at the first grid point: ``α_s x̂0 + σ_s ε`` (Alg. 1 line 1; the official sampler takes η = 1
    there even though the code's η is 1 - 2.5e-6 at t1 - 1)."""
    return float(schedule.alpha[0]) * x_hat0 + float(schedule.sigma[0]) * noise


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device (so a CPU generator
    gives the same numbers whatever device ``x`` is on), then moved to x's device and dtype."""
    device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)
    return z.to(device=x.device, dtype=x.dtype)


class DoSSDESolver:
    """Multistep DoS-SDE Solver-k (k = ``order``) over a :class:`DoSSchedule`; keeps the history
    of network outputs and first differences between calls of :meth:`step`."""

    def __init__(self, schedule: DoSSchedule, order: int = 3) -> None:
        if order not in ORDERS:
            raise ValueError(f"DoS-SDE solver order must be one of {ORDERS}, got {order}")
        self.schedule = schedule
        self.order = order
        self.coefficients = [step_coefficients(schedule, i) for i in range(schedule.steps)]
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self._x0_prev: torch.Tensor | None = None
        self._d1_prev: torch.Tensor | None = None

    def order_at(self, i: int) -> int:
        """The order update ``i`` uses: 1 first, then at most 2, then ``order`` (Alg. 2-3)."""
        return min(self.order, i + 1)

    def step_terms(
        self, x: torch.Tensor, x0: torch.Tensor, x_hat0: torch.Tensor, noise: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The terms of the next update (their sum is the new x) and advance the solver.

        Keys: ``linear``, ``dosg``, ``pat``, ``noise``, plus ``pat_d1`` (order >= 2) and ``pat_d2``
        (order 3) once there is enough history.
        """
        i = self.index
        if i >= self.schedule.steps:
            raise RuntimeError(f"the solver already took all {self.schedule.steps} steps; call reset()")
        c = self.coefficients[i]
        lam = self.schedule.lam
        terms = {
            "linear": c.linear * x,
            "dosg": c.dosg * x_hat0,
            "pat": c.pat * x0,
            "noise": c.noise * noise,
        }
        order = self.order_at(i)
        d1 = None
        if order >= 2 and self._x0_prev is not None:
            d1 = (x0 - self._x0_prev) * _inv_gap(float(lam[i]), float(lam[i - 1]))  # Eq. 45 / 48
            terms["pat_d1"] = c.d1 * d1
            if order >= 3 and self._d1_prev is not None:
                d2 = (d1 - self._d1_prev) * _inv_gap(float(lam[i]), float(lam[i - 2]), halved=True)  # Eq. 49
                terms["pat_d2"] = c.d2 * d2
        # history (Alg. 2 line 13, Alg. 3 lines 12/17/19)
        self._x0_prev = x0
        self._d1_prev = d1 if self.order >= 3 else None
        self.index = i + 1
        return terms

    def step(
        self, x: torch.Tensor, x0: torch.Tensor, x_hat0: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        terms = self.step_terms(x, x0, x_hat0, noise)
        out = terms.pop("linear")
        for value in terms.values():
            out = out + value
        return out

    def sample(
        self,
        x_start: torch.Tensor,
        x_hat0: torch.Tensor,
        model_x0: Callable[[torch.Tensor, int], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run all updates from ``x_start``: ``model_x0(x, i)`` is x_θ at grid point i; fresh noise
        every update, including the last (the official sampler decodes the noisy x at t = 0)."""
        self.reset()
        x = x_start
        for i in sampler_steps(range(self.schedule.steps), self.schedule.steps, "dossr"):
            x0 = model_x0(x, i)
            x = self.step(x, x0, x_hat0, randn_like(x, generator))
        return x
