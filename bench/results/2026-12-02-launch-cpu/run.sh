#!/usr/bin/env bash
# The launch layers of run_deepspeed_xl.sh on this 2-core CPU machine: the tree before (BASE, a worktree) against
# this one, bench/goodput.py --cpu (config/cpu_tiny.py, 8 iterations, eval + save every 2) with 1 and 2 processes,
# 3 rounds alternated; this tree's goodput.py in both (it launches through the script). A CPU figure, not a GPU one.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
base=${BASE:-fe43949}
out=${OUT:-/tmp/launch-cpu}
rm -rf /tmp/launch-base "$out"
git -C "$repo" worktree add -f /tmp/launch-base "$base" -q
cp "$repo/bench/goodput.py" /tmp/launch-base/bench/goodput.py
for f in train.bin val.bin; do ln -sf "$repo/data/shakespeare/$f" /tmp/launch-base/data/shakespeare/$f; done
for round in 1 2 3; do
    for tree in base new; do
        dir=$repo; [[ $tree == base ]] && dir=/tmp/launch-base
        for n in 1 2; do
            (cd "$dir" && python bench/goodput.py --cpu --gpus "$n" --out "$out/$tree-$n-$round" --run-dir /tmp/launch-run >/dev/null)
        done
    done
done
python - "$out" <<'PY'
import glob, json, statistics, sys
runs = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/*/goodput.json")):
    runs.setdefault(f.split("/")[-2].rsplit("-", 1)[0], []).append(json.load(open(f)))
keys = ("wall_s", "launch_to_first_step_s", "process_to_first_step_s", "exit_s", "step_s")
print("| tree, processes | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
for name, rs in sorted(runs.items()):
    print(f"| {name} | " + " | ".join(f"{statistics.median(r[k] for r in rs):.2f} ({', '.join(f'{r[k]:.2f}' for r in rs)})"
                                     for k in keys) + " |")
PY
git -C "$repo" worktree remove --force /tmp/launch-base
