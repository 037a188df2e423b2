#!/usr/bin/env bash
# Every GPU check of the project in one run that fits a 10-minute command (its timeouts add up to 555 s, 585 s with
# one probe variant, which leaves out step 5; about 6-7 minutes on an H200), most decisive first, so that a lease cut short still settles what
# matters most:
#   1. the CUDA-only tests (the step recorded as a CUDA graph trains like the plain step, and records again after a resume),
#   2. benchmarks/gpu_recipe.py: the seed's 30-epoch recipe end to end as `compile=True, amp=True` runs it (the step
#      graph with compiled blocks, attention written out, bf16 with attention in fp32; AMP=0 for fp32) from a cold
#      compile cache, then the same with attention through SDPA (SDPA=0 leaves it out), the naive loop for about 30 s,
#      host syncs, sampling (plain, compiled as `fnti sample --compile` does, and with CUDA graphs); the graph phases
#      only if step 1 passed,
#   3. benchmarks/gpu_step.py: milliseconds per step, first of the step graph in fp32 and bf16 with attention through
#      SDPA or written out (the package writes it out, compiled, since an H100 measured that 6-11% faster), then of
#      the other ways of running a step, for what time is left,
#   4. $PROBE (e.g. PROBE=bf16 PROBE_SEED=1, or PROBE=bf16 PROBE_CLASSES=10 for chapter 3's class-conditional recipe):
#      benchmarks/gpu_bf16_probe.py variants, 30 epochs each with the attention logits and the residual stream recorded
#      after every epoch (about a minute each on an H100 or H200; 75 s of timeout each),
#   5. the CUDA tests of what the measurements do not use: the bf16 default (compile=True with bf16 against eager bf16)
#      and the learning-rate warmup inside the step graph, unless TESTS=0 or 500 s have passed (75 s of timeout),
#   6. PATCH2=1: benchmarks/gpu_step.py's attention pairs (compiled step graph, SDPA vs written out, fp32 and bf16) on
#      196 tokens (patch 2) instead of 49, 100 steps each: is EXPLICIT_MAX_TOKENS (64, from CPU measurements) right on
#      a GPU (about 1-2 minutes; 150 s of timeout).
# Usage: benchmarks/gpu_session.sh OUT [MNIST_GZ_DIR]; MNIST's four .gz files are copied from MNIST_GZ_DIR if given.
# TESTS=0 skips steps 1 and 5 (graph phases kept), RECIPE=0 step 2 and STEP=0 step 3, for a short second call on a machine
# whose tests passed (TESTS=0 RECIPE=0 STEP=0 PROBE=bf16 PROBE_CLASSES=10: the class-conditional probe alone;
# TESTS=0 RECIPE=0 STEP=0 PATCH2=1: the 196-token attention pairs alone). On
# 2026-11-27 the whole of it took 435 s on a fresh H100 with PROBE=bf16 PROBE_CLASSES=10, the start 34 s more.
set -u
out=${1:?usage: gpu_session.sh OUT [MNIST_GZ_DIR]}; mkdir -p "$out"; out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if [ -n "${2:-}" ]; then
  mkdir -p /tmp/fnti_data/MNIST/raw && cp "$2"/*-ubyte.gz /tmp/fnti_data/MNIST/raw/ && gunzip -f /tmp/fnti_data/MNIST/raw/*.gz
  export FNTI_DATA_DIR=/tmp/fnti_data
fi
{ nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv; python -c "import torch; print('torch', torch.__version__)"; } > "$out/gpu.txt" 2>&1
skip=
if [ "${TESTS:-1}" != 0 ]; then
  timeout 100 python -m pytest -q -s -p no:cacheprovider tests/test_fast.py -k "cuda and not bf16 and not warmup" > "$out/pytest_cuda.txt" 2>&1
  tail -n 3 "$out/pytest_cuda.txt"
  grep -qE '^[0-9]+ passed' "$out/pytest_cuda.txt" || skip=--skip-graph
fi
cd benchmarks
amp=--amp; [ "${AMP:-1}" = 0 ] && amp=
sdpa=--sdpa-too; [ "${SDPA:-1}" = 0 ] && sdpa=
if [ "${RECIPE:-1}" != 0 ]; then
  timeout 260 python gpu_recipe.py --naive-max-s 30 --extra-if-s 0 --skip-reduce-overhead $amp $sdpa $skip --out "$out" > "$out/gpu_recipe_log.txt" 2>&1
  grep -E '^(cuda start|fast|naive epoch|sync|sampling)' "$out/gpu_recipe_log.txt"
fi
if [ "${STEP:-1}" != 0 ]; then
  timeout 120 python gpu_step.py --steps 200 --max-s 80 $skip --out "$out" > "$out/gpu_step_log.txt" 2>&1
  grep -E 'ms/step|FAILED|compiled fp32 step' "$out/gpu_step_log.txt"
fi
if [ -n "${PROBE:-}" ]; then
  n=$(echo "$PROBE" | tr ',' '\n' | wc -l)   # about a minute a variant on an H200, cold compiling included
  timeout $((30 + 75 * n)) python gpu_bf16_probe.py --variants "$PROBE" --seed "${PROBE_SEED:-0}" ${PROBE_CLASSES:+--num-classes "$PROBE_CLASSES"} --out "$out" > "$out/gpu_bf16_probe_log.txt" 2>&1
  grep -E 'epoch (10|17|18|20|25|30):|FAILED' "$out/gpu_bf16_probe_log.txt"
fi
if [ "${TESTS:-1}" != 0 ] && [ "$SECONDS" -lt 500 ]; then   # these tests last: a failure here skips nothing
  (cd .. && timeout 75 python -m pytest -q -s -p no:cacheprovider tests/test_fast.py -k "cuda and (bf16 or warmup)" > "$out/pytest_cuda_bf16.txt" 2>&1)
  tail -n 3 "$out/pytest_cuda_bf16.txt"
fi
if [ "${PATCH2:-0}" != 0 ]; then
  timeout 150 python gpu_step.py --patch-size 2 --only ATTENTION_PAIRS --steps 100 --max-s 110 --out "$out" > "$out/gpu_step_patch2_log.txt" 2>&1
  grep -E 'ms/step|FAILED' "$out/gpu_step_patch2_log.txt"
fi
exit 0
