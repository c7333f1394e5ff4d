#!/usr/bin/env bash
# Bitwise repeatability and exact resume of the real trainer, with and without the fused kernels, on one GPU:
# GPT-2-small shapes from scratch in fp16, 8 iterations. For each variant: two straight runs (are fresh processes
# bitwise equal?) and 4 + resume + 4 (is a resumed run bitwise equal to the straight one?); every tensor of the
# `final` checkpoints is compared (weights, fp32 master, Adam moments, RNG states). Variants: fused, plain (fused
# kernels on / off), fused-no-overlap (DeepSpeed's overlap_comm off, straight runs only), fused-det and plain-det
# (--deterministic=True).
#   OUT=/tmp/ab bench/results/2026-11-28-determinism/resume_ab.sh [variant ...]   (on a GPU machine with requirements.txt installed; default: all)
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
mkdir -p "$OUT"
SMALL=(--init_from=scratch --n_layer=12 --n_head=12 --n_embd=768 --batch_size=16 --target_batch_size=32
       --learning_rate=6e-4 --eval_interval=4 --eval_iters=2 --always_save_checkpoint=True --plot=False
       --csv_log=False --dtype=float16 --keep_last_n=0)
python3 -c "import json; c = json.load(open('ds_config_zero2.json')); c['zero_optimization']['overlap_comm'] = False; \
json.dump(c, open('/tmp/ds_no_overlap.json', 'w'))"
r() {  # log name, then arguments for train_deepspeed.py
    local name=$1; shift
    timeout 90 python3 -m deepspeed.launcher.runner --num_gpus=1 --master_port=29602 train_deepspeed.py \
        "${SMALL[@]}" "$@" > "$OUT/$name.log" 2>&1
}
variants=("$@")
[[ ${#variants[@]} -gt 0 ]] || variants=(fused plain fused-no-overlap fused-det plain-det)
for variant in "${variants[@]}"; do
    case $variant in
        fused) args=(--fused_kernels=True) ;;
        plain) args=(--fused_kernels=False) ;;
        fused-no-overlap) args=(--fused_kernels=True --deepspeed_config=/tmp/ds_no_overlap.json) ;;
        fused-det) args=(--fused_kernels=True --deterministic=True) ;;
        plain-det) args=(--fused_kernels=False --deterministic=True) ;;
        *) echo "unknown variant $variant"; exit 2 ;;
    esac
    d=/tmp/ab-$variant
    rm -rf $d-s1 $d-s2 $d-h  # fresh runs: the trainer refuses an out_dir that holds checkpoints
    r $variant-straight "${args[@]}" --out_dir=$d-s1 --max_iters=8
    r $variant-again "${args[@]}" --out_dir=$d-s2 --max_iters=8
    python3 bench/same_checkpoints.py "$variant: two straight runs" $d-s1 $d-s2
    [[ $variant == fused-no-overlap ]] && continue
    r $variant-first "${args[@]}" --out_dir=$d-h --max_iters=4
    r $variant-resumed "${args[@]}" --out_dir=$d-h --max_iters=8 --init_from=resume
    python3 bench/same_checkpoints.py "$variant: straight vs 4 + resume + 4" $d-s1 $d-h
done
