"""tools/colab_cells.py: every chapter opens in Colab, installs the package there, and warns on a CPU runtime."""
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import types
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "colab_cells.py"
spec = importlib.util.spec_from_file_location("colab_cells", SCRIPT)
cc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cc)


def test_notebooks_have_colab_cells():
    "Fails until `python tools/colab_cells.py` has been run (and its result committed) after adding a chapter."
    r = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_insert_is_idempotent(tmp_path):
    for nb in cc.chapters(ROOT / "nbs")[:2]: shutil.copy(nb, tmp_path / nb.name)
    shutil.copy(ROOT / "nbs" / cc.chapters(ROOT / "nbs")[0].name, tmp_path / "index.ipynb")
    run = lambda *a: subprocess.run([sys.executable, str(SCRIPT), "--nbs", str(tmp_path), *a], capture_output=True, text=True)
    before = (tmp_path / "index.ipynb").read_text()
    assert run().returncode == 0
    assert run("--check").returncode == 0
    first = {p.name: p.read_text() for p in tmp_path.glob("*.ipynb")}
    assert run().stdout == ""  # nothing left to write
    assert first == {p.name: p.read_text() for p in tmp_path.glob("*.ipynb")}
    assert (tmp_path / "index.ipynb").read_text() == before  # the landing page is not a chapter
    name = cc.chapters(tmp_path)[0].name
    nb = json.loads((tmp_path / name).read_text())
    badge, setup = ("".join(c["source"]) for c in nb["cells"][:2])
    assert f"https://colab.research.google.com/github/from-noise-to-images/from-noise-to-images/blob/main/nbs/{name})" in badge
    assert '"git+https://github.com/from-noise-to-images/from-noise-to-images@main", "fastcore"' in setup   # the badge's branch
    assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["colab"]["gpuType"] == "T4"
    assert sum(cc.is_setup(c) for c in nb["cells"]) == 1 and sum(cc.is_badge(c) for c in nb["cells"]) == 1
    # a stale cell (say, an old pinned version) is reported, then replaced
    nb["cells"][1]["source"] = [s.replace("@main", "@v0.0.0-old") for s in nb["cells"][1]["source"]]
    (tmp_path / name).write_text(json.dumps(nb))
    r = run("--check")
    assert r.returncode == 1 and name in r.stdout
    assert run().returncode == 0 and run("--check").returncode == 0


def _exec_setup(monkeypatch, in_colab: bool, gpu: bool):
    calls = []
    if in_colab: monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else: monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    fake_torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: gpu, get_device_name=lambda i: "Tesla T4"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    out = io.StringIO()
    with redirect_stdout(out): exec(cc.setup_source(cc.settings(), "v9.9.9"), {})
    return calls, out.getvalue()


def test_setup_cell_outside_colab_does_nothing(monkeypatch):
    calls, out = _exec_setup(monkeypatch, in_colab=False, gpu=False)
    assert calls == [] and out == ""


def test_setup_cell_in_colab(monkeypatch):
    calls, out = _exec_setup(monkeypatch, in_colab=True, gpu=False)
    assert calls and calls[0][-2:] == ["git+https://github.com/from-noise-to-images/from-noise-to-images@v9.9.9", "fastcore"]
    assert "WARNING" in out and "no GPU" in out and "T4 GPU" in out
    calls, out = _exec_setup(monkeypatch, in_colab=True, gpu=True)
    assert "WARNING" not in out and "Tesla T4" in out
