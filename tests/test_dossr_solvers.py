"""DoSSR schedules and DoS-SDE solvers, tested without any network.

* the schedule and the per-step coefficients against the official sampler's numbers (t1 = 500, N = 5);
* order 1 against Eq. (12) term by term; orders 1-3 against a transcription of the official loop;
* convergence in step count with an analytic x_θ: Gaussian data (exact posterior mean) whose output
  distribution is propagated *exactly* (each quantity is a vector of coefficients over independent
  N(0,1) draws, so the solver's output mean and variance are computed with no Monte Carlo error),
  and a deterministic x_θ(λ) whose exact solution (Eq. 38) has a closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods.dossr.schedule import (
    DoSSchedule,
    alphas_cumprod_from_config,
    eta_schedule,
    sampling_timesteps,
    space_timesteps,
)
from methods.dossr.solvers import DoSSDESolver, predict_x0, start_state, step_coefficients

F64 = torch.float64


# ---- schedule -------------------------------------------------------------------------------------
def test_sd_schedule_and_code_eta() -> None:
    ac = alphas_cumprod_from_config(
        {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    )
    assert ac.dtype == np.float64 and ac.shape == (1000,)
    assert ac[499] == pytest.approx(0.277670, abs=2e-6)
    assert math.sqrt(ac[499]) == pytest.approx(0.526944, abs=2e-6)
    eta = eta_schedule(1000, 500, "code")
    assert eta[0] == pytest.approx(2.467399e-6, rel=1e-5)
    assert 1 - eta[499] == pytest.approx(2.467399e-6, rel=1e-5)  # < 1: λ stays finite at the start
    assert np.all(eta[500:] == 1.0) and np.all(np.diff(eta[:500]) > 0)
    paper = eta_schedule(1000, 500, "paper")
    assert paper[0] == 0.0 and paper[500] == 1.0 and paper[250] == pytest.approx(0.5)
    assert np.all(paper[500:] == 1.0)


@pytest.mark.parametrize(
    ("steps", "grid"),
    [
        (1, [499, 0]),
        (2, [499, 250, 0]),
        (3, [499, 333, 166, 0]),
        (5, [499, 399, 299, 200, 100, 0]),
        (7, [499, 428, 356, 285, 214, 143, 71, 0]),
        (10, [499, 449, 399, 349, 299, 250, 200, 150, 100, 50, 0]),
    ],
)
def test_timestep_grid(steps: int, grid: list[int]) -> None:
    assert sampling_timesteps(steps).tolist() == grid
    assert space_timesteps(500, steps + 1) == grid[::-1]


def test_grid_bounds() -> None:
    assert len(sampling_timesteps(499)) == 500
    for bad in (0, 500):
        with pytest.raises(ValueError, match="steps"):
            sampling_timesteps(bad)
    assert sampling_timesteps(2, variant="paper").tolist() == [500, 250, 0]


def test_step_coefficients_match_official_numbers() -> None:
    """N = 5, t1 = 500: (linear, DoSG, PAT, noise std, D1 coef, D2 coef) per update, from the official
    formulas evaluated in float64 (shift_sampler.py)."""
    expected = [
        (1.641e-5, 0.589808, 0.062936, 0.757571, None, None),
        (0.167487, 0.403730, 0.256477, 0.625873, -2.0638, None),
        (0.284468, 0.158287, 0.490959, 0.461851, -0.5449, 0.3358),
        (0.284931, 0.005343, 0.692927, 0.292882, -0.2390, 0.04678),
        (0.006869, -0.000624, 0.993703, 0.029069, -0.3244, 0.05367),
    ]
    sched = DoSSchedule.build(5)
    assert sched.lam[0] == pytest.approx(6.5368e5, rel=1e-4)
    for i, (lin, dosg, pat, noise, d1, d2) in enumerate(expected):
        c = step_coefficients(sched, i)
        assert c.linear == pytest.approx(lin, rel=2e-3)
        assert c.dosg == pytest.approx(dosg, rel=2e-3)
        assert c.pat == pytest.approx(pat, rel=2e-3)
        assert c.noise == pytest.approx(noise, rel=2e-3)
        if d1 is not None:
            assert c.d1 == pytest.approx(d1, rel=2e-3)
        if d2 is not None:
            assert c.d2 == pytest.approx(d2, rel=2e-3)


def test_paper_eta_start_uses_the_limit() -> None:
    """η(t1) = 1 (Eq. 4 as printed): λ = ∞ at the start; the first update is its r → 0 limit and
    nothing is NaN."""
    sched = DoSSchedule.build(5, variant="paper")
    assert math.isinf(sched.lam[0])
    c = step_coefficients(sched, 0)
    a_t, s_t, e_t = sched.alpha[1], sched.sigma[1], sched.eta[1]
    assert (c.linear, c.dosg, c.pat, c.noise) == pytest.approx(
        (0.0, a_t * e_t, a_t * (1 - e_t), s_t), rel=1e-12
    )
    # the code's η gives nearly the same first update (its start has 1 - η = 2.5e-6)
    c_code = step_coefficients(DoSSchedule.build(5), 0)
    assert c_code.dosg == pytest.approx(c.dosg, rel=2e-3) and c_code.noise == pytest.approx(c.noise, rel=2e-3)
    g = torch.Generator().manual_seed(0)
    x_hat0 = torch.randn(2, 4, 3, 3, generator=g, dtype=F64)
    for order in (1, 2, 3):
        out = DoSSDESolver(sched, order).sample(
            start_state(x_hat0, sched, torch.randn_like(x_hat0)), x_hat0, lambda x, i: 0.5 * x, g
        )
        assert torch.isfinite(out).all()


def test_predict_x0_forms() -> None:
    g = torch.Generator().manual_seed(1)
    x0, x_hat0, eps = (torch.randn(3, 5, generator=g, dtype=F64) for _ in range(3))
    a, s, e = 0.7, math.sqrt(1 - 0.49), 0.3
    # code form: inverse of the standard DDPM forward on x0
    xt = a * x0 + s * eps
    assert torch.allclose(predict_x0(xt, eps, alpha=a, sigma=s), x0, atol=1e-12)
    # paper form (Eq. 9/29): inverse of the domain-shift forward (Eq. 2)
    xt = a * (e * x_hat0 + (1 - e) * x0) + s * eps
    got = predict_x0(xt, eps, alpha=a, sigma=s, eta=e, x_hat0=x_hat0, parameterization="paper")
    assert torch.allclose(got, x0, atol=1e-12)
    with pytest.raises(ValueError, match="x̂0"):
        predict_x0(xt, eps, alpha=a, sigma=s, eta=e, parameterization="paper")


# ---- the updates ----------------------------------------------------------------------------------
def test_order1_matches_eq12_term_by_term() -> None:
    sched = DoSSchedule.build(5)
    solver = DoSSDESolver(sched, order=1)
    g = torch.Generator().manual_seed(2)
    x_hat0 = torch.randn(2, 4, 6, 6, generator=g, dtype=F64)
    x = start_state(x_hat0, sched, torch.randn(x_hat0.shape, generator=g, dtype=F64))
    al, sg, et = sched.alpha, sched.sigma, sched.eta
    for i in range(5):
        x0 = torch.randn(x.shape, generator=g, dtype=F64)
        z = torch.randn(x.shape, generator=g, dtype=F64)
        s, t = i, i + 1
        lam_s = sg[s] / (al[s] * (1 - et[s]))
        lam_t = sg[t] / (al[t] * (1 - et[t]))
        a_t = al[t] * (1 - et[t])
        eq12 = {  # Eq. (12), written out from α, σ, η
            "linear": a_t / (al[s] * (1 - et[s])) * lam_t**2 / lam_s**2 * x,
            "dosg": a_t * (et[t] / (1 - et[t]) - et[s] / (1 - et[s]) * lam_t**2 / lam_s**2) * x_hat0,
            "pat": a_t * (1 - lam_t**2 / lam_s**2) * x0,
            "noise": a_t * math.sqrt(lam_t**2 - lam_t**4 / lam_s**2) * z,
        }
        terms = solver.step_terms(x, x0, x_hat0, z)
        assert set(terms) == set(eq12)
        for name, ref in eq12.items():
            assert torch.allclose(terms[name], ref, rtol=1e-10, atol=1e-14), (i, name)
        x = sum(terms.values())
    with pytest.raises(RuntimeError, match="all 5 steps"):
        solver.step(x, x, x_hat0, x)


def _official_loop(sched: DoSSchedule, order: int, x_start, x_hat0, model_x0, noises):
    """A transcription of the official shift_sample_{1,2,3}_order loop (model/shift_sampler.py):
    arrays ascending in time, index j = current point, j-1 = target, j+1 / j+2 = history."""
    al, sg, et = sched.alpha[::-1], sched.sigma[::-1], sched.eta[::-1]
    amo = al * (1 - et)
    lam = sg / amo
    n = len(al)
    img, old_x0, old_d = x_start, None, None
    for i in range(n - 1):
        j = n - 1 - i
        pred = model_x0(img, i)
        rl = lam[j - 1] / lam[j]
        r1 = amo[j - 1] / amo[j]
        rec_hat = amo[j - 1] * (et[j - 1] / (1 - et[j - 1]) - et[j] / (1 - et[j]) * rl**2) * x_hat0
        rec_x0 = amo[j - 1] * (1 - rl**2) * pred
        noise = noises[i] * np.sqrt(lam[j - 1] ** 2 - lam[j - 1] ** 2 * rl**2) * amo[j - 1]
        new = r1 * rl**2 * img + rec_hat + rec_x0 + noise
        if order >= 2 and old_x0 is not None:
            d = (pred - old_x0) / (lam[j] - lam[j + 1])
            new = new - amo[j - 1] * (lam[j - 1] - lam[j]) ** 2 / lam[j] * d
            if order >= 3 and old_d is not None:
                dd = 2 * (d - old_d) / (lam[j] - lam[j + 2])
                coef = (lam[j] - 3 * lam[j - 1]) * (lam[j] - lam[j - 1]) / 2 - lam[j - 1] ** 2 * np.log(rl)
                new = new + coef * dd * amo[j - 1]
            old_d = d if order >= 3 else None
        old_x0 = pred
        img = new
    return img


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_solver_equals_official_loop(order: int, steps: int) -> None:
    sched = DoSSchedule.build(steps)
    g = torch.Generator().manual_seed(steps * 10 + order)
    x_hat0 = torch.randn(1, 4, 4, 4, generator=g, dtype=F64)
    x_start = torch.randn(1, 4, 4, 4, generator=g, dtype=F64)
    noises = [torch.randn(1, 4, 4, 4, generator=g, dtype=F64) for _ in range(steps)]
    w = torch.randn(4, 4, generator=g, dtype=F64)

    def model_x0(x: torch.Tensor, i: int) -> torch.Tensor:  # a nonlinear stand-in for x_θ
        return torch.tanh(torch.einsum("oc,bchw->bohw", w, x)) + 0.1 * i

    solver = DoSSDESolver(sched, order)
    x = x_start
    for i in range(steps):
        x = solver.step(x, model_x0(x, i), x_hat0, noises[i])
    ref = _official_loop(sched, order, x_start, x_hat0, model_x0, noises)
    assert torch.allclose(x, ref, rtol=1e-9, atol=1e-12)
    assert [solver.order_at(i) for i in range(min(steps, 3))] == [
        min(order, k + 1) for k in range(min(steps, 3))
    ]


def test_solver_rejects_bad_order() -> None:
    with pytest.raises(ValueError, match="order"):
        DoSSDESolver(DoSSchedule.build(5), order=4)


# ---- convergence with an analytic x_θ --------------------------------------------------------------
MU, S2, XH = -0.3, 0.25, 0.7  # data x0 ~ N(MU, S2) per dimension, LR latent x̂0 = XH


def _continuous_schedule(t: np.ndarray, t1: float = 500.0) -> DoSSchedule:
    """SD's scaled-linear schedule in continuous time (ᾱ(t) = exp(-∫β), β(τ) = (a + cτ)²) and the
    paper's η(t) = (1 - cos(π t/t1))/2 (Eq. 4)."""
    a, c = math.sqrt(0.00085), (math.sqrt(0.012) - math.sqrt(0.00085)) / 999.0
    log_ac = -((a + c * t) ** 3 - (a - c) ** 3) / (3 * c)  # ∫_{-1}^{t} β
    ac = np.exp(log_ac)
    eta = (1 - np.cos(np.pi * np.minimum(t, t1) / t1)) / 2
    return DoSSchedule(alpha=np.sqrt(ac), sigma=np.sqrt(1 - ac), eta=eta)


def _log_lambda_grid(steps: int, t_start: float = 400.0) -> DoSSchedule:
    fine = np.linspace(t_start, 0.0, 40001)
    lam = _continuous_schedule(fine).lam
    targets = np.linspace(np.log(lam[0]), np.log(lam[-1]), steps + 1)
    t = np.interp(targets, np.log(lam[::-1]), fine[::-1])
    t[0], t[-1] = t_start, 0.0
    return _continuous_schedule(t)


def _gaussian_moments(sched: DoSSchedule, order: int) -> tuple[float, float]:
    """(mean, std) of the solver's output distribution for Gaussian data with the exact x_θ, started
    from the exact marginal; computed exactly by running the solver on coefficient vectors over
    [1, ε, z_1..z_N] (everything in the update is affine in those)."""
    n = sched.steps
    al, sg, et, A = sched.alpha, sched.sigma, sched.eta, sched.A
    e = torch.eye(n + 2, dtype=F64)
    x_hat0 = XH * e[0]
    x = (al[0] * et[0] * XH + A[0] * MU) * e[0] + math.sqrt(A[0] ** 2 * S2 + sg[0] ** 2) * e[1]

    def exact_x0(x: torch.Tensor, i: int) -> torch.Tensor:  # E[x0 | x_t] under Eq. (2)
        gain = A[i] * S2 / (A[i] ** 2 * S2 + sg[i] ** 2)
        return gain * x + (MU - gain * (al[i] * et[i] * XH + A[i] * MU)) * e[0]

    solver = DoSSDESolver(sched, order)
    for i in range(n):
        x = solver.step(x, exact_x0(x, i), x_hat0, e[2 + i])
    return float(x[0]), float(x[1:].norm())


def _gaussian_weak_error(sched: DoSSchedule, order: int) -> tuple[float, float]:
    """(|mean error|, |std error|) against the true last marginal N(α η x̂0 + A μ, A² s² + σ²)."""
    mean, std = _gaussian_moments(sched, order)
    al, sg, et, A = sched.alpha, sched.sigma, sched.eta, sched.A
    return abs(mean - (al[-1] * et[-1] * XH + A[-1] * MU)), abs(
        std - math.sqrt(A[-1] ** 2 * S2 + sg[-1] ** 2)
    )


def _f(lam: float) -> float:  # a smooth deterministic x_θ(λ)
    return MU + 0.8 / (1.0 + lam)


def _F(lam: float) -> float:  # antiderivative of f(λ)/λ³ = MU/λ³ + 0.8 (1/λ³ - 1/λ² + 1/λ - 1/(1+λ))
    return -MU / (2 * lam**2) + 0.8 * (-1 / (2 * lam**2) + 1 / lam + math.log(lam) - math.log(1 + lam))


def _deterministic_error(sched: DoSSchedule, order: int) -> float:
    """|mean error| for x_θ = f(λ) independent of x: only the Taylor approximation of the integral
    in Eq. (38) is tested (noise enters every order identically)."""
    lam, A, k = sched.lam, sched.A, sched.k
    x_hat0 = torch.tensor(XH, dtype=F64)
    x_s = torch.tensor(1.234, dtype=F64)
    solver = DoSSDESolver(sched, order)
    x = x_s
    for i in range(sched.steps):
        x = solver.step(x, torch.tensor(_f(lam[i]), dtype=F64), x_hat0, torch.zeros((), dtype=F64))
    ls, lt = lam[0], lam[-1]
    integral = 2 * lt**2 * (_F(lt) - _F(ls))  # ∫_{λs}^{λt} 2λt²/λ³ f(λ) dλ
    exact = (
        A[-1] / A[0] * (lt / ls) ** 2 * 1.234
        + A[-1] * (k[-1] - k[0] * (lt / ls) ** 2) * XH
        - A[-1] * integral
    )
    return abs(float(x) - exact)


STEPS = (10, 20, 40, 80)


def _rate(errors: list[float]) -> float:  # observed order between the last two step counts (x2 steps)
    return math.log2(errors[-2] / errors[-1])


def test_higher_order_converges_faster_gaussian_data() -> None:
    errs = {}
    for order in (1, 2, 3):
        results = [_gaussian_weak_error(_log_lambda_grid(n), order) for n in STEPS]
        assert max(m for m, _ in results) < 1e-12  # the mean is exact for an affine x_θ at every order
        errs[order] = [s for _, s in results]
    for j in range(len(STEPS)):
        assert errs[1][j] > errs[2][j] > errs[3][j], (STEPS[j], errs)
    assert 0.8 < _rate(errs[1]) < 1.2
    assert _rate(errs[2]) > 1.8 and _rate(errs[3]) > 1.8
    assert all(np.diff(errs[o]).max() < 0 for o in (1, 2, 3))  # monotone in step count


def test_higher_order_converges_faster_deterministic_x0() -> None:
    errs = {o: [_deterministic_error(_log_lambda_grid(n), o) for n in STEPS] for o in (1, 2, 3)}
    for j in range(len(STEPS)):
        assert errs[1][j] > errs[2][j] > errs[3][j], (STEPS[j], errs)
    assert 0.8 < _rate(errs[1]) < 1.2
    # "order 3" uses a first-order backward difference for x_θ', so its global rate is 2, like order 2
    # (the paper's App. A.6: "inaccurate to call it order when k >= 2"); it wins on the constant.
    assert _rate(errs[2]) > 1.8 and _rate(errs[3]) > 1.8


def test_exact_moments_agree_with_monte_carlo() -> None:
    """The coefficient-vector trick against plain sampling of the same solver (N = 5, order 3)."""
    sched = _log_lambda_grid(5)
    n_samples = 200_000
    g = torch.Generator().manual_seed(3)
    al, sg, et, A = sched.alpha, sched.sigma, sched.eta, sched.A
    x = (al[0] * et[0] * XH + A[0] * MU) + math.sqrt(A[0] ** 2 * S2 + sg[0] ** 2) * torch.randn(
        n_samples, generator=g, dtype=F64
    )
    x_hat0 = torch.full((n_samples,), XH, dtype=F64)

    def exact_x0(x: torch.Tensor, i: int) -> torch.Tensor:
        gain = A[i] * S2 / (A[i] ** 2 * S2 + sg[i] ** 2)
        return MU + gain * (x - al[i] * et[i] * XH - A[i] * MU)

    out = DoSSDESolver(sched, 3).sample(x, x_hat0, exact_x0, g)
    mean, std = _gaussian_moments(sched, 3)
    assert float(out.std()) == pytest.approx(std, rel=0.01)
    assert float(out.mean()) == pytest.approx(mean, abs=0.01)


def test_official_grid_gaussian_errors() -> None:
    """On the released grid (code η, start t = 499, uniform in t), order 2 beats order 1 at every
    step count; order 3 is the best at the paper's default N = 5 (it is not better than order 2 for
    every N on this grid: the official comment recommends order 1 for 10+ steps)."""
    errs = {o: [_gaussian_weak_error(DoSSchedule.build(n), o)[1] for n in (5, 10, 20, 40)] for o in (1, 2, 3)}
    for j in range(4):
        assert errs[2][j] < errs[1][j]
    assert errs[3][0] < errs[2][0] < errs[1][0]
