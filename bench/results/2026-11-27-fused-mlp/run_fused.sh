#!/usr/bin/env bash
# The GPU session behind the fused-kernel rows of bench/NOTES.md (third session, 2026-11-27).
# Phase 1 (one H100): the extension's check against fp32 and the model alone with and without the fused ops
# (bench/fused_check.py), where the time goes with them (bench/profile_step.py --fused), and loss curves of a
# short real run (GPT-2-medium shapes from scratch, 40 iterations, the real trainer) with fused_kernels off and
# on, in bf16 and fp16.
# Phase 2 (4 x H100): the throughput table again with the fused ops on by default, beside the same run with
# them off and with compile=True, the peer, and the 1- and 2-GPU scaling runs.
#   bench/results/2026-11-27-fused-mlp/run_fused.sh 1 /tmp/out ; bench/results/2026-11-27-fused-mlp/run_fused.sh 2 /tmp/out
set -uo pipefail
phase=$1 out=$2
source "$(dirname "$0")/../session_common.sh"
[[ -f data/shakespeare/train.bin ]] || python3 data/shakespeare/prepare.py || exit 1
if [[ $phase == 1 ]]; then
    timeout 300 python3 bench/fused_check.py > "$out/fused_check.txt" 2>&1
    echo "fused_check exit $?" >> "$out/fused_check.txt"
    timeout 120 python3 bench/profile_step.py --batch_size 16 --no_shapes --fused > "$out/profile_fused.txt" 2>&1
    for dtype in bfloat16 float16; do
        for fused in False True; do
            timeout 150 python3 -m deepspeed.launcher.runner --num_gpus=1 --master_port=29600 train_deepspeed.py \
                "${MEDIUM[@]}" --dtype=$dtype --fused_kernels=$fused --out_dir=/tmp/curve-$dtype-$fused \
                > "$out/curve-$dtype-fused-$fused.log" 2>&1
        done
    done
elif [[ $phase == 2 ]]; then
    nvidia-smi topo -m > "$out/topology.txt" 2>&1
    timeout 330 python3 bench/bench.py --runs ours-bf16-4,ours-fp16-4,peer-bf16-4 --tag 4gpu --out "$out" --timeout 150
    timeout 80 python3 bench/bench.py --runs ours-bf16-4 --set fused_kernels=False --tag 4gpu-plain --out "$out" \
        --timeout 75
    timeout 95 python3 bench/bench.py --runs ours-bf16-4 --set compile=True --tag 4gpu-compile --out "$out" --timeout 90
    timeout 150 python3 bench/bench.py --runs ours-bf16-2,ours-bf16-1,ours-fp16-1,ours-fp16-2 --concurrent \
        --tag scaling --out "$out" --timeout 140
fi
