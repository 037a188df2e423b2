"""On a CPU, is PyTorch's fused attention kernel (scaled_dot_product_attention) faster than the written-out formula
(QK^T/sqrt(d), softmax, times V)? For 16 to 1024 tokens (8 heads of 32, about 6,272 tokens a batch, like the seed
DiT's 128 images x 49): forward + backward, as in training, and the forward alone in inference mode, as in sampling;
alternating, medians. Then whole training steps of the seed DiT with each, alternating. This sets
`dit.EXPLICIT_MAX_TOKENS` and `fused_attention_pays`. Writes benchmarks/results/attention_cpu.json.

    python benchmarks/attention_cpu.py [--rounds 11] [--step-rounds 12]
"""
import argparse
import contextlib
import copy
import time

import torch
import torch.nn.functional as F

from common import ab_train_steps, load_average, median, seed_dit, write_json
from from_noise_to_images import dit

HEADS, HEAD_DIM = 8, 32
TOKENS = [16, 49, 64, 128, 196, 256, 576, 1024]


def attention_ms(fn, qkv, grad=None) -> float:
    "Milliseconds for attention from the fused qkv projection, as the model computes it: forward and backward, or (no `grad`) the forward in inference mode."
    B, N = qkv.shape[:2]
    t0 = time.perf_counter()
    with torch.inference_mode(grad is None):
        q, k, v = qkv.view(B, N, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4).unbind(0)
        o = fn(q, k, v)
        if grad is not None: torch.autograd.grad(o, qkv, grad)
    return (time.perf_counter() - t0) * 1e3


@contextlib.contextmanager
def max_tokens(n: int):
    "Run with `dit.EXPLICIT_MAX_TOKENS = n` (0: always the fused kernel)."
    old, dit.EXPLICIT_MAX_TOKENS = dit.EXPLICIT_MAX_TOKENS, n
    try: yield
    finally: dit.EXPLICIT_MAX_TOKENS = old


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=11, help="alternations per sequence length (default 11)")
    p.add_argument("--step-rounds", type=int, default=12, help="alternations of whole training steps (default 12)")
    a = p.parse_args()
    torch.manual_seed(0)
    kernels = {"fused": F.scaled_dot_product_attention, "explicit": dit.explicit_attention}
    lengths = {}
    for n in TOKENS:
        B = max(1, 6272 // n)
        qkv = torch.randn(B, n, 3 * HEADS * HEAD_DIM, requires_grad=True)
        grad = torch.randn(B, HEADS, n, HEAD_DIM)
        for fn in kernels.values(): attention_ms(fn, qkv, grad); attention_ms(fn, qkv)   # warm-up
        ms = {(k, g): [] for k in kernels for g in ("train", "infer")}
        for r in range(a.rounds):
            for k in (list(kernels) if r % 2 == 0 else list(kernels)[::-1]):
                ms[k, "train"].append(attention_ms(kernels[k], qkv, grad)); ms[k, "infer"].append(attention_ms(kernels[k], qkv))
        m = {f"{k}_{g}_ms": median(v) for (k, g), v in ms.items()}
        lengths[n] = dict(batch=B, **m, explicit_over_fused_train=m["explicit_train_ms"] / m["fused_train_ms"],
                          explicit_over_fused_infer=m["explicit_infer_ms"] / m["fused_infer_ms"])
        print(f"{n:5d} tokens x {B:4d}: forward+backward fused {m['fused_train_ms']:6.1f} ms, explicit {m['explicit_train_ms']:6.1f} ms "
              f"({lengths[n]['explicit_over_fused_train']:.2f}); inference fused {m['fused_infer_ms']:6.1f} ms, explicit "
              f"{m['explicit_infer_ms']:6.1f} ms ({lengths[n]['explicit_over_fused_infer']:.2f})", flush=True)

    # whole training steps of the seed DiT (49 tokens), fresh copies of the same weights, alternating
    base = seed_dit()
    step_ms = ab_train_steps({k: copy.deepcopy(base) for k in kernels}, a.step_rounds,
                             contexts={"fused": lambda: max_tokens(0), "explicit": lambda: max_tokens(dit.EXPLICIT_MAX_TOKENS)})
    record = dict(
        benchmark="attention_cpu", device="cpu", heads=HEADS, head_dim=HEAD_DIM, rounds=a.rounds, sequence_lengths=lengths,
        cpu_explicit_max_tokens=dit.EXPLICIT_MAX_TOKENS,
        training_step_seed_dit=dict(what="Trainer.train_step, batch 128, 49 tokens; the fused kernel vs the formula",
                                    ms=step_ms, median_ms={k: median(v) for k, v in step_ms.items()},
                                    explicit_speedup_paired_median=median([f / e for f, e in zip(step_ms["fused"], step_ms["explicit"])])),
        load_average_end=load_average())
    s = record["training_step_seed_dit"]
    print(f"seed DiT training step: fused {s['median_ms']['fused']:.0f} ms, explicit {s['median_ms']['explicit']:.0f} ms "
          f"(explicit {s['explicit_speedup_paired_median']:.2f}x, paired median); the model trains with the formula up to "
          f"{dit.EXPLICIT_MAX_TOKENS} tokens")
    write_json("attention_cpu", record)


if __name__ == "__main__": main()
