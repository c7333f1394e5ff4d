"""Shared fixtures: a prepared Tiny Shakespeare, and launching the real script through the deepspeed launcher
on DeepSpeed's CPU accelerator."""
import base64
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE_TXT = os.path.join(REPO, "tests", "data", "tinyshakespeare.txt")
# A tiny model keeps each CPU launch to ~20 s; 4 x 2 x 2 ranks x 64 tokens = 1,024 tokens per iteration.
TINY = ["config/cpu_tiny.py", "--eval_iters=4", "--plot=False"]


@pytest.fixture(autouse=True)
def torch_loads_as_before(monkeypatch):
    """The trainer's in-process start (checkpoint.safe_loading) forces weights-only loading for its process: not
    for the tests after it."""
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0")


@pytest.fixture(scope="session")
def shakespeare(tmp_path_factory):
    """Tiny Shakespeare prepared by data/shakespeare/prepare.py, as a dataset path."""
    from data.shakespeare import prepare
    out = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare.prepare(SHAKESPEARE_TXT, str(out))
    return str(out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_env(extra=None):
    # PYTHONFAULTHANDLER: a rank that aborts or crashes prints where its Python threads were
    env = dict(os.environ, DS_ACCELERATOR="cpu", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    env.pop("WANDB_DIR", None)  # the trainer's own choice, out_dir/logs, is what the tests check
    env.update(extra or {})
    return env


def launch_cmd(args, nproc=2, script="train_deepspeed.py", runner=False, port=None):
    """DeepSpeed's launch.py, the launcher process that starts the ranks, gives them their environment and ends them
    all when one fails, as `deepspeed --num_gpus=N` (runner.py) starts it on one machine; runner=True goes through
    runner.py as well, for the tests of what a terminal's signals do to the whole command. The runner only builds
    launch.py's arguments (and PYTHONPATH) here, and its own start-up, 3.3 s of importing torch and DeepSpeed, is
    a tenth of a tiny run: most tests leave it out."""
    port = f"--master_port={port or free_port()}"
    if runner:
        return [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_gpus={nproc}", port, script, *args]
    world_info = base64.urlsafe_b64encode(json.dumps({"localhost": list(range(nproc))}).encode()).decode()
    return [sys.executable, "-u", "-m", "deepspeed.launcher.launch", f"--world_info={world_info}",
            "--master_addr=127.0.0.1", port, "--enable_each_rank_log=None", "--log_level=info", script, *args]


def launch(args, nproc=2, env=None, timeout=600, faults=None, runner=False, port=None):
    """Run train_deepspeed.py through the deepspeed launcher; returns the CompletedProcess (output merged). With
    `faults` (tests/faulty_train.py's spec, e.g. "nan@3:1") the trainer runs with those faults patched in. On
    timeout the whole process group goes, trainers included, before the test fails."""
    proc = start(args, nproc, env, faults, runner, port)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"run did not end within {timeout}s:\n{out[-4000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out)


def start(args, nproc=2, env=None, faults=None, runner=False, port=None):
    """Like launch, in the background; the caller reads proc.stdout line by line."""
    script = "train_deepspeed.py" if faults is None else "tests/faulty_train.py"
    env = dict(env or {}, **({"TRAIN_FAULT": faults} if faults else {}))
    if not runner:  # what runner.py does: the repository first on the path (tests/faulty_train.py imports from it)
        env.setdefault("PYTHONPATH", os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(launch_cmd(args, nproc, script, runner, port), cwd=REPO, env=train_env(env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def iter_losses(log):
    """{iteration: logged loss} from the per-iteration lines."""
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^iter (\d+)/\d+ \| loss (\S+)", log, re.M)}


def eval_losses(log):
    """{iteration: (train loss, val loss)} from the eval lines."""
    return {int(m.group(1)): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^eval (\d+): train loss (\S+) \| val loss (\S+)", log, re.M)}


def assert_ok(proc):
    assert proc.returncode == 0, proc.stdout[-6000:]


def reference_args(shakespeare, out):
    """The reference run's training settings (12 iterations, evals at 0/6/12) into `out`: a run with them gets the
    reference run's losses."""
    return [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--dropout=0.1", "--max_iters=12",
            "--eval_interval=6", "--lr_decay_iters=12"]


@pytest.fixture(scope="session")
def reference_run(shakespeare, tmp_path_factory):
    """12 iterations of the tiny model with dropout, evals at 0/6/12, every logger on: (out_dir, log)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    proc = launch([*reference_args(shakespeare, out), "--tensorboard_log=True", "--wandb_log=True", "--plot=True"],
                  env={"WANDB_MODE": "offline"})
    assert_ok(proc)
    return str(out), proc.stdout


def shm_buffers():
    """DeepSpeed's CPU all-reduce buffers in /dev/shm (66 MB each): a run must not leave its own behind."""
    return set(glob.glob("/dev/shm/deepspeed_allreduce_buffer_*"))


def forget_hash(tag_dir, name):
    """complete.json's entry for tag_dir/name as a checkpoint from before content hashes had it (its size alone), so
    that a test reaches what loading a damaged file of that size does."""
    import json
    path = os.path.join(tag_dir, "complete.json")
    with open(path) as f:
        marker = json.load(f)
    marker["files"][name] = os.path.getsize(os.path.join(tag_dir, name))
    with open(path, "w") as f:
        json.dump(marker, f)
