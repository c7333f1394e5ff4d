#!/usr/bin/env bash
# The tenth session's GPU calls (a 2 x H200 machine) behind the "gradient norm in one multi-tensor pass" row of
# bench/NOTES.md and the 141 GB comparison with the peer.
# Phase 1: the trainer (XL, bf16) of this tree against $BASE (the tree before: DeepSpeed's per-tensor fp64 norm):
# on one GPU each, both at once on their own GPU and then with the GPUs swapped; on both GPUs, alternated; the
# bf16 loss curves of both trees (GPT-2-medium shapes, 40 iterations, one GPU each at once).
# Phase 2: each at the largest micro-batch that fits an H200 (ours 32, the peer 16) and at the 80 GB sizes (16 and
# 8), 1 GPU each at once, then 2 GPUs at the H200 sizes.
# Phase 3: the 2-GPU pair again (base first this time), a profiled 2-GPU iteration of this tree (both ranks'
# traces and their bench/trace_summary.py), the fp16 loss curves of both trees.
# Phase 4 (a 4 x H200 machine, lent late in the session): this tree on 4 GPUs in bf16 and fp16 at micro-batch 16,
# bf16 at 32; the peer at 8 and 16; this tree on 1 GPU (the scaling in one lease); bf16 on 4 GPUs again.
#   BASE=/tmp/base bench/results/2026-11-28-grad-norm/run_norm.sh 1|2|3 /tmp/out
#   bench/results/2026-11-28-grad-norm/run_norm.sh 4 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu-$phase.txt" 2>&1

side_by_side() {  # RUN0 TREE0 RUN1 TREE1 SECONDS: bench.py's RUN0 of TREE0 on GPU 0 and RUN1 of TREE1 on GPU 1, at
                  # once; each tree builds its fused-kernel extension in its own directory
    local seconds=$5
    (cd "$(tree_dir $2)" && TORCH_EXTENSIONS_DIR=/tmp/ext-$2 timeout "$seconds" python3 bench/bench.py --runs "$1" \
        --gpus 0 --tag "$2-g0" --out "$out" --timeout $((seconds - 5))) &
    local first=$!
    (cd "$(tree_dir $4)" && TORCH_EXTENSIONS_DIR=/tmp/ext-$4 timeout "$seconds" python3 bench/bench.py --runs "$3" \
        --gpus 1 --tag "$4-g1" --out "$out" --timeout $((seconds - 5))) &
    wait $first $!
}

if [[ $phase == 1 ]]; then
    side_by_side ours-bf16-1 new ours-bf16-1 base 130
    side_by_side ours-bf16-1 base ours-bf16-1 new 110
    alternate 2 100 bf16-new bf16-base
    curve_pair bfloat16 100 1
elif [[ $phase == 2 ]]; then
    side_by_side ours-bf16-1-141gb new peer-bf16-1-141gb new 130
    side_by_side peer-bf16-1 new ours-bf16-1 new 110
    (timeout 100 python3 bench/bench.py --runs ours-bf16-2-141gb --tag 141gb --out "$out" --timeout 95)
    (timeout 110 python3 bench/bench.py --runs peer-bf16-2-141gb --tag 141gb --out "$out" --timeout 105)
elif [[ $phase == 3 ]]; then
    alternate 2 100 bf16-base bf16-new
    (timeout 100 python3 bench/bench.py --runs ours-bf16-2 --set profile_iteration=6 --tag profiled --out "$out" \
        --timeout 95)
    for rank in 0 1; do
        cp /tmp/bench-ours-bf16-2/profile/rank_$rank.json.gz "$out/trace-rank$rank.json.gz"
        python3 bench/trace_summary.py "$out/trace-rank$rank.json.gz" > "$out/trace-rank$rank.txt" 2>&1
    done
    curve_pair float16 100 1
elif [[ $phase == 4 ]]; then
    (timeout 560 python3 bench/bench.py --runs ours-bf16-4,ours-fp16-4,ours-bf16-4-141gb,peer-bf16-4,peer-bf16-4-141gb,ours-bf16-1 \
        --tag 4gpu --out "$out" --timeout 100)
    (timeout 100 python3 bench/bench.py --runs ours-bf16-4 --tag 4gpu-again --out "$out" --timeout 95)
fi
