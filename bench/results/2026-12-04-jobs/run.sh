#!/usr/bin/env bash
# One H200: the default main job and issue 27's 100-iteration job through bench/goodput.py on this tree, with
# Python's compiled modules kept (the machine sets PYTHONDONTWRITEBYTECODE=1, so every process there compiled its
# imports from source; a user's pip install compiles them once), after a short run that fills that cache and the
# kernels' caches; first the write of the optimizer shard, torch.save + hashing against the parallel candidate
# (bench/write_speed.py).
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-04-jobs/run.sh $OUT
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
timeout 120 python3 bench/write_speed.py --files optim --threads 1,4 --rounds 1 --out "$out/write_speed.json" > /tmp/ws.txt 2>&1
tail -1 /tmp/ws.txt >> "$v"
rm -rf /tmp/write-speed
{ time timeout 150 ./run_deepspeed_xl.sh --max_iters=2 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } > "$out/short-cold.txt" 2>&1
rm -rf /tmp/short
date -u >> "$v"
timeout 170 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --out "$out/default" --timeout 160 \
    > /tmp/g1.txt 2>&1
tail -1 /tmp/g1.txt >> "$v"
rm -rf /tmp/goodput-1gpu
date -u >> "$v"
timeout 340 python3 bench/goodput.py --gpus 1 --out "$out/issue" --timeout 330 > /tmp/g2.txt 2>&1
tail -1 /tmp/g2.txt >> "$v"
date -u >> "$v"
rm -rf /tmp/goodput-1gpu
