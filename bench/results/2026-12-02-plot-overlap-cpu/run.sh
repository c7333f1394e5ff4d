#!/usr/bin/env bash
# The end of a run with its loss plot, on this 2-core CPU machine: the tree before (BASE, a worktree: the plot drawn
# after the final save) against this one (drawn while the final save is written). bench/goodput.py --cpu with one
# process and GPT-2 small's shapes (12 x 768, from scratch, float32: a 1.4 GiB checkpoint, so that its write takes
# seconds, as GPT-2 XL's 20 GiB do on a GPU machine), 2 iterations, eval + save at the end, plot on; 3 rounds
# alternated. A CPU figure, not a GPU one.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
base=${BASE:-56ba762}
out=${OUT:-/tmp/plot-overlap}
rm -rf /tmp/plot-base "$out"
git -C "$repo" worktree add -f /tmp/plot-base "$base" -q
cp "$repo/bench/goodput.py" /tmp/plot-base/bench/goodput.py  # this tree's, in both: it launches its own tree
for f in train.bin val.bin; do ln -sf "$repo/data/shakespeare/$f" /tmp/plot-base/data/shakespeare/$f; done
job=(--gpus 1 --set plot=True --set n_layer=12 --set n_head=12 --set n_embd=768 --set max_iters=2
     --set eval_interval=2 --set eval_iters=2 --set keep_last_n=1)
for round in 1 2 3; do
    for tree in base new; do
        dir=$repo; [[ $tree == base ]] && dir=/tmp/plot-base
        (cd "$dir" && python bench/goodput.py --cpu "${job[@]}" --out "$out/$tree-$round" \
            --run-dir /tmp/plot-run >/dev/null)
    done
done
python - "$out" <<'PY'
import glob, json, re, statistics, sys
rows = {}
for f in sorted(glob.glob(f"{sys.argv[1]}/*/goodput.json")):
    r = json.load(open(f))
    log = open(f.replace("goodput.json", "run.log")).read()
    stamp = lambda pattern: float(re.findall(rf"^\[\s*([\d.]+)s\] {pattern}", log, re.M)[-1])
    last_step = stamp(r"iter \d+/\d+ \|")
    r["last_step_to_exit_s"] = round(r["wall_s"] - last_step, 2)
    r["final_save_s"] = r["saves"][-1]["seconds"]
    r["plot_at_s"] = round(stamp("loss plot:") - last_step, 2)
    r["save_line_at_s"] = round(stamp("saved final") - last_step, 2)
    rows.setdefault(f.split("/")[-2].rsplit("-", 1)[0], []).append(r)
keys = ("wall_s", "last_step_to_exit_s", "final_save_s", "save_line_at_s", "plot_at_s", "step_s")
print("| tree | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
for name, rs in sorted(rows.items()):
    print(f"| {name} | " + " | ".join(f"{statistics.median(r[k] for r in rs):.2f} ({', '.join(f'{r[k]:.2f}' for r in rs)})"
                                     for k in keys) + " |")
PY
git -C "$repo" worktree remove --force /tmp/plot-base
