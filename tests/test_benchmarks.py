"""The benchmark scripts are never run as tests (speed is measured in benchmarks/), but a lent GPU's minutes must not be
spent on a typo in them: every script compiles, the GPU session script parses, and the GPU scripts' tables of
configurations and variants are well formed and do what their names say, on a CPU, in a few seconds."""
import importlib
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest

from from_noise_to_images import dit as dit_module
from from_noise_to_images.dit import Attention, DiT

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench(request):
    "Import a benchmark module by name, as the scripts import each other (`benchmarks/` on sys.path)."
    sys.path.insert(0, str(BENCH))
    request.addfinalizer(lambda: sys.path.remove(str(BENCH)))
    return importlib.import_module


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_every_benchmark_compiles(script):
    py_compile.compile(str(BENCH / script), doraise=True)


def test_gpu_session_script_parses():
    subprocess.run(["bash", "-n", str(BENCH / "gpu_session.sh")], check=True)


def test_gpu_step_configurations_are_well_formed(bench):
    gpu_step = bench("gpu_step")
    names = [c[0] for c in gpu_step.CONFIGS]
    assert len(names) == len(set(names))
    for name, compile, amp, opt, regional, graph, attention in gpu_step.CONFIGS:
        assert attention in gpu_step.ATTENTION_VARIANTS and opt in ("trainer", "compiled")
        assert isinstance(amp, bool) and isinstance(graph, bool) and regional in (None, True, False)
        assert compile in (True, False) or compile in ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
        assert ("bf16" in name) == amp and ("explicit" in name) == (attention == "explicit"), name
    assert all(c[5] for c in gpu_step.CONFIGS[:5])   # the decisive ones first: the step graph, both attentions


def test_gpu_step_attention_variants_do_what_they_say(bench):
    gpu_step = bench("gpu_step")
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4)
    pays = dit_module.fused_attention_pays
    with gpu_step.attention(model, "explicit"):
        assert not dit_module.fused_attention_pays("cuda", 49)          # the formula on GPUs too
    assert dit_module.fused_attention_pays is pays                       # and put back
    with gpu_step.attention(model, "bf16"):
        assert not any(m.upcast for m in model.modules() if isinstance(m, Attention))
    assert Attention.upcast                                              # only this model's modules changed
    with pytest.raises(ValueError, match="unknown attention variant"):
        with gpu_step.attention(model, "flash"): pass


def test_gpu_bf16_probe_refuses_unknown_variants(bench):
    probe = bench("gpu_bf16_probe")
    assert probe.VARIANTS[0] == "bf16" and {"bf16_attention_bf16", "fp32"} <= set(probe.VARIANTS)
    r = subprocess.run([sys.executable, str(BENCH / "gpu_bf16_probe.py"), "--variants", "bf16,nope", "--smoke"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown variants ['nope']" in r.stderr
