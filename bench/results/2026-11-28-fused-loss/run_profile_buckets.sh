#!/usr/bin/env bash
# The sixth session's first call (asked for 4 x H100, given 4 x H200), `profile-buckets-h200x4/` here: one profiled
# iteration of the trainer on 4 GPUs (GPT-2 XL, bf16, --profile_iteration=6), bench/trace_summary.py on the traces of
# ranks 0 and 3; then ZeRO's reduce_bucket_size = allgather_bucket_size swept, the 2e8 default first and last. It was
# phase F of ../2026-11-27-h100-baseline/run_h100x4.sh (`run_h100x4.sh F OUT`), taken out unchanged.
#   bench/results/2026-11-28-fused-loss/run_profile_buckets.sh /tmp/out
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
out=$1
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0
timeout 80 python3 bench/bench.py --runs ours-bf16-4 --set profile_iteration=6 --tag profile --out "$out" \
    --timeout 75
for r in 0 3; do
    python3 bench/trace_summary.py /tmp/bench-ours-bf16-4/profile/rank_$r.json.gz > "$out/trace_rank$r.txt" 2>&1
done
cp /tmp/bench-ours-bf16-4/profile/rank_0.json.gz "$out/trace_rank0.json.gz"
for size in 200000000 50000000 500000000 1000000000 200000000; do
    python3 -c 'import json, sys; ds = json.load(open("ds_config_zero2.json")); z = ds["zero_optimization"]
z["reduce_bucket_size"] = z["allgather_bucket_size"] = int(sys.argv[1]); json.dump(ds, open(sys.argv[2], "w"))' \
        $size /tmp/ds_bucket_$size.json
    timeout 70 python3 bench/bench.py --runs ours-bf16-4 --set deepspeed_config=/tmp/ds_bucket_$size.json \
        --tag bucket-$size --out "$out" --timeout 65
done
