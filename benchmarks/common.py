"""Shared pieces of the speed benchmarks: the seed-style naive reference (manual attention, fp32, per-sample PIL
transforms through a DataLoader, a host sync per step), the matmul peak, FLOP counting, and JSON output.
Benchmarks are never run as tests."""
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import types
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "results"

from from_noise_to_images.dit import DiT, Attention, explicit_attention
from from_noise_to_images.fast import synchronize


def seed_dit(num_classes: int | None = None, patch_size: int = 4) -> DiT:
    """The seed's DiT: 12,351,760 parameters; with `num_classes`, chapter 3's class-conditional one of the same size;
    with `patch_size` 2, the same widths and depth on 196 tokens instead of 49 (12,345,604 parameters)."""
    return DiT(img_size=28, patch_size=patch_size, in_channels=1, embed_dim=256, depth=6, num_heads=8, mlp_ratio=4.0,
               num_classes=num_classes)


def _manual_forward(self, x, return_weights=False):
    q, k, v = self.split_heads(x)
    o = explicit_attention(q, k, v)               # the seed's softmax(QK^T/sqrt(d))V, written out
    return self.out(o.transpose(1, 2).flatten(2))


def manual_attention(model):
    "`model` with every `Attention` computing softmax(QK^T/sqrt(d))V step by step, as the seed did (same weights)."
    for m in model.modules():
        if isinstance(m, Attention): m.forward = types.MethodType(_manual_forward, m)
    return model


def attention_in_bf16(model):
    "`model` with `Attention.upcast` off in every block: under bf16 autocast its attention runs in bf16, as before the upcast."
    for m in model.modules():
        if isinstance(m, Attention): m.upcast = False
    return model


ATTENTION_VARIANTS = ("sdpa", "explicit", "bf16")


@contextlib.contextmanager
def attention(model, how: str):
    """Run attention as `how` says while the context is open (compiling and recording happen inside), whatever
    `dit.fused_attention_pays` would choose: "sdpa" through scaled_dot_product_attention (in fp32 under autocast),
    "explicit" the written-out formula (what the package trains with on CPUs, and compiled on GPUs, on short
    sequences), "bf16" SDPA in bf16 under autocast (`model`'s `Attention.upcast` off)."""
    from from_noise_to_images import dit
    if how not in ATTENTION_VARIANTS: raise ValueError(f"unknown attention variant {how!r}: choose from {ATTENTION_VARIANTS}")
    pays = dit.fused_attention_pays
    dit.fused_attention_pays = lambda device, num_tokens, backward=True: how != "explicit"
    if how == "bf16": attention_in_bf16(model)
    try: yield
    finally: dit.fused_attention_pays = pays


def pil_loader(batch_size: int, n: int | None = None, shuffle: bool = True, seed: int = 0):
    "The seed's data path: torchvision MNIST, PIL image -> ToTensor -> Normalize per sample, in a DataLoader."
    from torch.utils.data import DataLoader, Subset
    from from_noise_to_images.core import load_mnist
    ds = load_mnist(train=True)
    if n is not None: ds = Subset(ds, range(n))
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=True, generator=torch.Generator().manual_seed(seed))


def naive_steps(model, opt, loader, device, max_steps=None) -> list[float]:
    "The seed's loop: per-sample batches to the device, fp32, loss.item() every step (a host sync). Returns the losses."
    losses = []
    for i, (x0, _) in enumerate(loader):
        if max_steps is not None and i >= max_steps: break
        x0 = x0.to(device)
        t = torch.rand(x0.shape[0], device=device)
        x1 = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1)
        loss = F.mse_loss(model((1 - tt) * x0 + tt * x1, t), x1 - x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def matmul_peak(device="cpu", m=6272, k=256, n=1024, repeats=10, dtype=torch.float32) -> dict:
    "Best of `repeats` timings of an (m x k) @ (k x n) matmul: the model's main shape (128 images x 49 tokens, 256 -> 1024)."
    a, b = torch.randn(m, k, device=device, dtype=dtype), torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(2): a @ b
    synchronize(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter(); a @ b; synchronize(device); best = min(best, time.perf_counter() - t0)
    flop = 2 * m * k * n
    return dict(shape=f"{m}x{k} @ {k}x{n}", dtype=str(dtype).replace("torch.", ""), best_s=best, gflops=flop / best / 1e9, repeats=repeats)


def train_flops_by_kind(model, device="cpu", batch=8) -> dict:
    """FLOPs of one training step (forward + backward) per image, by torch.utils.flop_counter: `total`, `attention`
    (QK^T and the weighted sum of V) and `linear` (the rest: Linear layers, the patch convolution). Counted on a copy
    whose attention is written out, because the counter has no formula for PyTorch's CPU flash-attention kernel and
    would leave attention out on a CPU (3% of the total for the seed DiT)."""
    from torch.utils.flop_counter import FlopCounterMode
    m = manual_attention(copy.deepcopy(model)).to(device)
    x, t = torch.randn(batch, 1, 28, 28, device=device), torch.rand(batch, device=device)
    with FlopCounterMode(display=False) as fc:
        m(x, t).square().mean().backward()
    counts = {str(op): f for op, f in fc.get_flop_counts()["Global"].items()}
    attention = counts.get("aten.bmm", 0)   # the only batched matmuls in the model are attention's
    return dict(total=fc.get_total_flops() / batch, attention=attention / batch, linear=(fc.get_total_flops() - attention) / batch)


def train_flops_per_image(model, device="cpu", batch=8) -> float:
    "FLOPs of one training step (forward + backward) per image, attention included (`train_flops_by_kind`)."
    return train_flops_by_kind(model, device, batch)["total"]


def quiet_trainer(model, n_images: int, compile: bool = False):
    "A CPU `Trainer` of the benchmarks' settings (AdamW 1e-4, weight decay 0.01) on the first `n_images` of MNIST, batch 128, printing nothing."
    import contextlib, io
    from from_noise_to_images.core import mnist_loader
    from from_noise_to_images.train import Trainer
    with contextlib.redirect_stdout(io.StringIO()):
        return Trainer(model, mnist_loader(batch_size=128, subset=n_images, seed=0), lr=1e-4, weight_decay=0.01,
                       device="cpu", compile=compile)


def timed_train(trainer, epochs: int, first_steps: int = 6):
    """`trainer.train(epochs)`, its printing captured, with a timeline of where the wall time went that adds no host sync
    after the first steps: seconds from the call to the end of each of the first `first_steps` steps (each waited for:
    compiling, warm-up and recording a CUDA graph happen there) and to the end of each epoch (the Trainer's `Epoch N:`
    line, printed right after its one host sync per epoch). Returns (losses, timeline, printed text)."""
    import io
    t0, step_ends, epoch_ends = time.perf_counter(), [], []

    class Printed(io.StringIO):
        def write(self, s):
            if s.startswith("Epoch "): epoch_ends.append(time.perf_counter() - t0)
            return super().write(s)

    inner = trainer.train_step
    def step(batch):
        loss = inner(batch)
        if len(step_ends) < first_steps: synchronize(trainer.device); step_ends.append(time.perf_counter() - t0)
        return loss
    trainer.train_step, printed = step, Printed()   # an instance attribute: train() calls it instead of the method
    try:
        with contextlib.redirect_stdout(printed): losses = trainer.train(epochs, progress=False)
    finally:
        del trainer.train_step
    epoch_s = [b - a for a, b in zip([0.0] + epoch_ends, epoch_ends)]
    steady = median(epoch_s[1:]) if len(epoch_s) > 1 else None
    timeline = dict(first_step_ends_s=step_ends, epoch_ends_s=epoch_ends, epoch_s=epoch_s, steady_epoch_s=steady,
                    first_epoch_extra_s=None if steady is None else epoch_s[0] - steady)
    return losses, timeline, printed.getvalue()


def endless_batches(trainer):
    "The trainer's batches, epoch after epoch."
    while True: yield from trainer._batches


def ab_train_steps(models: dict, rounds: int, contexts: dict | None = None, steps: int = 2, setup: dict | None = None,
                   compile: bool = False, build_contexts: dict | None = None) -> dict:
    """Milliseconds per training step of each model in `models` (name -> module; give each its own copy of the same
    weights), alternating their order every round after one warm-up round (which compiles, with `compile`);
    `contexts` maps a name to a context manager factory to time that model under, `build_contexts` one to build its
    `Trainer` under, `setup` a name to a function that changes its `Trainer` first (its optimizer, say). Returns
    name -> one figure per round."""
    import contextlib
    trainers = {}
    for k, m in models.items():
        with (build_contexts or {}).get(k, contextlib.nullcontext)(): trainers[k] = quiet_trainer(m, 128 * 4, compile)
    for k, fn in (setup or {}).items(): fn(trainers[k])
    its = {k: endless_batches(t) for k, t in trainers.items()}
    ms = {k: [] for k in models}
    for r in range(rounds + 1):                                  # round 0 is the warm-up
        for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
            with (contexts or {}).get(k, contextlib.nullcontext)():
                t0 = time.perf_counter()
                for _ in range(steps): trainers[k].train_step(next(its[k]))
                if r: ms[k].append((time.perf_counter() - t0) / steps * 1e3)
    return ms


def machine() -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, threads=torch.get_num_threads(),
                cpu=platform.processor() or platform.machine(), cpus=os.cpu_count())
    if torch.cuda.is_available(): info["gpu"] = torch.cuda.get_device_name()
    return info


def median(xs): return statistics.median(xs)


def load_average() -> list[float]: return [round(v, 2) for v in os.getloadavg()]


def write_json(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = dict(record, written=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine=machine())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
