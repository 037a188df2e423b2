"""Do three more changes pay in a compiled CPU step? One DiT block of the seed model, compiled as the `Trainer` compiles
it (`fast.compile_model`), forward and backward at the seed's shapes (128 images x 49 tokens x 256), alternating
rounds, medians and paired ratios against the block as it is:
- `rational_gelu`: GELU's tanh as Eigen's rational function (a degree-13 odd polynomial over a degree-6 even one,
  clamped at +-7.99) instead of through exp, in an autograd function whose backward reuses it: no exp at all;
- `fp_contract`: Inductor's C++ compiled with `-ffp-contract=fast` (multiply-adds fused); and both together;
- `qkv_chunk`: q, k and v split from the qkv output by one `transpose` and `chunk` instead of `permute` and `unbind`,
  so that the backward's copy back into the qkv layout has simpler index arithmetic.
Each variant's largest difference from the block as it is (output, input gradient), and a profile of its fused
kernels (milliseconds per call). Then whole compiled `Trainer` steps with and without `-ffp-contract=fast` (the one
change that needs no code in the model), alternating. Writes benchmarks/results/cpu_block_variants.json.

    python benchmarks/cpu_block_variants.py [--rounds 20] [--iters 3] [--step-rounds 10]
"""
import argparse
import contextlib
import copy
import math
import time
import types

import torch
import torch.nn as nn

from common import ab_train_steps, load_average, median, seed_dit, write_json
from from_noise_to_images import fast
from from_noise_to_images.fast import compile_model

FP_CONTRACT = {"cpp.enable_floating_point_contract_flag": "fast"}

# Eigen's fast float tanh (generic_fast_tanh_float): odd numerator coefficients alpha_1..alpha_13, even denominator beta_0..beta_6
ALPHA = [4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
         -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16]
BETA = [4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06]
CLAMP, C = 7.99881172180175781, math.sqrt(2 / math.pi)


def tanh_rational(x):
    x = x.clamp(-CLAMP, CLAMP)
    x2 = x * x
    p = x2 * ALPHA[6] + ALPHA[5]
    for a in reversed(ALPHA[:5]): p = p * x2 + a
    q = x2 * BETA[3] + BETA[2]
    for b in (BETA[1], BETA[0]): q = q * x2 + b
    return x * p / q


class RationalGELUFn(torch.autograd.Function):
    "GELU's tanh approximation with tanh as `tanh_rational`, forward and backward."
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * x * (1 + tanh_rational(C * (x + 0.044715 * x * x * x)))

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        t = tanh_rational(C * (x + 0.044715 * x * x * x))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * 0.044715 * x * x))


class RationalGELU(nn.Module):
    def forward(self, x): return RationalGELUFn.apply(x)


def split_heads_chunk(self, x):
    B, N, _ = x.shape
    return self.qkv(x).view(B, N, 3 * self.num_heads, self.head_dim).transpose(1, 2).chunk(3, dim=1)


VARIANTS = {   # name -> (rational GELU, fp-contract, qkv chunk)
    "as_is": (False, False, False), "rational_gelu": (True, False, False), "fp_contract": (False, True, False),
    "rational_gelu_fp_contract": (True, True, False), "qkv_chunk": (False, False, True)}


def build(base, rational, contract, chunk):
    b = copy.deepcopy(base)
    if rational: b.mlp[1] = RationalGELU()
    if chunk: b.attn.split_heads = types.MethodType(split_heads_chunk, b.attn)
    return compile_model(b, options=FP_CONTRACT if contract else {})


def fwd_bwd(block, x, c, gy):
    "One forward and backward pass with upstream gradient `gy`: the output and the input's gradient."
    xi = x.clone().requires_grad_()
    y = block(xi, c)
    y.backward(gy)
    return y.detach(), xi.grad


def kernel_profile(block, x, c, gy, iters=6) -> dict:
    "Milliseconds per call of the block's fused kernels (Inductor's C++ ones), over `iters` forward+backward passes."
    from torch.profiler import profile
    fwd_bwd(block, x, c, gy)
    with profile() as prof:
        for _ in range(iters): fwd_bwd(block, x, c, gy)
    out = {e.key: e.self_cpu_time_total / e.count / 1e3 for e in prof.key_averages() if "cpp_fused" in e.key}
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


@contextlib.contextmanager
def fp_contract():
    "Trainers built inside compile with `-ffp-contract=fast` added to the package's Inductor options."
    old = fast.CPU_INDUCTOR_OPTIONS
    fast.CPU_INDUCTOR_OPTIONS = {**old, **FP_CONTRACT}
    try: yield
    finally: fast.CPU_INDUCTOR_OPTIONS = old


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--iters", type=int, default=3, help="forward+backward passes per timing")
    p.add_argument("--step-rounds", type=int, default=10, help="alternations of whole compiled training steps")
    a = p.parse_args()
    import torch._inductor.config as inductor_config
    inductor_config.cpp.enable_kernel_profile = True   # names the fused kernels in the profile (all variants alike)
    load_start = load_average()
    torch.manual_seed(0)
    base = seed_dit().blocks[0]
    blocks = {name: build(base, *how) for name, how in VARIANTS.items()}
    x, c, gy = torch.randn(128, 49, 256), torch.randn(128, 1024), torch.randn(128, 49, 256)
    results = {}
    for name, block in blocks.items():   # compiles, and the differences from the block as it is
        fwd_bwd(block, x, c, gy)
        y, g = fwd_bwd(block, x, c, gy)
        results[name] = dict(y=y, g=g)
    ref = results["as_is"]
    diffs = {n: dict(output=(r["y"] - ref["y"]).abs().max().item(), input_grad=(r["g"] - ref["g"]).abs().max().item())
             for n, r in results.items() if n != "as_is"}
    ms = {n: [] for n in blocks}
    names = list(blocks)
    for r in range(a.rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            for _ in range(a.iters): fwd_bwd(blocks[n], x, c, gy)
            ms[n].append((time.perf_counter() - t0) / a.iters * 1e3)
        print(f"round {r + 1}: " + ", ".join(f"{n} {ms[n][-1]:.0f}" for n in names), flush=True)
    record = dict(
        benchmark="cpu_block_variants", device="cpu", what="one seed-DiT block, compiled (fast.compile_model), forward + "
        "backward at (128, 49, 256), ms per pass", rounds=a.rounds, iters=a.iters, variants=VARIANTS, ms=ms,
        median_ms={n: median(v) for n, v in ms.items()},
        speedup_paired_median_vs_as_is={n: median([b / v for b, v in zip(ms["as_is"], ms[n])]) for n in names if n != "as_is"},
        max_abs_difference_vs_as_is=diffs, max_abs_as_is=dict(output=ref["y"].abs().max().item(), input_grad=ref["g"].abs().max().item()),
        fused_kernel_ms_per_call={n: kernel_profile(b, x, c, gy) for n, b in blocks.items()},
        load_average_start=load_start, load_average_end=load_average())
    torch.manual_seed(0)
    model = seed_dit()
    steps = ab_train_steps({"as_is": copy.deepcopy(model), "fp_contract": copy.deepcopy(model)}, rounds=a.step_rounds,
                           steps=2, compile=True, build_contexts={"fp_contract": fp_contract})
    record["whole_steps_fp_contract"] = dict(ms=steps, median_ms={n: median(v) for n, v in steps.items()},
                                             speedup_paired_median=median([b / f for b, f in zip(steps["as_is"], steps["fp_contract"])]))
    print(f"whole compiled steps: fp_contract {record['whole_steps_fp_contract']['speedup_paired_median']:.3f}x (paired)")
    for n in names[1:]:
        print(f"{n}: {record['median_ms'][n]:.1f} ms against {record['median_ms']['as_is']:.1f}, paired "
              f"{record['speedup_paired_median_vs_as_is'][n]:.3f}x; differences {diffs[n]}")
    write_json("cpu_block_variants", record)


if __name__ == "__main__": main()
