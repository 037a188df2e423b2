"""Milliseconds per training step of the seed DiT (batch 128) on one GPU, for each way of running the step: eager
fp32 and bf16, torch.compile in its default mode and with CUDA graphs ("reduce-overhead"), plus the bare model
(forward and backward, no optimizer) and a profile of one eager step (kernel launches, host vs GPU time).
This is how the Trainer's defaults were chosen: a small model on a fast GPU is bound by kernel launches.
Writes gpu_step.json to --out (default benchmarks/results). Needs CUDA; `--smoke` runs it on a CPU, briefly.

    python benchmarks/gpu_step.py [--steps 300] [--out DIR] [--smoke]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, load_average, machine, seed_dit
from from_noise_to_images.core import mnist_loader, seed_everything
from from_noise_to_images.fast import synchronize
from from_noise_to_images.train import Trainer

CONFIGS = [  # (name, compile, amp)
    ("eager_fp32", False, False), ("eager_bf16", False, True),
    ("compile_default_fp32", "default", False), ("compile_cudagraphs_fp32", "reduce-overhead", False),
    ("compile_cudagraphs_bf16", "reduce-overhead", True),
]


def step_ms(trainer, steps, warmup=5) -> tuple[float, float, list[float]]:
    "Warm-up seconds (compiling included), then milliseconds per step over `steps` steps, and the losses."
    batches = iter(trainer._batches)
    def batch():
        nonlocal batches
        try: return next(batches)
        except StopIteration: batches = iter(trainer._batches); return next(batches)
    synchronize(trainer.device); t0 = time.perf_counter()
    for _ in range(warmup): trainer.train_step(batch())
    synchronize(trainer.device); warm = time.perf_counter() - t0; t0 = time.perf_counter()
    losses = [trainer.train_step(batch()) for _ in range(steps)]
    synchronize(trainer.device)
    return warm, (time.perf_counter() - t0) / steps * 1e3, [l.item() for l in losses]


def profile_step(trainer, steps=10) -> dict:
    "Kernel launches and host vs GPU time per eager step, from torch.profiler."
    from torch.profiler import ProfilerActivity, profile
    batches = iter(trainer._batches)
    for _ in range(3): trainer.train_step(next(batches))
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(steps): trainer.train_step(next(batches))
        synchronize(trainer.device)
    ev = prof.key_averages()
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx"))
    return dict(kernel_launches_per_step=launches / steps,
                host_ms_per_step_profiled=sum(e.self_cpu_time_total for e in ev) / steps / 1e3,
                gpu_ms_per_step=sum(getattr(e, "self_device_time_total", 0) for e in ev) / steps / 1e3)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--smoke", action="store_true", help="a few steps on a CPU, to test this script")
    a = p.parse_args()
    if a.smoke: device, a.steps, subset, configs = torch.device("cpu"), 3, 2048, CONFIGS[:1]
    elif not torch.cuda.is_available(): sys.exit("gpu_step.py needs a CUDA GPU; --smoke checks the script on a CPU")
    else: device, subset, configs = torch.device("cuda"), None, CONFIGS
    loader = mnist_loader(batch_size=128, subset=subset, seed=0)
    record = dict(benchmark="gpu_step", device=str(device), batch_size=128, steps_timed=a.steps, machine=machine(),
                  load_average_start=load_average(), configs={})
    for name, compile, amp in configs:
        seed_everything(0)
        trainer = Trainer(seed_dit(), loader, lr=1e-4, weight_decay=0.01, device=device, compile=compile, amp=amp)
        warm, ms, losses = step_ms(trainer, a.steps)
        record["configs"][name] = dict(compile_mode=trainer.compile_mode, amp=amp, warmup_s=warm, ms_per_step=ms,
                                       loss_first=losses[0], loss_last_50_mean=sum(losses[-50:]) / len(losses[-50:]))
        print(f"{name}: warm-up {warm:.1f} s, {ms:.2f} ms/step", flush=True)
    m = seed_dit().to(device)
    x, t = torch.randn(128, 1, 28, 28, device=device), torch.rand(128, device=device)
    for label, grad in (("bare_forward_backward_fp32", True), ("bare_forward_no_grad_fp32", False)):
        with torch.set_grad_enabled(grad):
            for _ in range(5): (m(x, t).square().mean().backward() if grad else m(x, t))
            synchronize(device); t0 = time.perf_counter()
            for _ in range(a.steps): (m(x, t).square().mean().backward() if grad else m(x, t))
            synchronize(device)
        record[label + "_ms"] = (time.perf_counter() - t0) / a.steps * 1e3
    record["eager_fp32_profile"] = profile_step(Trainer(seed_dit(), loader, lr=1e-4, weight_decay=0.01, device=device),
                                                steps=2 if a.smoke else 10)
    record["load_average_end"] = load_average()
    out = Path(a.out) / "gpu_step.json"; out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1)); print(f"wrote {out}")


if __name__ == "__main__": main()
