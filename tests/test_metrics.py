"Metrics: closed forms, and the behaviour the chapter relies on (noise/blur raise FD, dropped classes lower recall, copies are caught)."
import inspect

import pytest
import torch
import torchvision.transforms.functional as TF

from from_noise_to_images.core import mnist_tensors
from from_noise_to_images.metrics import (class_accuracy, density_coverage, evaluate_checkpoint, features,
                                          frechet_distance, generate, kernel_inception_distance, knn_radii, memorisation,
                                          nearest_distances, precision_recall)

N = 1000


@pytest.fixture(scope="module")
def mnist():
    xt, yt = mnist_tensors(train=False)
    x, y = mnist_tensors(train=True, subset=20_000)
    return dict(x_test=xt, y_test=yt, x_train=x, y_train=y, real=features(xt[:2 * N]))


def test_fd_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20_000, 8, generator=g, dtype=torch.float64)
    b = torch.randn(20_000, 8, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # N(0, I) vs N(m, I): |m|^2;  N(0, I) vs N(0, s^2 I): d (1 - s)^2
    assert frechet_distance(a, b + 2.0) == pytest.approx(8 * 4.0, rel=0.02)
    assert frechet_distance(a, 3.0 * b) == pytest.approx(8 * 4.0, rel=0.05)
    mu, cov = torch.zeros(8, dtype=torch.float64), torch.eye(8, dtype=torch.float64)
    assert frechet_distance((mu, cov), (mu + 1, 4 * cov)) == pytest.approx(8 + 8, abs=1e-9)


def test_fd_zero_for_same_set_and_monotone_in_noise_and_blur(mnist):
    real, clean = mnist["real"], mnist["x_test"][2 * N:3 * N]
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(clean.shape, generator=g)
    fd_noise = [frechet_distance(real, features((clean + s * noise).clamp(-1, 1))) for s in (0, 0.1, 0.2, 0.4, 0.8)]
    fd_blur = [frechet_distance(real, features(TF.gaussian_blur(clean, 7, s) if s else clean)) for s in (0, 0.5, 1, 1.5, 2)]
    assert all(a < b for a, b in zip(fd_noise, fd_noise[1:])), fd_noise
    assert all(a < b for a, b in zip(fd_blur, fd_blur[1:])), fd_blur
    assert fd_noise[-1] > 10 * fd_noise[0] and fd_blur[-1] > 10 * fd_blur[0]


def test_kid_near_zero_for_same_distribution(mnist):
    real = mnist["real"]
    same, _ = kernel_inception_distance(real[:N], features(mnist["x_test"][2 * N:3 * N]), num_subsets=20, subset_size=500)
    blurred = features(TF.gaussian_blur(mnist["x_test"][2 * N:3 * N], 7, 2.0))
    far, _ = kernel_inception_distance(real[:N], blurred, num_subsets=20, subset_size=500)
    assert abs(same) < 0.1 * far and far > 0


def test_precision_recall_identical_sets_and_dropped_classes(mnist):
    real = mnist["real"][:N]
    pr = precision_recall(real, real)
    assert pr["precision"] == pytest.approx(1.0) and pr["recall"] == pytest.approx(1.0)
    x, y = mnist["x_train"], mnist["y_train"]
    recalls, precisions = [], []
    for dropped in (0, 3, 6, 9):
        keep = torch.nonzero(y >= dropped).squeeze(1)[:N]
        pr = precision_recall(real, features(x[keep]))
        recalls.append(pr["recall"]); precisions.append(pr["precision"])
    assert all(a > b for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[0] > 0.8 and recalls[-1] < 0.4 and min(precisions) > 0.8, (recalls, precisions)


def test_density_coverage(mnist):
    # Identical sets: ball j (radius: distance to its k-th nearest other point) holds its own centre and its k
    # nearest neighbours, so with no ties the counts sum to N (k + 1) and density is exactly (k + 1) / k.
    k = inspect.signature(density_coverage).parameters["k"].default
    pts = torch.randn(200, 16, generator=torch.Generator().manual_seed(0))
    d = torch.cdist(pts.double(), pts.double()).fill_diagonal_(float("inf")).sort(1).values
    assert (d[:, k] - d[:, k - 1]).min() > 1e-4   # no ties at the k-th neighbour, not even within float32 error
    synth = density_coverage(pts, pts)
    assert synth["density"] == pytest.approx((k + 1) / k, rel=1e-6) and synth["coverage"] == 1.0
    real = mnist["real"][:N]
    dc = density_coverage(real, real)
    # the same on real features, up to a couple of float32 distance ties among N points (each adds 1 / (k N))
    assert dc["coverage"] == pytest.approx(1.0) and dc["density"] == pytest.approx((k + 1) / k, abs=2 / (k * N))
    blurred = density_coverage(real, features(TF.gaussian_blur(mnist["x_test"][2 * N:3 * N], 7, 2.0)))
    assert blurred["density"] < 0.5 * dc["density"]


def test_knn_and_nearest_distances():
    pts = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(pts, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(pts, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    assert nearest_distances(torch.tensor([[0.5], [6.0]]), pts).tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="more than k"):
        knn_radii(pts, 4)


def test_memorisation_flags_copies(mnist):
    x_train, x_test = mnist["x_train"], mnist["x_test"]
    copies = x_train[:200] + 0.01 * torch.randn(200, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    honest = memorisation(x_test[200:400], x_train, x_test[:200])
    copier = memorisation(copies, x_train, x_test[:200])
    assert honest["copy_fraction"] < 0.1 and 0.7 < honest["nn_ratio"] < 1.4
    assert copier["copy_fraction"] == 1.0 and copier["nn_ratio"] < 0.1


def test_memorisation_rejects_empty_sets(mnist):
    x = mnist["x_test"]
    with pytest.raises(ValueError, match="no samples"):
        memorisation(x[:0])
    with pytest.raises(ValueError, match="test_images is empty"):
        memorisation(x[:5], mnist["x_train"], x[10_000:])
    with pytest.raises(ValueError, match="train_images is empty"):
        memorisation(x[:5], x[:0], x[:5])


def test_nfe_is_mean_over_batches_and_seeds(mnist):
    "Adaptive solvers spend a different NFE per batch (and seed): report the per-image mean, not the last batch's."
    x_test = mnist["x_test"]
    def fake_sample(model, n, shape, steps, device, seed=0, **kw):
        return x_test[:n], 10 + n + 2 * (seed // 100_003)     # NFE depends on the batch size and on the seed
    _, _, nfe = generate(torch.nn.Identity(), 1200, batch_size=500, sample_fn=fake_sample)
    assert nfe == pytest.approx((1000 * 510 + 200 * 210) / 1200)
    res = evaluate_checkpoint(torch.nn.Identity(), num_samples=30, num_seeds=2, batch_size=20, device="cpu",
                              floor=False, memorise=False, kid_subsets=2, sample_fn=fake_sample)
    per_seed = [(20 * (30 + 2 * s) + 10 * (20 + 2 * s)) / 30 for s in (0, 1)]
    assert res["nfe"] == pytest.approx(sum(per_seed) / 2)
    _, _, nfe = generate(torch.nn.Identity(), 30, batch_size=20, sample_fn=lambda m, n, *a, **kw: (x_test[:n], 8))
    assert nfe == 8 and type(nfe) is int


def test_class_accuracy(mnist):
    xt, yt = mnist["x_test"][:N], mnist["y_test"][:N]
    assert class_accuracy(xt, yt) > 0.98
    assert class_accuracy(xt, (yt + 1) % 10) < 0.02
    with pytest.raises(ValueError, match="labels"):
        class_accuracy(xt, yt[:-1])
