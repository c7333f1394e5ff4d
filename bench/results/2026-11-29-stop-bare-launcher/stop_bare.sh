#!/usr/bin/env bash
# Ctrl-C on the bare `deepspeed` launcher during GPT-2 XL training (fourteenth session): the terminal's SIGINT reaches
# every process of the group; DeepSpeed's launch.py passes SIGTERM on to the trainers and kills them 30 s later.
# Does the trainers' save finish inside those 30 s? On GPUs 0 and 0,1 of this machine, XL from random init, fp16,
# micro-batch 16, 128 sequences per iteration; SIGINT to the launcher's process group after iteration 3.
#   bench/results/2026-11-29-stop-bare-launcher/stop_bare.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
out=$1
mkdir -p "$out"
XL=(--init_from=scratch --n_layer=48 --n_head=25 --n_embd=1600 --block_size=1024 --dataset=shakespeare
    --dtype=float16 --batch_size=16 --target_batch_size=128 --max_iters=50 --eval_interval=1000 --plot=False)
for gpus in 0 0,1; do
    tag=gpus-${gpus/,/-}
    rm -rf /tmp/stop-$tag
    setsid python3 -m deepspeed.launcher.runner --include=localhost:$gpus --master_port=2961${#gpus} \
        train_deepspeed.py "${XL[@]}" --out_dir=/tmp/stop-$tag > "$out/$tag.log" 2>&1 &
    pid=$!
    for _ in $(seq 240); do grep -q '^iter 3/' "$out/$tag.log" && break; sleep 1; done
    t0=$(date +%s.%N)
    kill -INT -- -$pid  # what a terminal's Ctrl-C does
    wait $pid
    rc=$?
    t_runner=$(date +%s.%N)
    # the runner leaves at once (its KeyboardInterrupt); launch.py and the trainers may go on for up to 30 s
    for _ in $(seq 90); do pgrep -f "out_dir=/tmp/stop-$tag" > /dev/null || break; sleep 1; done
    t1=$(date +%s.%N)
    {
        echo "$tag: deepspeed exit $rc after $(python3 -c "print(round($t_runner - $t0, 1))") s; the last process of the run gone" \
             "$(python3 -c "print(round($t1 - $t0, 1))") s after the SIGINT"
        grep -E '^\[rank [0-9]\] SIG|^saved|^stopped|^error' "$out/$tag.log"
        echo "out_dir: $(ls /tmp/stop-$tag | tr '\n' ' ')  latest: $(cat /tmp/stop-$tag/latest 2>/dev/null)"
        echo
    } >> "$out/summary.txt"
done
