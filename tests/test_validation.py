"Bad inputs raise a clear ValueError/TypeError that says what was wrong and what is expected."
import pytest
import torch

from from_noise_to_images.checkpoint import EMA, CheckpointError, build_model, load_model
from from_noise_to_images.core import DatasetNotFoundError, load_mnist, mnist_loader, seed_everything
from from_noise_to_images.flow import flow_matching_loss
from from_noise_to_images.models import SimpleUNet
from from_noise_to_images.sampling import sample
from from_noise_to_images.train import Trainer, split_batch

NET = SimpleUNet(model_channels=8, time_emb_dim=16)
X = torch.randn(2, 1, 28, 28)


def trainer(**kw): return Trainer(NET, [X], device="cpu", **kw)


def train_on(batches): return Trainer(NET, batches, device="cpu").train(1, progress=False)


CASES = [
    # images
    ("x rank 3", lambda: NET(torch.randn(1, 28, 28), torch.rand(1)), ValueError, "expected images of shape (B, 1, H, W)"),
    ("x 3 channels", lambda: NET(torch.randn(2, 3, 28, 28), torch.rand(2)), ValueError, "got (2, 3, 28, 28)"),
    ("x 27x27", lambda: NET(torch.randn(2, 1, 27, 27), torch.rand(2)), ValueError, "H and W divisible by 4"),
    ("x not a tensor", lambda: NET([[0.0]], torch.rand(1)), TypeError, "x must be a tensor of images (B, 1, H, W), got list"),
    ("x uint8", lambda: NET(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.rand(2)), TypeError, "floating point, scaled to [-1, 1]"),
    # times
    ("t above 1", lambda: NET(X, torch.tensor([0.5, 1.5])), ValueError, "t must lie in [0, 1] (t = 0 is data, t = 1 is noise); got values from 0.5 to 1.5"),
    ("t negative", lambda: NET(X, -0.1), ValueError, "t must lie in [0, 1]"),
    ("t nan", lambda: NET(X, torch.tensor([float("nan"), 0.5])), ValueError, "t must lie in [0, 1]"),
    ("t wrong length", lambda: NET(X, torch.rand(3)), ValueError, "shape (B,) = (2,), one time per image; got shape (3,)"),
    ("t 2-d", lambda: NET(X, torch.rand(2, 2)), ValueError, "got shape (2, 2)"),
    ("t a string", lambda: NET(X, "half"), TypeError, "t must be a number or a tensor of shape (B,) = (2,), got str"),
    ("loss t out of range", lambda: flow_matching_loss(NET, X, t=torch.tensor([2.0, 0.1])), ValueError, "t must lie in [0, 1]"),
    # sampling
    ("num_steps 0", lambda: sample(NET, 2, (1, 28, 28), 0, "cpu"), ValueError, "num_steps must be a positive int, got 0"),
    ("num_steps -3", lambda: sample(NET, 2, (1, 28, 28), -3, "cpu"), ValueError, "num_steps must be a positive int"),
    ("num_samples 0", lambda: sample(NET, 0, (1, 28, 28), 2, "cpu"), ValueError, "num_samples must be a positive int"),
    ("image_shape 2-d", lambda: sample(NET, 2, (28, 28), 2, "cpu"), ValueError, "image_shape must be (C, H, W)"),
    # data
    ("batch is a string", lambda: split_batch("images"), TypeError, "an image tensor (B, C, H, W) or a pair (images, labels); got str"),
    ("loader yields dicts", lambda: train_on([{"image": X}]), TypeError, "or a pair (images, labels); got dict"),
    ("loader yields numbers", lambda: train_on([1, 2]), TypeError, "got int"),
    ("loader yields uint8", lambda: train_on([torch.zeros(2, 1, 28, 28, dtype=torch.uint8)]), TypeError, "convert with ToTensor and Normalize"),
    ("loader yields nothing", lambda: train_on([]), ValueError, "the dataloader yielded no batches"),
    ("loader not iterable", lambda: Trainer(NET, 42, device="cpu"), TypeError, "dataloader must be an iterable of batches"),
    ("missing data dir", lambda: load_mnist(data_dir="/nonexistent/fnti-mnist", download=False), DatasetNotFoundError,
     "MNIST not found: looked for train-images-idx3-ubyte"),
    ("subset too large", lambda: mnist_loader(subset=10**7), ValueError, "subset must be between 1 and 60000"),
    ("batch_size 0", lambda: mnist_loader(batch_size=0, subset=8), ValueError, "batch_size must be >= 1"),
    # trainer options
    ("model not a module", lambda: Trainer("unet", [X], device="cpu"), TypeError, "model must be a torch.nn.Module, got str"),
    ("lr 0", lambda: trainer(lr=0), ValueError, "lr must be a positive number, got 0"),
    ("lr nan", lambda: trainer(lr=float("nan")), ValueError, "lr must be a positive number"),
    ("weight_decay negative", lambda: trainer(weight_decay=-1), ValueError, "weight_decay must be a non-negative number"),
    ("ema_decay 1", lambda: trainer(ema_decay=1.0), ValueError, "ema_decay must be None (no EMA) or a number in (0, 1)"),
    ("EMA decay 0", lambda: EMA(NET, 0), ValueError, "ema_decay must be a number in (0, 1)"),
    ("grad_clip 0", lambda: trainer(grad_clip=0), ValueError, "grad_clip must be a positive number, got 0"),
    ("warmup_steps negative", lambda: trainer(warmup_steps=-1), ValueError, "warmup_steps must be a non-negative int (0: no warmup), got -1"),
    ("warmup_steps float", lambda: trainer(warmup_steps=2.5), ValueError, "warmup_steps must be a non-negative int"),
    ("checkpoint_every 0", lambda: trainer(checkpoint_dir="x", checkpoint_every=0), ValueError, "checkpoint_every must be a positive int or None"),
    ("checkpoint_every without dir", lambda: trainer(checkpoint_every=5), ValueError, "checkpoint_every needs checkpoint_dir"),
    ("keep_last 0", lambda: trainer(keep_last=0), ValueError, "keep_last must be a positive int, got 0"),
    ("run_config object", lambda: trainer(run_config={"f": object()}), TypeError, "run_config may hold only numbers, strings"),
    ("num_epochs 0", lambda: trainer().train(0), ValueError, "num_epochs must be a positive int, got 0"),
    ("num_epochs float", lambda: trainer().train(1.5), ValueError, "num_epochs must be a positive int, got 1.5"),
    ("seed a string", lambda: seed_everything("0"), TypeError, "seed must be an int, got str"),
    # models and checkpoints
    ("unknown model class", lambda: build_model("GAN"), ValueError, "unknown model class 'GAN': known classes are"),
    ("unet channels not /8", lambda: SimpleUNet(model_channels=12), ValueError, "model_channels must be divisible by 8"),
    ("missing checkpoint", lambda: load_model("/nonexistent/model.pt"), CheckpointError, "/nonexistent/model.pt: no such checkpoint file"),
    ("save without path", lambda: trainer().save_checkpoint(), ValueError, "save_checkpoint needs a path, or checkpoint_dir set"),
]


@pytest.mark.parametrize("fn,exc,msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_clear_error(fn, exc, msg):
    with pytest.raises(exc) as e: fn()
    assert msg in str(e.value), str(e.value)


def test_unknown_cli_model_name():
    from from_noise_to_images.cli import build_named_model
    from from_noise_to_images.cli import MODELS
    with pytest.raises(ValueError, match="unknown model 'gan': choose one of ") as e: build_named_model("gan")
    assert all(name in str(e.value) for name in MODELS) and "dit" in MODELS and "unet" in MODELS

