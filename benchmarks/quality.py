#!/usr/bin/env python
"""Measure a checkpoint's sample quality with chapter 4's protocol and write the table as JSON.

Usage:
  python benchmarks/quality.py CHECKPOINT [--num-samples 10000] [--solver euler] [--steps 50] [--seeds 3]
                               [--out benchmarks/results/quality_<checkpoint name>.json]

Samples `--num-samples` images per seed, compares their evaluator features with the 10k MNIST test
images (FD, KID, precision/recall k=3, density/coverage k=5, class accuracy for conditional models,
memorisation) and writes mean, std, every run and the real-vs-real floor (same number of images).
A benchmark, never run as a test: the full protocol is GPU work.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from from_noise_to_images import __version__
from from_noise_to_images.metrics import add_evaluate_arguments, evaluate_from_args


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint written by Trainer.save_checkpoint")
    add_evaluate_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: benchmarks/results/quality_<name>.json)")
    a = p.parse_args(argv)
    if not a.checkpoint.is_file(): p.error(f"no such checkpoint: {a.checkpoint}")
    a.checkpoint = str(a.checkpoint)
    out = a.out or Path(__file__).resolve().parent / "results" / f"quality_{Path(a.checkpoint).stem}.json"
    res = evaluate_from_args(a)
    res["environment"] = dict(package_version=__version__, torch=torch.__version__, python=platform.python_version(),
                              machine=platform.machine(), cpu_threads=torch.get_num_threads(),
                              gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                              date_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              command=" ".join(["benchmarks/quality.py"] + (argv if argv is not None else sys.argv[1:])))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    m, s, f = res["metrics"], res["std"], res.get("floor", {})
    print(f"{res['model_class']} ({res['num_params']:,} parameters), {res['num_samples']} samples x {len(res['seeds'])} seeds, "
          f"{res['solver']} {res['steps']} steps = {res['nfe']} NFE")
    for k in ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy"):
        if k in m: print(f"  {k:15s} {m[k]:9.4f} ± {s[k]:.4f}" + (f"   (floor {f[k]:.4f})" if k in f else ""))
    if res.get("memorisation"): print("  memorisation (first seed):", {k: round(v, 4) for k, v in res["memorisation"].items()})
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
