#!/usr/bin/env bash
# Twelfth session: where do the 4th-decimal differences between the logged losses of deterministic runs come from,
# when every checkpoint tensor is bitwise equal? (bench/NOTES.md, Determinism). One GPU; results to $1.
#   repeat:  loss_repeat.py (beside this script): model.py alone, one batch, forward + backward repeated at other
#            addresses.
#   race:    xent_race.py (beside this script): the fused cross-entropy's losses with and without its in-place
#            gradient pass, for this tree's kernels/fused_loss.py and the one before the barrier (ac526ad's).
#   trainer: the trainer, patched to print every micro-step's loss in hex, in a copy of the tree under /tmp (the
#            tree itself is never edited): two straight deterministic fp16 runs and a SIGTERM-at-20 + resume,
#            GPT-2-medium shapes, 40 iterations of 4 x 16; the patch as a diff in OUT/patch.txt. The patch matches
#            train_deepspeed.py's loop as it was then; where those lines have changed it stops with an error.
#   bench/results/2026-11-29-loss-race/run_loss_trace.sh OUT [repeat race trainer]     (all three by default)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
shift
phases=${*:-repeat race trainer}
cd "$here/../../.."  # the repository root
mkdir -p "$out"
out=$(cd "$out" && pwd)  # the trainer phase runs in the copy
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$out/card.txt"
if [[ $phases == *repeat* ]]; then
    python3 "$here/loss_repeat.py" --deterministic --repeats 30 > "$out/loss_repeat-fp16-det.txt" 2>&1
    python3 "$here/loss_repeat.py" --repeats 10 > "$out/loss_repeat-fp16.txt" 2>&1
fi
if [[ $phases == *race* ]]; then
    git show ac526ad:fused_loss.py > /tmp/fused_loss_before_barrier.py
    python3 "$here/xent_race.py" kernels/fused_loss.py /tmp/fused_loss_before_barrier.py --chunks 2000 \
        > "$out/xent_race.txt" 2>&1
fi
[[ $phases == *trainer* ]] || exit 0
copy=$(mktemp -d /tmp/loss-trace-tree.XXXXXX)  # the working tree's files, without git, results or run outputs
tar -c --exclude=./.git --exclude='./out*' --exclude=./bench/results --exclude=__pycache__ . | tar -x -C "$copy" || exit 1
(cd "$copy" && python3 - <<'PY'
p = "train_deepspeed.py"
s = open(p).read()
for old, new in [
    ("            loss_sum = torch.zeros((), device=device, dtype=torch.float32)\n",
     "            loss_sum = torch.zeros((), device=device, dtype=torch.float32)\n            _micro = []\n"),
    ("                loss_sum += loss.detach().float()\n",
     "                loss_sum += loss.detach().float()\n                _micro.append(loss.detach().clone())\n"),
    ("            flags = flags.tolist()\n",
     "            flags = flags.tolist()\n            print(f'microloss {it + 1} ' + ' '.join(t.item().hex() for t in _micro)"
     " + ' mean ' + (loss_sum / ga).item().hex() + ' logged ' + flags[0].hex(), flush=True)\n")]:
    assert s.count(old) == 1, old
    s = s.replace(old, new)
open(p, "w").write(s)
PY
) || { echo "run_loss_trace.sh: the patch no longer fits train_deepspeed.py; nothing ran" >&2; exit 1; }
diff -u train_deepspeed.py "$copy/train_deepspeed.py" > "$out/patch.txt"
cd "$copy"
MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=64 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --eval_interval=20 --eval_iters=-1 --plot=False --dtype=float16 --max_iters=40
        --deterministic=True)
run() {
    local name=$1; shift
    deepspeed --include=localhost:0 --master_port=$((29500 + RANDOM % 1000)) train_deepspeed.py "${MEDIUM[@]}" "$@" \
        > "$out/$name.log" 2>&1
    echo "$name exit $?" >> "$out/exits.txt"
}
rm -rf /tmp/lt && mkdir -p /tmp/lt
run straight-1 --out_dir=/tmp/lt/a --save_checkpoints=False
run straight-2 --out_dir=/tmp/lt/b --save_checkpoints=False
TRAIN_FAULT=sigterm@19 run first-half --out_dir=/tmp/lt/c
run resumed --out_dir=/tmp/lt/c --init_from=resume --save_checkpoints=False
(cd "$out" && python3 "$here/micro_losses.py" straight-1.log straight-2.log first-half.log resumed.log > compare.txt)
rm -rf "$copy"
