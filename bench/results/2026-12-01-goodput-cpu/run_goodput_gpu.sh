#!/usr/bin/env bash
# WRITTEN, NOT RUN (no GPU was lent in the session that wrote it; its async job ran as ../2026-12-02-goodput-h200/run.sh): issue 27's goodput job on one H200, background
# saves (the default) against blocking ones, alternated A B A B in one sitting, plus the hashing speed there.
# Each job: ./run_deepspeed_xl.sh --max_iters=100 --eval_interval=25 --always_save_checkpoint=True --keep_last_n=1
# (fp16, 16 x 8) from a stand-in gpt2-xl hub cache (random weights, ../shared/GPU.md). ~7 min a job blocking, so one
# 10-minute call holds one job: call it once per job (JOB=async1 / blocking1 / async2 / blocking2), same machine.
#   device run: python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site
#     .whl/*.whl && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH && JOB=async1
#     bench/results/2026-12-01-goodput-cpu/run_goodput_gpu.sh $OUT          (carry .whl; build it with
#     ../shared/tools/gpu-wheels.sh first)
# Writes $OUT/<JOB>/goodput.json and run.log, $OUT/hash_speed.json, $OUT/gpu.txt. A new dated folder for the results.
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
free -g >> "$out/gpu.txt"
[[ -f $out/hash_speed.json ]] || python3 bench/hash_speed.py --mb 1000 --out "$out"
case ${JOB:?set JOB=async1, blocking1, async2 or blocking2} in
    async*) extra=() ;;
    blocking*) extra=(--set async_checkpoints=False) ;;
esac
timeout 590 python3 bench/goodput.py --gpus 1 --standin-cache --out "$out/$JOB" --timeout 580 "${extra[@]}"
