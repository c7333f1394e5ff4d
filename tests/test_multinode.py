"""Two "nodes" on one machine: two torchrun launches of one process each, as the README's multi-node commands run
them (torchrun --nnodes=2 --node_rank=N), on DeepSpeed's CPU accelerator."""
import re
import subprocess
import sys
import time

import pytest

import checkpoint as ckpt
from conftest import REPO, TINY, free_port, iter_losses, train_env

pytestmark = pytest.mark.slow


def node_command(launcher, rank, nodes, port, hostfile):
    """The README's multi-node commands, for node `rank` (one process per node)."""
    if launcher == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={rank}",
                "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    return [sys.executable, "-m", "deepspeed.launcher.runner", f"--hostfile={hostfile}", "--no_ssh",
            f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}"]


def torchrun_nodes(args_per_node, timeout=300, launcher="torchrun", tmp_path=None):
    """Start one launch per node (node_rank 0, 1, ...) with its own trainer arguments; returns their
    (exit code, output) once all have ended."""
    port = free_port()
    hostfile = None
    if launcher == "deepspeed":
        hostfile = tmp_path / "hostfile"
        hostfile.write_text("".join(f"node{r} slots=1\n" for r in range(len(args_per_node))))
    procs = [subprocess.Popen([*node_command(launcher, rank, len(args_per_node), port, hostfile),
                               "train_deepspeed.py", *args],
                              cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank, args in enumerate(args_per_node)]
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise AssertionError("a node did not end in time") from None
        results.append((proc.returncode, out))
    return results


def trainer_exit(out):
    """The trainer's exit status, as torchrun reports a failed one (torchrun itself then exits 1)."""
    m = re.search(r"exitcode\s*: (-?\d+)", out)
    return int(m.group(1)) if m else None


def errors(out):
    return [line for line in out.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("launcher", ["torchrun", "deepspeed"])
def test_two_nodes_with_a_shared_out_dir_train(shakespeare, tmp_path, launcher):
    out = tmp_path / "out"
    args = [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=4", "--eval_interval=2"]
    (code0, out0), (code1, out1) = torchrun_nodes([args, args], launcher=launcher, tmp_path=tmp_path)
    assert code0 == 0 and code1 == 0, out0[-3000:] + out1[-3000:]
    assert sorted(iter_losses(out0)) == [1, 2, 3, 4] and ckpt.read_latest(str(out)) == "final"
    assert ckpt.verify(str(out / "final"))["world_size"] == 2


def test_nodes_that_do_not_share_out_dir_stop_with_one_line_each(shakespeare, tmp_path):
    """Each node its own out_dir (no shared filesystem): refused at start-up on every node, before any training,
    instead of training and then failing at the first save with a traceback."""
    dirs = [tmp_path / "node0", tmp_path / "node1"]
    args = [[*TINY, f"--dataset={shakespeare}", f"--out_dir={d}", "--max_iters=4", "--eval_interval=2"] for d in dirs]
    (code0, out0), (code1, out1) = torchrun_nodes(args)
    assert code0 and code1 and trainer_exit(out0) == trainer_exit(out1) == 2, out0[-3000:] + out1[-3000:]
    assert errors(out0) == [f"error: [rank 0] 1 rank(s) do not see this out_dir {dirs[0]} (their lines say so): "
                            "every node needs the same out_dir on a shared filesystem"]
    assert errors(out1) == [f"error: [rank 1] out_dir {dirs[1]} is not the folder rank 0 writes to (rank 0's test "
                            "file is not there): every node needs the same out_dir on a shared filesystem; mount it "
                            "on every node, or give a path they all share"]
    assert iter_losses(out0) == {} and not any(p.name.startswith(".tmp-") for d in dirs for p in d.iterdir())


def test_a_node_without_the_checkpoint_says_so_itself(reference_run, shakespeare, tmp_path):
    """A resume where node 1's out_dir holds no checkpoint: node 1 prints its own cause (only rank 0 used to print,
    so it exited 2 in silence), and node 0 does not wait for ever."""
    shared, empty = tmp_path / "node0", tmp_path / "node1"
    subprocess.run(["cp", "-r", reference_run[0], str(shared)], check=True)
    empty.mkdir()
    args = [[*TINY, f"--dataset={shakespeare}", f"--out_dir={d}", "--init_from=resume", "--max_iters=14",
             "--dist_timeout_minutes=0.5"] for d in (shared, empty)]
    t0 = time.time()
    (code0, out0), (code1, out1) = torchrun_nodes(args)
    assert code1 and trainer_exit(out1) == 2 and errors(out1) == [
        f"error: [rank 1] init_from='resume' but {empty} holds no checkpoint; start a new run (init_from='gpt2-xl', "
        "'scratch', ...) or point --out_dir at an earlier run"], out1[-3000:]
    assert code0 != 0 and time.time() - t0 < 200
