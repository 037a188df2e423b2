"""The benchmark scripts are never run as tests (speed is measured in benchmarks/), but a lent GPU's minutes must not be
spent on a typo in them: every script compiles, the GPU session script parses, and the GPU scripts' tables of
configurations and variants are well formed and do what their names say, on a CPU, in a few seconds."""
import importlib
import py_compile
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
        assert attention in bench("common").ATTENTION_VARIANTS and opt in ("trainer", "compiled")
        assert isinstance(amp, bool) and isinstance(graph, bool) and regional in (None, True, False)
        assert compile in (True, False) or compile in ("default", "reduce-overhead", "max-autotune-no-cudagraphs")
        assert ("bf16" in name) == amp and ("explicit" in name) == (attention == "explicit"), name
    assert all(c[5] for c in gpu_step.CONFIGS[:5])   # the decisive ones first: the step graph, both attentions


def test_gpu_step_picks_configurations_by_name(bench):
    "`--only` for a short GPU call (e.g. the attention pairs on 196 tokens): table order kept, a typo refused by name."
    gpu_step = bench("gpu_step")
    assert set(gpu_step.ATTENTION_PAIRS) <= {c[0] for c in gpu_step.CONFIGS}
    picked = gpu_step.pick_configs(gpu_step.CONFIGS, ",".join(reversed(gpu_step.ATTENTION_PAIRS)))
    assert [c[0] for c in picked] == list(gpu_step.ATTENTION_PAIRS)                 # the table's order, not the flag's
    assert {c[6] for c in picked} == {"sdpa", "explicit"} and {c[2] for c in picked} == {False, True}
    assert gpu_step.pick_configs(gpu_step.CONFIGS, None) == gpu_step.CONFIGS
    with pytest.raises(SystemExit, match=r"unknown configurations \['eager_fp16'\]"):
        gpu_step.pick_configs(gpu_step.CONFIGS, "eager_fp32,eager_fp16")
    assert gpu_step.step_file_name(4) == "gpu_step.json" and gpu_step.step_file_name(2) == "gpu_step_patch2.json"
    model = bench("common").seed_dit(patch_size=2)
    assert model.patch_embed(torch.zeros(1, 1, 28, 28)).shape == (1, 196, 256)
    assert sum(p.numel() for p in model.parameters()) == 12_351_760 - (16 - 4) * 256 - (16 - 4) * 257   # patch in, patch out


def test_attention_variants_do_what_they_say(bench):
    common = bench("common")   # gpu_step.py and gpu_recipe.py run them
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=4)
    pays = dit_module.fused_attention_pays
    with common.attention(model, "explicit"):
        assert not dit_module.fused_attention_pays("cuda", 49)          # the formula uncompiled on GPUs too
    assert dit_module.fused_attention_pays is pays                       # and put back
    with common.attention(model, "sdpa"):
        assert dit_module.fused_attention_pays("cpu", 49)               # the kernel even where the package would not
    with common.attention(model, "bf16"):
        assert dit_module.fused_attention_pays("cpu", 49)
        assert not any(m.upcast for m in model.modules() if isinstance(m, Attention))
    assert Attention.upcast                                              # only this model's modules changed
    with pytest.raises(ValueError, match="unknown attention variant"):
        with common.attention(model, "flash"): pass


def test_gpu_bf16_probe_refuses_unknown_variants(bench):
    probe = bench("gpu_bf16_probe")
    assert probe.VARIANTS[0] == "bf16" and {"bf16_attention_bf16", "fp32"} <= set(probe.VARIANTS)
    r = subprocess.run([sys.executable, str(BENCH / "gpu_bf16_probe.py"), "--variants", "bf16,nope", "--smoke"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown variants ['nope']" in r.stderr


def test_timed_train_says_where_the_time_went(bench):
    "gpu_recipe.py's timeline: the first steps one by one, each epoch's end, and the trainer left as it was."
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from from_noise_to_images.train import Trainer
    common = bench("common")
    torch.manual_seed(0)
    data = TensorDataset(torch.rand(64, 1, 8, 8) * 2 - 1, torch.zeros(64, dtype=torch.long))
    trainer = Trainer(DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=1, num_heads=2),
                      DataLoader(data, batch_size=16), lr=1e-3, device="cpu")
    losses, timeline, printed = common.timed_train(trainer, 2, first_steps=3)
    assert len(losses) == 2 and trainer.step == 8 and "Epoch 2: avg_loss" in printed
    steps, ends = timeline["first_step_ends_s"], timeline["epoch_ends_s"]
    assert len(steps) == 3 and steps == sorted(steps) and steps[-1] <= ends[0]   # only the first 3 steps were waited for
    assert len(ends) == 2 and ends[0] < ends[1]
    assert sum(timeline["epoch_s"]) == pytest.approx(ends[-1])
    assert timeline["first_epoch_extra_s"] == pytest.approx(timeline["epoch_s"][0] - timeline["epoch_s"][1])
    assert "train_step" not in vars(trainer)                                      # the method is back


def test_gpu_bf16_probe_runs_the_class_conditional_recipe(bench):
    import torch
    probe = bench("gpu_bf16_probe")
    assert probe.probe_file_name() == "gpu_bf16_probe.json"
    assert probe.probe_file_name(1) == "gpu_bf16_probe_seed1.json"
    assert probe.probe_file_name(1, 10) == "gpu_bf16_probe_classes10_seed1.json"
    torch.manual_seed(0)
    model = DiT(img_size=8, patch_size=4, in_channels=1, embed_dim=32, depth=2, num_heads=2, num_classes=10)
    x0, t, x1 = torch.randn(6, 1, 8, 8), torch.rand(6), torch.randn(6, 1, 8, 8)
    with_labels = probe.probe(model, x0, t, x1, torch.device("cpu"), False, y=torch.arange(6))
    unconditional = probe.probe(model, x0, t, x1, torch.device("cpu"), False)   # null labels
    assert len(with_labels["blocks"]) == 2 and model.training
    assert with_labels["probe_loss"] != unconditional["probe_loss"]              # the labels reached the model
