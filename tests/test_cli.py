"The fnti command line end to end: train, resume, sample; exit code 2 with the usage line on bad flags."
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from from_noise_to_images.cli import build_parser, main
from from_noise_to_images.core import has_local_mnist, resolve_data_dir

needs_mnist = pytest.mark.skipif(not has_local_mnist(resolve_data_dir()), reason="no local MNIST copy ($FNTI_DATA_DIR)")
TINY = ["--model", "unet-small", "--subset", "96", "--batch-size", "32", "--num-samples", "4", "--steps", "2",
        "--device", "cpu", "--no-progress"]


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "from_noise_to_images.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180)


@needs_mnist
def test_python_m_cli_train_then_sample(tmp_path, env):
    out = tmp_path / "run"
    r = cli(env, "train", *TINY, "--checkpoint-every", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    for name in ("model.pt", "samples.png", "losses.json", "checkpoints"): assert name in summary
    rec = json.loads((out / "losses.json").read_text())
    assert len(rec["step_losses"]) == 3 and rec["sampled_with"] == "ema"
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step_00000002.pt", "step_00000003.pt"]
    r = cli(env, "sample", out, "--num-samples", "6", "--nrow", "3", "--steps", "2", "--seed", "1",
            "--out", tmp_path / "grid.png", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "ema weights of SimpleUNet" in r.stdout and str(tmp_path / "grid.png") in r.stdout
    w, h = Image.open(tmp_path / "grid.png").size
    assert (w, h) == (3 * 30 + 2, 2 * 30 + 2)     # 3 columns, 2 rows of 28 px with 2 px padding


@needs_mnist
def test_cli_resume_matches_uninterrupted_run(tmp_path, capsys):
    assert main(["train", *TINY, "--epochs", "2", "--checkpoint-every", "2", "--out", str(tmp_path / "full")]) == 0
    assert main(["train", *TINY, "--epochs", "1", "--checkpoint-every", "2", "--out", str(tmp_path / "part")]) == 0
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "2", "--num-samples", "4", "--steps", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "Resumed from" in capsys.readouterr().out
    full = json.loads((tmp_path / "full" / "losses.json").read_text())
    part = json.loads((tmp_path / "part" / "losses.json").read_text())
    assert len(full["step_losses"]) == 6 and part["step_losses"] == full["step_losses"]
    assert part["epoch_losses"] == full["epoch_losses"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    for k, v in a["ema_state_dict"]["model_state_dict"].items(): assert torch.equal(v, b["ema_state_dict"]["model_state_dict"][k])
    # a finished run asked for no more epochs: nothing to train, still a summary
    assert main(["train", "--resume", str(tmp_path / "part"), "--epochs", "2", "--num-samples", "4", "--steps", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "Already trained for 2 epoch(s)" in capsys.readouterr().out



@needs_mnist
def test_cli_resume_takes_new_checkpoint_settings(tmp_path):
    "--keep-last and --checkpoint-every apply to a resumed run; without them it keeps the run's own."
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--checkpoint-every", "1", "--keep-last", "2", "--out", str(out)]) == 0
    names = lambda: [p.name for p in sorted((out / "checkpoints").iterdir())]
    assert names() == ["step_00000002.pt", "step_00000003.pt"]
    resume = ["train", "--resume", str(out), "--num-samples", "4", "--steps", "2", "--device", "cpu", "--no-progress"]
    assert main([*resume, "--epochs", "2"]) == 0                        # the run's own keep_last: 2
    assert names() == ["step_00000005.pt", "step_00000006.pt"]
    assert main([*resume, "--epochs", "3", "--keep-last", "4"]) == 0    # 3 more steps, 4 kept
    assert names() == [f"step_{s:08d}.pt" for s in (6, 7, 8, 9)]


@needs_mnist
def test_warmup_steps_reach_the_trainer_and_stay_with_a_resumed_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--warmup-steps", "5", "--checkpoint-every", "2", "--out", str(out)]) == 0
    first = torch.load(out / "checkpoints" / "step_00000002.pt", weights_only=True)
    assert first["train_config"]["warmup_steps"] == 5 and first["train_config"]["run"]["warmup_steps"] == 5
    assert first["optimizer_state_dict"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * 2 / 5)   # --lr's default, 2/5 of it
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "2", "--warmup-steps", "1", "--num-samples", "4", "--steps", "2",
                 "--device", "cpu", "--no-progress"]) == 0
    assert "ignoring --warmup-steps" in capsys.readouterr().out
    last = torch.load(out / "model.pt", weights_only=True)
    assert last["train_config"]["warmup_steps"] == 5 and last["step"] == 6
    assert last["optimizer_state_dict"]["param_groups"][0]["lr"] == pytest.approx(1e-3)              # warmed up by step 5

BAD_FLAGS = [
    (["train", "--epochs", "0"], "argument --epochs: expected a positive integer, got 0"),
    (["train", "--epochs", "ten"], "expected a positive integer, got 'ten'"),
    (["train", "--model", "gan"], "argument --model: invalid choice: 'gan'"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["train", "--lr", "-1"], "argument --lr: expected a positive number"),
    (["train", "--ema-decay", "1"], "argument --ema-decay: expected a number in [0, 1)"),
    (["train", "--grad-clip", "0"], "argument --grad-clip: expected a positive number, got 0.0"),
    (["train", "--warmup-steps", "-1"], "argument --warmup-steps: expected an integer >= 0, got -1"),
    (["train", "--checkpoint-every", "0"], "argument --checkpoint-every: expected a positive integer"),
    (["train", "--keep-last", "-2"], "argument --keep-last: expected a positive integer"),
    (["train", "--subset", "-5"], "argument --subset: expected an integer >= 0"),
    (["train", "--resume"], "argument --resume: expected one argument"),
    (["sample"], "the following arguments are required: checkpoint"),
    (["sample", "x.pt", "--steps", "0"], "argument --steps: expected a positive integer, got 0"),
    (["sample", "x.pt", "--num-samples", "-1"], "argument --num-samples: expected a positive integer"),
    (["evaluate"], "the following arguments are required: checkpoint"),
    (["train", "--device", "foo"], "argument --device: expected a device such as cpu, cuda, cuda:1 or mps, got 'foo'"),
    (["sample", "x.pt", "--device", "cuda:x"], "argument --device: expected a device such as cpu, cuda, cuda:1 or mps"),
    (["evaluate", "x.pt", "--device", "meta"], "argument --device: expected a device such as cpu, cuda, cuda:1 or mps"),
    ([], "the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize("argv,msg", BAD_FLAGS, ids=[" ".join(a) or "nothing" for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_with_usage(argv, msg, capsys):
    with pytest.raises(SystemExit) as e: main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fnti") and msg in err, err


def test_device_this_machine_lacks_exits_2_with_usage(monkeypatch, capsys):
    "--device is checked against the machine when the flags are parsed, not deep in the Trainer or load_model."
    def refused(argv):
        with pytest.raises(SystemExit) as e: main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: fnti") and "argument --device: got" in err, err
        return err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for cmd in (["train"], ["sample", "x.pt"], ["evaluate", "x.pt"]):
        err = refused([*cmd, "--device", "cuda"])
        assert "this machine has no CUDA GPU: use --device cpu, or leave --device out" in err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "has 2 CUDA GPU(s), so the highest is cuda:1" in refused(["sample", "x.pt", "--device", "cuda:2"])
    assert build_parser().parse_args(["sample", "x.pt", "--device", "cuda:1"]).device == "cuda:1"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert "no MPS (Apple GPU) backend: use --device cpu" in refused(["train", "--device", "mps"])
    for cmd in (["train"], ["sample", "x.pt"], ["evaluate", "x.pt"]):   # cpu always; no --device: None, get_device()
        assert build_parser().parse_args([*cmd, "--device", "cpu"]).device == "cpu"
        assert build_parser().parse_args(cmd).device is None


def test_bad_flag_exit_code_from_the_shell(env):
    r = cli(env, "train", "--epochs", "0")
    assert r.returncode == 2 and r.stderr.startswith("usage: fnti train") and "expected a positive integer" in r.stderr


@needs_mnist
def test_train_speed_flags_reach_the_trainer(tmp_path, monkeypatch, capsys):
    import from_noise_to_images.cli as cli_mod
    made = []
    class Spy(cli_mod.Trainer):
        def __init__(self, *args, **kw): super().__init__(*args, **kw); made.append(self)
        def train(self, *args, **kw): return []   # the flags are what is tested, not a (bf16, 30x slower here) run
    monkeypatch.setattr(cli_mod, "Trainer", Spy)
    assert main(["train", *TINY, "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *TINY, "--compile", "--amp", "--out", str(tmp_path / "b")]) == 0
    assert [(t.compile_mode, t.amp) for t in made] == [(None, False), ("default", True)]   # "default": no CUDA graphs on a CPU
    capsys.readouterr()
    assert main(["train", *TINY, "--cuda-graph", "--out", str(tmp_path / "c")]) == 1   # one CUDA graph per step: GPUs only
    assert "leave cuda_graph off" in capsys.readouterr().err
    settings = json.loads((tmp_path / "b" / "losses.json").read_text())["settings"]
    assert settings["compile"] is True and settings["amp"] is True
    record = json.loads((tmp_path / "a" / "losses.json").read_text())
    assert record["settings"]["amp"] is None and record["amp"] is False    # not asked: the Trainer's choice, fp32 on a CPU
    assert main(["train", *TINY, "--no-amp", "--out", str(tmp_path / "d")]) == 0
    assert made[-1].amp is False


def test_help_for_each_command(capsys):
    for argv in (["--help"], ["train", "--help"], ["sample", "--help"], ["evaluate", "--help"]):
        with pytest.raises(SystemExit) as e: main(argv)
        assert e.value.code == 0 and "usage: fnti" in capsys.readouterr().out


def test_bad_checkpoint_or_data_dir_exit_1_with_one_line(tmp_path, capsys):
    (tmp_path / "x.pt").write_text("not a checkpoint")
    assert main(["sample", str(tmp_path / "x.pt"), "--no-progress", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"fnti sample: error: {tmp_path / 'x.pt'}: not a readable checkpoint") and err.count("\n") == 1
    assert main(["sample", str(tmp_path / "empty"), "--no-progress", "--device", "cpu"]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing-here"), "--device", "cpu"]) == 1
    assert "fnti train: error:" in capsys.readouterr().err


def test_fresh_train_into_a_used_folder_is_refused(tmp_path, capsys):
    (tmp_path / "checkpoints").mkdir(); (tmp_path / "checkpoints" / "step_00000005.pt").write_bytes(b"x")
    assert main(["train", "--out", str(tmp_path), "--device", "cpu"]) == 1
    assert f"fnti train --resume {tmp_path}" in capsys.readouterr().err


@needs_mnist
def test_evaluate_prints_metrics_json_and_sample_takes_a_solver(tmp_path, env):
    out = tmp_path / "run"
    assert cli(env, "train", *TINY, "--out", out).returncode == 0
    r = cli(env, "evaluate", out / "model.pt", "--num-samples", "64", "--steps", "2", "--no-floor", "--no-memorisation",
            "--device", "cpu", "--out", tmp_path / "metrics.json")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(r.stdout) == metrics
    m = metrics["metrics"]
    assert {"fd", "kid", "precision", "recall", "density", "coverage"} <= set(m) and metrics["num_samples"] == 64
    assert all(np.isfinite(m[k]) for k in m) and m["fd"] > 0 and 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1
    r = cli(env, "sample", out / "model.pt", "--num-samples", "4", "--steps", "3", "--solver", "heun",
            "--out", tmp_path / "heun.png", "--device", "cpu", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "heun with 6 model evaluations" in r.stdout
    # --compile (fast.compile_model): the same images, and the same metrics. Both sample batches of 64, so the second
    # command finds the first one's compiled kernels in Inductor's cache
    for flags in ([], ["--compile"]):
        r = cli(env, "sample", out / "model.pt", "--num-samples", "64", "--steps", "2", *flags,
                "--out", tmp_path / f"grid{len(flags)}.png", "--device", "cpu", "--no-progress")
        assert r.returncode == 0, r.stderr
    assert "(compiling included)" in r.stdout
    plain, compiled = (np.asarray(Image.open(tmp_path / f"grid{i}.png"), dtype=int) for i in (0, 1))
    assert np.abs(plain - compiled).max() <= 1   # 8-bit pixels: one rounding step apart at most
    r = cli(env, "evaluate", out / "model.pt", "--num-samples", "64", "--steps", "2", "--no-floor", "--no-memorisation",
            "--device", "cpu", "--compile")
    assert r.returncode == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["compiled"] is True and metrics["compiled"] is False and again["model_class"] == "SimpleUNet"
    for k, v in metrics["metrics"].items(): assert again["metrics"][k] == pytest.approx(v, rel=1e-3, abs=1e-6), k
    for flags in (["--label", "7"], ["--cfg-scale", "2"]):   # unconditional checkpoint: the CLI's words, not sample()'s
        r = cli(env, "sample", out / "model.pt", *flags, "--out", tmp_path / "x.png", "--device", "cpu")
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "(SimpleUNet) is unconditional: --label and --cfg-scale need a class-conditional model" in r.stderr
        assert "fnti train --model dit-cfg" in r.stderr and "class_labels" not in r.stderr


@needs_mnist
def test_class_conditional_dit_trains_and_samples_a_requested_digit(tmp_path, env):
    out = tmp_path / "cfg"
    r = cli(env, "train", "--model", "dit-cfg", "--subset", "64", "--batch-size", "32", "--num-samples", "4",
            "--steps", "2", "--device", "cpu", "--no-progress", "--out", out)
    assert r.returncode == 0, r.stderr
    assert torch.load(out / "model.pt", weights_only=True)["model_config"]["num_classes"] == 10
    def grid(label, cfg_scale):   # the same seed, so the same starting noise
        png = tmp_path / f"{label}_w{cfg_scale}.png"
        r = cli(env, "sample", out / "model.pt", "--label", label, "--cfg-scale", cfg_scale, "--num-samples", "4",
                "--steps", "2", "--seed", "5", "--out", png, "--device", "cpu", "--no-progress")
        assert r.returncode == 0, r.stderr
        return np.asarray(Image.open(png), dtype=int)
    sevens = grid(7, 3)
    assert sevens.shape[:2] == (30 + 2, 4 * 30 + 2)
    assert np.abs(grid(3, 3) - sevens).max() > 1    # the label steers the model (by more than 8-bit rounding)
    assert np.array_equal(grid(3, 0), grid(7, 0))   # guidance off: the unconditional field, whatever the label
