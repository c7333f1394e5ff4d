#!/usr/bin/env bash
# One H200: the default main job (./run_deepspeed_xl.sh as it comes: 20 iterations, eval every 5, a save when val
# improves; keep_last_n=1 for the machine's disk) through bench/goodput.py --job default, after a short run that
# warms the caches; then issue 27's 100-iteration job again (a second sample beside ../2026-12-02-goodput-reserve/).
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-02-default-job/run.sh $OUT/r
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; free -g; df -h /tmp
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"; } > "$out/versions.txt" 2>&1
python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()" > "$out/standin.txt" 2>&1
{ time timeout 150 ./run_deepspeed_xl.sh --max_iters=3 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } > "$out/short-cold.txt" 2>&1
timeout 200 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --out "$out/default" --timeout 190 \
    > "$out/goodput-default.txt" 2>&1
rm -rf /tmp/goodput-1gpu
timeout 360 python3 bench/goodput.py --gpus 1 --out "$out/issue" --timeout 350 > "$out/goodput-issue.txt" 2>&1
rm -rf /tmp/goodput-1gpu /tmp/short
