"""Fixed-seed sample grids as regression checks (tools/regression_grids.py holds the recipes).

Each chapter's main model (U-Net, DiT, class-conditional DiT once chapter 3's guidance is in the package) trains
on its tiny preset; its fixed-seed grid must match the statistics in tests/grid_expectations.json. The same
statistics from deliberately broken samplers must fall outside the tolerances: that is what makes the check worth
having. After an intended change to a recipe or to the package's numerics: python tools/regression_grids.py --update
"""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import regression_grids as rg  # noqa: E402

EXPECTED = rg.load_expectations()
NAMES = list(rg.RECIPES)


@pytest.fixture(scope="module")
def trained():
    cache = {}
    def get(name):
        if not rg.available(name): pytest.skip(f"needs from_noise_to_images.{rg.RECIPES[name]['needs']} (chapter {rg.RECIPES[name]['chapter']})")
        if name not in cache: cache[name] = rg.train(name)
        return cache[name]
    return get


def expected(name):
    assert name in EXPECTED, f"no stored expectations for {name}: run python tools/regression_grids.py --update {name}"
    stored = EXPECTED[name]
    assert stored["recipe"] == json.loads(json.dumps(rg.RECIPES[name])), \
        f"the {name} recipe changed since its expectations were stored: run python tools/regression_grids.py --update {name}"
    return stored["stats"]


def broken(kind):
    "A sampler with `sample`'s signature and one deliberate bug."
    @torch.no_grad()
    def sampler(model, n, shape, steps, device=None, seed=None, class_labels=None, cfg_scale=1.0):
        if class_labels is not None:
            from from_noise_to_images.guidance import guided_model
            model = guided_model(model, n, class_labels, cfg_scale)
        x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
        if kind == "no steps": return x
        ts = torch.linspace(0.0, 1.0, steps + 1) if kind == "time reversed" else torch.linspace(1.0, 0.0, steps + 1)
        for i in range(steps):
            t, dt = ts[i].expand(n), ts[i + 1] - ts[i]
            if kind == "step sign flipped": x = x - dt * model(x, t)
            elif kind == "model sees 1 - t": x = x + dt * model(x, 1 - t)
            else: x = x + dt * model(x, t)   # "time reversed": integrates from t = 0 up to t = 1
        return x
    return sampler


@pytest.mark.parametrize("name", NAMES)
def test_grid_matches_expectations(name, trained):
    model = trained(name)
    stats = rg.grid_stats(rg.grid(name, model))
    bad = rg.compare(stats, expected(name))
    assert not bad, f"{name} grid out of tolerance: " + "; ".join(bad)


def test_same_seed_same_grid(trained):
    model = trained("dit")
    assert torch.equal(rg.grid("dit", model), rg.grid("dit", model))


@pytest.mark.parametrize("kind", ["step sign flipped", "time reversed", "no steps"])
@pytest.mark.parametrize("name", NAMES)
def test_broken_sampler_falls_outside_tolerance(name, kind, trained):
    model = trained(name)
    stats = rg.grid_stats(rg.grid(name, model, broken(kind)))
    bad = rg.compare(stats, expected(name))
    assert bad, f"a sampler with '{kind}' passed the {name} check: tolerances too loose ({stats})"


@pytest.mark.parametrize("name", ["dit", "dit_cfg"])
def test_model_fed_reversed_time_falls_outside_tolerance(name, trained):
    # The tiny U-Net barely uses t after its short training, so this subtler bug is checked on the DiTs.
    model = trained(name)
    assert rg.compare(rg.grid_stats(rg.grid(name, model, broken("model sees 1 - t"))), expected(name))


def test_training_with_swapped_time_convention_is_caught(monkeypatch):
    "A package whose loss used t = 0 for noise (and v = x0 - x1) while the sampler kept ours fails the DiT check."
    from from_noise_to_images import flow
    monkeypatch.setattr(flow, "interpolate", lambda x0, x1, t: rg_interp(x1, x0, t))
    monkeypatch.setattr(flow, "velocity_target", lambda x0, x1: x0 - x1)
    model = rg.train("dit")
    assert rg.compare(rg.grid_stats(rg.grid("dit", model)), expected("dit"))


def rg_interp(a, b, t):
    t = t.view(-1, *([1] * (a.ndim - 1)))
    return (1 - t) * a + t * b


def test_tolerances_cover_every_statistic():
    for name, stored in EXPECTED.items():
        assert set(stored["stats"]) <= set(rg.TOLERANCES), name
        assert name in rg.RECIPES, f"stale expectations for {name}"
