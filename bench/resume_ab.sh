#!/usr/bin/env bash
# Exact resume with and without the fused kernels, on one GPU: GPT-2-small shapes from scratch in fp16, 8 iterations
# straight against 4 + resume + 4, for fused_kernels True and False; compares every tensor of the two `final`
# checkpoints bitwise (weights, fp32 master, Adam moments, RNG states). Not run yet: written after the 1 x H100
# GPU check of 2026-11-28 00:10 UTC (bench/results/2026-11-27-h100/fused/gpu_check_1gpu/) saw one iteration of 20
# differ by 0.0001 after a resume with the fused kernels on, when the device time ran out.
#   OUT=/tmp/ab bench/resume_ab.sh   (on a GPU machine with requirements.txt installed)
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
SMALL=(--init_from=scratch --n_layer=12 --n_head=12 --n_embd=768 --batch_size=16 --target_batch_size=32
       --learning_rate=6e-4 --eval_interval=4 --eval_iters=2 --always_save_checkpoint=True --plot=False
       --csv_log=False --dtype=float16 --keep_last_n=0)
r() {  # log name, then arguments for train_deepspeed.py
    local name=$1; shift
    timeout 60 python3 -m deepspeed.launcher.runner --num_gpus=1 --master_port=29602 train_deepspeed.py \
        "${SMALL[@]}" "$@" > "$OUT/$name.log" 2>&1
}
for f in True False; do
r straight-$f --out_dir=/tmp/s$f --max_iters=8 --fused_kernels=$f
r first-$f --out_dir=/tmp/h$f --max_iters=4 --fused_kernels=$f
r resumed-$f --out_dir=/tmp/h$f --max_iters=8 --fused_kernels=$f --init_from=resume
python3 - $f <<'P'
import sys, glob, re, torch
f = sys.argv[1]
def flat(o, out):
    if torch.is_tensor(o): out.append(o)
    elif isinstance(o, dict): [flat(v, out) for v in o.values()]
    elif isinstance(o, (list, tuple)): [flat(v, out) for v in o]
    return out
def st(d):
    return [flat(torch.load(p, map_location="cpu", weights_only=False), []) for p in sorted(glob.glob(f"{d}/final/*.pt"))]
a, b = st(f"/tmp/s{f}"), st(f"/tmp/h{f}")
ta, tb = sum(a, []), sum(b, [])
diff = sum(not (x.shape == y.shape and torch.equal(x, y)) for x, y in zip(ta, tb))
print(f"fused {f}: {len(ta)} tensors in final (straight) vs {len(tb)} (resumed); differing: {diff}", flush=True)
P
done
