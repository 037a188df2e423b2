"""Chapter 0/1 behaviour that notebooks hold badly: offline data errors, checkpoints, the CLI, the sampler's ODE."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from from_noise_to_images import get_device
from from_noise_to_images.core import (DatasetNotFoundError, load_mnist, mnist_tensors, resolve_data_dir,
                                       seed_everything)
from from_noise_to_images.flow import interpolate
from from_noise_to_images.models import SimpleUNet
from from_noise_to_images.sampling import sample
from from_noise_to_images.train import Trainer, split_batch, atomic_torch_save

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def offline(monkeypatch):
    "Every connection attempt fails, as on a machine without a network."
    def refuse(*a, **k): raise OSError("network disabled by the test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_top_level_get_device():
    d = get_device()
    assert isinstance(d, torch.device) and d.type in {"cuda", "mps", "cpu"}


def test_offline_without_copy_says_where_and_how(tmp_path, offline, monkeypatch):
    monkeypatch.delenv("FNTI_DATA_DIR", raising=False)
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist(data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg
    assert "FNTI_DATA_DIR" in msg and "internet" in msg and "download failed" in msg


def test_env_var_points_at_read_only_copy(data_dir, offline, monkeypatch):
    monkeypatch.setenv("FNTI_DATA_DIR", str(data_dir))
    assert resolve_data_dir() == data_dir
    before = sorted(p.name for p in (data_dir / "MNIST").iterdir())
    ds = load_mnist(train=False)                    # no network needed
    x, y = ds[0]
    assert len(ds) == 10_000 and x.shape == (1, 28, 28) and -1 <= x.min() < x.max() <= 1
    assert sorted(p.name for p in (data_dir / "MNIST").iterdir()) == before   # nothing written


def test_argument_beats_env_var(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("FNTI_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(data_dir) == data_dir
    assert resolve_data_dir() == tmp_path


def test_tensors_match_torchvision_pipeline(data_dir):
    x, y = mnist_tensors(subset=8)
    ds = load_mnist()
    for i in range(8):
        img, lab = ds[i]
        assert torch.allclose(x[i], img, atol=1e-6) and y[i].item() == lab


def test_interpolate_endpoints_midpoint_and_per_sample_t():
    "x_t = (1 - t) x0 + t x1: x0 at t = 0, x1 at t = 1, the average at t = 0.5, and each sample uses its own t."
    x0, x1 = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    assert torch.equal(interpolate(x0, x1, torch.zeros(3)), x0)
    assert torch.allclose(interpolate(x0, x1, torch.ones(3)), x1)
    torch.testing.assert_close(interpolate(x0, x1, torch.full((3,), 0.5)), (x0 + x1) / 2)
    mixed = interpolate(x0, x1, torch.tensor([0.0, 0.5, 1.0]))   # t broadcasts per sample, not per pixel or row
    torch.testing.assert_close(mixed, torch.stack([x0[0], (x0[1] + x1[1]) / 2, x1[2]]))


class ConstantField(torch.nn.Module):
    def __init__(self, c): super().__init__(); self.c = torch.nn.Parameter(c)
    def forward(self, x, t): return self.c.expand_as(x)


class OnePointField(torch.nn.Module):
    "The exact marginal velocity when the data set is the single image x_star: v = (x - x_star) / t."
    def __init__(self, x_star): super().__init__(); self.x_star = torch.nn.Parameter(x_star)
    def forward(self, x, t): return (x - self.x_star) / t.reshape(-1, 1, 1, 1)


@pytest.mark.parametrize("steps", [1, 3, 50])
def test_euler_is_exact_for_a_constant_field(steps):
    c = torch.randn(1, 1, 28, 28)
    x, traj = sample(ConstantField(c), 5, (1, 28, 28), steps, "cpu", return_trajectory=True, seed=3)
    assert len(traj) == steps + 1
    assert torch.allclose(x, traj[0] - c, atol=1e-5)       # moved by exactly -c over one unit of time


def test_sampler_runs_from_noise_at_t1_to_data_at_t0():
    # Straight paths to one image: Euler follows them exactly, so every sample must land on it.
    x_star = torch.rand(1, 1, 28, 28) * 2 - 1
    x, traj = sample(OnePointField(x_star), 4, (1, 28, 28), 10, "cpu", return_trajectory=True, seed=0)
    assert torch.allclose(x, x_star.expand_as(x), atol=1e-5)
    # and halfway it is halfway: x_{0.5} = (x_star + noise) / 2
    assert torch.allclose(traj[5], (x_star + traj[0]) / 2, atol=1e-5)


def test_sample_is_reproducible_and_restores_mode():
    m = SimpleUNet(model_channels=8, time_emb_dim=16).train()
    a = sample(m, 2, (1, 28, 28), 2, "cpu", seed=7)
    b = sample(m, 2, (1, 28, 28), 2, "cpu", seed=7)
    assert torch.equal(a, b) and m.training


@pytest.mark.parametrize("kw,msg", [
    (dict(num_steps=0), "num_steps must be a positive int"),
    (dict(num_samples=0), "num_samples must be a positive int"),
    (dict(image_shape=(28, 28)), "image_shape must be (C, H, W)"),
])
def test_sample_rejects_bad_arguments(kw, msg):
    args = dict(model=ConstantField(torch.zeros(1, 1, 28, 28)), num_samples=2, image_shape=(1, 28, 28),
                num_steps=2, device="cpu") | kw
    with pytest.raises(ValueError, match=re.escape(msg)): sample(**args)


def test_unet_size_and_shape():
    m = SimpleUNet(in_channels=1, model_channels=64, time_emb_dim=128)
    n = sum(p.numel() for p in m.parameters() if p.requires_grad)
    # The count from the architecture (weights + biases; GroupNorm has a scale and a shift per channel):
    # time MLP 2 x Linear(128, 128); conv_in 3x3 1->64; ResBlocks (in->out) 64->64, 64->128, 128->128 twice,
    # 256->128, 192->64, each norm1, 3x3 conv, Linear(128, out), norm2, 3x3 conv, plus a 1x1 skip when in != out;
    # two stride-2 3x3 downsampling convs 64->64 and 128->128; GroupNorm(64) and a 3x3 conv 64->1 out.
    c, td = 64, 128
    conv = lambda i, o, k: i * o * k * k + o
    lin, gn = (lambda i, o: i * o + o), (lambda ch: 2 * ch)
    res = lambda i, o: gn(i) + conv(i, o, 3) + lin(td, o) + gn(o) + conv(o, o, 3) + (conv(i, o, 1) if i != o else 0)
    want = (2 * lin(td, td) + conv(1, c, 3)
            + res(c, c) + res(c, 2 * c) + 2 * res(2 * c, 2 * c) + res(4 * c, 2 * c) + res(3 * c, c)
            + conv(c, c, 3) + conv(2 * c, 2 * c, 3) + gn(c) + conv(c, 1, 3))
    assert n == want == 1_833_793   # the "about 1.8M" of the design; nbs/01_2_unet.ipynb prints 1,833,793
    assert m(torch.randn(3, 1, 28, 28), torch.rand(3)).shape == (3, 1, 28, 28)
    assert SimpleUNet(in_channels=3)(torch.randn(2, 3, 32, 32), torch.rand(2)).shape == (2, 3, 32, 32)


def test_loss_falls_on_a_small_batch(data_dir, capsys):
    seed_everything(0)
    x, _ = mnist_tensors(subset=32)
    tr = Trainer(SimpleUNet(model_channels=16, time_emb_dim=32), [x] * 40, lr=3e-3, device="cpu")
    tr.train(1, progress=False)
    first, last = sum(tr.step_losses[:5]) / 5, sum(tr.step_losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    out = capsys.readouterr().out
    assert "Training on cpu" in out
    assert re.search(r"Model parameters: \d{1,3}(,\d{3})+\n", out)
    assert re.search(r"Epoch 1: avg_loss = \d+\.\d{4}\n", out)


def test_trainer_rejects_bad_batches():
    tr = Trainer(SimpleUNet(model_channels=8, time_emb_dim=16), [{"image": torch.zeros(2)}], device="cpu")
    with pytest.raises(TypeError, match="image tensor .* or a pair"):
        tr.train(1, progress=False)
    with pytest.raises(TypeError): split_batch("not a batch")


def test_checkpoint_loads_with_weights_only(tmp_path):
    seed_everything(0)
    m = SimpleUNet(model_channels=8, time_emb_dim=16)
    tr = Trainer(m, [torch.randn(4, 1, 28, 28)], device="cpu")
    tr.train(1, progress=False)
    p = tr.save_checkpoint(tmp_path / "ck.pt")
    ck = torch.load(p, weights_only=True)
    fresh = SimpleUNet(**ck["model_config"])
    fresh.load_state_dict(ck["model_state_dict"])
    x, t = torch.randn(2, 1, 28, 28), torch.rand(2)
    m.eval(); fresh.eval()
    assert torch.equal(m(x, t), fresh(x, t))
    assert ck["model_class"] == "SimpleUNet" and ck["epoch"] == 1


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    p = tmp_path / "ck.pt"
    atomic_torch_save({"a": torch.ones(3)}, p)
    good = p.read_bytes()
    real_save = torch.save
    def crash(obj, f, *a, **k):
        real_save(obj, f); f.write(b"partial"); raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt): atomic_torch_save({"a": torch.zeros(3)}, p)
    assert p.read_bytes() == good and [f.name for f in tmp_path.iterdir()] == ["ck.pt"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "from_noise_to_images.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)


def test_cli_train_end_to_end(tmp_path, data_dir):
    r = run_cli("train", "--subset", "128", "--batch-size", "32", "--num-samples", "4", "--steps", "3",
                "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    rec = json.loads((out / "losses.json").read_text())
    assert len(rec["epoch_losses"]) == 1 and len(rec["step_losses"]) == 4
    assert (out / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ck = torch.load(out / "model.pt", weights_only=True)
    SimpleUNet(**ck["model_config"]).load_state_dict(ck["model_state_dict"])
    assert "model.pt" in r.stdout and "samples.png" in r.stdout


@pytest.mark.parametrize("args", [["train", "--epochs", "0"], ["train", "--model", "gan"],
                                  ["train", "--batch-size", "x"], ["fly"], []])
def test_cli_bad_flags_exit_2_with_usage(args):
    r = run_cli(*args)
    assert r.returncode == 2 and "usage: fnti" in r.stderr


def test_cli_help_explains_every_flag():
    r = run_cli("train", "--help")
    assert r.returncode == 0
    for flag in ["--model", "--epochs", "--subset", "--batch-size", "--lr", "--out", "--data-dir", "--steps", "--seed"]:
        assert flag in r.stdout


def test_readme_relative_links_resolve():
    "Links in README.md that point into the repository name files that exist (the site's notebook links are rewritten)."
    links = [l.split("#")[0] for l in re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
             if not re.match(r"[a-z]+:", l) and not l.startswith("#")]
    assert "nbs/notation.ipynb" in links
    assert [l for l in links if not (ROOT / l).exists()] == []


def test_readme_in_sync_with_index_notebook():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "sync_readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
