#!/usr/bin/env bash
# Issue 23's GPU A/B, one H200, one sitting: the tree before the restructuring (a3a8cd0, as a tarball in
# .ds_carry/base.tar.gz: git archive a3a8cd0) against this tree.
#   1. the loss curve: GPT-2-medium shapes from scratch, bf16, --deterministic=True, 40 iterations of 32 sequences,
#      both trees at once on GPU 0; the per-iteration logged losses and the final checkpoints tensor by tensor
#   2. throughput: bench.py ours-bf16-1 (GPT-2 XL shapes, 16 x 8), base new base new
#   3. prompt/completion (issue 26): ours-bf16-1-pc after them, same sitting
# device run (carry .whl and .ds_carry): python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
#   --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH &&
#   bench/results/2026-12-02-restructure-ab/run_ab.sh $OUT
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
mkdir -p "$out"
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 ))s] $*" | tee -a "$out/driver.log"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; date -u
  python3 -c "import torch, deepspeed, transformers; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"; } > "$out/versions.txt" 2>&1
python3 data/shakespeare/prepare.py --input tests/data/tinyshakespeare.txt > "$out/prepare.log" 2>&1
BASE=/tmp/base
rm -rf $BASE && mkdir -p $BASE && tar xzf .ds_carry/base.tar.gz -C $BASE
mkdir -p $BASE/data/shakespeare && cp data/shakespeare/*.bin data/shakespeare/meta.json $BASE/data/shakespeare/
stamp "set up"

MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=32 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --max_iters=40 --eval_interval=40 --eval_iters=-1 --plot=False --dtype=bfloat16
        --deterministic=True)
curve() {  # TREE_DIR NAME PORT
    rm -rf /tmp/curve-$2
    (cd "$1" && timeout 240 python3 -m deepspeed.launcher.runner --include=localhost:0 --master_port=$3 \
        train_deepspeed.py "${MEDIUM[@]}" --out_dir=/tmp/curve-$2) > "$out/curve-$2.log" 2>&1
}
curve "$BASE" base 29601 & a=$!
curve "$PWD" new 29602 & b=$!
wait $a $b
stamp "curves done"
python3 bench/curves.py "$out/curve-base.log" "$out/curve-new.log" --out "$out/loss_curves.png" > "$out/loss_curves.txt" 2>&1
python3 bench/same_checkpoints.py "final checkpoints, base vs new" /tmp/curve-base /tmp/curve-new \
    >> "$out/loss_curves.txt" 2>&1
rm -rf /tmp/curve-base /tmp/curve-new
stamp "compared: $(tail -1 "$out/loss_curves.txt")"

for i in 1 2; do
    for tree in base new; do
        dir=$PWD; [[ $tree == base ]] && dir=$BASE
        (cd "$dir" && timeout 150 python3 bench/bench.py --runs ours-bf16-1 --tag "$tree-$i" --out "$out/throughput" \
            --timeout 145) > "$out/bench-$tree-$i.log" 2>&1
        stamp "ours-bf16-1 $tree $i: $(grep -h -o '[0-9,]* tok/s[^|]*' "$out"/throughput/*"$tree-$i"*.md 2>/dev/null | head -1)"
    done
done
left=$(( 585 - ($(date +%s) - t0) ))
if (( left > 100 )); then
    timeout $left python3 bench/bench.py --runs ours-bf16-1-pc --tag pc --out "$out/throughput" --timeout $((left - 5)) \
        > "$out/bench-pc.log" 2>&1
    stamp "ours-bf16-1-pc done"
fi
