#!/usr/bin/env bash
# One H200, at once on GPU 0: bench/gpu_check.sh (GPUS=0) and issue 26's short GPT-2 XL-shape prompt/completion loss
# curve (bench.py ours-bf16-1-pc-curve cut to 50 iterations, evals at 25 and 50; its throughput is not a figure:
# the GPU is shared).
# device run (carry .whl, data/shakespeare, data/shakespeare_pc): pip install the wheels, then
#   bench/results/2026-12-02-gpu-check/run.sh /tmp/gc
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
mkdir -p "$out"
timeout 560 python3 bench/bench.py --runs ours-bf16-1-pc-curve --set max_iters=50 --set eval_interval=25 \
    --tag pc-curve --out "$out/pc-curve" --timeout 550 > "$out/pc-curve.txt" 2>&1 &
pc=$!
sleep 60  # the curve's model is built and its memory taken before gpu_check's runs start
GPUS=0 RESULTS=$out/gpu-check WORK=/tmp/gpu_check timeout 500 bench/gpu_check.sh > "$out/gpu-check.txt" 2>&1
wait $pc
