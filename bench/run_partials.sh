#!/usr/bin/env bash
# The eighth session's four-GPU call behind the sum_partials row of bench/NOTES.md: the trainer's throughput (GPT-2
# XL, bf16, 4 GPUs) of this tree alternated with $BASE (a copy of the tree with fused_norm.py from before the
# change), the peer (transformers' GPT2LMHeadModel) in the same lease, then loss curves of short real runs
# (GPT-2-medium shapes from scratch, 40 iterations, one GPU each: this tree and $BASE, bf16 and fp16, all at once).
# Phase 2 (one GPU): the c_proj biases added in the add + LayerNorm kernels (their gradients summed there) against
# $BASE (the tree before): loss curves in bf16 (this tree and $BASE at once on the one GPU), the model alone
# alternated (bench/profile_step.py --fused, twice each), then the fp16 loss curves.
#   BASE=/tmp/base bench/run_partials.sh 1 /tmp/out ; BASE=/tmp/base bench/run_partials.sh 2 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/session_common.sh"
if [[ $phase == 1 ]]; then
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
    alternate 4 75 bf16-new bf16-base bf16-new bf16-base
    timeout 110 python3 bench/bench.py --runs peer-bf16-4 --tag peer --out "$out" --timeout 105
    pids=() gpu=0
    for dtype in bfloat16 float16; do
        for tree in base new; do
            dir=$PWD; [[ $tree == base ]] && dir=$BASE
            (cd "$dir" && timeout 150 python3 -m deepspeed.launcher.runner --include=localhost:$gpu \
                --master_port=$((29600 + gpu)) train_deepspeed.py "${MEDIUM[@]}" --dtype=$dtype \
                --out_dir=/tmp/curve-$dtype-$tree) > "$out/curve-$dtype-$tree.log" 2>&1 &
            pids+=($!) gpu=$((gpu + 1))
        done
    done
    wait "${pids[@]}"
    for dtype in bfloat16 float16; do
        python3 bench/curves.py "$out"/curve-$dtype-base.log "$out"/curve-$dtype-new.log \
            --out "$out/loss_curves_$dtype.png" >> "$out/loss_curves.txt"
    done
elif [[ $phase == 2 ]]; then
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > "$out/gpu.txt" 2>&1
    curves() {  # DTYPE: this tree and $BASE at once, both on GPU 0 (each needs ~19 GiB)
        local dtype=$1 pids=() tree dir port=29600
        for tree in new base; do
            dir=$PWD; [[ $tree == base ]] && dir=$BASE
            (cd "$dir" && timeout 90 python3 -m deepspeed.launcher.runner --include=localhost:0 \
                --master_port=$port train_deepspeed.py "${MEDIUM[@]}" --dtype=$dtype \
                --out_dir=/tmp/curve-$dtype-$tree) > "$out/curve-$dtype-$tree.log" 2>&1 &
            pids+=($!) port=$((port + 1))
        done
        wait "${pids[@]}"
        python3 bench/curves.py "$out"/curve-$dtype-base.log "$out"/curve-$dtype-new.log \
            --out "$out/loss_curves_$dtype.png" >> "$out/loss_curves.txt"
    }
    curves bfloat16
    for i in 1 2; do
        for tree in new base; do
            dir=$PWD; [[ $tree == base ]] && dir=$BASE
            (cd "$dir" && timeout 45 python3 bench/profile_step.py --fused --no_shapes) \
                > "$out/profile_${tree}_$i.txt" 2>&1
        done
    done
    curves float16
fi
