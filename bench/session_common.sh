# Sourced by the GPU session scripts (bench/run_fused.sh, run_loss_kernel.sh, run_norm_kernel.sh) after
# `set -uo pipefail; phase=$1 out=$2`: the working directory and environment, the loss-curve run and the
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
