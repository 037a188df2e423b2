"""Does glibc's memory handling cost an eager CPU training step? glibc hands large freed blocks (the DiT's 25 MB
activations) back to the system and maps them again, so every step page-faults on fresh memory. This times eager
`Trainer` steps of the seed DiT (batch 128) in fresh processes, alternating between glibc's defaults and its mmap and
trim thresholds raised through `GLIBC_TUNABLES` (which only a process's launcher can set), and records each one's
milliseconds per step (median), minor page faults and system time per step. Linux with glibc only.
Writes benchmarks/results/cpu_page_faults.json.

    python benchmarks/cpu_page_faults.py [--pairs 3] [--steps 8]
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import load_average, median, write_json

TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"
CHILD = r"""
import json, resource, statistics, sys, time, torch
from common import seed_dit
from from_noise_to_images.train import Trainer
torch.manual_seed(0)
x = torch.randn(128, 1, 28, 28)
trainer = Trainer(seed_dit(), [(x, torch.zeros(128, dtype=torch.long))], device="cpu")
for _ in range(3): trainer.train_step((x, None))
steps, r0, ms = int(sys.argv[1]), resource.getrusage(resource.RUSAGE_SELF), []
for _ in range(steps):
    t0 = time.perf_counter(); trainer.train_step((x, None)); ms.append((time.perf_counter() - t0) * 1e3)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps(dict(ms_per_step=ms, median_ms=statistics.median(ms), minor_faults_per_step=(r1.ru_minflt - r0.ru_minflt) / steps,
                      system_s_per_step=(r1.ru_stime - r0.ru_stime) / steps, user_s_per_step=(r1.ru_utime - r0.ru_utime) / steps)))
"""


def run(steps: int, tunables: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])]))
    if tunables: env["GLIBC_TUNABLES"] = TUNABLES
    else: env.pop("GLIBC_TUNABLES", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(steps)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--steps", type=int, default=8)
    a = p.parse_args()
    if not sys.platform.startswith("linux"): sys.exit("cpu_page_faults.py measures glibc's allocator: Linux only")
    load_start = load_average()
    runs = {"glibc_defaults": [], "thresholds_raised": []}
    for i in range(a.pairs):   # alternating order: the machine's drift favours neither
        for name in (("glibc_defaults", "thresholds_raised") if i % 2 == 0 else ("thresholds_raised", "glibc_defaults")):
            runs[name].append(run(a.steps, name == "thresholds_raised"))
            r = runs[name][-1]
            print(f"{name}: {r['median_ms']:.0f} ms a step, {r['minor_faults_per_step']:.0f} minor faults, "
                  f"{r['system_s_per_step'] * 1e3:.1f} ms system time", flush=True)
    summary = {n: dict(median_ms=median([r["median_ms"] for r in rs]),
                       minor_faults_per_step=median([r["minor_faults_per_step"] for r in rs]),
                       system_ms_per_step=median([r["system_s_per_step"] * 1e3 for r in rs])) for n, rs in runs.items()}
    record = dict(benchmark="cpu_page_faults", device="cpu", what="eager Trainer steps of the seed DiT, batch 128, "
                  "each set in a fresh process", glibc_tunables=TUNABLES, pairs=a.pairs, steps=a.steps, runs=runs,
                  summary=summary, speedup_paired_median=median([d["median_ms"] / t["median_ms"]
                                                                for d, t in zip(runs["glibc_defaults"], runs["thresholds_raised"])]),
                  load_average_start=load_start, load_average_end=load_average())
    print(json.dumps(summary, indent=1), f"\npaired speed-up with the thresholds raised: {record['speedup_paired_median']:.3f}x")
    write_json("cpu_page_faults", record)


if __name__ == "__main__": main()
