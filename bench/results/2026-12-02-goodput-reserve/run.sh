#!/usr/bin/env bash
# Issue 27's job on one H200 after the host buffers moved ahead of the first save (reserved after the first step,
# in a thread, pinned by cudaHostRegister): two short GPT-2 XL runs of ./run_deepspeed_xl.sh (cold caches, then
# warm: their start-up lines), then the 100-iteration job through bench/goodput.py, from a stand-in gpt2-xl cache.
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-02-goodput-reserve/run.sh $OUT/r
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; free -g; df -h /tmp
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"; } > "$out/versions.txt" 2>&1
python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()" > "$out/standin.txt" 2>&1
for run in cold warm; do
    { time timeout 150 ./run_deepspeed_xl.sh --max_iters=3 --eval_interval=1000 --save_checkpoints=False --plot=False \
        --out_dir=/tmp/short ; } > "$out/short-$run.txt" 2>&1
done
timeout 420 python3 bench/goodput.py --gpus 1 --standin-cache --out "$out/job" --timeout 410 > "$out/goodput.txt" 2>&1
rm -rf /tmp/goodput-1gpu /tmp/short
