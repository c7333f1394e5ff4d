#!/usr/bin/env bash
# The 4 x H100 session behind bench/results: phase A (throughput, scaling, peer), phase B (checkpoint save,
# resume 4 -> 2 GPUs through a universal checkpoint, the 24 GB configurations, bench/gpu_check.sh on GPUs 2,3).
#   bench/run_h100x4.sh A /tmp/ra ; bench/run_h100x4.sh B /tmp/rb
set -uo pipefail
cd "$(dirname "$0")/.."
phase=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
if [[ $phase == A ]]; then
    nvidia-smi topo -m > "$out/topology.txt" 2>&1
    timeout 400 python3 bench/bench.py --runs ours-bf16-4,ours-fp16-4,peer-bf16-4,ours-fp16-4-guide \
        --tag 4gpu --out "$out" --timeout 150
    timeout 190 python3 bench/bench.py --runs ours-bf16-2,ours-bf16-1,ours-fp16-1,ours-fp16-2 --concurrent \
        --tag scaling --out "$out" --timeout 90
else
    timeout 150 python3 bench/bench.py --runs ours-fp16-4-save --tag save --out "$out" --timeout 140
    (GPUS=2,3 RESULTS="$out/gpu_check" WORK=/tmp/gpu_check timeout 330 bench/gpu_check.sh > "$out/gpu_check.out" 2>&1) &
    { time timeout 200 python3 -m deepspeed.launcher.runner --include=localhost:0,1 --master_port=29700 train_deepspeed.py \
        --init_from=resume --out_dir=/tmp/bench-ours-fp16-4-save --dataset=shakespeare --batch_size=16 \
        --target_batch_size=128 --dtype=float16 --max_iters=9 --eval_interval=100 --eval_iters=-1 \
        --save_checkpoints=False --csv_log=False --plot=False; } > "$out/resume_4_to_2.log" 2>&1
    timeout 115 python3 bench/bench.py --runs ours-xl-24gb-2 --tag 24gb --out "$out" --timeout 110
    timeout 150 python3 bench/bench.py --runs ours-xl-24gb-offload-1 --tag offload --out "$out" --timeout 140
    wait
fi
