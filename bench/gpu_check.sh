#!/usr/bin/env bash
# Proof on real GPUs (CI has none): the real launcher on 2 GPUs (or those in GPUS) trains a GPT-2-medium-sized model from scratch on
# Tiny Shakespeare in fp16 and in bf16, evaluates, checkpoints, resumes exactly; then GPT-2 XL shapes for a few
# iterations.
#
#   bench/gpu_check.sh                   # GPUs 0,1; logs and summary.md under bench/results/<date>-gpu-check/
#   GPUS=2,3 RESULTS=/tmp/x bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
GPUS=${GPUS:-0,1}
RESULTS=${RESULTS:-bench/results/$(date -u +%Y-%m-%d)-gpu-check}
WORK=${WORK:-/tmp/gpu_check}
mkdir -p "$RESULTS" "$WORK"
[[ -f data/shakespeare/train.bin ]] || python3 data/shakespeare/prepare.py || exit 1

MEDIUM=(--init_from=scratch --n_layer=24 --n_head=16 --n_embd=1024 --block_size=1024 --batch_size=16
        --target_batch_size=64 --learning_rate=6e-4 --min_lr=6e-5 --lr_schedule=cosine --warmup_iters=10
        --lr_decay_iters=40 --eval_interval=20 --eval_iters=-1 --always_save_checkpoint=True --plot=False)
run() {  # name, then arguments for train_deepspeed.py; with TRAIN_FAULT set, tests/faulty_train.py patches it in
    local name=$1; shift
    local script=train_deepspeed.py
    [[ -n ${TRAIN_FAULT:-} ]] && script=tests/faulty_train.py
    echo "== $name: $script $*"
    deepspeed --include="localhost:$GPUS" --master_port=$((29500 + RANDOM % 1000)) "$script" "$@" \
        >"$RESULTS/$name.log" 2>&1
    echo "   exit $?"
}
rm -rf "$WORK"/*
NAN_RANK=$(( $(tr -cd , <<<"$GPUS" | wc -c) ))  # the last rank
# deterministic=True: without it two GPU runs from one seed differ in the last bits (bench/NOTES.md, Determinism)
run fp16-straight "${MEDIUM[@]}" --dtype=float16 --max_iters=40 --out_dir="$WORK/fp16-a" --deterministic=True
# stopped by SIGTERM (on the last rank) during iteration 20: iter_20 is saved before its eval, which the resume does
TRAIN_FAULT=sigterm@19:$NAN_RANK run fp16-first-half "${MEDIUM[@]}" --dtype=float16 --max_iters=40 \
    --out_dir="$WORK/fp16-b" --deterministic=True
run fp16-resumed "${MEDIUM[@]}" --dtype=float16 --max_iters=40 --out_dir="$WORK/fp16-b" --init_from=resume \
    --deterministic=True
run bf16-straight "${MEDIUM[@]}" --dtype=bfloat16 --max_iters=40 --out_dir="$WORK/bf16"
TRAIN_FAULT=nan@3:$NAN_RANK run bf16-nan "${MEDIUM[@]}" --dtype=bfloat16 --max_iters=8 --eval_interval=100 --eval_iters=4 \
    --out_dir="$WORK/nan" --save_checkpoints=False
run xl-fp16 --init_from=scratch --n_layer=48 --n_head=25 --n_embd=1600 --batch_size=16 --target_batch_size=64 \
    --dtype=float16 --max_iters=4 --eval_interval=4 --eval_iters=8 --out_dir="$WORK/xl" --save_checkpoints=False

NAN_RANK=$NAN_RANK python3 - "$RESULTS" "$WORK" "$GPUS" <<'EOF'
import os, re, subprocess, sys
results, work, gpus = sys.argv[1:]
n_gpus = len(gpus.split(","))
def log(name):
    return open(os.path.join(results, f"{name}.log")).read()
def losses(text):
    return {int(m[1]): float(m[2]) for m in re.finditer(r"^iter (\d+)/\d+ \| loss (\S+)", text, re.M)}
def scales(text):
    return [float(m[1]) for m in re.finditer(r"\| scale (\d+)", text)]
def evals(text):
    return re.findall(r"^eval (\d+): train loss (\S+) \| val loss (\S+)", text, re.M)
card = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", gpus.split(",")[0]],
                      capture_output=True, text=True).stdout.strip()
import torch, deepspeed
out = [f"# GPU check: {card}, GPUs {gpus}; torch {torch.__version__}, DeepSpeed {deepspeed.__version__}; "
       f"{subprocess.run(['date', '-u'], capture_output=True, text=True).stdout.strip()}", ""]
for name in ("fp16-straight", "bf16-straight"):
    text = log(name)
    l, e = losses(text), evals(text)
    out.append(f"## {name} (GPT-2-medium shapes from scratch, {n_gpus} GPU(s), 64 sequences of 1024 tokens per iteration)")
    out.append(f"- iterations logged: {len(l)}; loss at iteration 1: {l.get(1)}, at 40: {l.get(40)}")
    out.append(f"- evals (iteration, train, val): {e}")
    if scales(text):
        s = scales(text)
        out.append(f"- fp16 loss scale: first {s[0]:.0f}, last {s[-1]:.0f}, min {min(s):.0f}; "
                   f"skipped (overflow) steps: {text.count('skipped (overflow)')}")
    tags = sorted(os.listdir(os.path.join(work, name.split("-")[0] + ("-a" if name.startswith("fp16") else ""))))
    out.append(f"- out_dir: {tags}")
    tail = [x for x in text.splitlines() if x.startswith(("saved", "eval", "iter 40/"))][-3:]
    out += [f"  - `{x}`" for x in tail]
a, b = losses(log("fp16-straight")), losses(log("fp16-resumed"))
common = sorted(set(a) & set(b))
diff = max(abs(a[i] - b[i]) for i in common) if common else None
out.append("## exact resume, fp16, deterministic=True (SIGTERM during iteration 20, resume, 20 more, against 40 straight)")
stop = re.search(r"stopped on SIGTERM after iteration \d+", log("fp16-first-half"))
out.append(f"- first part: `{stop.group(0) if stop else 'no stop line'}`; its evals: {evals(log('fp16-first-half'))}")
out.append(f"- resumed run started at iteration {min(b) if b else None}; iterations compared: {common[:1]}..{common[-1:]}")
out.append(f"- evals of the resumed run: {evals(log('fp16-resumed'))}; of the straight run at 20 and 40: "
           f"{[e for e in evals(log('fp16-straight')) if e[0] in ('20', '40')]}")
out.append(f"- largest per-iteration loss difference: {diff}")

same = subprocess.run([sys.executable, "bench/same_checkpoints.py", "final checkpoints, tensor by tensor",
                       os.path.join(work, "fp16-a"), os.path.join(work, "fp16-b")], capture_output=True, text=True)
out.append(f"- {same.stdout.strip() or same.stderr.strip()[-300:]}")
nan = log("bf16-nan")
out.append(f"## bf16, a NaN loss injected on rank {os.environ['NAN_RANK']} at iteration 4")
out += [f"- `{x}`" for x in nan.splitlines() if x.startswith("iter ")]
xl = log("xl-fp16")
out.append(f"## GPT-2 XL shapes, fp16, {n_gpus} GPU(s)")
out += [f"- `{x}`" for x in xl.splitlines() if x.startswith(("model:", "batch:", "memory:", "iter ", "eval ", "measured"))]
open(os.path.join(results, "summary.md"), "w").write("\n".join(out) + "\n")
print("\n".join(out))
EOF
