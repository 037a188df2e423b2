import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    "The MNIST copy tests use: $FNTI_DATA_DIR, else ../shared/data beside the checkout."
    for d in (os.environ.get("FNTI_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(): return Path(d)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if d is None: pytest.fail("MNIST not found: set FNTI_DATA_DIR to a folder holding MNIST/raw/ (CI uses ../shared/data)")
    return d


@pytest.fixture(autouse=True)
def _mnist_env(monkeypatch):
    d = shared_data()
    if d is not None: monkeypatch.setenv("FNTI_DATA_DIR", str(d))
