#!/usr/bin/env bash
# One H200: the write of a GPT-2 XL checkpoint file into the page cache, torch.save in one thread + hashing against
# checkpoint.save_in_parallel (bench/write_speed.py); then the default main job through bench/goodput.py with the
# parallel writer (after a short run that warms the caches), and a profile of a warm start-up.
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-04-cprofile/run.sh $OUT
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u; nproc; free -g; df -h /tmp
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"
  git log -1 --format=%H 2>/dev/null; git status --short 2>/dev/null
  python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()"; } > "$out/versions.txt" 2>&1
timeout 170 python3 bench/write_speed.py --threads 4,8,16 --out "$out/write_speed.json" > /tmp/write_speed.txt 2>&1
tail -3 /tmp/write_speed.txt >> "$out/versions.txt"
{ time timeout 150 ./run_deepspeed_xl.sh --max_iters=3 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } > "$out/short-cold.txt" 2>&1
date -u >> "$out/versions.txt"
timeout 200 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --out "$out/default" --timeout 190 \
    > "$out/goodput-default.txt" 2>&1
rm -rf /tmp/goodput-1gpu /tmp/short
# a warm start-up under cProfile (main thread): the stats are written when the trainer leaves through os._exit
CUDA_VISIBLE_DEVICES=0 RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 timeout 150 python3 - \
    "$out/profile.txt" > /tmp/profile-run.txt 2>&1 <<'PY'
import cProfile, os, pstats, runpy, sys
out = sys.argv[1]
sys.argv = ["train_deepspeed.py", "config/finetune_shakespeare_xl.py", "--local_rank=0", "--max_iters=1",
            "--eval_interval=1000", "--save_checkpoints=False", "--plot=False", "--out_dir=/tmp/prof"]
profile, leave = cProfile.Profile(), os._exit
def dump(status):
    profile.disable()
    with open(out, "w") as f:
        pstats.Stats(profile, stream=f).sort_stats("cumulative").print_stats(90)
        pstats.Stats(profile, stream=f).sort_stats("tottime").print_stats(30)
    leave(status)
os._exit = dump
profile.enable()
runpy.run_path("train_deepspeed.py", run_name="__main__")
PY
{ grep -E "first step|error|Traceback" /tmp/profile-run.txt; tail -3 /tmp/profile-run.txt; } >> "$out/versions.txt"
date -u >> "$out/versions.txt"
