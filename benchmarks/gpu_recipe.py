"""The seed's full recipe on one GPU, end to end: the seed DiT, 30 epochs of all 60,000 MNIST images, batch 128,
AdamW (lr 1e-4, weight decay 0.01), naive loop vs the Trainer's fast path, plus the GPU checks that go with it.

Phases, in order, each written to the JSON as soon as it ends (a phase that fails records its error, and the rest go on):
0. cuda_start: what any CUDA process pays once before its first model (the context; loading cuBLAS, cuDNN and the
   kernels of a DiT step), on a tiny DiT, so that neither the fast path nor the naive loop, whichever runs first,
   carries it. Each fast phase's goals are checked with and without it (`wall_le_60s_with_cuda_start`).
1. fast_graph: `Trainer(..., compile=True)`, as a practitioner calls it on one GPU: device-resident batches, fused
   capturable AdamW, TF32, the DiT's blocks compiled one by one with attention written out (what the package trains
   with on short sequences once compiled), the whole step recorded as one CUDA graph (`--amp` adds bf16 autocast, the
   Trainer's default on such GPUs). Wall time includes building, compiling, warm-up and recording; its `timeline` says
   where it went (building the trainer, the first six steps one by one, each epoch). On the first H100 the first
   epoch's extra time was its first step's compile, once cuda_start had paid CUDA's own start (7.0 s).
   With --sdpa-too, then fast_graph_sdpa: the same with attention through scaled_dot_product_attention, as the
   package trained on GPUs until 2026-11-27 (61.7 s on that H100 from a nearly cold compile cache, against 49.7 s for
   the written-out formula run second, its cache warmed by the first).
2. fast: `Trainer(..., compile=True, cuda_graph=False)`: torch.compile with its own CUDA graphs ("reduce-overhead").
3. naive: the seed's loop (per-sample PIL transforms in a DataLoader with num_workers=0, manual attention, fp32,
   loss.item() every step). It stops after the epoch that passes --naive-max-s; its wall time is then scaled to all
   epochs and the losses are compared at the last epoch both ran.
4. host syncs: 20 training steps of the fast path (unconditional, class-conditional, and the step graph after it is
   recorded) under torch.cuda.set_sync_debug_mode("error"): any op that waits on the GPU raises.
5. sampling: `sample` (inference mode, SDPA; bf16 with --amp) vs the seed's sampler (no_grad, manual attention, fp32), batch 256,
   50 Euler steps, alternating rounds, medians; on CUDA also `sample` of the model compiled as `fnti sample --compile`
   compiles it (default mode) and with CUDA graphs.
6. if the run so far left time for them (--extra-if-s): the step graph without compile (`cuda_graph=True`), then the
   Trainer's default (no compile, no graph).
Each fast phase is compared with the naive loop (speed-up, loss at the last epoch both ran, the goals below).

Goal (issue 7): the recipe <= 60 s on one H100, final loss within 0.01 of the naive loop's, >= 10x faster than naive.
Writes gpu_recipe.json to --out (default benchmarks/results). Needs CUDA; `--smoke` runs phases 1-5 on a CPU with a
few hundred images, to check the script itself before spending GPU time on it.

On the H200s lent on 2026-11-27 a naive epoch took 18 to 20 s, so 30 naive epochs need about 10 minutes: give the
run --naive-max-s to fit the time you have (gpu_session.sh gives it 60 s: 4 epochs, scaled to 30 by their median).

    python benchmarks/gpu_recipe.py [--epochs 30] [--naive-max-s 240] [--amp] [--out DIR] [--smoke]

The phases' wall times include everything a practitioner's run includes, so each is one run, not a median: the
phases are minutes long, and the JSON records the machine's load average before and after.
"""
import argparse
import contextlib
import copy
import io
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from common import (RESULTS, attention, load_average, machine, manual_attention, median, naive_steps, pil_loader, seed_dit,
                    timed_train)
from from_noise_to_images.core import mnist_loader, seed_everything
from from_noise_to_images.dit import DiT
from from_noise_to_images.fast import autocast, compile_model, synchronize
from from_noise_to_images.sampling import sample
from from_noise_to_images.train import Trainer
from sample_throughput import plain_sample

SEED_FINAL_LOSS = 0.1951   # the seed's printed 30-epoch loss (fp32, its own run)


class Recipe:
    "Runs the phases and rewrites the JSON record after each."
    def __init__(self, a, device):
        self.a, self.device, self.t_start = a, device, time.perf_counter()
        self.path = Path(a.out) / "gpu_recipe.json"
        self.record = dict(benchmark="gpu_recipe", device=str(device), epochs=a.epochs, batch_size=a.batch_size,
                           subset=a.subset, smoke=a.smoke, machine=machine(), load_average_start=load_average(),
                           seed_final_loss=SEED_FINAL_LOSS)
        if device.type == "cuda":
            self.record["gpu"] = dict(name=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                                      torch=torch.__version__, cuda=torch.version.cuda)

    def elapsed(self) -> float: return time.perf_counter() - self.t_start

    def phase(self, name, fn):
        print(f"== {name} ({self.elapsed():.0f} s into the run)", flush=True)
        t0 = time.perf_counter()
        try: result = fn()
        except Exception as e:
            result = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-3000:])
            print(result["traceback"], flush=True)
        self.record[name] = dict(result, phase_s=time.perf_counter() - t0)
        self.write()

    def write(self):
        self.record.update(self.summary(), load_average_end=load_average(), total_s=self.elapsed())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.record, indent=1) + "\n")

    def summary(self) -> dict:
        "Each fast phase against the naive loop: speed-up, the loss difference at the last epoch both ran, the goals."
        r, out = self.record, {"vs_naive": {}}
        naive = r.get("naive", {})
        for name, fast in r.items():
            if not (name.startswith("fast") and isinstance(fast, dict) and "wall_s" in fast): continue
            res = {}
            if "wall_s_for_all_epochs" in naive:
                k = naive["epochs_run"]
                res = dict(speedup=naive["wall_s_for_all_epochs"] / fast["wall_s"], loss_compared_at_epoch=k,
                           final_loss_difference=fast["epoch_losses"][k - 1] - naive["epoch_losses"][k - 1])
            start = r.get("cuda_start", {}).get("seconds")
            res["goals"] = dict(wall_le_60s=fast["wall_s"] <= 60, speedup_ge_10x=res.get("speedup", 0) >= 10,
                                wall_le_60s_with_cuda_start=None if start is None else fast["wall_s"] + start <= 60,
                                loss_within_0_01=abs(res.get("final_loss_difference", float("inf"))) <= 0.01,
                                loss_within_0_01_of_seed=abs(fast["final_loss"] - SEED_FINAL_LOSS) <= 0.01)
            out["vs_naive"][name] = res
        return out

    def loader(self): return mnist_loader(batch_size=self.a.batch_size, subset=self.a.subset, seed=0)

    def fast(self, compile=True, amp=False, cuda_graph=None) -> dict:
        "The Trainer end to end, from building the model to the last epoch's loss on the host (`cuda_graph` as the Trainer's)."
        a = self.a
        torch._dynamo.reset()   # each phase compiles afresh, as its own process would (Inductor's disk cache stays)
        synchronize(self.device)
        if self.device.type == "cuda": torch.cuda.reset_peak_memory_stats()
        seed_everything(0)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            trainer = Trainer(seed_dit(), self.loader(), lr=1e-4, weight_decay=0.01, device=self.device, compile=compile,
                              amp=amp, cuda_graph=cuda_graph)
        build_s = time.perf_counter() - t0
        losses, timeline, printed = timed_train(trainer, a.epochs)   # where the time went: the first steps, each epoch
        synchronize(self.device)
        wall = time.perf_counter() - t0
        images = a.epochs * len(trainer.dataloader) * a.batch_size
        res = dict(wall_s=wall, final_loss=losses[-1], epoch_losses=losses, images_per_s=images / wall,
                   amp=trainer.amp, compile=compile, compile_mode=trainer.compile_mode, cuda_graph=trainer._graph is not None,
                   step_graph_recorded=trainer._graph is not None and trainer._graph.graph is not None,
                   compile_report=[l for l in printed.splitlines() if l.startswith("torch.compile")],
                   timeline=dict(build_s=build_s, **timeline))
        if self.device.type == "cuda": res["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        steady = f", then {timeline['steady_epoch_s']:.2f} s an epoch" if timeline["steady_epoch_s"] is not None else ""
        print(f"fast (compile={trainer.compile_mode}, amp={amp}, cuda_graph={trainer._graph is not None}): {wall:.1f} s "
              f"(building {build_s:.1f} s, first epoch {timeline['epoch_s'][0]:.1f} s{steady}), final loss {losses[-1]:.4f}",
              flush=True)
        return res

    def cuda_start(self) -> dict:
        "One eager training step of a tiny DiT (fused AdamW; bf16 with --amp): loads what every later phase would load first."
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=1, num_heads=2).to(self.device)
        opt = torch.optim.AdamW(model.parameters(), fused=True)
        x, t = torch.randn(4, 1, 8, 8, device=self.device), torch.rand(4, device=self.device)
        with autocast(self.device, self.a.amp): loss = model(x, t).float().square().mean()
        loss.backward(); opt.step(); synchronize(self.device)
        seconds = time.perf_counter() - t0
        print(f"cuda start: {seconds:.1f} s", flush=True)
        return dict(seconds=seconds)

    def naive(self) -> dict:
        a = self.a
        seed_everything(0)
        t0 = time.perf_counter()
        model = manual_attention(seed_dit()).to(self.device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        loader = pil_loader(a.batch_size, n=a.subset, seed=0)
        losses, epoch_s = [], []
        for epoch in range(a.epochs):
            e0 = time.perf_counter()
            step_losses = naive_steps(model, opt, loader, self.device)
            losses.append(sum(step_losses) / len(step_losses)); epoch_s.append(time.perf_counter() - e0)
            print(f"naive epoch {epoch + 1}: {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            if time.perf_counter() - t0 > a.naive_max_s: break
        wall = time.perf_counter() - t0
        k = len(losses)
        return dict(wall_s=wall, epochs_run=k, epoch_s=epoch_s, scaled=k != a.epochs,
                    wall_s_for_all_epochs=wall if k == a.epochs else (wall - sum(epoch_s)) + median(epoch_s) * a.epochs,
                    final_loss=losses[-1], epoch_losses=losses)

    def sync_check(self) -> dict:
        "Training steps under sync debug mode 'error': the fast path must never wait on the GPU inside its loop."
        if self.device.type != "cuda": return dict(skipped="needs CUDA")
        res = {}
        for name, model, graph in (("unconditional", seed_dit(), False), ("class_conditional", DiT(num_classes=10), False),
                                   ("unconditional_cuda_graph", seed_dit(), True))[: 2 if self.a.skip_graph else 3]:
            seed_everything(0)
            trainer = Trainer(model, self.loader(), lr=1e-4, weight_decay=0.01, device=self.device, cuda_graph=graph)
            batches = iter(trainer._batches)
            losses = [trainer.train_step(next(batches)) for _ in range(5 if graph else 1)]   # lazy init, recording
            synchronize(self.device)
            steps = 0
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(20):
                    losses.append(trainer.train_step(next(batches))); steps += 1
                res[name] = dict(steps=steps, host_syncs=0)
            except RuntimeError as e:
                res[name] = dict(steps=steps, error=str(e)[:500], where=traceback.format_exc()[-1500:])
            finally:
                torch.cuda.set_sync_debug_mode("default")
            res[name]["loss_first_last"] = [losses[0].item(), losses[-1].item()]
            print(f"sync check {name}: {res[name].get('error', 'no host sync')}", flush=True)
        return res

    def sampling(self) -> dict:
        """`sample` against the seed's sampler, and (CUDA) `sample` through the model compiled as `fnti sample --compile`
        compiles it (blocks one by one, default mode) and with torch.compile's own CUDA graphs ("reduce-overhead": one
        replay per Euler step instead of a forward pass's launches), which the launch-bound fast sampler (1,520 img/s
        against 1,558 in bf16) may need on GPUs; a failure there is recorded."""
        a, device = self.a, self.device
        torch.manual_seed(0)
        model = seed_dit().to(device).eval()
        plain_model = manual_attention(copy.deepcopy(model))
        amp = a.amp
        def sampler(net):
            def run():
                with autocast(device, amp): return sample(net, a.sample_batch, (1, 28, 28), a.sample_steps, device, seed=0)
            return run
        runs = {"plain": lambda: plain_sample(plain_model, a.sample_batch, a.sample_steps, device), "fast": sampler(model)}
        extra = {}
        if device.type == "cuda" or a.smoke:   # (--smoke: checks this code on a CPU)
            try:   # what `fnti sample --compile` runs: the blocks compiled one by one, torch.compile's default mode
                compiled = sampler(compile_model(model))
                synchronize(device); t0 = time.perf_counter(); compiled(); synchronize(device)
                extra["compiled_first_call_s"] = time.perf_counter() - t0   # compiling
                runs["fast_compiled"] = compiled
            except Exception as e:
                extra["compiled_error"] = f"{type(e).__name__}: {e}"[:1000]
        if device.type == "cuda":
            try:
                graphed = sampler(compile_model(model, "reduce-overhead"))
                synchronize(device); t0 = time.perf_counter(); graphed(); synchronize(device)
                extra["cuda_graphs_first_call_s"] = time.perf_counter() - t0   # compiling and recording
                runs["fast_cuda_graphs"] = graphed
            except Exception as e:
                extra["cuda_graphs_error"] = f"{type(e).__name__}: {e}"[:1000]
        runs["fast"](); plain_sample(plain_model, a.sample_batch, 2, device)   # warm-up
        res = {k: [] for k in runs}
        for r in range(a.rounds):
            for name, fn in (runs.items() if r % 2 == 0 else reversed(runs.items())):
                synchronize(device); t0 = time.perf_counter(); fn(); synchronize(device)
                res[name].append(a.sample_batch / (time.perf_counter() - t0))
        med = {k: median(v) for k, v in res.items()}
        print("sampling: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in med.items()), flush=True)
        return dict(batch=a.sample_batch, euler_steps=a.sample_steps, images_per_s=res, median_images_per_s=med,
                    speedup_median=med["fast"] / med["plain"], fast="sample(): inference_mode, SDPA" + (", bf16" if amp else ", fp32"),
                    plain="no_grad, manual attention, fp32", **extra,
                    **{f"{k[5:]}_speedup_median": med[k] / med["plain"] for k in ("fast_compiled", "fast_cuda_graphs") if k in med})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--subset", type=int, default=None, help="train on the first N images (default: all 60,000)")
    p.add_argument("--naive-max-s", type=float, default=240.0, help="stop the naive loop after the epoch that passes this")
    p.add_argument("--sample-batch", type=int, default=256)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--amp", action="store_true", help="bf16 autocast in the fast phases and sampling (the Trainer's default on GPUs with bf16 tensor cores)")
    p.add_argument("--extra-if-s", type=float, default=420.0,
                   help="run phase 6 only if the run so far took less than this")
    p.add_argument("--skip-graph", action="store_true", help="leave out the step graph (if its tests failed on this GPU)")
    p.add_argument("--skip-reduce-overhead", action="store_true",
                   help="leave out compile with its own CUDA graphs (measured before), to leave a lease's minutes for other checks")
    p.add_argument("--sdpa-too", action="store_true",
                   help="after fast_graph, the same with attention through SDPA instead of written out (fast_graph_sdpa)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--smoke", action="store_true", help="phases 1-5 on a CPU with 384 images: tests this script")
    a = p.parse_args()
    if a.smoke:
        a.epochs, a.subset, a.batch_size, a.naive_max_s = 2, 384, 64, 0.0
        a.sample_batch, a.sample_steps, a.rounds, a.extra_if_s = 8, 2, 2, 0.0
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit("gpu_recipe.py needs a CUDA GPU (torch.cuda.is_available() is False): it times the full 30-epoch recipe, "
                 "hours of work on a CPU. For CPU figures run benchmarks/train_throughput.py; --smoke checks this script.")
    else:
        device = torch.device("cuda")
    r = Recipe(a, device)
    cuda = device.type == "cuda"   # the step graph needs CUDA: under --smoke its phases run without it
    r.phase("cuda_start", r.cuda_start)
    if not a.skip_graph: r.phase("fast_graph", lambda: r.fast(compile=True, amp=a.amp))   # compile=True's default: the graph
    if a.sdpa_too and not a.skip_graph:
        with attention(None, "sdpa"): r.phase("fast_graph_sdpa", lambda: r.fast(compile=True, amp=a.amp))
    if not a.skip_reduce_overhead: r.phase("fast", lambda: r.fast(compile=True, amp=a.amp, cuda_graph=False))
    r.phase("naive", r.naive)
    r.phase("sync_check", r.sync_check)
    r.phase("sampling", r.sampling)
    if r.elapsed() < a.extra_if_s and not a.skip_graph:
        r.phase("fast_graph_no_compile", lambda: r.fast(compile=False, amp=a.amp, cuda_graph=cuda))
    if r.elapsed() < a.extra_if_s: r.phase("fast_no_compile", lambda: r.fast(compile=False, amp=a.amp))
    r.write()
    print(json.dumps({k: v for k, v in r.record.items() if k in ("vs_naive", "total_s")}, indent=1))
    print(f"wrote {r.path}")


if __name__ == "__main__": main()
