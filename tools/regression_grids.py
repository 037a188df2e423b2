#!/usr/bin/env python
"""Fixed-seed sample grids as regression checks: train each chapter's model on its tiny preset, sample a grid
from fixed seeds, and compare the grid's statistics with the expectations stored in tests/grid_expectations.json.

Usage:
  python tools/regression_grids.py            # compute and compare (exit 1 if a statistic is out of tolerance)
  python tools/regression_grids.py --update   # recompute and store the expectations (after an intended change)
  python tools/regression_grids.py --update unet dit   # only some models

The test suite (tests/test_regression_grids.py) runs the same recipes and also proves that a broken sampler
(step sign flipped, time reversed, no steps) lands outside the tolerances. Run on the CPU with one thread
(OMP_NUM_THREADS=1, as tests do): the expectations are CPU numbers; tolerances absorb float noise between
machines and library versions, not changes in the recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
EXPECTATIONS = ROOT / "tests" / "grid_expectations.json"

# Each chapter's main model, small enough to train in seconds on two CPU cores. Fixed seeds everywhere.
RECIPES = {
    "unet": dict(chapter="1", model=dict(kind="SimpleUNet", model_channels=32, time_emb_dim=64),
                 subset=384, batch_size=8, epochs=1, lr=2e-3, num_samples=16, num_steps=16, seed=0),
    "dit": dict(chapter="2", model=dict(kind="DiT", patch_size=4, embed_dim=64, depth=2, num_heads=4),
                subset=1024, batch_size=16, epochs=1, lr=2e-3, num_samples=32, num_steps=20, seed=0),
    "dit_cfg": dict(chapter="3", model=dict(kind="DiT", patch_size=4, embed_dim=64, depth=2, num_heads=4, num_classes=10),
                    subset=1024, batch_size=16, epochs=1, lr=2e-3, num_samples=32, num_steps=20, seed=0, cfg_scale=2.0,
                    needs="guidance"),
}
# Absolute tolerances per statistic: float noise moves them by < 1e-3; a broken sampler by > 0.1 (tests prove it).
TOLERANCES = dict(mean=0.04, std=0.04, ink=0.03, background=0.04, confidence=0.08)


def available(name: str) -> bool:
    "Whether the package has what recipe `name` needs (chapter 3's guidance for the class-conditional DiT)."
    need = RECIPES[name].get("needs")
    if need is None: return True
    import importlib.util
    return importlib.util.find_spec(f"from_noise_to_images.{need}") is not None


def build(spec: dict):
    spec = dict(spec); kind = spec.pop("kind")
    if kind == "SimpleUNet":
        from from_noise_to_images.models import SimpleUNet
        return SimpleUNet(**spec)
    from from_noise_to_images.dit import DiT
    return DiT(**spec)


def train(name: str):
    "The recipe's model, trained on the CPU from fixed seeds; quiet."
    import contextlib, io
    from from_noise_to_images.core import mnist_loader, seed_everything
    from from_noise_to_images.train import Trainer
    r = RECIPES[name]
    torch.set_num_threads(1)
    seed_everything(r["seed"])
    model = build(r["model"])
    loader = mnist_loader(batch_size=r["batch_size"], subset=r["subset"], seed=r["seed"])
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(model, loader, lr=r["lr"], weight_decay=0.0, device="cpu", seed=r["seed"])
        trainer.train(r["epochs"], progress=False)
    return model.eval()


def sample_kwargs(name: str) -> dict:
    "Extra arguments for `sample`: labels 0..9 repeated and the guidance scale for the class-conditional model."
    r = RECIPES[name]
    if "num_classes" not in r["model"]: return {}
    return dict(class_labels=torch.arange(r["num_samples"]) % r["model"]["num_classes"], cfg_scale=r["cfg_scale"])


def grid(name: str, model, sampler=None) -> torch.Tensor:
    "The recipe's fixed-seed grid, drawn with the package's `sample` (or another `sampler` with its signature)."
    from from_noise_to_images.sampling import sample
    r = RECIPES[name]
    sampler = sampler or sample
    return sampler(model, r["num_samples"], (1, 28, 28), r["num_steps"], device="cpu", seed=r["seed"], **sample_kwargs(name))


def classifier_confidence(images: torch.Tensor) -> float | None:
    "Mean top-class probability of the frozen MNIST classifier (chapter 4), or None where the package lacks it."
    try:
        from from_noise_to_images import metrics
        if not Path(metrics.EVALUATOR_PATH).is_file(): return None
        ev = metrics.load_evaluator(device="cpu")
    except (ImportError, AttributeError):
        return None
    with torch.no_grad():
        return ev(images.clamp(-1, 1).float()).softmax(-1).max(-1).values.mean().item()


def grid_stats(images: torch.Tensor) -> dict:
    "Statistics of a grid in [-1, 1] (clamped as when shown): mean intensity, pixel std, ink and background fractions."
    x = images.detach().float().clamp(-1, 1)
    stats = dict(mean=x.mean().item(), std=x.std().item(),
                 ink=(x > 0).float().mean().item(),            # pixels brighter than mid-grey
                 background=(x < -0.8).float().mean().item())  # pixels near black, the bulk of an MNIST digit image
    conf = classifier_confidence(x)
    if conf is not None: stats["confidence"] = conf
    return stats


def compare(stats: dict, expected: dict, tolerances: dict = TOLERANCES) -> list[str]:
    "Statistics outside their tolerance, as readable lines (empty when all match)."
    bad = []
    for k, want in expected.items():
        if k not in stats: continue   # e.g. classifier confidence on a package without chapter 4
        if abs(stats[k] - want) > tolerances[k]:
            bad.append(f"{k} = {stats[k]:.4f}, expected {want:.4f} ± {tolerances[k]}")
    return bad


def load_expectations() -> dict:
    return json.loads(EXPECTATIONS.read_text()) if EXPECTATIONS.is_file() else {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help=f"default: all available of {', '.join(RECIPES)}")
    p.add_argument("--update", action="store_true", help="store the computed statistics as the new expectations")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = a.models or [n for n in RECIPES if available(n)]
    data, failed = load_expectations(), False
    for name in names:
        if name not in RECIPES: p.error(f"unknown model {name!r}: choose from {', '.join(RECIPES)}")
        if not available(name): print(f"{name}: skipped, the package lacks from_noise_to_images.{RECIPES[name]['needs']}"); continue
        stats = grid_stats(grid(name, train(name)))
        shown = ", ".join(f"{k} {v:.4f}" for k, v in stats.items())
        if a.update:
            data[name] = dict(recipe=RECIPES[name], stats={k: round(v, 5) for k, v in stats.items()})
            print(f"{name}: stored {shown}")
        elif name not in data:
            print(f"{name}: no stored expectations (run with --update)"); failed = True
        else:
            bad = compare(stats, data[name]["stats"])
            print(f"{name}: {'OK' if not bad else 'OUT OF TOLERANCE: ' + '; '.join(bad)} ({shown})")
            failed |= bool(bad)
    if a.update:
        EXPECTATIONS.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {EXPECTATIONS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
