#!/usr/bin/env bash
# One H200: the default main job with the background write by checkpoint.save_in_parallel (4 threads: the files
# written and hashed from the host copies side by side) instead of torch.save then hashing, as ../2026-12-04-jobs/
# ran it (Python's compiled modules kept, caches warmed by a short run first); then the same job with
# --eval_interval=10 (a save at 10 and the final one instead of at 10, 15 and 20).
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-04-default-job-parallel/run.sh $OUT
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
unset PYTHONDONTWRITEBYTECODE
mkdir -p "$out"
v=$out/versions.txt
{ nvidia-smi --query-gpu=name,driver_version,memory.total,persistence_mode --format=csv; date -u; nproc; free -g; df -h /tmp
  python3 -c "import torch, deepspeed, transformers, sys; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__, 'python', sys.version.split()[0], 'dont_write_bytecode', sys.flags.dont_write_bytecode)"
  git log -1 --format=%H; git status --short | head -20
  python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()" 2>&1 | grep -v "Writing model"; } > "$v" 2>&1
{ time timeout 100 ./run_deepspeed_xl.sh --max_iters=2 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } > "$out/short-cold.txt" 2>&1
rm -rf /tmp/short
date -u >> "$v"
timeout 150 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --out "$out/default" --timeout 140 \
    > /tmp/g1.txt 2>&1
tail -1 /tmp/g1.txt >> "$v"
rm -rf /tmp/goodput-1gpu
date -u >> "$v"
timeout 150 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --set eval_interval=10 \
    --out "$out/default-eval10" --timeout 140 > /tmp/g2.txt 2>&1
tail -1 /tmp/g2.txt >> "$v"
date -u >> "$v"
rm -rf /tmp/goodput-1gpu
