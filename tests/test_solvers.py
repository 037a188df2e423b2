"Solvers: convergence order on ODEs with known solutions, exact NFE counts, and `sample`'s solver argument."
import math

import pytest
import torch

from from_noise_to_images.sampling import sample
from from_noise_to_images.solvers import NFE_PER_STEP, SOLVERS, check_solver, integrate

X1 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
# (field, exact x(0) from x(1)): a linear autonomous ODE and a time-dependent one
CASES = {
    "linear": (lambda x, t: -1.5 * x, X1 * math.exp(1.5)),           # x(t) = x(1) e^{-1.5 (t - 1)}
    "time-dependent": (lambda x, t: 2 * t * x, X1 * math.exp(-1.0)),  # x(t) = x(1) e^{t^2 - 1}
}


def _err(field, exact, solver, n, **kw):
    x, nfe = integrate(field, X1, 1.0, 0.0, solver, n, **kw)
    return (x - exact).abs().max().item(), nfe


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_fixed_step_order(case, solver, order):
    field, exact = CASES[case]
    errs = [_err(field, exact, solver, n)[0] for n in (16, 32, 64, 128)]
    slopes = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(s - order) < 0.15 for s in slopes), slopes
    assert errs[-1] < (0.2 if order == 1 else 1e-3)   # x(0) is up to 13 in size


@pytest.mark.parametrize("solver", ["euler", "midpoint", "heun"])
@pytest.mark.parametrize("n", [1, 2, 7, 50])
def test_fixed_step_nfe_exact(solver, n):
    _, nfe = integrate(CASES["linear"][0], X1, 1.0, 0.0, solver, n)
    assert nfe == NFE_PER_STEP[solver] * n
    assert NFE_PER_STEP == {"euler": 1, "midpoint": 2, "heun": 2}   # Heun: 2 per step, 2N in all (not EDM's 2N - 1)


@pytest.mark.parametrize("case", sorted(CASES))
def test_dopri5_accurate_and_counts(case):
    field, exact = CASES[case]
    calls = []
    counted = lambda x, t: (calls.append(1), field(x, t))[1]
    err, nfe = _err(counted, exact, "dopri5", 1, rtol=1e-10, atol=1e-10)
    assert err < 1e-8
    assert nfe == len(calls) > 6
    err_loose, nfe_loose = _err(field, exact, "dopri5", 1, rtol=1e-3, atol=1e-3)
    assert nfe_loose < nfe and err_loose < 1e-2


def test_unknown_solver():
    with pytest.raises(ValueError, match="choose one of euler, midpoint, heun, dopri5"):
        check_solver("rk4")
    with pytest.raises(ValueError, match="unknown solver 'Euler'"):
        integrate(CASES["linear"][0], X1, solver="Euler")
    assert SOLVERS == ("euler", "midpoint", "heun", "dopri5")


class Linear(torch.nn.Module):
    "v(x, t) = a x + b t: cheap, and depends on both x and t."
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Parameter(torch.tensor(-0.7)), torch.nn.Parameter(torch.tensor(0.3))
        self.calls = 0

    def forward(self, x, t):
        self.calls += 1
        assert t.shape == (x.shape[0],)
        return self.a * x + self.b * t[:, None, None, None]


def _old_euler(model, n, shape, steps, seed):
    "The chapter 1.4 sampler before solvers existed, kept verbatim as a reference."
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
    traj = [x.clone()]
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for i in range(steps):
        x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(n))
        traj.append(x.clone())
    return x, traj


def test_sample_default_is_unchanged_euler():
    m = Linear()
    x, traj = sample(m, 5, (1, 4, 4), 9, "cpu", return_trajectory=True, seed=2)
    x_ref, traj_ref = _old_euler(m, 5, (1, 4, 4), 9, 2)
    assert torch.equal(x, x_ref) and len(traj) == 10 and all(torch.equal(a, b) for a, b in zip(traj, traj_ref))
    assert torch.equal(sample(m, 5, (1, 4, 4), 9, "cpu", seed=2), x)


@pytest.mark.parametrize("solver", SOLVERS)
def test_sample_solvers_nfe_and_trajectory(solver):
    m = Linear()
    x, traj, nfe = sample(m, 3, (1, 4, 4), 6, "cpu", seed=0, solver=solver, return_trajectory=True, return_nfe=True)
    assert nfe == m.calls and len(traj) == 7 and torch.equal(traj[-1], x.cpu())
    if solver in NFE_PER_STEP: assert nfe == NFE_PER_STEP[solver] * 6
    x2, nfe2 = sample(m, 3, (1, 4, 4), 6, "cpu", seed=0, solver=solver, return_nfe=True)
    assert torch.allclose(x2, x) and nfe2 == nfe
    with pytest.raises(ValueError, match="choose one of"):
        sample(m, 3, (1, 4, 4), 6, "cpu", solver="rk45")
    assert m.training   # restored


def test_dopri5_never_asks_a_model_for_t_outside_0_1():
    # torchdiffeq's first-step probe can step past t = 0; models reject t outside [0, 1] (chapter 1.2's checks)
    from from_noise_to_images.models import SimpleUNet
    from from_noise_to_images.sampling import sample
    torch.manual_seed(0)
    m = SimpleUNet(model_channels=8, time_emb_dim=16)
    x, nfe = sample(m, 2, (1, 28, 28), 4, "cpu", solver="dopri5", rtol=1e-3, atol=1e-3, return_nfe=True, seed=0)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all() and nfe >= 6
