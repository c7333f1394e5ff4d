#!/usr/bin/env bash
# The ninth session's GPU calls behind the "grid fitted to the GPU" row of bench/NOTES.md.
# Phase 1 (one GPU): the add + LayerNorm backward's warps and grid inside the XL model (norm_grid.py, beside this
# script), then the model alone (bench/profile_step.py --fused) of this tree, $HEAD (the
# tree before: 32 rows per program, the c_proj biases in the kernel) and $BASE (before the c_proj biases moved),
# alternated twice.
# Phase 2 (one GPU): the trainer (XL, bf16, 1 GPU, 16 x 8) of this tree against $BASE, alternated twice; loss curves
# of this tree and $BASE in bf16 and fp16 (GPT-2-medium shapes, 40 iterations, two at once on the GPU).
# Phase 3 (two GPUs): the trainer on 2 GPUs (16 x 4) of this tree against $BASE, alternated twice, then this tree on
# one of the two GPUs (the scaling in one lease).
#   HEAD=/tmp/head BASE=/tmp/base bench/results/2026-11-28-norm-grid/run_grid.sh 1 /tmp/out
#   BASE=/tmp/base bench/results/2026-11-28-norm-grid/run_grid.sh 2|3 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu-$phase.txt" 2>&1
if [[ $phase == 1 ]]; then
    timeout 200 python3 "$here/norm_grid.py" > "$out/norm_grid.txt" 2>&1
    profiles_alternated 60 new head base
elif [[ $phase == 2 ]]; then
    alternate 1 110 bf16-new bf16-base bf16-new bf16-base
    curve_pair bfloat16 100 0
    curve_pair float16 100 0
elif [[ $phase == 3 ]]; then
    alternate 2 100 bf16-new bf16-base bf16-new bf16-base
    alternate 1 100 bf16-new
fi
