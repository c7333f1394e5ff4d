#!/usr/bin/env bash
# The 4 x H100 sessions of 2026-11-27 (this folder): phase A (throughput, scaling, peer), phase B (checkpoint save,
# resume 4 -> 2 GPUs through a universal checkpoint, the 24 GB configurations, bench/gpu_check.sh on GPUs 2,3), both
# in `4gpu/`; phase C (second session: checkpoint save against the peer's, with save_speed.py here; ZeRO-2 overlap
# and compile levers, each beside a baseline in the same run), phase D (ZeRO-Offload on one GPU capped at 24 GB,
# bf16: real optimizer steps), phase E (three saves in one run with pinned and with pageable copies, and the peer's
# save), all three in `4gpu-session2/`. (Its phase F, the sixth session's, is now
# ../2026-11-28-fused-loss/run_profile_buckets.sh.) Run from anywhere; it works in the repository root.
#   bench/results/2026-11-27-h100-baseline/run_h100x4.sh A /tmp/ra     (B, C, D, E alike)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
phase=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
if [[ $phase == A ]]; then
    nvidia-smi topo -m > "$out/topology.txt" 2>&1
    timeout 400 python3 bench/bench.py --runs ours-bf16-4,ours-fp16-4,peer-bf16-4,ours-fp16-4-guide \
        --tag 4gpu --out "$out" --timeout 150
    timeout 190 python3 bench/bench.py --runs ours-bf16-2,ours-bf16-1,ours-fp16-1,ours-fp16-2 --concurrent \
        --tag scaling --out "$out" --timeout 90
elif [[ $phase == C ]]; then
    timeout 60 python3 "$here/save_speed.py" --dir /tmp > "$out/save_speed.txt" 2>&1
    timeout 200 python3 bench/bench.py --runs peer-fp16-4-save,ours-fp16-4-save --tag save-vs-peer --out "$out" \
        --timeout 95
    rm -rf /tmp/bench-*-save
    python3 -c 'import json; ds = json.load(open("ds_config_zero2.json")); ds["zero_optimization"]["overlap_comm"] = False
json.dump(ds, open("/tmp/ds_no_overlap.json", "w"))'
    timeout 70 python3 bench/bench.py --runs ours-bf16-4 --tag baseline --out "$out" --timeout 65
    timeout 70 python3 bench/bench.py --runs ours-bf16-4 --set deepspeed_config=/tmp/ds_no_overlap.json \
        --tag no-overlap --out "$out" --timeout 65
    timeout 90 python3 bench/bench.py --runs ours-bf16-4 --set compile=True --tag compile --out "$out" --timeout 85
elif [[ $phase == D ]]; then
    timeout 230 python3 bench/bench.py --runs ours-xl-24gb-offload-1-bf16 --tag offload-bf16 --out "$out" \
        --timeout 225
elif [[ $phase == E ]]; then
    (while sleep 3; do echo "$(date +%T) $(free -g | sed -n 2p)"; done) > "$out/host_memory.txt" &
    timeout 150 python3 bench/bench.py --runs ours-fp16-4-saves --tag saves-pinned --out "$out" --timeout 140
    rm -rf /tmp/bench-*
    timeout 150 python3 bench/bench.py --runs ours-fp16-4-saves --set pinned_checkpoint_copies=False \
        --tag saves-pageable --out "$out" --timeout 140
    rm -rf /tmp/bench-*
    timeout 100 python3 bench/bench.py --runs peer-fp16-4-save --tag saves-peer --out "$out" --timeout 95
    kill %1
elif [[ $phase == B ]]; then
    timeout 150 python3 bench/bench.py --runs ours-fp16-4-save --tag save --out "$out" --timeout 140
    (GPUS=2,3 RESULTS="$out/gpu_check" WORK=/tmp/gpu_check timeout 330 bench/gpu_check.sh > "$out/gpu_check.out" 2>&1) &
    { time timeout 200 python3 -m deepspeed.launcher.runner --include=localhost:0,1 --master_port=29700 train_deepspeed.py \
        --init_from=resume --out_dir=/tmp/bench-ours-fp16-4-save --dataset=shakespeare --batch_size=16 \
        --target_batch_size=128 --dtype=float16 --max_iters=9 --eval_interval=100 --eval_iters=-1 \
        --save_checkpoints=False --csv_log=False --plot=False; } > "$out/resume_4_to_2.log" 2>&1
    timeout 115 python3 bench/bench.py --runs ours-xl-24gb-2 --tag 24gb --out "$out" --timeout 110
    timeout 150 python3 bench/bench.py --runs ours-xl-24gb-offload-1 --tag offload --out "$out" --timeout 140
    wait
else
    echo "usage: $0 A|B|C|D|E OUT_DIR" >&2
    exit 2
fi
