"""Images/s of full training steps for the seed DiT at batch 128: the Trainer's fast path vs a naive loop written
like the seed's (manual attention, fp32, per-sample PIL transforms through a DataLoader, loss.item() per step).
Alternates the two, takes medians and their ratio; counts the model's FLOPs per image and measures the machine's
fp32 matmul peak for the model's main shape in the same run. Writes benchmarks/results/train_throughput.json.

    python benchmarks/train_throughput.py [--rounds 10] [--steps 3] [--device cpu] [--compile [MODE]] [--amp]
"""
import argparse
import contextlib
import copy
import io
import time

import torch

from common import (load_average, manual_attention, matmul_peak, median, naive_steps, pil_loader, seed_dit,
                    train_flops_per_image, write_json)
from from_noise_to_images.core import get_device, mnist_loader
from from_noise_to_images.dit import fused_attention_pays
from from_noise_to_images.fast import synchronize
from from_noise_to_images.train import Trainer


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10, help="alternations of naive and fast (default 10)")
    p.add_argument("--steps", type=int, default=3, help="training steps per timing (default 3)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None)
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="compile the fast path's model (compile time reported); optionally a torch.compile mode")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast in the fast path (default: the Trainer's choice, on for GPUs with bf16 tensor cores; "
                        "about 30x slower on this CPU)")
    a = p.parse_args()
    device = torch.device(a.device) if a.device else get_device()
    load_start = load_average()
    peaks = [matmul_peak(device)]
    torch.manual_seed(0)
    model = seed_dit()
    flops = train_flops_per_image(model, device="cpu")
    naive_model = manual_attention(copy.deepcopy(model)).to(device)
    naive_opt = torch.optim.AdamW(naive_model.parameters(), lr=1e-4, weight_decay=0.01)
    n = a.steps * a.batch_size
    naive_loader = pil_loader(a.batch_size, n)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        trainer = Trainer(copy.deepcopy(model), mnist_loader(batch_size=a.batch_size, subset=n, seed=0), lr=1e-4, weight_decay=0.01,
                          device=device, compile=a.compile, amp=a.amp)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()): trainer.train(1, progress=False)          # warm-up (and compile)
    warm_fast_s = time.perf_counter() - t0
    naive_steps(naive_model, naive_opt, naive_loader, device, max_steps=1)                     # warm-up
    naive, fast = [], []
    def run_naive():
        synchronize(device); t0 = time.perf_counter()
        naive_steps(naive_model, naive_opt, naive_loader, device)
        synchronize(device); naive.append(n / (time.perf_counter() - t0))
    def run_fast():
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()): trainer.train(1, progress=False)      # ends with its one host sync
        fast.append(n / (time.perf_counter() - t0))
    round_peaks = []
    for r in range(a.rounds):   # ABBA order: a drifting machine load favours neither
        for run in ((run_naive, run_fast) if r % 2 == 0 else (run_fast, run_naive)): run()
        round_peaks.append(matmul_peak(device, repeats=3)["gflops"])   # the peak now, beside this round's steps
        print(f"round {r + 1}: naive {naive[-1]:.1f} img/s, fast {fast[-1]:.1f} img/s, matmul {round_peaks[-1]:.0f} GFLOP/s")
    peaks.append(matmul_peak(device))
    peak = max(peaks, key=lambda d: d["gflops"])
    fast_med, naive_med = median(fast), median(naive)
    # the package's own choice of kernel, traced as a compiled model would trace it (backend="eager": nothing generated)
    pays = lambda: fused_attention_pays(device, 49)
    sdpa = torch.compile(pays, backend="eager", fullgraph=True)() if a.compile else pays()
    record = dict(
        benchmark="train_throughput", device=str(device), model="seed DiT (12,351,760 parameters)", batch_size=a.batch_size,
        steps_per_timing=a.steps, rounds=a.rounds, compile=trainer.compile_mode, amp=trainer.amp,
        fast=dict(what="Trainer fast path: device-resident batches, "
                       + ("SDPA" if sdpa else "attention written out (faster than SDPA to train on 49 tokens on a CPU, and compiled on a GPU)")
                       + ", one host sync per epoch"
                       + (", fused AdamW, TF32" if device.type == "cuda" else "") + (", bf16 autocast" if trainer.amp else ", fp32")
                       + (f", torch.compile ({trainer.compile_mode})" if a.compile else ""),
                  images_per_s=fast, median_images_per_s=fast_med, warmup_s=warm_fast_s),
        naive=dict(what="seed-style loop: manual attention, fp32, per-sample PIL transforms in a DataLoader, loss.item() per step",
                   images_per_s=naive, median_images_per_s=naive_med),
        speedup_median=fast_med / naive_med,
        speedup_paired_median=median([f / n_ for f, n_ in zip(fast, naive)]),   # robust to the load drifting between rounds
        train_gflop_per_image=flops / 1e9,
        matmul_peak=peak, matmul_peak_all=peaks,
        fast_fraction_of_peak=fast_med * flops / 1e9 / peak["gflops"],
        naive_fraction_of_peak=naive_med * flops / 1e9 / peak["gflops"],
        # this machine's speed drifts (shared host): each round's throughput against the peak measured beside it
        round_matmul_gflops=round_peaks,
        fast_fraction_of_round_peak_median=median([f * flops / 1e9 / p_ for f, p_ in zip(fast, round_peaks)]),
        naive_fraction_of_round_peak_median=median([n_ * flops / 1e9 / p_ for n_, p_ in zip(naive, round_peaks)]),
        load_average_start=load_start, load_average_end=load_average())
    print(f"fast {fast_med:.1f} img/s ({record['fast_fraction_of_peak']:.0%} of peak), naive {naive_med:.1f} img/s "
          f"({record['naive_fraction_of_peak']:.0%}); per-round peak: fast {record['fast_fraction_of_round_peak_median']:.0%}, "
          f"naive {record['naive_fraction_of_round_peak_median']:.0%}; speedup {record['speedup_median']:.2f}x (paired {record['speedup_paired_median']:.2f}x); "
          f"{flops / 1e9:.3f} GFLOP/image, peak {peak['gflops']:.1f} GFLOP/s; load {record['load_average_end']}")
    suffix = ("_compile" + ("" if trainer.compile_mode == "default" else "_" + trainer.compile_mode.replace("-", "_"))) if a.compile else ""
    write_json("train_throughput" + ("_" + device.type if device.type != "cpu" else "") + suffix, record)


if __name__ == "__main__": main()
