# Sourced by the GPU session scripts (bench/run_fused.sh, run_loss_kernel.sh, run_norm_kernel.sh, run_partials.sh)
# after `set -uo pipefail; phase=$1 out=$2`: the working directory and environment, the loss-curve run and the
# alternation of this tree with $BASE.
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
# a short real run for loss curves: GPT-2-medium shapes from scratch, 40 iterations of 32 sequences
MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=32 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --max_iters=40 --eval_interval=20 --eval_iters=-1 --save_checkpoints=False --plot=False)

alternate() {  # GPUS SECONDS RUN...: bench.py's ours-<dtype>-GPUS for each RUN "<dtype>-new" (this tree) or
               # "<dtype>-base" ($BASE), one after the other, each given SECONDS
    local gpus=$1 seconds=$2 run dir
    shift 2
    for run in "$@"; do
        dir=$PWD; [[ $run == *base ]] && dir=$BASE
        (cd "$dir" && timeout "$seconds" python3 bench/bench.py --runs "ours-${run%-*}-$gpus" --tag "$run" \
            --out "$out" --timeout $((seconds - 5)))
    done
}

curve_run() {  # TREE DTYPE GPU PORT SECONDS: in the background ($! is its process), the loss-curve run of this tree
               # ("new") or $BASE ("base") in DTYPE on GPU, its log $out/curve-DTYPE-TREE.log
    local tree=$1 dtype=$2 gpu=$3 port=$4 seconds=$5 dir=$PWD
    [[ $tree == base ]] && dir=$BASE
    (cd "$dir" && timeout "$seconds" python3 -m deepspeed.launcher.runner --include=localhost:$gpu \
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
