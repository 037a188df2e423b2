"The frozen evaluator shipped in the package: pinned bytes, loads safely, and is at least 99% accurate."
import pytest
import torch

from from_noise_to_images.core import mnist_tensors
from from_noise_to_images.metrics import EVALUATOR_PATH, class_accuracy, evaluator_info, load_evaluator, sha256_file

EVALUATOR_SHA256 = "f1d2d0943bc90ebf7114e857a8963f6df07b6c13f46b004acc53f43fc432e56f"


def test_file_is_pinned_small_and_safe():
    assert EVALUATOR_PATH.is_file(), EVALUATOR_PATH
    assert EVALUATOR_PATH.stat().st_size < 2_000_000
    assert sha256_file(EVALUATOR_PATH) == EVALUATOR_SHA256, "the evaluator changed: every metric in the course moves with it"
    ckpt = torch.load(EVALUATOR_PATH, weights_only=True)
    assert set(ckpt) >= {"state_dict", "config", "test_accuracy", "seed"}


def test_accuracy_on_full_test_set():
    x, y = mnist_tensors(train=False)
    acc = class_accuracy(x, y, device="cpu")
    assert acc >= 0.99
    assert acc == pytest.approx(evaluator_info()["test_accuracy"], abs=1e-4)


def test_frozen_and_cached():
    ev = load_evaluator(device="cpu")
    assert ev is load_evaluator(device="cpu") and not ev.training
    assert not any(p.requires_grad for p in ev.parameters())
    assert ev.features(torch.zeros(2, 1, 28, 28)).shape == (2, 128)
