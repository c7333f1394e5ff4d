#!/usr/bin/env bash
# The GPU session behind the fused-kernel rows of bench/NOTES.md (third session, 2026-11-27).
# Phase 1 (one H100): the extension's check against fp32 (bench/fused_check.py), the model alone with and
# without the fused ops (bench/profile_step.py), and loss curves of a short real run (GPT-2-medium shapes from
# scratch, 40 iterations, the real trainer) with fused_kernels off and on, in bf16 and fp16.
#   bench/run_fused.sh 1 /tmp/out
set -uo pipefail
cd "$(dirname "$0")/.."
phase=$1 out=$2
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
[[ -f data/shakespeare/train.bin ]] || python3 data/shakespeare/prepare.py || exit 1
MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=32 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --max_iters=40 --eval_interval=20 --eval_iters=-1 --save_checkpoints=False --plot=False)
if [[ $phase == 1 ]]; then
    timeout 240 python3 bench/fused_check.py > "$out/fused_check.txt" 2>&1
    echo "fused_check exit $?" >> "$out/fused_check.txt"
    for variant in "" "--fused" "--compile" "--fused --compile"; do
        name=profile$(tr -d ' -' <<<"_$variant")
        timeout 200 python3 bench/profile_step.py --batch_size 16 --no_shapes $variant > "$out/$name.txt" 2>&1
    done
    for dtype in bfloat16 float16; do
        for fused in False True; do
            timeout 150 python3 -m deepspeed.launcher.runner --num_gpus=1 --master_port=29600 train_deepspeed.py \
                "${MEDIUM[@]}" --dtype=$dtype --fused_kernels=$fused --out_dir=/tmp/curve-$dtype-$fused \
                > "$out/curve-$dtype-fused-$fused.log" 2>&1
        done
    done
fi
