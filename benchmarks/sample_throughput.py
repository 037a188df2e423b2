"""Sampling throughput of the seed DiT, batch 256: `sample` (inference mode, SDPA; optionally bf16 autocast and
torch.compile) vs a plain seed-style loop (no_grad, manual attention, fp32). Alternating rounds, medians.
Images/s are for 50 Euler steps; on a CPU the default times 5 steps and scales (the per-step cost is constant).
Writes benchmarks/results/sample_throughput.json.

    python benchmarks/sample_throughput.py [--steps 5] [--rounds 3] [--device cuda --compile --amp]
"""
import argparse
import copy
import time

import torch

from common import load_average, manual_attention, median, seed_dit, write_json
from from_noise_to_images.core import get_device
from from_noise_to_images.fast import autocast, compile_model, synchronize
from from_noise_to_images.sampling import sample


@torch.no_grad()
def plain_sample(model, n, steps, device):
    "The seed's sampler: no_grad, fp32, Euler from t = 1 to 0."
    x = torch.randn(n, 1, 28, 28, device=device)
    ts = torch.linspace(1.0, 0.0, steps + 1, device=device)
    for i in range(steps):
        x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(n))
    return x


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="Euler steps timed (default: 50 on CUDA, 5 on CPU)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (for GPUs; about 30x slower on a CPU without bf16)")
    a = p.parse_args()
    device = torch.device(a.device) if a.device else get_device()
    steps = a.steps or (50 if device.type == "cuda" else 5)
    load_start = load_average()
    torch.manual_seed(0)
    model = seed_dit().to(device).eval()
    plain_model = manual_attention(copy.deepcopy(model))
    fast_model = compile_model(model) if a.compile else model
    amp = a.amp
    def fast_run():
        with autocast(device, amp): return sample(fast_model, a.batch, (1, 28, 28), steps, device, seed=0)
    t0 = time.perf_counter(); fast_run(); synchronize(device); warm = time.perf_counter() - t0
    plain_sample(plain_model, a.batch, 1, device)
    res = dict(plain=[], fast=[])
    for r in range(a.rounds):
        for name, fn in (("plain", lambda: plain_sample(plain_model, a.batch, steps, device)), ("fast", fast_run)):
            synchronize(device); t0 = time.perf_counter(); fn(); synchronize(device)
            res[name].append(a.batch / ((time.perf_counter() - t0) * 50 / steps))   # images/s for 50 steps
        print(f"round {r + 1}: plain {res['plain'][-1]:.2f} img/s, fast {res['fast'][-1]:.2f} img/s (50-step equivalent)")
    med = {k: median(v) for k, v in res.items()}
    record = dict(benchmark="sample_throughput", device=str(device), batch=a.batch, steps_timed=steps,
                  images_per_s_for_50_steps=res, median_images_per_s_for_50_steps=med, speedup_median=med["fast"] / med["plain"],
                  fast=dict(what="sample(): inference_mode, SDPA" + (", bf16 autocast" if amp else ", fp32") + (", torch.compile" if a.compile else ""),
                            first_call_s=warm),
                  plain="no_grad, manual attention, fp32", rounds=a.rounds,
                  note=None if steps == 50 else f"timed {steps} Euler steps and scaled to 50 (each step costs the same)",
                  load_average_start=load_start, load_average_end=load_average())
    print(f"fast {med['fast']:.2f} img/s vs plain {med['plain']:.2f} img/s: {record['speedup_median']:.2f}x")
    write_json("sample_throughput" + ("_" + device.type if device.type != "cpu" else "") + ("_compile" if a.compile else ""), record)


if __name__ == "__main__": main()
