"""Milliseconds per training step of the seed DiT (batch 128) on one GPU, for each way of running the step: first the
step graph with compiled blocks (`compile=True`) in fp32 and bf16, each with attention through SDPA and written out
(and bf16 with attention in bf16, as before `Attention.upcast`); eager fp32 and bf16; the whole step (noise, loss,
backward, AdamW) recorded as one CUDA graph (`Trainer(cuda_graph=True)`), eager, with the blocks compiled, with the
model compiled whole, and with max-autotune's matmuls; torch.compile in its default mode and with CUDA graphs
("reduce-overhead"; the model compiled whole, and its blocks compiled one by one, which pytorch#152887 may break); the
compiled model with a compiled AdamW. First the bare model (forward and backward, no optimizer), which calibrates the
budget's host cost per op, a profile of one eager step (kernel launches, host vs GPU time), and where the GPU time of
a step with the blocks compiled goes (matmuls, attention, Inductor's fused kernels, AdamW: `kernel_breakdown`). Each
configuration also projects the seed's 30-epoch recipe (warm-up + 14,040 steps: 468 a epoch, the last incomplete batch
dropped) from its figures.
This is how the Trainer's defaults were chosen: a small model on a fast GPU is bound by kernel launches.
A configuration that fails records its error and the run goes on; the JSON is rewritten after each, and configurations
that would start after --max-s are skipped (recorded as such).
`--patch-size 2 --only NAMES` times chosen configurations on 196 tokens instead of the seed's 49 (bare passes, profile
and kernel breakdown left out): where, on a GPU, the written-out attention stops paying (`dit.EXPLICIT_MAX_TOKENS`, 64,
comes from CPU measurements).
Writes gpu_step.json (gpu_step_patch2.json with --patch-size 2) to --out (default benchmarks/results). Needs CUDA;
`--smoke` runs it on a CPU, briefly.

    python benchmarks/gpu_step.py [--steps 300] [--max-s 600] [--patch-size 4] [--only NAME,...] [--out DIR] [--smoke]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, attention, load_average, machine, seed_dit   # attention(model, how): see CONFIGS
from from_noise_to_images.budget import HOST_S_PER_OP, ops_per_training_step
from from_noise_to_images.core import mnist_loader, seed_everything
from from_noise_to_images.dit import fused_attention_pays
from from_noise_to_images.fast import compile_model, synchronize
from from_noise_to_images.train import Trainer

RECIPE_STEPS = 30 * (60_000 // 128)   # the seed's recipe: 30 epochs at batch 128, as mnist_loader batches them (drop_last)
CONFIGS = [  # (name, compile, amp, optimizer: the Trainer's (fused AdamW on CUDA) or compiled,
             #  blocks compiled one by one: None is compile_model's choice, whole with CUDA graphs,
             #  the whole step as one CUDA graph: Trainer(cuda_graph=True),
             #  attention: "sdpa" through scaled_dot_product_attention (fp32 under autocast), "explicit" the written-out
             #  formula (what the package trains with, compiled, since 2026-11-27), "bf16" SDPA in bf16 under autocast
             #  (Attention.upcast off))
    ("step_graph_compiled_blocks_fp32", True, False, "trainer", None, True, "sdpa"),
    # on 2026-11-27 SDPA's fp32 kernels (cutlass memory-efficient, forward and backward) held 0.72 of the 3.60 ms of
    # kernels in a compiled fp32 step on an H200, and bf16 with them took 3.13 ms a step against 2.59 with bf16 SDPA: on 49
    # tokens the written-out formula (batched matmuls, a fused softmax) may be faster, in fp32 and under autocast.
    # On the first H100 it was: 3.88 against 4.11 ms in fp32, 3.11 against 3.46 in bf16 (gpu_step_h100.json)
    ("step_graph_compiled_blocks_fp32_explicit_attention", True, False, "trainer", None, True, "explicit"),
    ("step_graph_compiled_blocks_bf16", True, True, "trainer", None, True, "sdpa"),
    ("step_graph_compiled_blocks_bf16_explicit_attention", True, True, "trainer", None, True, "explicit"),
    ("step_graph_compiled_blocks_bf16_attention_bf16", True, True, "trainer", None, True, "bf16"),
    ("eager_fp32", False, False, "trainer", None, False, "sdpa"),
    ("step_graph_eager_fp32", False, False, "trainer", None, True, "sdpa"),
    # inside the step graph, fusion across the blocks (the model compiled whole), and Triton's own matmuls with the
    # bias and GELU fused into them (max-autotune without CUDA graphs, which tries them against cuBLAS)
    ("step_graph_compiled_whole_fp32", True, False, "trainer", False, True, "sdpa"),
    ("step_graph_max_autotune_blocks_fp32", "max-autotune-no-cudagraphs", False, "trainer", None, True, "sdpa"),
    ("compile_cudagraphs_fp32", "reduce-overhead", False, "trainer", None, False, "sdpa"),
    ("eager_bf16", False, True, "trainer", None, False, "sdpa"),
    ("compile_default_fp32", "default", False, "trainer", None, False, "sdpa"),
    # less compile time (2.3x less on a CPU), if CUDA graphs survive one graph replayed block after block (pytorch#152887)
    ("compile_cudagraphs_fp32_blocks_one_by_one", "reduce-overhead", False, "trainer", True, False, "sdpa"),
    # the optimizer took about 1 ms of host time per step on the H200's slow host: compile it too
    ("compile_cudagraphs_fp32_compiled_adamw", "reduce-overhead", False, "compiled", None, False, "sdpa"),
]


# the written-out attention against SDPA, compiled in the step graph, fp32 and bf16: the choice EXPLICIT_MAX_TOKENS makes
ATTENTION_PAIRS = ("step_graph_compiled_blocks_fp32", "step_graph_compiled_blocks_fp32_explicit_attention",
                   "step_graph_compiled_blocks_bf16", "step_graph_compiled_blocks_bf16_explicit_attention")


def pick_configs(configs, only: str | None) -> list:
    "The configurations named in `only` (comma-separated), in table order; all of them without it."
    if not only: return list(configs)
    names = [n.strip() for n in only.split(",") if n.strip()]
    if unknown := sorted(set(names) - {c[0] for c in configs}):
        raise SystemExit(f"--only: unknown configurations {unknown}; known: {[c[0] for c in configs]}")
    return [c for c in configs if c[0] in names]


def step_file_name(patch_size: int = 4) -> str:
    return "gpu_step.json" if patch_size == 4 else f"gpu_step_patch{patch_size}.json"


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


def compile_optimizer_step(trainer) -> None:
    "Swap the Trainer's fused AdamW for a plain one whose `step` torch.compile fuses into a few kernels."
    opt = torch.optim.AdamW(trainer.model.parameters(), lr=1e-4, weight_decay=0.01, foreach=False, fused=False)
    opt.step = torch.compile(opt.step)
    trainer.optimizer = opt


def profiled_steps(trainer, steps):
    "torch.profiler's record (CPU, and CUDA's kernels on a GPU) of `steps` training steps after 3 warm-up steps."
    from torch.profiler import ProfilerActivity, profile
    batches = iter(trainer._batches)
    for _ in range(3): trainer.train_step(next(batches))   # warm-up (and compile)
    synchronize(trainer.device)
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])) as prof:
        for _ in range(steps): trainer.train_step(next(batches))
        synchronize(trainer.device)
    return prof


def profile_step(trainer, steps=10) -> dict:
    "Kernel launches and host vs GPU time per eager step, from torch.profiler."
    ev = profiled_steps(trainer, steps).key_averages()
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx"))
    return dict(kernel_launches_per_step=launches / steps,
                host_ms_per_step_profiled=sum(e.self_cpu_time_total for e in ev) / steps / 1e3,
                gpu_ms_per_step=sum(getattr(e, "self_device_time_total", 0) for e in ev) / steps / 1e3)


KERNEL_KINDS = (  # (kind, substrings of a kernel's lowercased name), first match wins: attention before matmul, since
                 # cutlass's attention kernels (fmha_cutlassF/B...) also name cutlass
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("matmul", ("gemm", "xmma", "cutlass", "cublas", "sm90_", "sm80_", "ampere_", "aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer (AdamW)", ("adam",)),
    ("fused reductions (LayerNorm, sums)", ("triton_red", "triton_per", "layer_norm")),
    ("fused elementwise", ("triton_poi", "cpp_fused")),
)


def kernel_kind(name: str) -> str:
    name = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in name for k in keys)), "other")


def kernel_breakdown(trainer, steps=10) -> dict:
    """GPU time per step by kind of kernel, and the ten longest kernels: where a step's GPU work goes, once launches
    are out of the way (the step graph replays the same kernels). The trainer should launch its kernels one by one
    (no CUDA graphs: compile="default", cuda_graph=False), so that the profiler sees each. On a CPU (--smoke) the
    ops' own CPU time instead."""
    from torch.autograd import DeviceType
    cuda = trainer.device.type == "cuda"
    prof = profiled_steps(trainer, steps)
    # the profiler also puts spans of code on the GPU's timeline (e.g. "Optimizer.step#AdamW.step"): those are no kernels
    if cuda: kernels = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
                        if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False) and "#" not in e.key]
    else: kernels = [(e.key, e.self_cpu_time_total, e.count) for e in prof.key_averages() if e.key.startswith(("aten::", "graph_"))]
    kinds = {}
    for name, us, n in kernels:
        k = kinds.setdefault(kernel_kind(name), dict(ms_per_step=0.0, kernels_per_step=0.0))
        k["ms_per_step"] += us / steps / 1e3; k["kernels_per_step"] += n / steps
    top = sorted(kernels, key=lambda k: -k[1])[:10]
    return dict(what=f"Trainer(compile={trainer.compile_mode!r}, cuda_graph=False), {'GPU' if cuda else 'CPU'} time per step",
                ms_per_step=sum(k["ms_per_step"] for k in kinds.values()), by_kind=kinds,
                kernels_per_step=sum(k["kernels_per_step"] for k in kinds.values()),
                longest=[dict(name=n[:160], ms_per_step=us / steps / 1e3, per_step=c / steps) for n, us, c in top],
                tf32=bool(cuda and torch.backends.cuda.matmul.allow_tf32))


def profile_seed_model(record, device, loader, steps: int, smoke: bool, save) -> None:
    """Into `record`: the seed model's bare passes (forward and backward, no optimizer), the budget's host cost per op,
    a profile of one eager step and where the GPU time of a compiled step goes; `save()` writes what is there so far."""
    m = seed_dit().to(device)
    x, t = torch.randn(128, 1, 28, 28, device=device), torch.rand(128, device=device)
    for label, grad in (("bare_forward_backward_fp32", True), ("bare_forward_no_grad_fp32", False)):
        with torch.set_grad_enabled(grad):
            for _ in range(5): (m(x, t).square().mean().backward() if grad else m(x, t))
            synchronize(device); t0 = time.perf_counter()
            for _ in range(steps): (m(x, t).square().mean().backward() if grad else m(x, t))
            synchronize(device)
        record[label + "_ms"] = (time.perf_counter() - t0) / steps * 1e3
    # the budget module's host cost per op (HOST_S_PER_OP) comes from this figure and a CPU count of the same pass's ops
    ops = ops_per_training_step(seed_dit())
    record["budget_host_calibration"] = dict(ops_per_step_counted_on_cpu=ops, host_s_per_op_in_budget=HOST_S_PER_OP,
                                             host_s_per_op_measured=record["bare_forward_backward_fp32_ms"] / 1e3 / ops)
    record["eager_fp32_profile"] = profile_step(Trainer(seed_dit(), loader, lr=1e-4, weight_decay=0.01, device=device),
                                                steps=2 if smoke else 10)
    save()
    try:
        seed_everything(0)
        record["compiled_fp32_kernels"] = kernel_breakdown(
            Trainer(seed_dit(), loader, lr=1e-4, weight_decay=0.01, device=device, compile="default", cuda_graph=False),
            steps=2 if smoke else 10)
        kb = record["compiled_fp32_kernels"]
        print(f"compiled fp32 step: {kb['ms_per_step']:.2f} ms of kernels, {kb['kernels_per_step']:.0f} kernels: " +
              ", ".join(f"{k} {v['ms_per_step']:.2f}" for k, v in kb["by_kind"].items()), flush=True)
    except Exception as e:
        record["compiled_fp32_kernels"] = dict(error=f"{type(e).__name__}: {e}"[:2000]); print(f"kernel breakdown: FAILED {e!r}")
    save()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--max-s", type=float, default=600.0, help="start no configuration after this many seconds")
    p.add_argument("--skip-graph", action="store_true", help="leave out the step graph (if its tests failed on this GPU)")
    p.add_argument("--patch-size", type=int, default=4, choices=(1, 2, 4, 7, 14), help="4: the seed's 49 tokens; 2: 196")
    p.add_argument("--only", help="comma-separated configuration names (ATTENTION_PAIRS: the attention pairs); with it, "
                                  "the bare passes, the profile and the kernel breakdown are left out")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--smoke", action="store_true", help="a few steps on a CPU, to test this script")
    a = p.parse_args()
    if a.smoke:   # on a CPU: the eager step, with attention written out, the compiled optimizer, the whole model compiled
        device, a.steps, subset = torch.device("cpu"), 3, 2048
        configs = [("eager_fp32", False, False, "trainer", None, False, "sdpa"),
                   ("eager_explicit_attention_cpu_smoke", False, False, "trainer", None, False, "explicit"),
                   ("compiled_adamw_cpu_smoke", "default", False, "compiled", None, False, "sdpa"),
                   ("compile_whole_model_cpu_smoke", "default", False, "trainer", False, False, "sdpa")]
    elif not torch.cuda.is_available(): sys.exit("gpu_step.py needs a CUDA GPU; --smoke checks the script on a CPU")
    else: device, subset, configs = torch.device("cuda"), None, [c for c in CONFIGS if not (a.skip_graph and c[5])]
    if a.only == "ATTENTION_PAIRS": a.only = ",".join(ATTENTION_PAIRS)
    configs = pick_configs(configs, a.only)
    tokens = (28 // a.patch_size) ** 2
    # the package's own choice of kernel, traced as a compiled step traces it (backend="eager": nothing generated)
    package_sdpa = torch.compile(lambda: fused_attention_pays("cuda", tokens), backend="eager", fullgraph=True)()
    t_start = time.perf_counter()
    loader = mnist_loader(batch_size=128, subset=subset, seed=0)
    record = dict(benchmark="gpu_step", device=str(device), batch_size=128, patch_size=a.patch_size, tokens=tokens,
                  package_trains_compiled_on_cuda_with="sdpa" if package_sdpa else "explicit",
                  steps_timed=a.steps, machine=machine(), recipe_steps=RECIPE_STEPS, load_average_start=load_average(),
                  configs={})
    out = Path(a.out) / step_file_name(a.patch_size); out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(record, indent=1) + "\n")
    def done(name, warm, ms, losses, **extra):
        record["configs"][name] = dict(extra, warmup_s=warm, ms_per_step=ms, projected_recipe_s=warm + RECIPE_STEPS * ms / 1e3,
                                       loss_first=losses[0], loss_last_50_mean=sum(losses[-50:]) / len(losses[-50:]))
        print(f"{name}: warm-up {warm:.1f} s, {ms:.2f} ms/step, recipe about {record['configs'][name]['projected_recipe_s']:.0f} s", flush=True)
    def attempt(name, fn):
        try: fn()
        except Exception as e:   # one failing configuration must not cost the others their (GPU) time
            record["configs"][name] = dict(error=f"{type(e).__name__}: {e}"[:2000]); print(f"{name}: FAILED {e!r}", flush=True)
        save()
    if not a.only: profile_seed_model(record, device, loader, a.steps, a.smoke, save)   # the seed model only
    for name, compile, amp, opt, regional, graph, attn in configs:
        if time.perf_counter() - t_start > a.max_s:
            record["configs"][name] = dict(skipped=f"--max-s {a.max_s:.0f} s passed"); continue
        def run():
            torch._dynamo.reset()   # every configuration compiles the same block code anew: no recompile limit, no reuse
            seed_everything(0)
            model = seed_dit(patch_size=a.patch_size)
            with attention(model, attn):
                trainer = Trainer(model, loader, lr=1e-4, weight_decay=0.01, device=device, compile=compile, amp=amp,
                                  cuda_graph=graph)
                if compile and regional is not None: trainer._model = compile_model(trainer.model, trainer.compile_mode, regional=regional)
                if opt == "compiled": compile_optimizer_step(trainer)
                done(name, *step_ms(trainer, a.steps), compile_mode=trainer.compile_mode, amp=amp, optimizer=opt, step_graph=graph,
                     attention=attn, blocks_compiled_one_by_one=trainer._model is not trainer.model and not hasattr(trainer._model, "_orig_mod"))
        attempt(name, run)
    record["load_average_end"] = load_average()
    save()
    print(json.dumps(record, indent=1)); print(f"wrote {out}")


if __name__ == "__main__": main()
