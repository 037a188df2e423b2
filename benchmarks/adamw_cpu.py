"""AdamW on a CPU: one optimizer step over the seed DiT's 12.4M parameters with PyTorch's default there (a Python loop
over the tensors), with `foreach=True` (one op per list of tensors) and with `fused=True` (one kernel for all of
them); alternating, medians. Then whole training steps of the seed DiT with the Trainer's fused AdamW against the
default one, alternating. This is why `fast.make_adamw` fuses on CPUs as well as on CUDA.
Writes benchmarks/results/adamw_cpu.json.

    python benchmarks/adamw_cpu.py [--rounds 9] [--step-rounds 12]
"""
import argparse
import copy
import time

import torch

from common import ab_train_steps, load_average, median, seed_dit, write_json

KINDS = {"default (loop over tensors)": {}, "foreach": dict(foreach=True), "fused": dict(fused=True)}


def optimizer_step_ms(params, kwargs, steps=10) -> float:
    "Milliseconds per AdamW step over `params` (their grads set), after 3 warm-up steps."
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs)
    for _ in range(3): opt.step()
    t0 = time.perf_counter()
    for _ in range(steps): opt.step()
    return (time.perf_counter() - t0) / steps * 1e3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="alternations of the optimizer-step timings (default 9)")
    p.add_argument("--step-rounds", type=int, default=12, help="alternations of whole training steps, 2 each (default 12)")
    a = p.parse_args()
    torch.manual_seed(0)
    load_start = load_average()
    base = seed_dit()
    params = {k: [torch.nn.Parameter(q.detach().clone()) for q in base.parameters()] for k in KINDS}
    for ps in params.values():
        for q in ps: q.grad = torch.randn_like(q)
    ms = {k: [] for k in KINDS}
    for r in range(a.rounds):
        for k in (list(KINDS) if r % 2 == 0 else list(KINDS)[::-1]): ms[k].append(optimizer_step_ms(params[k], KINDS[k]))
    step_ms = ab_train_steps({"fused": copy.deepcopy(base), "default": copy.deepcopy(base)}, a.step_rounds, setup={
        "default": lambda t: setattr(t, "optimizer", torch.optim.AdamW(t.model.parameters(), lr=1e-4, weight_decay=0.01))})
    base_ms = median(ms["default (loop over tensors)"])
    record = dict(
        benchmark="adamw_cpu", device="cpu", model="seed DiT (12,351,760 parameters)",
        optimizer_step_ms=ms, optimizer_step_ms_median={k: median(v) for k, v in ms.items()},
        speedup_vs_default={k: base_ms / median(v) for k, v in ms.items()},
        train_step_ms=step_ms, train_step_ms_median={k: median(v) for k, v in step_ms.items()},
        train_step_speedup_fused_paired_median=median([d / f for d, f in zip(step_ms["default"], step_ms["fused"])]),
        load_average_start=load_start, load_average_end=load_average())
    for k, v in record["optimizer_step_ms_median"].items(): print(f"AdamW step, {k}: {v:.1f} ms ({record['speedup_vs_default'][k]:.2f}x)")
    print(f"training step: fused {record['train_step_ms_median']['fused']:.0f} ms, default {record['train_step_ms_median']['default']:.0f} ms, "
          f"paired speedup {record['train_step_speedup_fused_paired_median']:.3f}x")
    write_json("adamw_cpu", record)


if __name__ == "__main__": main()
