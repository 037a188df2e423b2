"""Learning-rate warmup: the rates AdamW steps with, on the fused path (the rate held in a tensor) and the plain one (a
float), what they do to the first update, and a resume in the middle of the warmup."""
import io
from contextlib import redirect_stdout

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from from_noise_to_images.checkpoint import load_checkpoint
from from_noise_to_images.dit import DiT
from from_noise_to_images.train import Trainer, warmup_lr

LR, WARMUP = 1e-2, 4


def tiny_dit(): return DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4)


def loader(n=48, batch=8):
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return DataLoader(TensorDataset(x), batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(2))


def record_rates(trainer) -> list:
    "Make `trainer`'s AdamW note the learning rate of every step it takes; returns the list it fills."
    rates, step = [], trainer.optimizer.step
    def noting(*args, **kw):
        rates.append(float(trainer.optimizer.param_groups[0]["lr"])); return step(*args, **kw)   # a tensor's value now
    trainer.optimizer.step = noting
    return rates


def test_warmup_lr_rises_linearly_then_holds():
    assert [warmup_lr(LR, WARMUP, s) for s in range(6)] == [LR * k / WARMUP for k in (1, 2, 3, 4)] + [LR, LR]
    assert [warmup_lr(LR, 0, s) for s in range(3)] == [LR] * 3
    assert warmup_lr(LR, 1, 0) == LR


@pytest.mark.parametrize("fast", [True, False])
def test_adamw_steps_with_the_warmup_rates(fast):
    """Fused AdamW (fast path) holds the rate in a tensor that the warmup fills in place; the plain path sets a float.
    Both step with `warmup_lr`'s rates, and take the same steps."""
    torch.manual_seed(0)
    t = Trainer(tiny_dit(), loader(), lr=LR, device="cpu", seed=0, fast=fast, warmup_steps=WARMUP)
    assert isinstance(t.optimizer.param_groups[0]["lr"], torch.Tensor) == fast
    rates = record_rates(t)
    with redirect_stdout(io.StringIO()): t.train(1, progress=False)
    torch.testing.assert_close(torch.tensor(rates), torch.tensor([warmup_lr(LR, WARMUP, s) for s in range(6)]))
    if not fast:   # same losses as the fast path's (both paths train alike without warmup: test_fast.py)
        torch.manual_seed(0)
        f = Trainer(tiny_dit(), loader(), lr=LR, device="cpu", seed=0, warmup_steps=WARMUP)
        with redirect_stdout(io.StringIO()): f.train(1, progress=False)
        torch.testing.assert_close(torch.tensor(f.step_losses), torch.tensor(t.step_losses), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_the_first_update_is_a_warmup_fraction_of_the_full_one(fast):
    "AdamW's first update is about lr times the gradient's sign, so with warmup it is 1/WARMUP of the update without."
    moved = {}
    for warmup in (0, WARMUP):
        torch.manual_seed(0)
        t = Trainer(tiny_dit(), loader(), lr=LR, weight_decay=0.0, device="cpu", seed=0, fast=fast, warmup_steps=warmup)
        before = torch.cat([p.detach().flatten().clone() for p in t.model.parameters()])
        t.train_step(next(iter(t._batches)))
        moved[warmup] = torch.cat([p.detach().flatten() for p in t.model.parameters()]) - before
    big = moved[0].abs() > LR / 2   # weights whose gradient was not ~0 (Adam's eps keeps those from moving a full lr)
    assert big.float().mean() > 0.5
    torch.testing.assert_close(moved[WARMUP][big], moved[0][big] / WARMUP, rtol=1e-3, atol=1e-7)


def test_resume_in_the_middle_of_the_warmup_takes_the_uninterrupted_steps(tmp_path):
    """The checkpoint carries warmup_steps and a float learning rate (any trainer loads it); a trainer built without
    warmup takes both from it, and goes on with the rates, losses and weights of the run that was not interrupted."""
    torch.manual_seed(0)
    ref = Trainer(tiny_dit(), loader(), lr=LR, device="cpu", seed=0, warmup_steps=10, checkpoint_dir=tmp_path,
                  checkpoint_every=3, keep_last=10)
    ref_rates = record_rates(ref)
    with redirect_stdout(io.StringIO()): ref.train(2, progress=False)
    ck = load_checkpoint(tmp_path / "step_00000003.pt", training=True)
    saved_lr = ck["optimizer_state_dict"]["param_groups"][0]["lr"]
    assert ck["train_config"]["warmup_steps"] == 10 and type(saved_lr) is float and saved_lr == pytest.approx(warmup_lr(LR, 10, 2))
    for build in ("constructor", "from_checkpoint"):
        if build == "constructor":
            t = Trainer(tiny_dit(), loader(), lr=1e-3, device="cpu")   # no warmup, another lr: the checkpoint's win
            with redirect_stdout(io.StringIO()): t.resume(tmp_path / "step_00000003.pt")
        else:
            with redirect_stdout(io.StringIO()):
                t = Trainer.from_checkpoint(tmp_path / "step_00000003.pt", loader(), device="cpu")
        assert t.train_config["warmup_steps"] == 10 and isinstance(t.optimizer.param_groups[0]["lr"], torch.Tensor)
        rates = record_rates(t)
        with redirect_stdout(io.StringIO()): t.train(2, progress=False)
        assert rates == ref_rates[3:], build
        assert t.step_losses == ref.step_losses, build
        for k, v in ref.model.state_dict().items(): assert torch.equal(t.model.state_dict()[k], v), (build, k)
