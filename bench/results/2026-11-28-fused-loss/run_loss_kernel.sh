#!/usr/bin/env bash
# The sixth session's GPU calls (a 4-GPU machine) behind the fused cross-entropy rows of bench/NOTES.md.
# Phase 1: bench/fused_check.py on GPU 0 (the Triton cross-entropy against the plain path and fp32; the model
# alone without and with it), beside loss curves of short real runs (GPT-2-medium shapes from scratch, 40
# iterations) with fused_kernels off (GPU 2) and on (GPU 3), bf16 then fp16.
# Phase 2: 4-GPU throughput (GPT-2 XL, bf16 and fp16) of this tree alternated with $BASE, a copy of the tree
# from before the kernel, so that both are measured in the same lease.
#   bench/results/2026-11-28-fused-loss/run_loss_kernel.sh 1 /tmp/out
#   BASE=/tmp/base bench/results/2026-11-28-fused-loss/run_loss_kernel.sh 2 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
if [[ $phase == 1 ]]; then
    (CUDA_VISIBLE_DEVICES=0 timeout 400 python3 bench/fused_check.py > "$out/fused_check.txt" 2>&1
     echo "fused_check exit $?" >> "$out/fused_check.txt") &
    for dtype in bfloat16 float16; do
        pids=()
        for fused in False True; do
            gpu=$([[ $fused == False ]] && echo 2 || echo 3)
            timeout 150 python3 -m deepspeed.launcher.runner --include=localhost:$gpu --master_port=$((29600 + gpu)) \
                train_deepspeed.py "${MEDIUM[@]}" --dtype=$dtype --fused_kernels=$fused \
                --out_dir=/tmp/curve-$dtype-$fused > "$out/curve-$dtype-fused-$fused.log" 2>&1 &
            pids+=($!)
        done
        wait "${pids[@]}"
    done
    wait
    python3 bench/curves.py "$out"/curve-bfloat16-fused-False.log "$out"/curve-bfloat16-fused-True.log \
        --out "$out/loss_curves_bf16.png" > "$out/loss_curves.txt"
    python3 bench/curves.py "$out"/curve-float16-fused-False.log "$out"/curve-float16-fused-True.log \
        --out "$out/loss_curves_fp16.png" >> "$out/loss_curves.txt"
elif [[ $phase == 2 ]]; then
    alternate 4 80 bf16-new bf16-base bf16-new bf16-base fp16-new fp16-base
fi
