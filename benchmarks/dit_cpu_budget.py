"""What a DiT learns in about ten minutes on a CPU: the budget behind chapter 2's `cpu` preset. Each run trains on
MNIST (fp32, the Trainer's fast path, seed 0 or --seed), then draws 256 samples with 50 Euler steps (seed 0) from the
last weights and from an EMA of them (decay 0.999), and scores them with chapter 4.1's frozen evaluator: the Fréchet
distance of its features to MNIST's 10,000 test images (FD; lower is better), its mean top-class confidence and the
digits it reads. Runs:
- `seed_lr5e-4`: the chapter's DiT (12,351,760 parameters), 750 steps of 64 images (about ten minutes on two cores),
  at the learning rate of the old `cpu` preset;
- `seed_warmup_lr2e-3`: the same with the learning rate warmed up linearly over 100 steps to 2e-3, gradients clipped
  at norm 1;
- `seed_lr2e-3`: the same without the warmup, which does not train (loss 1.20 after 750 steps, samples of noise);
- `small_lr1e-3`: the smaller DiT of chapter 3's `cpu` preset (width 96, 4 blocks, 4 heads: 1,225,648 parameters),
  3 epochs of all 60,000 images in batches of 32 (5,625 steps), learning rate 1e-3: chapter 2's `cpu` preset;
- `small_warmup_lr2e-3`: the same at twice the rate, warmed up over 200 steps, gradients clipped at norm 1.
Merges each run into benchmarks/results/dit_cpu_budget.json, as NAME or, with --seed S, NAME_seedS (--grids DIR also
writes each run's first 64 samples).

    python benchmarks/dit_cpu_budget.py [--runs NAME,...] [--seed S] [--out DIR] [--grids DIR] [--smoke]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from common import RESULTS, load_average, machine
from from_noise_to_images import metrics
from from_noise_to_images.core import image_grid, mnist_loader, seed_everything
from from_noise_to_images.dit import DiT
from from_noise_to_images.sampling import sample
from from_noise_to_images.train import Trainer

SEED_SIZE, SMALL = dict(embed_dim=256, depth=6, num_heads=8), dict(embed_dim=96, depth=4, num_heads=4)
RUNS = {  # name: (model size, batch, steps, learning rate, warmup steps, gradient clip)
    "seed_lr5e-4": (SEED_SIZE, 64, 750, 5e-4, 0, None),
    "seed_warmup_lr2e-3": (SEED_SIZE, 64, 750, 2e-3, 100, 1.0),
    "seed_lr2e-3": (SEED_SIZE, 64, 750, 2e-3, 0, 1.0),
    "small_lr1e-3": (SMALL, 32, 3 * 60_000 // 32, 1e-3, 0, None),
    "small_warmup_lr2e-3": (SMALL, 32, 3 * 60_000 // 32, 2e-3, 200, 1.0),
}


def score(model, evaluator, reference, n: int) -> tuple[dict, torch.Tensor]:
    model.eval()
    x = sample(model, n, (1, 28, 28), 50, "cpu", seed=0).clamp(-1, 1)
    conf = evaluator(x).softmax(-1).max(-1)
    return dict(fd=metrics.frechet_distance(metrics.features(x, evaluator), reference), conf=conf.values.mean().item(),
                frac_conf90=(conf.values > 0.9).float().mean().item(), classes=torch.bincount(conf.indices, minlength=10).tolist()), x


def run(name: str, grids: Path | None, n: int = 256, seed: int = 0) -> dict:
    size, bs, steps, lr, warmup, clip = RUNS[name]
    seed_everything(seed)   # the weights, the noise of training and the order of the batches
    loader = mnist_loader(batch_size=bs, subset=min(60_000, bs * steps), seed=seed)
    trainer = Trainer(DiT(**size), loader, lr=lr, weight_decay=0.01, device="cpu", grad_clip=clip, ema_decay=0.999,
                      warmup_steps=warmup)
    t0 = time.time(); losses = trainer.train(max(1, bs * steps // 60_000), progress=False); train_s = time.time() - t0
    res = dict(seed=seed, model=size, parameters=sum(p.numel() for p in trainer.model.parameters()), batch_size=bs,
               steps=trainer.step, lr=lr, warmup_steps=warmup, grad_clip=clip, train_s=train_s, images_per_s=trainer.step * bs / train_s,
               epoch_losses=losses, loss_last_100_steps=sum(trainer.step_losses[-100:]) / len(trainer.step_losses[-100:]))
    evaluator, reference = metrics.load_evaluator(device="cpu"), metrics.reference_features(train=False, device="cpu")[0]
    for which, model in (("last", trainer.model), ("ema", trainer.ema.model)):
        res[which], x = score(model, evaluator, reference, n)
        if grids:
            from torchvision.utils import save_image
            save_image(image_grid(x[:64]), grids / f"{name}_seed{seed}_{which}.png")
    print(f"{name} (seed {seed}): loss {res['loss_last_100_steps']:.4f}, FD {res['last']['fd']:.1f} (EMA {res['ema']['fd']:.1f}), {train_s:.0f} s", flush=True)
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {list(RUNS)}")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0; the samples' noise is seed 0 always)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--grids", type=Path, help="write each run's first 64 samples here as PNG")
    p.add_argument("--smoke", action="store_true", help="one tiny run (10 steps, 16 samples), to test this script")
    a = p.parse_args()
    if a.smoke: RUNS["smoke"] = (dict(embed_dim=32, depth=1, num_heads=2), 32, 10, 1e-3, 5, 1.0); a.runs = "smoke"
    names = a.runs.split(",")
    if unknown := [n for n in names if n not in RUNS]: p.error(f"unknown runs {unknown}: choose from {list(RUNS)}")
    if a.grids: a.grids.mkdir(parents=True, exist_ok=True)
    out = Path(a.out) / "dit_cpu_budget.json"
    record = json.loads(out.read_text()) if out.exists() else dict(benchmark="dit_cpu_budget", device="cpu", runs={})
    for name in names:
        key = f"{name}_seed{a.seed}" if a.seed else name
        record["runs"][key] = dict(run(name, a.grids, 16 if a.smoke else 256, a.seed), load_average=load_average(), machine=machine())
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__": main()
