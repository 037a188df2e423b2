"""The seed's 30-epoch recipe run exactly as a practitioner calls the fast path on one GPU, `Trainer(..., compile=True)`,
from building the trainer (MNIST loading included) to the last epoch's loss on the host. A shorter check than
gpu_recipe.py (no naive loop): one run, written as JSON to --out (default benchmarks/results/gpu_default_recipe.json).

    python benchmarks/gpu_default_recipe.py [--epochs 30] [--out DIR]
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, load_average, machine, seed_dit
from from_noise_to_images.core import mnist_loader, seed_everything
from from_noise_to_images.fast import synchronize
from from_noise_to_images.train import Trainer


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    if not torch.cuda.is_available(): sys.exit("gpu_default_recipe.py needs a CUDA GPU")
    record = dict(benchmark="gpu_default_recipe", call="Trainer(seed_dit(), mnist_loader(128, seed=0), lr=1e-4, weight_decay=0.01, compile=True)",
                  epochs=a.epochs, machine=machine(), load_average_start=load_average())
    seed_everything(0); synchronize("cuda"); t0 = time.perf_counter()
    trainer = Trainer(seed_dit(), mnist_loader(batch_size=128, seed=0), lr=1e-4, weight_decay=0.01, device="cuda", compile=True)
    built = time.perf_counter() - t0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf): losses = trainer.train(a.epochs, progress=False)
    synchronize("cuda"); wall = time.perf_counter() - t0
    record.update(wall_s=wall, build_s=built, final_loss=losses[-1], epoch_losses=losses, compile_mode=trainer.compile_mode,
                  step_graph_recorded=trainer._graph is not None and trainer._graph.graph is not None,
                  compile_report=[l for l in buf.getvalue().splitlines() if l.startswith("torch.compile")],
                  peak_memory_gb=torch.cuda.max_memory_allocated() / 1e9, load_average_end=load_average())
    out = Path(a.out) / "gpu_default_recipe.json"; out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "epoch_losses"}, indent=1)); print(f"wrote {out}")


if __name__ == "__main__": main()
