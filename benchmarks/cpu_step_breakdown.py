"""Where one CPU training step of the seed DiT (batch 128, the Trainer's fast path, fp32) spends its time, and what
that means for the fraction of the matmul peak a step can reach. torch.profiler's self times are grouped into
matmuls, attention, activation, normalisation, optimizer and the rest; the matmuls' own rate inside the step is set
against the best-of-10 rate of the model's main shape measured in the same run, and one more step, profiled with
shapes, gives each matmul shape's own rate. Also an alternating A/B of the MLP's activation (tanh-approximate GELU,
the model's, vs exact GELU), the largest cost that is not a matmul.
Writes benchmarks/results/cpu_step_breakdown.json.

With --compile the step is `Trainer(compile=True)`'s: Inductor's fused kernels are profiled one by one and grouped by
the ops fused into them, and the A/B is of how they compute tanh: through exp (`fast.CPU_INDUCTOR_OPTIONS`, the
package's choice) vs Inductor's default, SLEEF's vectorised tanh. Writes cpu_step_breakdown_compile.json.

    python benchmarks/cpu_step_breakdown.py [--steps 8] [--ab-rounds 6] [--compile]
"""
import argparse
import contextlib
import copy
import time

import torch
import torch.nn as nn

from common import (ab_train_steps, endless_batches, load_average, matmul_peak, median, quiet_trainer, seed_dit,
                    train_flops_by_kind, write_json)

MATMULS = {"aten::mm", "aten::addmm"}   # the Linear layers and the patch embedding
ATTENTION = {"aten::bmm", "aten::_softmax", "aten::_softmax_backward_data"}   # the written-out formula (49 tokens on a CPU)


def category(ev) -> str:
    "The group of one profiled op, by its name and the op that called it; an Inductor kernel by the ops fused into it."
    if "cpp_fused" in ev.name:
        for key, group in (("gelu", "activation (GELU)"), ("softmax", "attention"), ("layer_norm", "LayerNorm")):
            if key in ev.name: return group
        return "other (elementwise, copies, sums, conv, ...)"
    parents, p = [], ev.cpu_parent
    while p is not None: parents.append(p.name); p = p.cpu_parent
    if any(n.startswith("Optimizer.step") for n in [ev.name] + parents): return "optimizer (AdamW)"
    if ev.name == "aten::copy_" and parents and parents[0] == "aten::addmm": return "matmul: bias copied into the output"
    if ev.name in MATMULS: return "matmul"
    if "scaled_dot_product" in ev.name or ev.name in ATTENTION: return "attention"
    if "gelu" in ev.name: return "activation (GELU)"
    if "layer_norm" in ev.name: return "LayerNorm"
    if not ev.name.startswith("aten::"): return "autograd and Python overhead"
    return "other (elementwise, copies, sums, conv, ...)"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="profiled steps, each with the matmul peak beside it (default 8)")
    p.add_argument("--ab-rounds", type=int, default=6, help="alternations of the GELU A/B, 2 steps each (default 6)")
    p.add_argument("--compile", action="store_true", help="the compiled step (Trainer(compile=True)), and the A/B of its tanh")
    a = p.parse_args()
    torch.manual_seed(0)
    load_start, peaks = load_average(), [matmul_peak()]
    base = seed_dit()
    if a.compile: torch._inductor.config.cpp.enable_kernel_profile = True   # each fused kernel its own profiler event
    trainer = quiet_trainer(copy.deepcopy(base), 128 * 8, compile=a.compile)
    it = endless_batches(trainer)
    flops = {k: v * 128 for k, v in train_flops_by_kind(base).items()}   # per step: total, linear, attention
    for _ in range(2): trainer.train_step(next(it))                     # warm-up (and compile)
    torch._inductor.config.cpp.enable_kernel_profile = False             # the A/B's kernels without the profiler's hooks
    # This host's speed drifts from minute to minute, so every profiled step gets its own peak: the best of six
    # timings of the main shape, three just before the step and three just after. Ratios are per step, then medians.
    from torch.profiler import profile
    steps = []
    for _ in range(a.steps):
        before = matmul_peak(repeats=3)["gflops"]
        with profile() as prof:
            t0 = time.perf_counter(); trainer.train_step(next(it)); wall = time.perf_counter() - t0
        groups = {}
        for ev in prof.events():
            c = category(ev); groups[c] = groups.get(c, 0.0) + ev.self_cpu_time_total / 1e3
        steps.append(dict(ms=wall * 1e3, peak_gflops=max(before, matmul_peak(repeats=3)["gflops"]), groups=groups))
    before = matmul_peak(repeats=3)["gflops"]
    with profile(record_shapes=True) as prof: trainer.train_step(next(it))
    by_shape = matmuls_by_shape(prof, max(before, matmul_peak(repeats=3)["gflops"]))
    peaks.append(matmul_peak())
    rate = lambda f, ms: f / (ms / 1e3) / 1e9
    per = lambda fn: median([fn(s) for s in steps])
    names = sorted({c for s in steps for c in s["groups"]}, key=lambda c: -per(lambda s: s["groups"].get(c, 0.0)))
    breakdown = {c: dict(ms_per_step=per(lambda s: s["groups"].get(c, 0.0)),
                         share=per(lambda s: s["groups"].get(c, 0.0) / sum(s["groups"].values()))) for c in names}
    mm = lambda s: s["groups"].get("matmul", 0.0)
    bias = lambda s: s["groups"].get("matmul: bias copied into the output", 0.0)

    # A/B, fresh copies of the same weights, alternating order, medians; the second against the first. Eager: the MLP's
    # activation, exact GELU vs the model's tanh approximation. Compiled: the model's GELU, its tanh through exp (the
    # package's choice) vs SLEEF's tanh.
    if a.compile:
        names, ratio_name = ("sleef_tanh", "tanh_through_exp"), "exp_vs_sleef_speedup_paired_median"
        ab_ms = ab_train_steps({k: copy.deepcopy(base) for k in names}, a.ab_rounds, compile=True,
                               build_contexts={"sleef_tanh": sleef_tanh})
    else:
        names, ratio_name = ("gelu_tanh", "gelu_exact"), "exact_vs_tanh_speedup_paired_median"
        models = {k: copy.deepcopy(base) for k in names}
        for b in models["gelu_exact"].blocks: b.mlp[1] = nn.GELU()
        ab_ms = ab_train_steps(models, a.ab_rounds)

    record = dict(
        benchmark="cpu_step_breakdown", device="cpu", model="seed DiT (12,351,760 parameters)", batch_size=128,
        what=f"Trainer.train_step, fast path, fp32, {'compiled (compile=True)' if a.compile else 'eager'}", steps=a.steps,
        step_ms_median=per(lambda s: s["ms"]), gflop_per_step=flops["total"] / 1e9,
        gflop_per_step_linear=flops["linear"] / 1e9, gflop_per_step_attention=flops["attention"] / 1e9,
        matmul_peak_gflops_per_step=[s["peak_gflops"] for s in steps], matmul_peak_best_of_10=peaks,
        step_gflops=rate(flops["total"], per(lambda s: s["ms"])),
        step_fraction_of_peak=per(lambda s: rate(flops["total"], s["ms"]) / s["peak_gflops"]),
        matmul_gflops_in_step=rate(flops["linear"], per(mm)),
        matmul_fraction_of_peak_in_step=per(lambda s: rate(flops["linear"], mm(s)) / s["peak_gflops"]),
        # the most a step could reach if everything but the matmuls took no time at all
        ceiling_fraction_of_peak=per(lambda s: rate(flops["total"], mm(s) + bias(s)) / s["peak_gflops"]),
        breakdown=breakdown, matmuls_by_shape=by_shape,
        activation_ab=dict(ms_per_step=ab_ms, median_ms={k: median(v) for k, v in ab_ms.items()},
                           **{ratio_name: median([a / b for a, b in zip(ab_ms[names[0]], ab_ms[names[1]])])}),   # names[1] against names[0]
        load_average_start=load_start, load_average_end=load_average())
    print(f"step {record['step_ms_median']:.0f} ms ({record['step_gflops']:.0f} GFLOP/s, {record['step_fraction_of_peak']:.0%} of the "
          f"peak beside it); matmuls inside the step run at {record['matmul_gflops_in_step']:.0f} GFLOP/s "
          f"({record['matmul_fraction_of_peak_in_step']:.0%}); ceiling with free non-matmul work: {record['ceiling_fraction_of_peak']:.0%}")
    for k, v in breakdown.items(): print(f"  {k:45s} {v['ms_per_step']:7.1f} ms  {v['share']:5.1%}")
    for r in by_shape[:12]: print(f"  {r['op']:11s} {r['shape']:32s} x{r['calls']:<3d} {r['ms']:6.1f} ms  {r['fraction_of_peak']:4.0%} of the peak")
    ms = record["activation_ab"]["median_ms"]
    print(f"A/B: {names[0]} {ms[names[0]]:.0f} ms, {names[1]} {ms[names[1]]:.0f} ms per step "
          f"({names[1]} {record['activation_ab'][ratio_name]:.2f}x, paired median)")
    write_json("cpu_step_breakdown_compile" if a.compile else "cpu_step_breakdown", record)


def matmuls_by_shape(prof, peak_gflops: float) -> list[dict]:
    "Each matmul shape of one profiled step (recorded with shapes): calls, milliseconds, its rate against the peak."
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key not in ("aten::mm", "aten::addmm", "aten::bmm"): continue
        sh = e.input_shapes[1:3] if e.key == "aten::addmm" else e.input_shapes[:2]
        (*b, m, k), n = sh[0], sh[1][-1]
        flop = 2 * (b[0] if b else 1) * m * k * n * e.count
        ms = e.self_cpu_time_total / 1e3
        rows.append(dict(op=e.key[6:], shape=f"{'%dx' % b[0] if b else ''}{m}x{k} @ {k}x{n}", calls=e.count, ms=ms,
                         gflops=flop / ms / 1e6, fraction_of_peak=flop / ms / 1e6 / peak_gflops))
    return sorted(rows, key=lambda r: -r["ms"])


@contextlib.contextmanager
def sleef_tanh():
    "Build a compiled `Trainer` with Inductor's default tanh (SLEEF's) instead of the package's tanh through exp."
    from from_noise_to_images import fast
    saved = dict(fast.CPU_INDUCTOR_OPTIONS)
    fast.CPU_INDUCTOR_OPTIONS["cpp.use_decompose_tanh"] = False
    try: yield
    finally: fast.CPU_INDUCTOR_OPTIONS.clear(); fast.CPU_INDUCTOR_OPTIONS.update(saved)


if __name__ == "__main__": main()
