#!/usr/bin/env bash
# One H200: where a warm GPT-2 XL start goes, and what this tree's start-up changes cut from it, alternating the tree
# before them (ab/before: 1b6920a, exported beside this tree) and this one; the write of a checkpoint file
# (bench/write_speed.py); the default main job through bench/goodput.py.
# device run (carry .whl, data/shakespeare): pip install the wheels (../shared/GPU.md), then
#   bench/results/2026-12-04-startup/run.sh $OUT
set -uo pipefail
out=$1
cd "$(dirname "$0")/../../.."
export TORCH_CUDA_ARCH_LIST=9.0 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$out"
v=$out/versions.txt
{ nvidia-smi --query-gpu=name,driver_version,memory.total,persistence_mode --format=csv; date -u; nproc; free -g
  python3 -c "import torch, deepspeed, transformers, sys; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__, 'python', sys.version.split()[0], 'dont_write_bytecode', sys.flags.dont_write_bytecode)"
  env | grep -E "^PYTHON" ; site=$(python3 -c "import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))")
  echo "site-packages $site writable: $(test -w "$site" && echo yes || echo no); torch/__pycache__ files: $(ls "$site/torch/__pycache__" 2>/dev/null | wc -l)"
  git log -1 --format=%H; git status --short | head -20
  python3 -c "import sys; sys.path.insert(0, 'bench'); import goodput; goodput.stand_in_cache()"; } > "$v" 2>&1
# Python's compiled modules: the machine's site-packages are not written to (above), so every process would compile
# its imports from source, which a user's pip install does once; they go to one cache here, which the first run fills
export PYTHONPYCACHEPREFIX=/tmp/pycache
echo "--- a bare process: import torch, then the first set_device (the CUDA context); the context made in a thread
# (distributed.open_gpu_early's calls) started before or after torch's import, or not at all" >> "$v"
for early in none before after none before after; do
  EARLY=$early timeout 60 python3 -c "
import ctypes, os, threading, time
def retain():
    cuda, device, context = ctypes.CDLL('libcuda.so.1'), ctypes.c_int(0), ctypes.c_void_p()
    cuda.cuInit(0); cuda.cuDeviceGet(ctypes.byref(device), 0); cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)
t0 = time.time()
if os.environ['EARLY'] == 'before':
    threading.Thread(target=retain, daemon=True).start()
import torch; t1 = time.time()
if os.environ['EARLY'] == 'after':
    threading.Thread(target=retain, daemon=True).start()
    time.sleep(2.0)  # what the trainer does meanwhile: DeepSpeed's import, the data
t2 = time.time(); torch.cuda.set_device(0); t3 = time.time(); torch.zeros(1, device='cuda'); t4 = time.time()
print(f'context thread {os.environ[\"EARLY\"]:6}: import torch {t1 - t0:.2f}s, set_device {t3 - t2:.2f}s, first tensor {t4 - t3:.2f}s, all {t4 - t0:.2f}s')" >> "$v" 2>&1
done
timeout 170 python3 bench/write_speed.py --threads 4,8,16 --out "$out/write_speed.json" > /tmp/write_speed.txt 2>&1
tail -2 /tmp/write_speed.txt >> "$v"
{ time timeout 150 ./run_deepspeed_xl.sh --max_iters=2 --eval_interval=1000 --save_checkpoints=False --plot=False \
    --out_dir=/tmp/short ; } > "$out/short-cold.txt" 2>&1
for round in 1 2; do
  for tree in ab/before .; do
    s=$(date +%s.%N)
    (cd $tree && timeout 120 ./run_deepspeed_xl.sh --max_iters=2 --eval_interval=1000 --save_checkpoints=False \
        --plot=False --out_dir=/tmp/short) > /tmp/ab.txt 2>&1
    e=$(date +%s.%N)
    echo "round $round tree $tree: launch to exit $(python3 -c "print(f'{$e - $s:.1f}')")s | $(grep 'first optimizer step' /tmp/ab.txt)" >> "$out/ab.txt"
  done
done
timeout 120 python3 bench/startup_profile.py --out "$out/startup.txt" -- config/finetune_shakespeare_xl.py \
    --max_iters=1 --eval_interval=1000 --save_checkpoints=False --plot=False --out_dir=/tmp/prof > /tmp/prof.txt 2>&1
grep -E "first optimizer step|Error" /tmp/prof.txt >> "$v"
date -u >> "$v"
timeout 200 python3 bench/goodput.py --gpus 1 --job default --set keep_last_n=1 --out "$out/default" --timeout 190 \
    > "$out/goodput-default.txt" 2>&1
date -u >> "$v"
rm -rf /tmp/goodput-1gpu /tmp/short /tmp/prof
