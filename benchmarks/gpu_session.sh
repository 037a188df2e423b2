#!/usr/bin/env bash
# Every GPU check of the project in one run that fits a 10-minute command (its timeouts add up to 560 s; about
# 7 minutes on an H200), most decisive first, so that a lease cut short still settles what matters most:
#   1. the CUDA-only tests (the step recorded as a CUDA graph trains like the plain step, and records again after a resume),
#   2. benchmarks/gpu_bf16_probe.py: 30 epochs in bf16 as the package runs it (residual stream fp32), then with the
#      stream in bf16 as in the runs that collapsed (about 2 minutes),
#   3. benchmarks/gpu_recipe.py: the seed's 30-epoch recipe end to end as `compile=True` runs it (the step graph with
#      compiled blocks; in bf16 if step 2's package variant did not collapse, else fp32), the naive loop for about 30 s,
#      host syncs, sampling; not the phases measured before (compile's own CUDA graphs, the uncompiled step graph);
#      the graph phases only if step 1 passed,
#   4. benchmarks/gpu_step.py: where the compiled step's GPU time goes, then milliseconds per step of each way of
#      running it, for what time is left.
# Usage: benchmarks/gpu_session.sh OUT [MNIST_GZ_DIR]; MNIST's four .gz files are copied from MNIST_GZ_DIR if given.
set -u
out=${1:?usage: gpu_session.sh OUT [MNIST_GZ_DIR]}; mkdir -p "$out"; out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -n "${2:-}" ]; then
  mkdir -p /tmp/fnti_data/MNIST/raw && cp "$2"/*-ubyte.gz /tmp/fnti_data/MNIST/raw/ && gunzip -f /tmp/fnti_data/MNIST/raw/*.gz
  export FNTI_DATA_DIR=/tmp/fnti_data
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; python -c "import torch; print('torch', torch.__version__)"; } > "$out/gpu.txt" 2>&1
timeout 100 python -m pytest -q -s -p no:cacheprovider tests/test_fast.py -k cuda > "$out/pytest_cuda.txt" 2>&1
tail -n 3 "$out/pytest_cuda.txt"
skip=--skip-graph; grep -qE '^[0-9]+ passed' "$out/pytest_cuda.txt" && skip=
cd benchmarks
timeout 170 python gpu_bf16_probe.py --out "$out" > "$out/gpu_bf16_probe_log.txt" 2>&1
grep -E 'epoch (10|20|25|30):|FAILED' "$out/gpu_bf16_probe_log.txt"
# bf16 for the recipe only if the package's bf16 trained all 30 epochs without collapsing
amp=$(python -c "import json, sys; v = json.load(open(sys.argv[1]))['variants'].get('bf16', {}); print('--amp' if v.get('collapsed') is False else '')" \
      "$out/gpu_bf16_probe.json" 2>/dev/null)
echo "recipe: ${amp:-fp32}"
timeout 200 python gpu_recipe.py --naive-max-s 30 --extra-if-s 0 --skip-reduce-overhead $amp $skip --out "$out" > "$out/gpu_recipe_log.txt" 2>&1
grep -E '^(fast|naive epoch|sync|sampling)' "$out/gpu_recipe_log.txt"
timeout 90 python gpu_step.py --steps 200 --max-s 50 $skip --out "$out" > "$out/gpu_step_log.txt" 2>&1
grep -E 'ms/step|FAILED|compiled fp32 step' "$out/gpu_step_log.txt"
exit 0
