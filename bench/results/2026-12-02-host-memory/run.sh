#!/usr/bin/env bash
# One H200: host_memory.py (pinned buffers: allocation, overlap with GPU work, exit), then a short GPT-2 XL run of
# ./run_deepspeed_xl.sh from a stand-in gpt2-xl cache on the machine's cold caches (its start-up line).
# device run (carry .whl, data/shakespeare): bench/results/2026-12-02-host-memory/run.sh $OUT
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; free -g; nproc
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"; } > "$out/versions.txt" 2>&1
timeout 330 python3 bench/results/2026-12-02-host-memory/host_memory.py --out "$out" > "$out/host_memory.txt" 2>&1
python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()" > "$out/short-cold.txt" 2>&1
{ time timeout 200 ./run_deepspeed_xl.sh --max_iters=3 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } >> "$out/short-cold.txt" 2>&1
