"Bad checkpoint files fail cleanly, the previous checkpoint still loads, and a NaN loss writes nothing."
import hashlib
import math
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from from_noise_to_images.checkpoint import (CheckpointError, atomic_torch_save, list_checkpoints, load_checkpoint,
                                             load_model, resolve_checkpoint)
from from_noise_to_images.models import SimpleUNet
from from_noise_to_images.train import NonFiniteLossError, Trainer


def tiny_loader(n=96, bs=16):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(n, 1, 28, 28, generator=g) * 2 - 1), batch_size=bs, shuffle=True,
                      generator=torch.Generator().manual_seed(1))


def tiny_net(): return SimpleUNet(model_channels=8, time_emb_dim=16)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    "A folder with checkpoints after steps 2, 4 and 6 of a tiny run with EMA."
    d = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    t = Trainer(tiny_net(), tiny_loader(), lr=1e-3, device="cpu", seed=0, checkpoint_dir=d, checkpoint_every=2, keep_last=3,
                ema_decay=0.9)
    t.train(1, progress=False)
    assert [p.name for p in list_checkpoints(d)] == ["step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]
    return d


def test_checkpoint_loads_weights_only_and_model_round_trips(run_dir):
    s = torch.load(run_dir / "step_00000006.pt", weights_only=True)
    ema, raw = load_model(run_dir / "step_00000006.pt"), load_model(run_dir / "step_00000006.pt", use_ema=False)
    assert (ema.weights, raw.weights, ema.training) == ("ema", "raw", False)
    for k, v in s["ema_state_dict"]["model_state_dict"].items(): assert torch.equal(ema.state_dict()[k], v)
    for k, v in s["model_state_dict"].items(): assert torch.equal(raw.state_dict()[k], v)
    assert not torch.equal(ema.conv_in.weight, raw.conv_in.weight)


@pytest.mark.parametrize("where", ["zero", "one", "header", "third", "half", "end-100", "end-1"])
def test_truncated_checkpoint_fails_cleanly_and_previous_loads(run_dir, tmp_path, where):
    d = tmp_path / "ck"; d.mkdir()
    for p in list_checkpoints(run_dir): (d / p.name).write_bytes(p.read_bytes())
    newest = d / "step_00000006.pt"
    data = newest.read_bytes()
    n = dict(zero=0, one=1, header=64, third=len(data) // 3, half=len(data) // 2, **{"end-100": len(data) - 100, "end-1": len(data) - 1})[where]
    newest.write_bytes(data[:n])
    with pytest.raises(CheckpointError) as e: load_model(newest)
    assert str(newest) in str(e.value) and "not a readable checkpoint" in str(e.value) and f"{n:,} bytes" in str(e.value)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"): load_checkpoint(newest, training=True)
    with pytest.warns(UserWarning, match="skipping .*step_00000006.pt"):
        path, state = resolve_checkpoint(d, training=True)
    assert path.name == "step_00000004.pt" and state["step"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = load_model(d)                                    # the folder's newest readable checkpoint
    prev = torch.load(d / "step_00000004.pt", weights_only=True)["ema_state_dict"]["model_state_dict"]
    for k, v in prev.items(): assert torch.equal(m.state_dict()[k], v)
    t = Trainer(tiny_net(), tiny_loader(), lr=1e-3, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert t.resume(d).name == "step_00000004.pt"
    assert t.step == 4


def _foreign(tmp_path, kind):
    p = tmp_path / f"{kind}.pt"
    net = tiny_net()
    if kind == "text": p.write_text("this is not a checkpoint\n")
    elif kind == "random": p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    elif kind == "pickle": p.write_bytes(pickle.dumps({"model_state_dict": Path("x")}))
    elif kind == "list": torch.save([1, 2, 3], p)
    elif kind == "bare_state_dict": torch.save(net.state_dict(), p)
    elif kind == "other_arch":
        torch.save(dict(model_class="SimpleUNet", model_config=dict(model_channels=16, time_emb_dim=16), model_state_dict=net.state_dict()), p)
    elif kind == "unknown_class": torch.save(dict(model_class="GAN", model_config={}, model_state_dict={}), p)
    elif kind == "bad_config": torch.save(dict(model_class="SimpleUNet", model_config=dict(channels=3), model_state_dict={}), p)
    elif kind == "missing_key":
        sd = net.state_dict(); sd.pop("conv_out.bias")
        torch.save(dict(model_class="SimpleUNet", model_config=net.config, model_state_dict=sd), p)
    elif kind == "newer_format":
        torch.save(dict(model_class="SimpleUNet", model_config=net.config, model_state_dict=net.state_dict(), format_version=99), p)
    return p


@pytest.mark.parametrize("kind,msg", [
    ("text", "not a readable checkpoint"),
    ("random", "not a readable checkpoint"),
    ("pickle", "not a readable checkpoint"),                 # weights_only refuses arbitrary objects
    ("list", "holds a list, not a dict"),
    ("bare_state_dict", "missing model_class, model_config, model_state_dict"),
    ("other_arch", "shape mismatch conv_in.weight: file (8, 1, 3, 3) vs model (16, 1, 3, 3)"),
    ("unknown_class", "unknown model class 'GAN'"),
    ("bad_config", "cannot build SimpleUNet from config"),
    ("missing_key", "missing conv_out.bias"),
    ("newer_format", "newer version of from_noise_to_images"),
])
def test_foreign_or_mismatched_file_gives_one_clear_error(tmp_path, kind, msg):
    p = _foreign(tmp_path, kind)
    with pytest.raises(CheckpointError) as e: load_model(p)
    assert str(p) in str(e.value) and msg in str(e.value)
    assert isinstance(e.value, ValueError)


def test_resume_into_a_different_architecture_is_refused(run_dir):
    t = Trainer(SimpleUNet(model_channels=16, time_emb_dim=16), tiny_loader(), device="cpu")
    with pytest.raises(CheckpointError, match=r"holds a SimpleUNet\{.*'model_channels': 8.*this trainer's model is a SimpleUNet\{.*16"):
        t.resume(run_dir / "step_00000004.pt")
    with pytest.raises(CheckpointError, match="not training state to resume from: missing optimizer_state_dict"):
        net = tiny_net()
        p = run_dir.parent / "weights_only.pt"
        torch.save(dict(model_class="SimpleUNet", model_config=net.config, model_state_dict=net.state_dict()), p)
        Trainer(net, tiny_loader(), device="cpu").resume(p)


class FlakyUNet(SimpleUNet):
    "Returns `value` from its `bad_call`-th forward pass on, as a diverging model would."
    bad_call, value, calls = None, float("nan"), 0
    def forward(self, x, t):
        self.calls += 1
        out = super().forward(x, t)
        return out * self.value if self.calls >= self.bad_call else out


class Recording(Trainer):
    "Keeps the bytes of each checkpoint as written."
    def save_checkpoint(self, path=None):
        p = super().save_checkpoint(path)
        self.written = getattr(self, "written", {}); self.written[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        return p


@pytest.mark.parametrize("every,bad_step,value,last_good", [
    (3, 5, float("nan"), "step_00000003.pt"),    # caught at the step-6 checkpoint, mid-epoch
    (None, 8, float("inf"), "step_00000006.pt"), # caught at the end of epoch 2; epoch 1's checkpoint stays
])
def test_non_finite_loss_stops_and_leaves_last_checkpoint_untouched(tmp_path, every, bad_step, value, last_good):
    torch.manual_seed(0)
    net = FlakyUNet(model_channels=8, time_emb_dim=16); net.bad_call, net.value = bad_step, value
    t = Recording(net, tiny_loader(), lr=1e-3, device="cpu", seed=0, checkpoint_dir=tmp_path, checkpoint_every=every, ema_decay=0.9)
    with pytest.raises(NonFiniteLossError) as e: t.train(3, progress=False)
    msg = str(e.value)
    epoch, batch = (bad_step - 1) // 6 + 1, (bad_step - 1) % 6 + 1
    assert f"at step {bad_step} (epoch {epoch}, batch {batch})" in msg and last_good in msg and "untouched" in msg
    assert ("nan" if math.isnan(value) else "inf") in msg
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[-1] == last_good and all(not f.startswith(".") for f in files)   # nothing newer, no temporary files
    assert hashlib.sha256((tmp_path / last_good).read_bytes()).hexdigest() == t.written[last_good]
    assert load_checkpoint(tmp_path / last_good, training=True)["step"] == int(last_good[5:13])


def test_grad_clip_bounds_the_update(tmp_path):
    """The gradients AdamW steps with have total norm <= grad_clip (and are the unclipped ones scaled down
    uniformly); without clipping the same step's gradient norm is well above that clip."""
    clip, seen = 1e-3, {}
    for c in (None, clip):
        torch.manual_seed(0)
        t = Trainer(tiny_net(), [torch.rand(8, 1, 28, 28) * 2 - 1], lr=1e-2, weight_decay=0.0, device="cpu", seed=0, grad_clip=c)
        assert t.train_config["grad_clip"] == c
        def record(opt, args, kwargs, c=c):   # runs inside optimizer.step(), after clipping
            seen[c] = [p.grad.detach().clone() for g in opt.param_groups for p in g["params"] if p.grad is not None]
        t.optimizer.register_step_pre_hook(record)
        torch.manual_seed(0); t.train_step(t.dataloader[0])
    norm = {c: torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs])).item() for c, gs in seen.items()}
    assert len(seen[clip]) == len(seen[None]) == sum(1 for _ in tiny_net().parameters())
    assert norm[None] > 10 * clip, norm
    assert norm[clip] <= clip * (1 + 1e-4), norm
    scale = norm[clip] / norm[None]                     # one factor for every tensor: the direction is kept
    for g_clip, g_raw in zip(seen[clip], seen[None]):
        torch.testing.assert_close(g_clip, g_raw * scale, rtol=1e-4, atol=1e-12)


def test_atomic_save_failure_keeps_previous_file(tmp_path):
    p = atomic_torch_save({"a": torch.ones(3)}, tmp_path / "c.pt")
    before = p.read_bytes()
    class Boom:
        def __reduce__(self): raise RuntimeError("disk full")
    with pytest.raises(RuntimeError, match="disk full"): atomic_torch_save({"a": Boom()}, p)
    assert p.read_bytes() == before and [q.name for q in tmp_path.iterdir()] == ["c.pt"]


def test_fresh_run_in_a_used_folder_warns_and_leaves_only_its_own(tmp_path):
    for i, warn in ((0, False), (1, True)):
        torch.manual_seed(i)
        t = Trainer(tiny_net(), tiny_loader(32), lr=1e-3, device="cpu", checkpoint_dir=tmp_path, checkpoint_every=1, keep_last=5)
        if warn:
            with pytest.warns(UserWarning, match="holds checkpoints of another run"): t.train(1 if i else 2, progress=False)
        else: t.train(2, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000001.pt", "step_00000002.pt"]   # the old step 3, 4 are gone
    assert load_checkpoint(tmp_path / "step_00000002.pt")["epoch"] == 1
