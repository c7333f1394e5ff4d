#!/usr/bin/env bash
# Issue 27's job on one H200 with background saves (async_checkpoints=True, the default): ./run_deepspeed_xl.sh
# --max_iters=100 --eval_interval=25 --always_save_checkpoint=True --keep_last_n=1 (fp16, 16 x 8) from a stand-in
# gpt2-xl hub cache (random weights of gpt2-xl's config, ../shared/GPU.md), through bench/goodput.py.
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-02-goodput-h200/run.sh /tmp/goodput
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; free -g; df -h /tmp
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"; } > "$out/versions.txt" 2>&1
timeout 560 python3 bench/goodput.py --gpus 1 --standin-cache --out "$out/async" --timeout 550 > "$out/goodput.txt" 2>&1
rm -rf /tmp/goodput-1gpu
