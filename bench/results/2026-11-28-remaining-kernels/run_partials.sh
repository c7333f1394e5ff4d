#!/usr/bin/env bash
# The eighth session's four-GPU call behind the sum_partials row of bench/NOTES.md: the trainer's throughput (GPT-2
# XL, bf16, 4 GPUs) of this tree alternated with $BASE (a copy of the tree with fused_norm.py from before the
# change), the peer (transformers' GPT2LMHeadModel) in the same lease, then loss curves of short real runs
# (GPT-2-medium shapes from scratch, 40 iterations, one GPU each: this tree and $BASE, bf16 and fp16, all at once).
# Phase 2 (one GPU): the c_proj biases added in the add + LayerNorm kernels (their gradients summed there) against
# $BASE (the tree before): loss curves in bf16 (this tree and $BASE at once on the one GPU), the model alone
# alternated (bench/profile_step.py --fused, twice each), then the fp16 loss curves.
#   BASE=/tmp/base bench/results/2026-11-28-remaining-kernels/run_partials.sh 1|2 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
if [[ $phase == 1 ]]; then
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
    alternate 4 75 bf16-new bf16-base bf16-new bf16-base
    timeout 110 python3 bench/bench.py --runs peer-bf16-4 --tag peer --out "$out" --timeout 105
    curves_on_four_gpus
    compare_curves bfloat16
    compare_curves float16
elif [[ $phase == 2 ]]; then
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
    curve_pair bfloat16 90 0
    profiles_alternated 45 new base
    curve_pair float16 90 0
fi
