#!/usr/bin/env bash
# The seventh session's GPU calls behind the fused add + LayerNorm rows of bench/NOTES.md.
# Phase 1 (one GPU): bench/fused_check.py (the Triton add + LayerNorm against the plain path and float64, its
# launch configurations, the model alone without and with it), then the trainer's throughput (GPT-2 XL, bf16,
# 1 GPU) of this tree alternated with $BASE, a copy of the tree from before the kernel.
# Phase 2 (four GPUs): the same alternation on 4 GPUs in bf16 and fp16, the peer (transformers' GPT2LMHeadModel)
# in the same lease, then loss curves of short real runs (GPT-2-medium shapes from scratch, 40 iterations, one
# GPU each: this tree and $BASE, bf16 and fp16, all four at once).
# Phase 3 (four GPUs, this tree alone): throughput in bf16 (twice) and fp16 and the peer in the same lease; then at
# once: gradient digests of the model alone with all fused kernels from fresh processes (bench/determinism.py,
# GPU 3) and GPT-2 XL on 2 GPUs capped at 24 GB (GPUs 0-1).
#   BASE=/tmp/base bench/results/2026-11-28-fused-norm/run_norm_kernel.sh 1|2 /tmp/out
#   bench/results/2026-11-28-fused-norm/run_norm_kernel.sh 3 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
if [[ $phase == 1 ]]; then
    timeout 330 python3 bench/fused_check.py > "$out/fused_check.txt" 2>&1
    echo "fused_check exit $?" >> "$out/fused_check.txt"
    alternate 1 100 bf16-new bf16-base bf16-new bf16-base
elif [[ $phase == 2 ]]; then
    nvidia-smi topo -m > "$out/topology.txt" 2>&1
    alternate 4 80 bf16-new bf16-base bf16-new bf16-base fp16-new fp16-base
    timeout 110 python3 bench/bench.py --runs peer-bf16-4 --tag peer --out "$out" --timeout 105
    curves_on_four_gpus
    python3 bench/curves.py "$out"/curve-bfloat16-base.log "$out"/curve-bfloat16-new.log \
        --out "$out/loss_curves_bf16.png" > "$out/loss_curves.txt"
    python3 bench/curves.py "$out"/curve-float16-base.log "$out"/curve-float16-new.log \
        --out "$out/loss_curves_fp16.png" >> "$out/loss_curves.txt"
elif [[ $phase == 3 ]]; then
    nvidia-smi topo -m > "$out/topology.txt" 2>&1
    for run in bf16 fp16 bf16; do
        timeout 80 python3 bench/bench.py --runs ours-$run-4 --tag $run --out "$out" --timeout 75
    done
    timeout 110 python3 bench/bench.py --runs peer-bf16-4 --tag peer --out "$out" --timeout 105
    (for args in "--dtype bfloat16" "--dtype bfloat16" "--dtype bfloat16" "--dtype float16 --deterministic" \
                 "--dtype float16 --deterministic"; do
         CUDA_VISIBLE_DEVICES=3 timeout 60 python3 bench/determinism.py --fused $args
     done) > "$out/determinism.txt" 2>&1 &
    timeout 120 python3 bench/bench.py --runs ours-xl-24gb-2 --tag 24gb --out "$out" --timeout 115
    wait
fi
