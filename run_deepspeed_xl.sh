#!/usr/bin/env bash
# Fine-tune GPT-2 XL with DeepSpeed ZeRO-2 on every visible GPU of this machine, or on several machines.
#
#   ./run_deepspeed_xl.sh                                   # config/finetune_shakespeare_xl.py, all GPUs
#   ./run_deepspeed_xl.sh config/my_run.py --max_iters=500  # another config; --key=value pass through
#   ./run_deepspeed_xl.sh config/xl_141gb.py                # ~141 GB cards (H200): micro-batch 32, ~3% faster
#   ./run_deepspeed_xl.sh config/xl_80gb_mb32.py            # 2 or 4 GPUs of 80 GB: micro-batch 32 with the GELU
#                                                           #   outputs recomputed, ~1.5% faster
#   NUM_GPUS=2 ./run_deepspeed_xl.sh                        # the first 2 GPUs
#   CUDA_VISIBLE_DEVICES=2,3 ./run_deepspeed_xl.sh          # these GPUs
#   HOSTFILE=hostfile ./run_deepspeed_xl.sh                 # several machines (DeepSpeed hostfile, shared out_dir)
#   MASTER_PORT=29600 ./run_deepspeed_xl.sh                 # the rendezvous port (default 29500; on one machine
#                                                           #   a free one is picked when 29500 is taken)
#   SHAKESPEARE_INPUT=/path/input.txt ./run_deepspeed_xl.sh # offline: prepare Tiny Shakespeare from a local copy
#   DEEPSPEED_LOG_LEVEL=info ./run_deepspeed_xl.sh          # the launcher's own lines too (default: critical only)
#
# SIGTERM and SIGINT (Ctrl-C) are forwarded to the training processes, which finish the current step, save a
# checkpoint and exit with status 75; continue with --init_from=resume. The script exits with the trainer's status.
set -uo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

die() { echo "error: $*" >&2; exit 2; }
for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
        sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'  # this header, then the trainer's settings
        exec "$PYTHON" train_deepspeed.py --help
    fi
done
[[ -z ${NUM_GPUS:-} || $NUM_GPUS =~ ^[1-9][0-9]*$ ]] || die "NUM_GPUS must be a whole number >= 1, got '$NUM_GPUS'"
[[ -z ${MASTER_PORT:-} || ($MASTER_PORT =~ ^[1-9][0-9]{0,4}$ && $MASTER_PORT -le 65535) ]] ||
    die "MASTER_PORT must be a port number from 1 to 65535, got '$MASTER_PORT'"
command -v deepspeed >/dev/null 2>&1 || die "deepspeed is not installed; run: pip install -r requirements.txt"

CONFIG=config/finetune_shakespeare_xl.py
if [[ $# -gt 0 && $1 != --* ]]; then CONFIG=$1; shift; fi
[[ -f $CONFIG ]] || die "config file $CONFIG not found"

# The trainer's own parser (settings.py) reads the settings, so this script and the run can never disagree; the
# same Python counts the visible GPUs as torch.cuda.device_count() would, from the CUDA driver itself (importing
# torch here would hold the launch up by seconds).
settings=$("$PYTHON" - "$CONFIG" "$@" <<'EOF'
import ctypes, sys, settings
try:
    c = settings.parse_config(sys.argv[1:])
except settings.InputError as e:
    sys.exit(f"error: {e}")
try:
    cuda, n = ctypes.CDLL("libcuda.so.1"), ctypes.c_int(0)
    visible = n.value if cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(n)) == 0 else 0
except OSError:  # no NVIDIA driver
    visible = 0
print(c.dataset, c.init_from, c.dtype, c.deepspeed_config, visible)
EOF
) || exit 2
read -r DATASET INIT_FROM DTYPE DSCONFIG visible <<<"$settings"
[[ -f $DSCONFIG ]] || die "deepspeed_config $DSCONFIG not found"

if [[ $DATASET == shakespeare && ! -f data/shakespeare/train.bin ]]; then
    echo "preparing Tiny Shakespeare (data/shakespeare/prepare.py)"
    "$PYTHON" data/shakespeare/prepare.py ${SHAKESPEARE_INPUT:+--input "$SHAKESPEARE_INPUT"} || exit 2
fi

# The rendezvous port must be free here, or a second job on this machine dies on EADDRINUSE. With a hostfile
# it is the first host's port, which this machine cannot check. SO_REUSEADDR as torch's TCPStore binds: a port
# a finished run left in TIME_WAIT is free, one a running job listens on is not.
port_free() {
    "$PYTHON" -c 'import socket as S, sys; s = S.socket(); s.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
s.bind(("", int(sys.argv[1])))' "$1" 2>/dev/null
}
if [[ -n ${MASTER_PORT:-} ]]; then
    [[ -n ${HOSTFILE:-} ]] || port_free "$MASTER_PORT" || die "MASTER_PORT=$MASTER_PORT is in use on this machine" \
        "(or needs root); choose another, or unset MASTER_PORT to have a free port picked"
    port=$MASTER_PORT
elif [[ -n ${HOSTFILE:-} ]] || port_free 29500; then
    port=29500
else
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    echo "port 29500 is in use (another job on this machine?); using port $port (set MASTER_PORT to choose)"
fi

# The lightest start that does the job, each layer of launcher costing seconds of imports before the first step:
# several machines go through DeepSpeed's runner (it starts launch.py on each), several processes on this machine
# through launch.py itself, and one process is started directly, as launch.py would start it. Every trainer has
# --local_rank=N among its arguments (forward below finds them by it).
# DeepSpeed's launchers log ~15 lines of their own per run, and one [ERROR] line after every non-zero exit, which
# would be the last line on screen after the trainer's own one-line error; the trainer says what happened.
log_level=--log_level="${DEEPSPEED_LOG_LEVEL:-critical}"
if [[ -n ${HOSTFILE:-} ]]; then
    [[ -f $HOSTFILE ]] || die "hostfile $HOSTFILE not found"
    start=(deepspeed "$log_level" --hostfile="$HOSTFILE")
    [[ -z ${MASTER_PORT:-} ]] || start+=(--master_port="$port")
    start+=(train_deepspeed.py)
    where="the machines in $HOSTFILE"
else
    unit=GPUs
    if [[ $visible -eq 0 ]]; then
        # no GPU: DeepSpeed's CPU accelerator, for smoke runs such as NUM_GPUS=2 ./run_deepspeed_xl.sh config/cpu_tiny.py
        [[ -n ${NUM_GPUS:-} ]] || die "no GPU is visible; for a CPU smoke run set NUM_GPUS (processes) and use config/cpu_tiny.py"
        visible=$NUM_GPUS
        unit="CPU processes"
        export DS_ACCELERATOR=cpu  # chosen, not detected: DeepSpeed then warns in no process of a GPU it lacks
    fi
    GPUS=${NUM_GPUS:-$visible}
    if [[ $GPUS -eq 1 ]]; then unit=${unit/GPUs/GPU}; unit=${unit/processes/process}; fi
    [[ $GPUS -le $visible ]] || die "NUM_GPUS=$GPUS but only $visible GPUs are visible"
    ids=$(seq -s, 0 $((GPUS - 1)))
    where="$GPUS $unit"
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
        ids=$(echo "$CUDA_VISIBLE_DEVICES" | cut -d, -f1-"$GPUS")
        where="GPUs $ids"
    fi
    if [[ $GPUS -eq 1 ]]; then
        export CUDA_VISIBLE_DEVICES=$ids RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port
        start=("$PYTHON" -u train_deepspeed.py --local_rank=0)
    else
        # launch.py gives each rank one of these GPUs (it sets CUDA_VISIBLE_DEVICES itself; indices or UUIDs),
        # encoded as DeepSpeed's runner.encode_world_info does (importing it would import deepspeed: seconds)
        world_info=$("$PYTHON" -c 'import base64, json, sys
ids = [int(i) if i.isdigit() else i for i in sys.argv[1].split(",")]
print(base64.urlsafe_b64encode(json.dumps({"localhost": ids}).encode()).decode())' "$ids")
        unset CUDA_VISIBLE_DEVICES
        start=("$PYTHON" -u -m deepspeed.launcher.launch --world_info="$world_info" --master_addr=127.0.0.1
               --master_port="$port" "$log_level" train_deepspeed.py)
    fi
fi
# the trainer prints the batch arithmetic (micro-batch x accumulation x GPUs x block) once it has checked it
echo "model $INIT_FROM on $where, $DTYPE"

# setsid: Ctrl-C reaches only this script, which asks the trainers to save; a launcher would kill them.
setsid "${start[@]}" "$CONFIG" "$@" &
started=$!

descendants() {
    local pid
    for pid in $(pgrep -P "$1"); do echo "$pid"; descendants "$pid"; done
}
forward() {
    echo "run_deepspeed_xl.sh: forwarding SIG$1 to the training processes (they save, then exit)" >&2
    for pid in $started $(descendants "$started"); do
        # a trainer has --local_rank=N in its arguments; a launcher above it must not be signalled (it kills)
        if grep -qa -- "--local_rank=" "/proc/$pid/cmdline" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null; fi
    done
}
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
while true; do
    wait "$started"
    status=$?
    kill -0 "$started" 2>/dev/null || break  # wait was only interrupted by a forwarded signal
done
exit "$status"
