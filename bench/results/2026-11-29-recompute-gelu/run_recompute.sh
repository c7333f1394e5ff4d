#!/usr/bin/env bash
# The fourteenth session's GPU calls (a 2 x H200 machine) behind the "GELU output recomputed" row of bench/NOTES.md:
# does micro-batch 32 of GPT-2 XL with every MLP's GELU output recomputed in backward (--recompute_gelu=-1) fit an
# 80 GB card, rehearsed with --max_gpu_memory_gb=77 (an H100's 79.2 GiB less room for the CUDA context and NCCL's
# buffers, which sit outside PyTorch's allocator), and does it beat that card's default, micro-batch 16?
# Phase 1: bf16 on both GPUs, 128 sequences per iteration, one after the other: 16 x 4; 32 x 2 recomputed and capped;
# 32 x 2 as on an H200 (neither: the recompute's cost); 16 x 4 and 32 x 2 recomputed again (the spread).
# Phase 2: fp16 (the default) 16 x 4 and 32 x 2 recomputed and capped; bf16 32 x 2 capped with 36 of 48 GELUs recomputed; the loss curves (GPT-2-medium shapes, 40
# iterations) without ("base") and with ("new") recompute_gelu, bf16 then fp16, one GPU each at once.
#   bench/results/2026-11-29-recompute-gelu/run_recompute.sh 1|2 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv > "$out/gpu-$phase.txt" 2>&1
LEAN=(--set recompute_gelu=-1 --set max_gpu_memory_gb=77)

bench_run() {  # TAG SECONDS RUN [ARGS...]: one bench.py run, results tagged TAG
    local tag=$1 seconds=$2 run=$3
    shift 3
    timeout "$seconds" python3 bench/bench.py --runs "$run" --tag "$tag" --out "$out" --timeout $((seconds - 5)) "$@"
}

curve_with() {  # NAME DTYPE GPU PORT SECONDS [ARGS...]: in the background, the loss-curve run with ARGS, its log
                # $out/curve-DTYPE-NAME.log (compare_curves reads "base" and "new")
    local name=$1 dtype=$2 gpu=$3 port=$4 seconds=$5
    shift 5
    rm -rf /tmp/curve-$dtype-$name
    timeout "$seconds" python3 -m deepspeed.launcher.runner --include=localhost:$gpu --master_port=$port \
        train_deepspeed.py "${MEDIUM[@]}" --dtype=$dtype --out_dir=/tmp/curve-$dtype-$name "$@" \
        > "$out/curve-$dtype-$name.log" 2>&1 &
}

if [[ $phase == 1 ]]; then
    bench_run b16-a 110 ours-bf16-2
    bench_run b32lean-a 110 ours-bf16-2-141gb "${LEAN[@]}"
    bench_run b32full 110 ours-bf16-2-141gb
    bench_run b16-b 110 ours-bf16-2
    bench_run b32lean-b 110 ours-bf16-2-141gb "${LEAN[@]}"
elif [[ $phase == 2 ]]; then
    bench_run f16 110 ours-fp16-2
    bench_run f32lean 110 ours-fp16-2-141gb "${LEAN[@]}"
    bench_run b32part 110 ours-bf16-2-141gb --set recompute_gelu=36 --set max_gpu_memory_gb=77
    for dtype in bfloat16 float16; do
        curve_with base $dtype 0 29600 120
        first=$!
        curve_with new $dtype 1 29601 120 --recompute_gelu=-1
        wait $first $!
        compare_curves $dtype
    done
fi
