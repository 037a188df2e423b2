"A run killed with SIGKILL mid-epoch, then resumed, takes exactly the steps of an uninterrupted run."
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from from_noise_to_images.checkpoint import list_checkpoints, load_checkpoint
from from_noise_to_images.train import Trainer

SCRIPT = str(Path(__file__).with_name("train_script.py"))
sys.path.insert(0, str(Path(SCRIPT).parent))
import train_script  # noqa: E402


def run(env, *args, expect=0):
    r = subprocess.run([sys.executable, SCRIPT, *map(str, args)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == expect, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.parametrize("every,kill_at,gen,resumes_from", [
    (4, 10, 0, 8),       # checkpoint 8 is 2 batches into epoch 2; the loader shuffles with PyTorch's global generator
    (0, 9, 1, 6),        # end-of-epoch checkpoints only, loader with its own generator: resume at the epoch boundary
])
def test_sigkill_mid_epoch_then_resume_matches(tmp_path, env, every, kill_at, gen, resumes_from):
    ref_t = train_script.train("fresh", tmp_path / "ref_ck", None, every or None, bool(gen))   # uninterrupted, in this process
    run(env, "fresh", tmp_path / "ck", tmp_path / "killed", kill_at, every, gen, expect=-signal.SIGKILL)
    assert not (tmp_path / "killed.json").exists()
    newest = list_checkpoints(tmp_path / "ck")[-1]
    assert newest.name == f"step_{resumes_from:08d}.pt"
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.endswith(".tmp")]
    r = run(env, "resume", tmp_path / "ck", tmp_path / "resumed", 0, every, gen)
    assert f"Resumed from {newest}" in r.stdout
    res = json.loads((tmp_path / "resumed.json").read_text())
    assert len(ref_t.step_losses) == 18
    assert res["step_losses"] == ref_t.step_losses          # bitwise: floats round-trip exactly through JSON
    assert res["losses"] == ref_t.losses and res["step"] == ref_t.step == 18
    a = dict(model=ref_t.model.state_dict(), ema=ref_t.ema.model.state_dict(), optimizer=ref_t.optimizer.state_dict()["state"])
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    for part in ("model", "ema"):
        for k, v in a[part].items(): assert torch.equal(v, b[part][k]), f"{part}.{k} differs"
    for i, st in a["optimizer"].items():
        for k, v in st.items(): assert torch.equal(v, b["optimizer"][i][k])
    ck = load_checkpoint(tmp_path / "ck" / "step_00000018.pt", training=True)   # the resumed run went on checkpointing
    assert ck["step"] == 18 and ck["epoch"] == 3


def test_in_process_resume_at_every_checkpoint(tmp_path):
    "Resuming from each checkpoint of a run (5, 10, 15: all mid-epoch; loader with its own generator) reaches the same losses."
    make = train_script.make
    model, loader = make(True)
    ref = Trainer(model, loader, lr=1e-3, device="cpu", seed=0, checkpoint_dir=tmp_path, checkpoint_every=5, keep_last=10,
                  ema_decay=0.9)
    ref.train(3, progress=False)
    ckpts = list_checkpoints(tmp_path)
    assert [int(p.stem[5:]) for p in ckpts] == [5, 10, 15, 18]
    for p in ckpts[:-1]:
        model, loader = make(True)
        t = Trainer(model, loader, lr=1e-3, device="cpu", checkpoint_dir=tmp_path / "again")
        t.resume(p)
        t.train(3 - t.epoch, progress=False)
        assert t.step_losses == ref.step_losses and t.losses == ref.losses, p.name


def test_keep_last_and_checkpoint_contents(tmp_path):
    make = train_script.make
    model, loader = make(True)
    t = Trainer(model, loader, lr=1e-3, device="cpu", seed=0, checkpoint_dir=tmp_path, checkpoint_every=2, keep_last=2, ema_decay=0.99)
    t.train(1, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.pt", "step_00000006.pt"]
    s = torch.load(tmp_path / "step_00000004.pt", weights_only=True)
    for k in ("model_state_dict", "ema_state_dict", "optimizer_state_dict", "model_class", "model_config", "step", "epoch",
              "batch_in_epoch", "losses", "step_losses", "train_config", "rng", "epoch_rng", "package_version"):
        assert k in s, k
    assert s["model_class"] == "SimpleUNet" and s["model_config"] == dict(in_channels=1, model_channels=8, time_emb_dim=16)
    assert (s["step"], s["epoch"], s["batch_in_epoch"], len(s["step_losses"])) == (4, 0, 4, 4)
    assert set(s["rng"]) == {"python", "numpy", "torch", "cuda", "generators"} and len(s["rng"]["generators"]) == 1
    assert s["train_config"]["ema_decay"] == 0.99 and s["train_config"]["lr"] == 1e-3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary files left behind


def test_resume_from_checkpoint_taken_after_the_last_batch_of_an_epoch(tmp_path):
    "A step checkpoint on an epoch's last batch (before the epoch is counted) resumes into the next epoch correctly."
    import shutil
    make = train_script.make

    class Snap(Trainer):
        def save_checkpoint(self, path=None):
            p = super().save_checkpoint(path)
            if path is None and self.step == 6 and self._epoch_losses: shutil.copy(p, tmp_path / "snap.pt")
            return p

    model, loader = make(True)
    ref = Snap(model, loader, lr=1e-3, device="cpu", seed=0, checkpoint_dir=tmp_path / "ck", checkpoint_every=3, ema_decay=0.9)
    ref.train(2, progress=False)
    s = load_checkpoint(tmp_path / "snap.pt", training=True)
    assert (s["step"], s["epoch"], s["batch_in_epoch"]) == (6, 0, 6)
    model, loader = make(True)
    t = Trainer(model, loader, lr=1e-3, device="cpu", checkpoint_dir=tmp_path / "again")
    t.resume(tmp_path / "snap.pt")
    t.train(2 - t.epoch, progress=False)
    assert t.step_losses == ref.step_losses and t.losses == ref.losses and t.epoch == 2


class _NaNGradientAt(torch.nn.Module):
    "A tiny velocity model whose loss stays finite but whose gradient is NaN at forward call `bad` (0 * d sqrt(u)/du at u=0)."
    def __init__(self, bad: int):
        super().__init__()
        self.lin, self.p, self.calls, self.bad = torch.nn.Linear(4, 4), torch.nn.Parameter(torch.zeros(())), 0, bad
    def forward(self, x, t):
        self.calls += 1
        out = self.lin(x.flatten(1)).view_as(x) + 0 * self.p
        return out + 0 * torch.sqrt(self.p - self.p) if self.calls == self.bad else out


def test_nan_gradient_with_finite_loss_never_reaches_a_checkpoint(tmp_path):
    "Step 3's loss is finite but its gradient NaN: saving refuses, and the step-2 checkpoint (keep_last=1) survives."
    from contextlib import redirect_stdout
    import io
    from from_noise_to_images.train import NonFiniteLossError
    x = torch.rand(48, 1, 2, 2) * 2 - 1
    t = Trainer(_NaNGradientAt(bad=3), [x[i:i + 8] for i in range(0, 48, 8)], lr=1e-3, device="cpu", seed=0,
                checkpoint_dir=tmp_path, checkpoint_every=1, keep_last=1, ema_decay=0.9, fast=False)
    with pytest.raises(NonFiniteLossError, match=r"weights became NaN or infinite at some step since step 2 \(up to step 3\).*"
                                                 r"step_00000002.pt, is untouched"):
        with redirect_stdout(io.StringIO()): t.train(1, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000002.pt"]
    assert torch.isfinite(torch.stack(t._epoch_losses)).all()   # every loss so far was finite
    state = load_checkpoint(tmp_path / "step_00000002.pt", training=True)
    assert all(torch.isfinite(v).all() for v in state["model_state_dict"].values())
