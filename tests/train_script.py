"""A tiny training run for the resume tests, run in a subprocess.

Usage: python train_script.py fresh|resume CKPT_DIR OUT_PREFIX [KILL_AT_STEP] [EVERY] [GEN]
`fresh` trains 3 epochs (6 steps each) from scratch and, with KILL_AT_STEP, SIGKILLs itself right
after that optimizer step; `resume` rebuilds the trainer from CKPT_DIR's newest checkpoint and
finishes the 3 epochs. Both write OUT_PREFIX.json (losses) and OUT_PREFIX.pt (final weights).
"""
import json
import os
import signal
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

from from_noise_to_images.models import SimpleUNet
from from_noise_to_images.train import Trainer

EPOCHS = 3


def make(gen: bool):
    g = torch.Generator().manual_seed(123)
    x = torch.rand(96, 1, 28, 28, generator=g) * 2 - 1
    y = torch.randint(0, 10, (96,), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(7) if gen else None)
    torch.manual_seed(0)
    return SimpleUNet(model_channels=8, time_emb_dim=16), loader


class KillAt(Trainer):
    kill_at = None

    def train_step(self, batch):
        loss = super().train_step(batch)
        if self.step == self.kill_at: os.kill(os.getpid(), signal.SIGKILL)
        return loss


def train(mode, ckdir, kill_at=None, every=None, gen=True):
    "Train (or resume) to 3 epochs; returns the trainer."
    model, loader = make(gen)
    if mode == "resume":
        t = Trainer.from_checkpoint(ckdir, loader, device="cpu")
    else:
        t = KillAt(model, loader, lr=1e-3, device="cpu", seed=0, checkpoint_dir=ckdir, checkpoint_every=every,
                   keep_last=2, ema_decay=0.9, grad_clip=0.5)
        t.kill_at = kill_at
    t.train(EPOCHS - t.epoch, progress=False)
    return t


if __name__ == "__main__":
    mode, ckdir, out = sys.argv[1:4]
    kill_at = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] != "0" else None
    every = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[5] != "0" else None
    gen = sys.argv[6] == "1" if len(sys.argv) > 6 else True
    t = train(mode, ckdir, kill_at, every, gen)
    with open(out + ".json", "w") as f:
        json.dump(dict(step_losses=t.step_losses, losses=t.losses, step=t.step, epoch=t.epoch), f)
    torch.save(dict(model=t.model.state_dict(), ema=t.ema.model.state_dict(),
                    optimizer=t.optimizer.state_dict()["state"]), out + ".pt")
