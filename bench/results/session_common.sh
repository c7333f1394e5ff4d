# Sourced by the experiment drivers in the folders beside it (bench/results/<date>-<name>/run_*.sh: run_fused.sh,
# run_loss_kernel.sh, run_norm_kernel.sh, run_partials.sh, run_grid.sh, run_norm.sh, run_recompute.sh) after
# `set -uo pipefail; phase=$1 out=$2`: the working directory (the repository root, wherever the driver is started
# from; $here is the driver's own folder) and environment, the loss-curve runs and their comparison, and the
# alternation of this tree with $BASE (and $HEAD) in throughput and profiles.
here=$(cd "$(dirname "$0")" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
# a short real run for loss curves: GPT-2-medium shapes from scratch, 40 iterations of 32 sequences
MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=32 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --max_iters=40 --eval_interval=20 --eval_iters=-1 --save_checkpoints=False --plot=False)

tree_dir() {  # TREE: where "new" (this tree), "base" ($BASE) or "head" ($HEAD) is
    case $1 in new) echo "$PWD" ;; base) echo "$BASE" ;; head) echo "$HEAD" ;; esac
}

alternate() {  # GPUS SECONDS RUN...: bench.py's ours-<dtype>-GPUS for each RUN "<dtype>-new" (this tree) or
               # "<dtype>-base" ($BASE), one after the other, each given SECONDS
    local gpus=$1 seconds=$2 run
    shift 2
    for run in "$@"; do
        (cd "$(tree_dir "${run##*-}")" && timeout "$seconds" python3 bench/bench.py --runs "ours-${run%-*}-$gpus" --tag "$run" \
            --out "$out" --timeout $((seconds - 5)))
    done
}

curve_run() {  # TREE DTYPE GPU PORT SECONDS: in the background ($! is its process), the loss-curve run of this tree
               # ("new") or $BASE ("base") in DTYPE on GPU, its log $out/curve-DTYPE-TREE.log
    local tree=$1 dtype=$2 gpu=$3 port=$4 seconds=$5
    rm -rf /tmp/curve-$dtype-$tree  # a fresh run each time: the trainer refuses an out_dir holding checkpoints
    (cd "$(tree_dir $tree)" && timeout "$seconds" python3 -m deepspeed.launcher.runner --include=localhost:$gpu \
        --master_port=$port train_deepspeed.py "${MEDIUM[@]}" --dtype=$dtype \
        --out_dir=/tmp/curve-$dtype-$tree) > "$out/curve-$dtype-$tree.log" 2>&1 &
}

curves_on_four_gpus() {  # $BASE and this tree in bf16 and fp16, all four at once, on GPUs 0-3; waits for them
    local pids=() gpu=0 dtype tree
    for dtype in bfloat16 float16; do
        for tree in base new; do
            curve_run $tree $dtype $gpu $((29600 + gpu)) 150
            pids+=($!) gpu=$((gpu + 1))
        done
    done
    wait "${pids[@]}"
}

curve_pair() {  # DTYPE SECONDS BASE_GPU: this tree's loss-curve run on GPU 0 and $BASE's on BASE_GPU (0 too: each
                # needs ~19 GiB), at once, then compared
    curve_run new $1 0 29600 $2
    local new=$!
    curve_run base $1 $3 29601 $2
    wait $new $!
    compare_curves $1
}

compare_curves() {  # DTYPE: $BASE's loss curve against this tree's, appended to $out/loss_curves.txt
    python3 bench/curves.py "$out"/curve-$1-base.log "$out"/curve-$1-new.log --out "$out/loss_curves_$1.png" \
        >> "$out/loss_curves.txt"
}

profiles_alternated() {  # SECONDS TREE...: bench/profile_step.py --fused (the model alone) of each TREE in turn, two
                         # rounds, each given SECONDS; $out/profile_TREE_ROUND.txt
    local seconds=$1 i tree
    shift
    for i in 1 2; do
        for tree in "$@"; do
            (cd "$(tree_dir $tree)" && timeout "$seconds" python3 bench/profile_step.py --fused --no_shapes) \
                > "$out/profile_${tree}_$i.txt" 2>&1
        done
    done
}
