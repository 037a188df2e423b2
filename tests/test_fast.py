"The fast path: same batches and losses as the plain path, DeviceBatches, DDP on 2 CPU processes (gloo), rank 0 alone writes."
import io
import math
import warnings
import json
import os
import socket
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from conftest import shared_data, subprocess_env
from from_noise_to_images.dit import DiT
from from_noise_to_images.models import SimpleUNet
from from_noise_to_images.fast import DeviceBatches, CompileTimer, all_mean, autocast, is_distributed, shard
from from_noise_to_images.sampling import sample
from from_noise_to_images.train import Trainer

STEPS, BATCH = 6, 16


def tiny_dit(**kw): return DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4, **kw)


def data(n=96):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g)


def loader(x, y, batch=BATCH, seed=2):
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


def test_fast_path_same_losses_as_plain_path():
    x, y = data()
    runs = {}
    for fast in (False, True):
        torch.manual_seed(0)
        t = Trainer(tiny_dit(), loader(x, y), lr=1e-3, device="cpu", seed=0, fast=fast, ema_decay=0.9)
        assert isinstance(t._batches, DeviceBatches) == fast
        with redirect_stdout(io.StringIO()): t.train(2, progress=False)
        runs[fast] = (t.step_losses, t.model.state_dict())
    torch.testing.assert_close(torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), rtol=1e-6, atol=1e-7)
    for k, v in runs[False][1].items():
        fast_v = runs[True][1][k]
        if k.endswith("attn.qkv.bias"):
            # The key third of this bias gets only rounding noise as its gradient (softmax ignores a shift shared by all
            # of a query's scores), and AdamW, dividing by the gradient's own size, turns the different rounding of its
            # fused kernel (fast path) and its loop over tensors (plain path) into different steps. Compare the rest.
            d = v.numel() // 3
            fast_v, v = torch.cat([fast_v[:d], fast_v[2 * d:]]), torch.cat([v[:d], v[2 * d:]])
        torch.testing.assert_close(fast_v, v, rtol=1e-5, atol=1e-6)


def test_device_batches_plain_and_with_a_trainer():
    x, y = data(50)[0], torch.arange(50)
    db = DeviceBatches(x, y, batch_size=16, seed=0)
    seen = torch.cat([b for _, b in db])
    assert len(db) == 3 and len(seen) == 48 and len(set(seen.tolist())) == 48
    db.generator.manual_seed(0); first = [b.clone() for _, b in db]; db.generator.manual_seed(0)
    assert all(torch.equal(a, b) for a, (_, b) in zip(first, db))           # the generator alone decides the order
    assert [len(b) for b in DeviceBatches(x, batch_size=16, drop_last=False)] == [16, 16, 16, 2]
    assert [b.tolist() for _, b in DeviceBatches(x, y, batch_size=25, shuffle=False)] == [list(range(25)), list(range(25, 50))]
    t = Trainer(tiny_dit(), DeviceBatches(x, y, batch_size=16, seed=0), lr=1e-3, device="cpu", seed=0)
    with redirect_stdout(io.StringIO()): losses = t.train(1, progress=False)
    assert t.step == 3 and all(map(torch.isfinite, torch.tensor(losses)))
    with pytest.raises(ValueError, match="batch_size"): DeviceBatches(x, batch_size=0)
    with pytest.raises(ValueError, match="labels"): DeviceBatches(x, y[:3])
    assert DeviceBatches.from_loader(DataLoader(TensorDataset(x, y), batch_size=4, sampler=range(10))) is None


def test_resume_with_device_batches_matches_uninterrupted(tmp_path):
    x, y = data()
    def run(folder, epochs, resume=False):
        t = Trainer(tiny_dit(), DeviceBatches(x, y, batch_size=16, seed=5), lr=1e-3, device="cpu", seed=0,
                    checkpoint_dir=folder, checkpoint_every=4, keep_last=20)
        if resume: t.resume(tmp_path / "a" / "step_00000004.pt")
        with redirect_stdout(io.StringIO()): t.train(epochs, progress=False)
        return t
    ref, again = run(tmp_path / "a", 2), run(tmp_path / "b", 2, resume=True)
    assert again.step_losses == ref.step_losses
    for k, v in ref.model.state_dict().items(): assert torch.equal(again.model.state_dict()[k], v)


def test_helpers_on_cpu():
    assert not is_distributed() and shard(6) == slice(0, 6)
    t = torch.ones(3); assert all_mean(t) is t
    a = torch.ones(2, 2)
    with autocast("cpu", enabled=False): assert (a @ a).dtype == torch.float32
    with autocast("cpu"): assert (a @ a).dtype == torch.bfloat16
    timer = CompileTimer(); timer.record(5.0); assert timer.compile_s is None; timer.record(1.0); assert timer.compile_s == 4.0
    m = tiny_dit()
    a = sample(m, 4, (1, 8, 8), 3, "cpu", seed=0)
    assert a.is_inference() and a.shape == (4, 1, 8, 8)


def test_bf16_autocast_trains_like_fp32_with_fp32_weights():
    "amp=True: the matmuls run in bf16 (the losses differ from fp32's), while the weights and AdamW's state stay fp32 and it trains as well."
    x, _ = data(64)
    runs = {}
    for amp in (False, True):
        torch.manual_seed(0)
        t = Trainer(tiny_dit(), DeviceBatches(x, batch_size=16, seed=5), lr=3e-3, device="cpu", seed=0, amp=amp)
        with redirect_stdout(io.StringIO()): t.train(10, progress=False)
        runs[amp] = t
    bf16, fp32 = runs[True], runs[False]
    assert bf16.step_losses[0] != fp32.step_losses[0]                                   # bf16 really ran
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert all(v.dtype == torch.float32 for st in bf16.optimizer.state.values() for v in st.values() if v.is_floating_point())
    assert bf16.losses[-1] < 0.8 * bf16.losses[0]                                        # the loss falls
    assert abs(bf16.losses[-1] - fp32.losses[-1]) < 0.05 * fp32.losses[-1]               # as far as in fp32


def test_amp_on_hardware_without_bf16_warns(monkeypatch):
    "amp=True where bf16 would be emulated (a T4, an AVX2 CPU) trains, but says it is slower there and what to do."
    import from_noise_to_images.train as train_module
    x, _ = data(32)
    for reason in ("this CPU has neither AVX512-BF16 nor AMX instructions", None):
        monkeypatch.setattr(train_module, "bf16_slow_reason", lambda device, r=reason: r)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Trainer(tiny_dit(), DeviceBatches(x, batch_size=16), device="cpu", amp=True)
            Trainer(tiny_dit(), DeviceBatches(x, batch_size=16), device="cpu")          # amp off: nothing to say
        said = [str(w.message) for w in caught if "amp=True" in str(w.message)]
        if reason is None: assert said == []
        else: assert said == [f"amp=True: {reason}, so bf16 runs emulated, slower than fp32: leave amp off on this device"]


@pytest.mark.parametrize("num_classes", [None, 10])
def test_training_steps_never_read_values_back_from_the_device(num_classes):
    """Tensors on the meta device have shapes but no values, so any read back to the host (`.item()`, `bool()`, a
    data-dependent check) raises there: a stand-in for a GPU, where each such read would stall every step."""
    assert pytest.raises(RuntimeError, lambda: bool(torch.ones(1, device="meta") > 0))
    x, y = data(64)
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4, num_classes=num_classes)
    trainer = Trainer(model, loader(x, y), device="meta")
    batches = iter(trainer._batches)
    losses = [trainer.train_step(next(batches)) for _ in range(3)]
    assert all(l.device.type == "meta" and l.shape == () for l in losses)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sampling_reads_nothing_back_from_the_device(solver):
    "`sample`, plain and guided (one doubled batch per step), on the meta device: no step waits on the device."
    for num_classes, kw in ((None, {}), (10, dict(class_labels=torch.arange(4), cfg_scale=3.0))):
        model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4, num_classes=num_classes)
        out = sample(model.to("meta"), 4, (1, 8, 8), 3, "meta", solver=solver, **kw)
        assert out.device.type == "meta" and out.shape == (4, 1, 8, 8)


def test_trainer_speed_options_default_and_validation():
    x, y = data(16)
    t = Trainer(tiny_dit(), loader(x, y), device="cpu")
    assert t.amp is False and t.compile_mode is None and t._model is t.model and t._graph is None   # all opt-in
    t = Trainer(tiny_dit(), loader(x, y), device="cpu", compile=True)
    assert t.compile_mode == "default" and t._graph is None   # CUDA graphs: GPUs only
    assert Trainer(tiny_dit(), loader(x, y), device="cpu", compile="max-autotune-no-cudagraphs").compile_mode == "max-autotune-no-cudagraphs"
    with pytest.raises(ValueError, match="torch.compile mode"):
        Trainer(tiny_dit(), loader(x, y), device="cpu", compile="fastest")


def test_compile_option_gives_the_same_losses():
    "Inductor really compiles (about 25 s on 2 cores, one DiT block's code, forward and backward), and trains the same."
    x, y = data(64)
    out = {}
    for compile in (False, True):
        torch.manual_seed(0)   # the same initial weights for both
        t = Trainer(tiny_dit(), loader(x, y), lr=1e-3, device="cpu", seed=0, compile=compile)
        buf = io.StringIO()
        with redirect_stdout(buf): t.train(1, progress=False)
        out[compile] = t.step_losses
        if compile:
            assert "torch.compile (default):" in buf.getvalue() and "s to compile" in buf.getvalue()
            # the blocks are compiled, in a copy: the model and its checkpoints stay as they were
            assert [type(b).__name__ for b in t._model.blocks] == ["OptimizedModule"] * 2
            assert [type(b).__name__ for b in t.model.blocks] == ["DiTBlock"] * 2
            assert list(t.state_dict()["model_state_dict"]) == list(tiny_dit().state_dict())
    torch.testing.assert_close(torch.tensor(out[True]), torch.tensor(out[False]), rtol=1e-4, atol=1e-5)



@pytest.mark.skipif("cpp.use_decompose_tanh" not in torch._inductor.list_options(), reason="the option came with PyTorch 2.8")
def test_compiled_gelu_takes_tanh_through_exp_on_a_cpu():
    "compile_model has Inductor's C++ kernels compute tanh through exp (half the GELU's time), with eager's numbers."
    from torch._inductor.utils import run_and_get_code
    from from_noise_to_images.fast import compile_model
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(approximate="tanh"), torch.nn.Linear(64, 16))
    x = torch.randn(8, 16, requires_grad=True)
    for options, through_exp in (({}, True), ({"cpp.use_decompose_tanh": False}, False)):   # the package's; Inductor's
        torch._dynamo.reset()
        out, code = run_and_get_code(compile_model(mlp, options=options), x)
        code = "\n".join(code)
        assert (".tanh()" not in code and ".exp()" in code) == through_exp   # the vectorised loop's tanh
        torch.testing.assert_close(out, mlp(x), rtol=0, atol=1e-6)
        (g_compiled,), (g_eager,) = torch.autograd.grad(out.sum(), x), torch.autograd.grad(mlp(x).sum(), x)
        torch.testing.assert_close(g_compiled, g_eager, rtol=0, atol=1e-5)

def k_bias_mask(bias):
    "All of a qkv bias but its key third."
    m = torch.ones_like(bias, dtype=torch.bool); d = len(bias) // 3; m[d:2 * d] = False
    return m


def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _ddp_worker(rank, world, port, folder, compile=False, model_kw=None, warmup_steps=0):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import from_noise_to_images.train as train_mod
    writes = []
    real_save = train_mod.atomic_torch_save
    train_mod.atomic_torch_save = lambda obj, path: (writes.append(str(path)), real_save(obj, path))[1]
    x, y = data()
    torch.manual_seed(0 if rank == 0 else 999)   # rank 1 starts elsewhere: DDP and the Trainer must give it rank 0's
    model = tiny_dit(**(model_kw or {}))
    buf = io.StringIO()
    with redirect_stdout(buf):
        t = Trainer(model, loader(x, y, batch=BATCH, seed=2 + rank), lr=1e-3, device="cpu", seed=0 if rank == 0 else None,
                    checkpoint_dir=Path(folder) / "ckpt", checkpoint_every=4, compile=compile, warmup_steps=warmup_steps)
        t.train(1, progress=False)
        t.save_checkpoint(Path(folder) / "final.pt")
    inner = getattr(t._model, "module", None)   # what DDP wraps
    torch.save(dict(params=t.model.state_dict(), losses=t.step_losses, writes=writes, out=buf.getvalue(),
                    ddp=is_distributed(), wrapper=type(t._model).__name__,
                    blocks=[type(b).__name__ for b in getattr(inner, "blocks", [])]), Path(folder) / f"result{rank}.pt")
    if not compile:   # resumed from step 4 (rank 0's file, read by both; warmup too), the ranks retake steps 5 and 6 exactly
        with redirect_stdout(io.StringIO()):
            again = Trainer(tiny_dit(**(model_kw or {})), loader(x, y, batch=BATCH, seed=7), lr=1e-3, device="cpu",
                            checkpoint_dir=Path(folder) / f"again{rank}")
            again.resume(Path(folder) / "ckpt" / "step_00000004.pt"); again.train(1, progress=False)
        for k, v in t.model.state_dict().items(): assert torch.equal(again.model.state_dict()[k], v), k
    from from_noise_to_images.fast import teardown_distributed
    teardown_distributed()


def _two_ranks_vs_one_process(tmp_path, compile=False, rtol=0.0, atol=1e-6, model_kw=None, warmup_steps=0):
    """Train on two gloo ranks (`_ddp_worker`) and on one eager process with the global batch; assert that rank 0's
    parameters match the one process's, and the ranks each other's exactly. Returns both ranks' results and the
    one process's losses."""
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), compile, model_kw, warmup_steps), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"result{r}.pt", weights_only=True) for r in (0, 1))
    x, y = data()
    torch.manual_seed(0)
    ref = Trainer(tiny_dit(**(model_kw or {})), loader(x, y, batch=BATCH, seed=2), lr=1e-3, device="cpu", seed=0,
                  warmup_steps=warmup_steps)
    with redirect_stdout(io.StringIO()): ref.train(1, progress=False)
    assert r0["ddp"] and r1["ddp"] and ref.step == STEPS
    for k, v in ref.model.state_dict().items():
        a, b = r0["params"][k], v
        if k.endswith("attn.qkv.bias"):   # the key bias: its gradient is zero in exact arithmetic (softmax ignores a
            a, b = a[k_bias_mask(a)], b[k_bias_mask(b)]   # shift), so AdamW turns its rounding noise into lr-sized steps
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=k)
        assert torch.equal(r0["params"][k], r1["params"][k])              # the ranks agree exactly
    return r0, r1, ref.step_losses


def test_ddp_two_cpu_processes_match_one_process_and_only_rank0_writes(tmp_path):
    """A class-conditional DiT (labels split over the ranks, half of them dropped) with a learning-rate warmup over 4 of
    its 6 steps trains on two ranks as on one process."""
    r0, r1, ref_losses = _two_ranks_vs_one_process(tmp_path, model_kw=dict(num_classes=10, class_dropout_prob=0.5), warmup_steps=4)
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(ref_losses), rtol=1e-5, atol=1e-6)
    assert r1["writes"] == [] and r1["out"] == ""
    assert [Path(p).name for p in r0["writes"]] == ["step_00000004.pt", "step_00000006.pt", "final.pt"]
    assert "Epoch 1: avg_loss" in r0["out"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000004.pt", "step_00000006.pt"]


def test_ddp_compiles_the_blocks_inside_the_wrapper(tmp_path):
    "With compile=True under DDP the blocks are compiled before DDP wraps the model (their code once), and two ranks train like one process."
    r0, r1, ref_losses = _two_ranks_vs_one_process(tmp_path, compile=True, rtol=1e-4, atol=1e-5)   # compiled vs eager
    for r in (r0, r1): assert r["wrapper"] == "DistributedDataParallel" and r["blocks"] == ["OptimizedModule"] * 2
    assert "s to compile" in r0["out"] and r1["out"] == "" and r1["writes"] == []
    torch.testing.assert_close(torch.tensor(r0["losses"]), torch.tensor(ref_losses), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shared_data() is None, reason="needs the local MNIST copy")
def test_fnti_train_under_torchrun_two_cpu_processes(tmp_path):
    env = dict(subprocess_env(), OMP_NUM_THREADS="1")
    args = ["train", "--model", "unet-small", "--epochs", "1", "--subset", "128", "--batch-size", "32", "--no-progress",
            "--num-samples", "4", "--steps", "2", "--device", "cpu"]
    one = subprocess.run([sys.executable, "-m", "from_noise_to_images.cli", *args, "--out", str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run([str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "from_noise_to_images.cli",
                          *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("Epoch 1: avg_loss") == 1 and two.stdout.count("Done:") == 1
    a, b = (json.loads((tmp_path / d / "losses.json").read_text()) for d in ("one", "two"))
    torch.testing.assert_close(torch.tensor(b["step_losses"]), torch.tensor(a["step_losses"]), rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_cuda_graph_option_is_checked_on_a_cpu():
    x, y = data(16)
    with pytest.raises(ValueError, match="CUDA graph on one GPU.*leave cuda_graph off"):
        Trainer(tiny_dit(), loader(x, y), device="cpu", cuda_graph=True)


def test_a_checkpoint_does_not_change_how_adamw_steps(tmp_path):
    "A checkpoint brings AdamW's state and hyperparameters; fused or not (and capturable or not) stays this trainer's choice."
    x, y = data(32)
    plain = Trainer(tiny_dit(), loader(x, y), lr=1e-3, device="cpu", fast=False)
    with redirect_stdout(io.StringIO()): plain.train(1, progress=False)
    path = plain.save_checkpoint(tmp_path / "plain.pt")
    fast = Trainer(tiny_dit(), loader(x, y), lr=5e-4, device="cpu")
    fast.resume(path)
    group = fast.optimizer.param_groups[0]
    assert group["fused"] is True and group["lr"] == 1e-3 and not group["capturable"]
    with redirect_stdout(io.StringIO()): fast.train(1, progress=False)   # the fused kernel steps on the loaded state
    back = Trainer(tiny_dit(), loader(x, y), device="cpu", fast=False)
    back.resume(fast.save_checkpoint(tmp_path / "fast.pt"))
    assert not back.optimizer.param_groups[0]["fused"] and back.step == 4


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_trains_like_the_plain_step(compile):
    """The step recorded as one CUDA graph: the same losses and EMA weights as the plain step, with label dropout's and
    the noise's random numbers drawn inside the graph, clipping inside it, the EMA outside, and a short last batch."""
    x, y = data(100)   # 6 batches of 16, replayed, and one of 4, run as it is
    runs = {}
    for graph in (False, True):
        torch.manual_seed(0)
        model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4, num_classes=10)
        dl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
        how = dict(compile=True) if graph and compile else dict(cuda_graph=graph)   # compile=True: the graph by default
        # fp32 (amp=False): the recording is under test, and these tolerances were set in fp32 (bf16, the default on
        # Ampere and newer, rounds differently in compiled and eager kernels)
        t = Trainer(model, dl, lr=1e-3, device="cuda", seed=0, ema_decay=0.9, grad_clip=1.0, amp=False, **how)
        with redirect_stdout(io.StringIO()): t.train(2, progress=False)
        runs[graph] = (t.step_losses, t.ema.model.state_dict())
        if graph: assert t._graph.graph is not None and t.compile_mode == ("default" if compile else None)
    torch.testing.assert_close(torch.tensor(runs[True][0]), torch.tensor(runs[False][0]), rtol=1e-3, atol=1e-4)
    for k, v in runs[False][1].items(): torch.testing.assert_close(runs[True][1][k], v, rtol=1e-2, atol=1e-3)


@cuda
def test_cuda_graph_bf16_compiled_trains_like_eager_bf16():
    """The GPU default on Ampere and newer, `compile=True` with bf16 autocast (the step recorded as one CUDA graph, the
    blocks compiled, attention written out), against the plain eager bf16 step: the same losses up to bf16's rounding,
    which compiled and eager kernels do differently. gpu_session.sh runs this after its measurements (its other CUDA
    tests gate the graph phases; this one must not)."""
    if torch.cuda.get_device_capability()[0] < 8: pytest.skip("bf16 tensor cores (Ampere or newer) needed")
    x, y = data(100)
    runs = {}
    for fast_default in (False, True):
        torch.manual_seed(0)
        dl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
        how = dict(compile=True) if fast_default else dict(cuda_graph=False)
        t = Trainer(tiny_dit(num_classes=10), dl, lr=1e-3, device="cuda", seed=0, grad_clip=1.0, **how)
        assert t.amp                                                     # the default there
        with redirect_stdout(io.StringIO()): t.train(2, progress=False)
        if fast_default: assert t._graph.graph is not None and t.compile_mode == "default"
        runs[fast_default] = t.step_losses
    assert all(math.isfinite(l) for l in runs[True])
    torch.testing.assert_close(torch.tensor(runs[True]), torch.tensor(runs[False]), rtol=2e-2, atol=2e-3)


@cuda
def test_cuda_graph_reads_the_warmup_learning_rate_at_each_replay():
    """Under warmup the learning rate changes every step, and the step's CUDA graph must read it at each replay: a float
    would be recorded into the graph at the 4th step (GraphedStep's warmup is 3). Over 12 steps of a 1000-step warmup the
    rate grows 3x after the recording, so a recorded rate would leave the weights far from the plain step's: on a CPU,
    freezing the rate after step 4 put every weight tensor's change 48-50% (in norm) away from the true change, while
    fused and plain AdamW, rounding differently, stayed within 0.9%."""
    x, y = data(200)   # 12 batches of 16, then one of 8 (run as it is)
    moved = {}
    for graph in (False, True):
        torch.manual_seed(0)
        dl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
        t = Trainer(tiny_dit(num_classes=10), dl, lr=1e-2, device="cuda", seed=0, warmup_steps=1000, amp=False, cuda_graph=graph)
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        with redirect_stdout(io.StringIO()): t.train(1, progress=False)
        if graph: assert t._graph.graph is not None and isinstance(t.optimizer.param_groups[0]["lr"], torch.Tensor)
        moved[graph] = {k: v - before[k] for k, v in t.model.state_dict().items()}
    for k, v in moved[False].items():
        if v.norm() > 0: assert (moved[True][k] - v).norm() < 0.05 * v.norm(), k


@cuda
def test_cuda_graph_trains_the_unet_like_the_plain_step():
    "Chapter 1's U-Net (convolutions, GroupNorm) recorded as one graph per step: the plain step's losses."
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1
    runs = {}
    for graph in (False, True):
        torch.manual_seed(0)
        dl = DataLoader(TensorDataset(x), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(2))
        t = Trainer(SimpleUNet(model_channels=16, time_emb_dim=32), dl, lr=1e-3, device="cuda", seed=0, cuda_graph=graph, amp=False)
        with redirect_stdout(io.StringIO()): t.train(2, progress=False)
        runs[graph] = t.step_losses
    torch.testing.assert_close(torch.tensor(runs[True]), torch.tensor(runs[False]), rtol=1e-3, atol=1e-4)


@cuda
def test_cuda_graph_records_again_after_a_resume(tmp_path):
    "Loading a checkpoint replaces AdamW's state tensors: a trainer whose graph is recorded must record again."
    x, y = data()
    t = Trainer(tiny_dit(), DeviceBatches(x, y, batch_size=16, seed=5), lr=1e-3, device="cuda", seed=0,
                checkpoint_dir=tmp_path, checkpoint_every=4, keep_last=20, cuda_graph=True, amp=False)
    with redirect_stdout(io.StringIO()): t.train(2, progress=False)
    ref = list(t.step_losses)
    assert t._graph.graph is not None
    t.resume(tmp_path / "step_00000008.pt")
    assert t._graph.graph is None and t.step == 8
    with redirect_stdout(io.StringIO()): t.train(1, progress=False)   # the rest of epoch 2
    torch.testing.assert_close(torch.tensor(t.step_losses[8:]), torch.tensor(ref[8:]), rtol=1e-4, atol=1e-6)


def test_check_shards_fails_before_training(monkeypatch):
    "Under N ranks, a batch size or an epoch's last batch that N does not divide is refused when the Trainer is built."
    import from_noise_to_images.fast as fast
    monkeypatch.setattr(fast, "world_size", lambda: 2)
    x, y = data(99)
    fast.check_shards(DataLoader(TensorDataset(x, y), batch_size=16, drop_last=True))          # 6 batches of 16
    fast.check_shards(DeviceBatches(x[:96], y[:96], batch_size=16, drop_last=False))          # no shorter last batch
    with pytest.raises(ValueError, match="batches of 3 images do not split evenly over 2 processes: use a batch size "
                                         "divisible by 2 and drop_last=True"):
        fast.check_shards(DataLoader(TensorDataset(x, y), batch_size=16, drop_last=False))    # 6 x 16, then 3
    with pytest.raises(ValueError, match="batches of 15 images do not split evenly over 2 processes: use a batch size divisible by 2$"):
        fast.check_shards(DeviceBatches(x, y, batch_size=15, drop_last=True))
    fast.check_shards([(x, y)])                                                                 # unknown sizes: checked per batch
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): return iter(zip(x, y))
    fast.check_shards(DataLoader(Stream(), batch_size=15))                                      # no length: likewise
