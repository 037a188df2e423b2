#!/usr/bin/env python
"""Train the frozen MNIST evaluator that chapter 4's metrics use, and write its weights.

Usage: python scripts/train_evaluator.py [--epochs 4] [--clean-epochs 1] [--out from_noise_to_images/assets/mnist_evaluator.pt]

CPU only, fixed seeds, all 60,000 training images. Stage 1: `--epochs` epochs with light augmentation
(random rotation, scale and shift) and a one-cycle learning rate; stage 2: `--clean-epochs` epochs on
the unaugmented images at a small, cosine-decaying learning rate. The test set is used once, at the end,
to report accuracy. About 10-15 minutes on two idle cores. The file holds tensors and plain values only
(loads with `weights_only=True`). `--init FILE` starts stage 2 from a stage-1 file written with
`--clean-epochs 0` (stage 2 has its own seed, so the two runs give what one run gives).
"""
import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from from_noise_to_images.core import mnist_tensors, seed_everything
from from_noise_to_images.metrics import MNISTEvaluator
from from_noise_to_images.train import atomic_torch_save


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    "Per-image random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px); background stays -1."
    n = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)
    ang, s = u(-10, 10) * math.pi / 180, u(0.9, 1.1)
    tx, ty = u(-2, 2) / 14, u(-2, 2) / 14
    theta = torch.stack([torch.stack([torch.cos(ang) / s, -torch.sin(ang) / s, tx], 1),
                         torch.stack([torch.sin(ang) / s, torch.cos(ang) / s, ty], 1)], 1)
    grid = F.affine_grid(theta, x.shape, align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


@torch.no_grad()
def accuracy(model, x, y, batch_size=1000) -> float:
    model.eval()
    correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def run_epochs(model, x, y, epochs, batch_size, opt, sched, g, augment_with, t0, stage):
    steps_per_epoch = len(x) // batch_size
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = augment(x[idx], augment_with) if augment_with is not None else x[idx]
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); sched.step()
            tot += loss.item()
        print(f"{stage} epoch {epoch + 1}: loss {tot / steps_per_epoch:.4f} ({time.time() - t0:.0f} s)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clean-epochs", type=int, default=1)
    p.add_argument("--clean-lr", type=float, default=3e-4)
    p.add_argument("--init", type=Path, default=None, help="skip stage 1: start from this stage-1 file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "from_noise_to_images/assets/mnist_evaluator.pt")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything(a.seed)
    x, y = mnist_tensors(train=True)
    xt, yt = mnist_tensors(train=False)
    model = MNISTEvaluator()
    t0 = time.time()
    if a.init is None:
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
        steps_per_epoch = len(x) // a.batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.epochs * steps_per_epoch)
        g = torch.Generator().manual_seed(a.seed)
        run_epochs(model, x, y, a.epochs, a.batch_size, opt, sched, g, augment_with=g, t0=t0, stage="augmented")
    else:
        model.load_state_dict(torch.load(a.init, weights_only=True)["state_dict"])
        print(f"stage 1 loaded from {a.init}")
    if a.clean_epochs > 0:
        opt = torch.optim.AdamW(model.parameters(), lr=a.clean_lr, weight_decay=1e-4)
        steps = a.clean_epochs * (len(x) // a.batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        g2 = torch.Generator().manual_seed(a.seed + 1)
        run_epochs(model, x, y, a.clean_epochs, a.batch_size, opt, sched, g2, augment_with=None, t0=t0, stage="clean")
    acc = accuracy(model, xt, yt)
    print(f"test accuracy {acc:.4f}")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    atomic_torch_save(dict(state_dict=state, config=model.config, test_accuracy=acc, seed=a.seed,
                           epochs=a.epochs, clean_epochs=a.clean_epochs, trained_by="scripts/train_evaluator.py"), a.out)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
