"Shared setup: import the package from this checkout, find MNIST, keep torch to one thread."
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
if not os.environ.get("FNTI_DATA_DIR") and (ROOT.parent / "shared" / "data" / "MNIST" / "raw").is_dir():
    os.environ["FNTI_DATA_DIR"] = str(ROOT.parent / "shared" / "data")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_data() -> Path | None:
    "The MNIST copy tests use: $FNTI_DATA_DIR when it holds MNIST/raw."
    d = os.environ.get("FNTI_DATA_DIR")
    if d and (Path(d) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file(): return Path(d)
    return None


def subprocess_env() -> dict:
    "The environment for `python` subprocesses: this checkout first on the path, one thread."
    env = dict(os.environ, PYTHONHASHSEED="0")   # same OMP_NUM_THREADS as this process: same kernels, same bits
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


@pytest.fixture
def env(): return subprocess_env()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data()
    if d is None: pytest.fail("MNIST not found: set FNTI_DATA_DIR to a folder holding MNIST/raw/ (CI uses ../shared/data)")
    return d


@pytest.fixture(autouse=True)
def _mnist_env(monkeypatch):
    d = shared_data()
    if d is not None: monkeypatch.setenv("FNTI_DATA_DIR", str(d))
