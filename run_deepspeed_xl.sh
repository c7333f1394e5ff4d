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
# same Python (one torch import: seconds) counts the visible GPUs.
settings=$("$PYTHON" - "$CONFIG" "$@" <<'EOF'
import sys, settings, torch
try:
    c = settings.parse_config(sys.argv[1:])
except settings.InputError as e:
    sys.exit(f"error: {e}")
print(c.dataset, c.init_from, c.dtype, c.deepspeed_config, torch.cuda.device_count())
EOF
) || exit 2
read -r DATASET INIT_FROM DTYPE DSCONFIG visible <<<"$settings"
[[ -f $DSCONFIG ]] || die "deepspeed_config $DSCONFIG not found"

if [[ $DATASET == shakespeare && ! -f data/shakespeare/train.bin ]]; then
    echo "preparing Tiny Shakespeare (data/shakespeare/prepare.py)"
    "$PYTHON" data/shakespeare/prepare.py ${SHAKESPEARE_INPUT:+--input "$SHAKESPEARE_INPUT"} || exit 2
fi

# DeepSpeed's launcher logs ~15 lines of its own per run, and one [ERROR] line after every non-zero exit, which
# would be the last line on screen after the trainer's own one-line error; the trainer says what happened
launcher=(deepspeed --log_level="${DEEPSPEED_LOG_LEVEL:-critical}")
if [[ -n ${HOSTFILE:-} ]]; then
    [[ -f $HOSTFILE ]] || die "hostfile $HOSTFILE not found"
    launcher+=(--hostfile="$HOSTFILE")
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
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
        # the deepspeed launcher rewrites CUDA_VISIBLE_DEVICES itself; --include keeps the chosen cards
        ids=$(echo "$CUDA_VISIBLE_DEVICES" | cut -d, -f1-"$GPUS")
        launcher+=(--include="localhost:$ids")
        unset CUDA_VISIBLE_DEVICES
        where="GPUs $ids"
    else
        launcher+=(--num_gpus="$GPUS")
        where="$GPUS $unit"
    fi
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
    launcher+=(--master_port="$MASTER_PORT")
elif [[ -z ${HOSTFILE:-} ]] && ! port_free 29500; then
    port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
    echo "port 29500 is in use (another job on this machine?); using port $port (set MASTER_PORT to choose)"
    launcher+=(--master_port="$port")
fi
# the trainer prints the batch arithmetic (micro-batch x accumulation x GPUs x block) once it has checked it
echo "model $INIT_FROM on $where, $DTYPE"

# setsid: Ctrl-C reaches only this script, which asks the trainers to save; the launcher would kill them.
setsid "${launcher[@]}" train_deepspeed.py "$CONFIG" "$@" &
launcher_pid=$!

descendants() {
    local pid
    for pid in $(pgrep -P "$1"); do echo "$pid"; descendants "$pid"; done
}
forward() {
    echo "run_deepspeed_xl.sh: forwarding SIG$1 to the training processes (they save, then exit)" >&2
    for pid in $(descendants "$launcher_pid"); do
        # a trainer has --local_rank=N in its arguments; the launcher above it must not be signalled (it kills)
        if grep -qa -- "--local_rank=" "/proc/$pid/cmdline" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null; fi
    done
}
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
while true; do
    wait "$launcher_pid"
    status=$?
    kill -0 "$launcher_pid" 2>/dev/null || break  # wait was only interrupted by a forwarded signal
done
exit "$status"
