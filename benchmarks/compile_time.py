"""Cold-start cost of `Trainer(compile=True)` for the seed DiT (batch 128): its six blocks compiled one by one, so their
shared code is traced and compiled once (regional compilation, `compile_model`'s default where no CUDA graphs are
recorded), vs the model compiled whole (`regional=False`; the default with CUDA graphs, so on a GPU the first of the
two forces regional compilation into CUDA graphs, which pytorch#152887 may break). Every measurement runs in a fresh
process with an empty Inductor cache, so each one compiles from scratch; the two alternate (ABBA). Per process:
compile seconds (first step minus the second), then the median of the following steps, and the first steps' losses,
which must agree between the two.
Writes benchmarks/results/compile_time.json (compile_time_<device>.json on a GPU).

    python benchmarks/compile_time.py [--pairs 3] [--steps 6] [--device cpu]
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

from common import load_average, median, seed_dit, write_json
from from_noise_to_images.core import get_device, mnist_loader, seed_everything
from from_noise_to_images.fast import compile_mode, compile_model, synchronize
from from_noise_to_images.train import Trainer


def child(regional: bool, steps: int, device) -> dict:
    "One fresh process's figures: compile seconds, ms per step after it, the losses."
    seed_everything(0)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(seed_dit(), mnist_loader(batch_size=128, subset=128 * (steps + 2), seed=0), lr=1e-4,
                          weight_decay=0.01, device=device, compile=True)
    trainer._model = compile_model(trainer.model, trainer.compile_mode, regional=regional)
    times, losses = [], []
    for batch in trainer._batches:
        synchronize(device); t0 = time.perf_counter()
        losses.append(trainer.train_step(batch).item())   # one sync a step: fine for timing the step, not for training
        times.append(time.perf_counter() - t0)
    return dict(compile_s=times[0] - times[1], first_step_s=times[0], ms_per_step=median(times[2:]) * 1e3, losses=losses)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="alternations of regional and whole, one fresh process each (default 3)")
    p.add_argument("--steps", type=int, default=6, help="steps timed after the two warm-up steps (default 6)")
    p.add_argument("--device", default=None)
    p.add_argument("--child", choices=["regional", "whole"], help=argparse.SUPPRESS)
    a = p.parse_args()
    device = torch.device(a.device) if a.device else get_device()
    if a.child:
        print(json.dumps(child(a.child == "regional", a.steps, device))); return
    load_start, runs = load_average(), {"regional": [], "whole": []}
    for r in range(a.pairs):
        for how in (("regional", "whole") if r % 2 == 0 else ("whole", "regional")):
            with tempfile.TemporaryDirectory() as cache:   # an empty Inductor cache: compile from scratch
                env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
                out = subprocess.run([sys.executable, __file__, "--child", how, "--steps", str(a.steps), "--device", str(device)],
                                     env=env, capture_output=True, text=True, check=True).stdout
            runs[how].append(json.loads(out.strip().splitlines()[-1]))
            print(f"pair {r + 1}, {how}: compile {runs[how][-1]['compile_s']:.1f} s, {runs[how][-1]['ms_per_step']:.0f} ms/step", flush=True)
    med = lambda how, k: median([x[k] for x in runs[how]])
    loss_diff = max(abs(p_ - q) for r_, w in zip(runs["regional"], runs["whole"]) for p_, q in zip(r_["losses"], w["losses"]))
    record = dict(
        benchmark="compile_time", device=str(device), model="seed DiT (12,351,760 parameters), 6 blocks", batch_size=128,
        what="Trainer(compile=True): the blocks compiled one by one (regional) vs the model compiled whole",
        compile_mode=compile_mode(True, device), pairs=a.pairs, steps_timed=a.steps,
        regional=runs["regional"], whole=runs["whole"],
        compile_s_median=dict(regional=med("regional", "compile_s"), whole=med("whole", "compile_s")),
        ms_per_step_median=dict(regional=med("regional", "ms_per_step"), whole=med("whole", "ms_per_step")),
        compile_time_ratio_whole_over_regional=med("whole", "compile_s") / med("regional", "compile_s"),
        step_speed_ratio_regional_over_whole=med("whole", "ms_per_step") / med("regional", "ms_per_step"),
        max_loss_difference=loss_diff, load_average_start=load_start, load_average_end=load_average())
    print(f"compile: regional {record['compile_s_median']['regional']:.1f} s, whole {record['compile_s_median']['whole']:.1f} s "
          f"({record['compile_time_ratio_whole_over_regional']:.2f}x); steps: regional {record['ms_per_step_median']['regional']:.0f} ms, "
          f"whole {record['ms_per_step_median']['whole']:.0f} ms; losses differ by at most {loss_diff:.1e}")
    write_json("compile_time" + ("_" + device.type if device.type != "cpu" else ""), record)


if __name__ == "__main__": main()
