"""Does bf16 collapse? Every 30-epoch run of the seed recipe with bf16 autocast and attention in bf16 (five, on H200s,
2026-11-27) went from a loss of 0.20 back to 1.0-1.38 around epoch 18-21; no fp32 run did. This probe found why:
- not the residual stream: in the first runs it was itself bf16 (the position embedding was cast to the tokens'
  dtype); the DiT now adds its fp32 table as DiT's own code does, so the stream stays fp32 under autocast, and that
  run (variant `bf16_attention_bf16`) collapsed at epoch 18 all the same;
- attention in bf16: block 0's largest attention logit went 5.1 (epoch 10; 2.6 in fp32), 18, 32, 98 (epochs 14-16),
  5,088 (epoch 17), then 860,000 (epoch 18) as the loss rose, the failure Qiu & Yao (2025, "Why low-precision
  transformer training fails") trace to biased bf16 rounding inside attention. The DiT now runs attention itself in
  fp32 under autocast (`Attention.upcast`; the projections stay bf16): variant `bf16`, which ended at 0.1907 against
  fp32's 0.1899, block 0's largest logit never above 3.9 (3.8 in fp32; benchmarks/results/gpu_bf16_probe.json).

This probe trains the recipe with the fast path (`Trainer(compile=True)`: the step graph, blocks compiled) once per
variant, and after every epoch runs one fixed batch through the model to record what might grow:
- the residual stream: its RMS, largest value and dtype at each block's input;
- the attention logits q.k / sqrt(d): their largest magnitude in each block, computed in fp32 from the block's input.

Variants: `bf16` (the package as it is), `bf16_attention_bf16` (attention in bf16, `Attention.upcast = False`),
`bf16_residual_bf16` (that and the stream cast to bf16 after the position embedding, as in the first runs), `fp32`
(no autocast: how far the logits grow without bf16).
`--num-classes 10` trains chapter 3's class-conditional recipe instead (the same DiT with label embeddings and label
dropout; the probe batch carries its true labels): bf16 should hold there too before it becomes a default.
Writes gpu_bf16_probe.json (with `_classes10` and `_seedN` in the name for --num-classes 10 and --seed N) to --out,
rewritten after every epoch. Needs CUDA;
`--smoke` checks the script on a CPU: one epoch of 128 images per variant, uncompiled (bf16 has no CPU hardware here:
it is 30x slower than fp32).

    python benchmarks/gpu_bf16_probe.py [--epochs 30] [--variants bf16,fp32] [--seed 0] [--num-classes 10] [--out DIR] [--smoke]
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, attention_in_bf16, load_average, machine, seed_dit
from from_noise_to_images.core import mnist_loader, seed_everything
from from_noise_to_images.fast import autocast, synchronize
from from_noise_to_images.train import Trainer

VARIANTS = ("bf16", "bf16_attention_bf16", "bf16_residual_bf16", "fp32")   # the package first: a lease may end early


@torch.no_grad()
def probe(model, x0, t, x1, device, amp: bool, y=None) -> dict:
    "Per block: residual stream RMS and max |value| at its input, max |attention logit|; one fixed batch, as trained."
    stats = []
    def hook(block, inputs):
        h = inputs[0]
        with torch.autocast(h.device.type, enabled=False):   # the logits in fp32, from fp32 weights
            q, k, _ = block.attn.split_heads(block.norm1(h.float(), inputs[1].float()))
            logits = q @ k.transpose(-2, -1) / block.attn.head_dim ** 0.5
        stats.append(dict(dtype=str(h.dtype).removeprefix("torch."), rms=h.float().pow(2).mean().sqrt().item(),
                          absmax=h.float().abs().max().item(), logit_absmax=logits.abs().max().item()))
    handles = [b.register_forward_pre_hook(hook) for b in model.blocks]
    was_training = model.training; model.eval()
    try:
        with autocast(device, amp):
            xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
            v = (model(xt, t) if y is None else model(xt, t, y=y)).float()   # eval mode: no label dropout
        loss = (v - (x1 - x0)).pow(2).mean().item()
    finally:
        for h in handles: h.remove()
        model.train(was_training)
    return dict(probe_loss=loss, blocks=stats)


def probe_file_name(seed: int = 0, num_classes: int | None = None) -> str:
    "gpu_bf16_probe.json for the seed recipe with seed 0; `_classesN` and `_seedN` name the others."
    return "gpu_bf16_probe" + (f"_classes{num_classes}" if num_classes else "") + (f"_seed{seed}" if seed else "") + ".json"


def run_variant(name, a, device, record, out) -> None:
    seed_everything(a.seed)
    loader = mnist_loader(batch_size=a.batch_size, subset=a.subset, seed=a.seed)
    model = seed_dit(a.num_classes)
    if name in ("bf16_attention_bf16", "bf16_residual_bf16"): attention_in_bf16(model)
    if name == "bf16_residual_bf16":   # the stream starts bf16; bf16 + bf16 branch -> bf16 at every residual add
        model.pos_embed.register_forward_hook(lambda m, i, o: o.to(torch.bfloat16))   # (it always runs under autocast)
    amp = name != "fp32"
    g = torch.Generator().manual_seed(1)
    x0 = loader.dataset.tensors[0][:a.probe_batch].to(device)
    y = loader.dataset.tensors[1][:a.probe_batch].to(device) if a.num_classes else None
    t, x1 = torch.rand(len(x0), generator=g).to(device), torch.randn(x0.shape, generator=g).to(device)
    t0 = time.perf_counter()
    trainer = Trainer(model, loader, lr=1e-4, weight_decay=0.01, device=device, compile=not a.smoke, amp=amp)
    res = record["variants"][name] = dict(compile_mode=trainer.compile_mode, amp=amp, epochs=[])
    for epoch in range(a.epochs):
        with contextlib.redirect_stdout(io.StringIO()): loss = trainer.train(1, progress=False)[0]
        synchronize(device)
        res["epochs"].append(dict(epoch=epoch + 1, loss=loss, wall_s=time.perf_counter() - t0, **probe(model, x0, t, x1, device, amp, y)))
        last = res["epochs"][-1]["blocks"][-1]
        print(f"{name} epoch {epoch + 1}: loss {loss:.4f}, last block: residual rms {last['rms']:.1f} "
              f"max {last['absmax']:.1f} ({last['dtype']}), logit max {last['logit_absmax']:.1f}", flush=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
    res.update(wall_s=time.perf_counter() - t0, final_loss=res["epochs"][-1]["loss"],
               collapsed=any(e["loss"] > 0.5 for e in res["epochs"][5:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0, help="seeds the model's initialisation, the noise and the batch order")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--num-classes", type=int, default=None, help="10: chapter 3's class-conditional recipe")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--probe-batch", type=int, default=256, help="images in the fixed batch probed after each epoch")
    p.add_argument("--smoke", action="store_true", help="one epoch of 128 images per variant on a CPU: tests this script")
    a = p.parse_args()
    variants = a.variants.split(",")
    if unknown := set(variants) - set(VARIANTS): sys.exit(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
    if a.smoke: device, a.epochs, a.subset, a.batch_size, a.probe_batch = torch.device("cpu"), 1, 128, 64, 32
    elif not torch.cuda.is_available(): sys.exit("gpu_bf16_probe.py needs a CUDA GPU; --smoke checks the script on a CPU")
    else: device = torch.device("cuda")
    record = dict(benchmark="gpu_bf16_probe", device=str(device), seed=a.seed, num_classes=a.num_classes, epochs=a.epochs,
                  batch_size=a.batch_size, subset=a.subset,
                  machine=machine(), load_average_start=load_average(), variants={})
    out = Path(a.out) / probe_file_name(a.seed, a.num_classes)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in variants:
        try: run_variant(name, a, device, record, out)
        except Exception as e:   # one failing variant must not cost the other its (GPU) time
            record["variants"].setdefault(name, {})["error"] = f"{type(e).__name__}: {e}"[:2000]; print(f"{name}: FAILED {e!r}")
        out.write_text(json.dumps(record, indent=1) + "\n")
    record["load_average_end"] = load_average()
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__": main()
