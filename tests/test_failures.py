"""Crashes, kills, signals and NaNs, through the deepspeed launcher with 2 CPU processes."""
import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch

import checkpoint as ckpt
import monitoring
import settings
from conftest import (REPO, TINY, assert_ok, eval_losses, forget_hash, free_port, iter_losses, launch, launch_cmd,
                      reference_args, shm_buffers, start, train_env)

pytestmark = pytest.mark.slow


def read_until(proc, pattern, lines):
    """Read the run's output until a line matches; returns that line (the process keeps running)."""
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return line
    raise AssertionError("run ended before: " + pattern + "\n" + "".join(lines[-40:]))


def trainer_pids(root_pid):
    return {int(re.search(r"--local_rank=(\d+)", " ".join(p.cmdline())).group(1)): p.pid
            for p in psutil.Process(root_pid).children(recursive=True)
            if re.search(r"(train_deepspeed|faulty_train)\.py", " ".join(p.cmdline())) and "--local_rank" in " ".join(p.cmdline())}


def test_kill_during_save_keeps_latest_and_resume_recovers(reference_run, shakespeare, tmp_path):
    out = tmp_path / "out"
    common = [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--dropout=0.1", "--eval_interval=6",
              "--lr_decay_iters=12", "--max_iters=18"]
    killed = launch(common, faults="kill_in_save@12:1")  # rank 1 dies inside the iter_12 save
    assert killed.returncode != 0
    assert "saved iter_6" in killed.stdout and "saved iter_12" not in killed.stdout
    assert ckpt.read_latest(str(out)) == "iter_6"
    assert not (out / "iter_12").exists() and (out / ".tmp-iter_12").is_dir()  # half-written, never `latest`
    resumed = launch([*common, "--init_from=resume"])
    assert_ok(resumed)
    assert "checkpoint recovery: removed unfinished checkpoint .tmp-iter_12" in resumed.stdout
    losses = iter_losses(resumed.stdout)
    assert min(losses) == 7  # resumed from iter_6, the newest complete checkpoint
    reference = iter_losses(reference_run[1])
    assert {i: losses[i] for i in range(7, 13)} == {i: reference[i] for i in range(7, 13)}
    assert ckpt.read_latest(str(out)) == "final" and not (out / ".tmp-iter_12").exists()
    # the CSV logs hold each iteration once, the resumed run's values for those the killed run had logged too
    with open(out / "logs" / "csv" / "Train_loss.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "loss"] and [int(r[0]) for r in rows[1:]] == list(range(1, 19))
    assert [round(float(r[1]), 4) for r in rows[7:]] == [losses[i] for i in range(7, 19)]
    with open(out / "logs" / "csv" / "Eval_val_loss.csv") as f:
        assert [r[0] for r in csv.reader(f)] == ["step", "0", "6", "12", "18"]


def test_sigterm_on_one_rank_saves_and_exits_75(shakespeare, tmp_path):
    out = tmp_path / "out"
    proc = start([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=1000", "--eval_interval=500"])
    lines = []
    read_until(proc, r"^iter 3/", lines)
    os.kill(trainer_pids(proc.pid)[1], signal.SIGTERM)  # only rank 1 is told
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == settings.EXIT_PREEMPTED, "".join(lines[-30:])
    log = "".join(lines)
    stopped = re.search(r"stopped on SIGTERM after iteration (\d+); continue with --init_from=resume", log)
    assert stopped, log[-3000:]
    n = int(stopped.group(1))
    assert n >= 3 and f"iter {n}/1000" in log and f"iter {n + 1}/1000" not in log  # finished the step it was in
    assert ckpt.read_latest(str(out)) == f"iter_{n}"
    assert ckpt.verify(str(out / f"iter_{n}"))["iteration"] == n


def test_stop_at_an_eval_iteration_evaluates_it_on_resume(reference_run, shakespeare, tmp_path):
    """A signal during iteration 6 saves iter_6 before its eval; the resumed run does that eval, with the loss the
    uninterrupted run got there, and goes on as it did."""
    _, ref_log = reference_run
    out = tmp_path / "out"
    args = reference_args(shakespeare, out)
    first = launch(args, faults="sigterm@5:1")
    assert first.returncode == settings.EXIT_PREEMPTED, first.stdout[-3000:]
    assert "stopped on SIGTERM after iteration 6" in first.stdout and "eval 6:" not in first.stdout
    assert ckpt.read_latest(str(out)) == "iter_6"
    resumed = launch([*args, "--init_from=resume"])
    assert_ok(resumed)
    assert sorted(eval_losses(resumed.stdout)) == [6, 12]
    assert eval_losses(resumed.stdout) == {k: v for k, v in eval_losses(ref_log).items() if k in (6, 12)}
    assert "saved iter_6 + best" in ref_log and "saved iter_6 + best" in resumed.stdout  # the eval improved: saved
    assert ckpt.read_latest(str(out)) == "final"
    # going back to an earlier tag is allowed, and said
    again = launch([*args, "--init_from=resume", "--resume_tag=iter_6"])
    assert_ok(again)
    assert ("warning: resuming from iter_6 (iteration 6) although latest is final (iteration 12): this run's saves "
            "replace final and the tags after iter_6") in again.stdout
    assert eval_losses(again.stdout)[12] == eval_losses(ref_log)[12]


def test_sigterm_during_an_eval_stops_at_that_eval(reference_run, shakespeare, tmp_path):
    """A signal while iteration 6 is evaluated: iter_6 is saved once and the run stops there, not after a 7th step
    and a second save; the resumed run does not repeat the eval and ends as the uninterrupted run did."""
    _, ref_log = reference_run
    out = tmp_path / "out"
    args = reference_args(shakespeare, out)
    first = launch(args, faults="sigterm_in_eval@6:1")
    assert first.returncode == settings.EXIT_PREEMPTED, first.stdout[-3000:]
    assert "stopped on SIGTERM at iteration 6, after its eval; continue with --init_from=resume" in first.stdout
    assert first.stdout.count("saved iter_") == 1 and "saved iter_6 + best" in first.stdout
    assert sorted(iter_losses(first.stdout)) == list(range(1, 7))
    assert ckpt.read_latest(str(out)) == "iter_6"
    resumed = launch([*args, "--init_from=resume"])
    assert_ok(resumed)
    assert sorted(eval_losses(resumed.stdout)) == [12]
    assert eval_losses(resumed.stdout)[12] == eval_losses(ref_log)[12]


@pytest.mark.parametrize("iteration, tag, kept", [(4, "iter_4", "iter_2"),  # written in the background
                                                  (6, "final", "iter_4")])  # ends the run: written as it waits
def test_a_full_disk_during_a_save_is_one_line_and_latest_stays(shakespeare, tmp_path, iteration, tag, kept):
    out = tmp_path / "out"
    args = [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=6", "--eval_interval=2",
            "--always_save_checkpoint=True"]
    full = launch(args, faults=f"disk_full_in_save@{iteration}:1")
    assert full.returncode == 1, full.stdout[-3000:]
    # rank 0 then loses its peer in the save's collective (a gloo error of its own, or killed by the launcher first)
    errors = [line for line in full.stdout.splitlines() if line.startswith("error: [rank 1]")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: \[rank 1\] saving {tag} failed \(OSError: \[Errno 28\] No space left on device\); {out} has "
        r"[\d.]+ GiB free; a save needs room for one more checkpoint \(0\.\d\d GiB\) beside those kept, which go "
        rf"only once the new one is complete\. latest still names {kept}: free space \(or lower --keep_last_n\) and "
        r"resume with --init_from=resume", errors[0]), errors
    assert ckpt.read_latest(str(out)) == kept and not (out / tag).exists()
    resumed = launch([*args, "--init_from=resume"])
    assert_ok(resumed)
    assert f"checkpoint recovery: removed unfinished checkpoint .tmp-{tag}" in resumed.stdout
    assert sorted(iter_losses(resumed.stdout)) == list(range(iteration - 1, 7)) and ckpt.read_latest(str(out)) == "final"


def test_out_of_gpu_memory_is_one_line_naming_the_settings(shakespeare, tmp_path):
    """torch's out-of-memory error on one rank (injected: the CPU has no GPU memory to run out of) ends the run with
    one line from that rank that names the sizes and the settings that help, no traceback, and the checkpoint of the
    last eval still named by latest."""
    out = tmp_path / "out"
    run = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=6", "--eval_interval=2",
                  "--always_save_checkpoint=True"], faults="oom@3:1")
    assert run.returncode == 1, run.stdout[-3000:]
    errors = [line for line in run.stdout.splitlines() if line.startswith("error: [rank 1]")]
    assert errors == ["error: [rank 1] out of GPU memory at micro-batch 4: asked for 394.00 MiB more with 78.75 GiB in use "
                      "(77.00 GiB allowed); lower --batch_size (--target_batch_size keeps the sequences per iteration), "
                      "or recompute activations in backward with --recompute_gelu=-1 or --gradient_checkpointing=N "
                      "(README: GPU memory guidance)"], run.stdout[-3000:]
    assert "OutOfMemoryError" not in run.stdout and sorted(iter_losses(run.stdout))[:2] == [1, 2]
    assert ckpt.read_latest(str(out)) == "iter_2"


def test_out_of_memory_line_without_a_cap_or_torchs_usual_words():
    e = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                 "79.19 GiB of which 1.05 GiB is free. Including non-PyTorch memory, this process has "
                                 "78.10 GiB memory in use. Of the allocated memory 75.1 GiB is allocated by PyTorch")
    assert monitoring.out_of_memory_line(e, "0").startswith(
        "error: [rank 0] out of GPU memory: asked for 2.00 GiB more with 78.10 GiB in use (79.19 GiB on the GPU); "
        "lower --batch_size")
    assert monitoring.out_of_memory_line(torch.OutOfMemoryError("CUDA error: out of memory\nmore"), "3").startswith(
        "error: [rank 3] out of GPU memory: CUDA error: out of memory; lower --batch_size")


def test_out_of_memory_line_offers_only_what_is_not_already_on():
    e = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 400.00 MiB. GPU 0 has a total capacity of "
                                 "139.80 GiB. Including non-PyTorch memory, this process has 78.29 GiB memory in use. "
                                 "77.00 GiB allowed; Of the allocated memory")
    cfg = settings.parse_config(["config/xl_80gb_mb32.py"])
    assert monitoring.out_of_memory_line(e, "0", cfg) == (
        "error: [rank 0] out of GPU memory at micro-batch 32: asked for 400.00 MiB more with 78.29 GiB in use "
        "(77.00 GiB allowed); lower --batch_size (--target_batch_size keeps the sequences per iteration), or "
        "recompute activations in backward with --gradient_checkpointing=N (README: GPU memory guidance)")
    cfg.update(gradient_checkpointing=-1)
    assert monitoring.out_of_memory_line(e, "0", cfg).endswith(
        "(77.00 GiB allowed); lower --batch_size (--target_batch_size keeps the sequences per iteration) "
        "(README: GPU memory guidance)")


@pytest.mark.parametrize("processes", [1, 2])  # the trainer started directly, and through launch.py
def test_launcher_script_forwards_sigterm(shakespeare, tmp_path, processes):
    out = tmp_path / "out"
    env = train_env({"NUM_GPUS": str(processes), "PYTHON": sys.executable,
                     "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    proc = subprocess.Popen(["./run_deepspeed_xl.sh", "config/cpu_tiny.py", f"--dataset={shakespeare}",
                             f"--out_dir={out}", "--max_iters=1000", "--eval_interval=500", "--eval_iters=4"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    unit = "CPU processes" if processes > 1 else "CPU process"
    assert read_until(proc, r"^model ", lines) == f"model scratch on {processes} {unit}, float32\n"
    assert f"batch: 4 x 2 x {processes} {unit} x 64 = {512 * processes:,} tokens per iteration" in \
        read_until(proc, r"^batch: ", lines)
    read_until(proc, r"^iter 2/", lines)
    proc.send_signal(signal.SIGTERM)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == settings.EXIT_PREEMPTED, "".join(lines[-30:])
    log = "".join(lines)
    assert "forwarding SIGTERM to the training processes" in log
    n = int(re.search(r"stopped on SIGTERM after iteration (\d+)", log).group(1))
    assert ckpt.read_latest(str(out)) == f"iter_{n}"


def test_a_second_run_into_a_busy_out_dir_is_refused(shakespeare, tmp_path):
    """Run B started into the out_dir run A is training in, with A's rendezvous port (both on the default, say):
    refused before it recovers, moves or saves anything there (it used to move A's live logs aside, crashing A, and
    then write its own checkpoints over A's), and told why first (not that the out_dir holds checkpoints, which
    advised a resume, nor that the port is taken)."""
    out = tmp_path / "out"
    args = [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=200", "--eval_interval=2",
            "--always_save_checkpoint=True"]
    first = start(args)
    lines = []
    read_until(first, r"^saved iter_2", lines)
    buffers = shm_buffers()
    port = next(a for a in first.args if a.startswith("--master_port="))
    second = subprocess.run([port if a.startswith("--master_port=") else a
                             for a in launch_cmd([*args, "--learning_rate=1e-4"])],
                            cwd=REPO, env=train_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=600)
    assert shm_buffers() == buffers  # the refused run leaves no 66 MB buffers in /dev/shm
    holder = f"pid {trainer_pids(first.pid)[0]} on {socket.gethostname()}"
    assert second.returncode == settings.EXIT_BAD_INPUT, second.stdout[-3000:]
    errors = [line for line in second.stdout.splitlines() if line.startswith("error:")]
    assert errors == [f"error: out_dir {out} is in use by another run ({holder}); wait for it to end, or give "
                      "another --out_dir"], second.stdout[-3000:]
    assert sorted(os.listdir(out / "logs")) == ["csv"] and (out / "logs" / "csv" / "Train_loss.csv").exists()
    os.kill(trainer_pids(first.pid)[0], signal.SIGTERM)
    lines += first.stdout.readlines()
    assert first.wait(timeout=120) == settings.EXIT_PREEMPTED, "".join(lines[-30:])
    n = int(re.search(r"stopped on SIGTERM (?:after|at) iteration (\d+)", "".join(lines)).group(1))
    assert ckpt.read_latest(str(out)) == f"iter_{n}"


def test_sigterm_without_checkpoints_says_nothing_is_saved(shakespeare, tmp_path):
    out = tmp_path / "out"
    proc = start([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=200", "--eval_interval=500",
                  "--save_checkpoints=False"])
    lines = []
    read_until(proc, r"^iter 2/", lines)
    os.kill(trainer_pids(proc.pid)[0], signal.SIGTERM)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == settings.EXIT_PREEMPTED, "".join(lines[-30:])
    log = "".join(lines)
    assert ("[rank 0] SIGTERM: finishing this step, then stopping (save_checkpoints=False: nothing is saved) (send it "
            "again to stop at once)") in log
    assert re.search(r"^stopped on SIGTERM after iteration \d+; nothing was saved \(save_checkpoints=False\)$", log,
                     re.M), log[-2000:]
    assert ckpt.saved_tags(str(out)) == []


def test_a_second_signal_stops_at_once_without_a_traceback(shakespeare, tmp_path):
    out = tmp_path / "out"
    # rank 0 stalls in iteration 3 (as in a slow step), so both signals land inside one step; a second signal within
    # 2 s of the first would be taken as the launcher passing the first on (the next test): no window here
    proc = start([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=200", "--eval_interval=500"],
                 faults="hang@2:0", env={"TRAIN_SAME_STOP_SECONDS": "0"})
    lines = []
    read_until(proc, r"^iter 2/", lines)
    rank0 = trainer_pids(proc.pid)[0]
    os.kill(rank0, signal.SIGTERM)
    read_until(proc, r"SIGTERM: finishing this step", lines)
    os.kill(rank0, signal.SIGTERM)
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) != 0
    log = "".join(lines)
    assert "[rank 0] stopped at once on a second signal; nothing saved since the last checkpoint" in log, log[-3000:]
    assert "KeyboardInterrupt" not in log and ckpt.saved_tags(str(out)) == []


def test_ctrl_c_during_start_up_is_one_line(shakespeare, tmp_path):
    """SIGINT before the loop takes the signals over (here after the model is built, on rank 1): one line, exit 130,
    no traceback (was the second-signal message, or a KeyboardInterrupt traceback)."""
    out = tmp_path / "out"
    run = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=4"],
                 faults="sigint_in_startup@0:1")
    assert run.returncode != 0, run.stdout[-3000:]
    assert "[rank 1] interrupted during start-up, before the first step; nothing saved" in run.stdout, run.stdout[-3000:]
    assert "KeyboardInterrupt" not in run.stdout and "second signal" not in run.stdout
    assert "return code = 130" in run.stdout and iter_losses(run.stdout) == {}


def test_ctrl_c_on_the_bare_launcher_saves(shakespeare, tmp_path):
    """Ctrl-C in a terminal running `deepspeed train_deepspeed.py` signals every process of the group: the trainers
    get SIGINT and, from DeepSpeed's launch.py, SIGTERM a moment later. That is one stop, not a second signal: they
    finish the step and save (it used to be "stopped at once on a second signal", nothing saved)."""
    out = tmp_path / "out"
    proc = start([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=200", "--eval_interval=500"],
                 runner=True)
    lines = []
    read_until(proc, r"^iter 2/", lines)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    lines += proc.stdout.readlines()
    proc.wait(timeout=120)
    log = "".join(lines)
    assert "second signal" not in log, log[-3000:]
    assert re.search(r"\[rank 0\] SIGTERM \d\.\d\ds after the SIGINT: the same stop \(passed on by a launcher\)", log)
    n = int(re.search(r"stopped on SIGINT (?:after|at) iteration (\d+)", log).group(1))
    assert ckpt.read_latest(str(out)) == f"iter_{n}" and ckpt.saved_tags(str(out)) == [f"iter_{n}"]


def test_nan_loss_is_skipped_then_stops(shakespeare, tmp_path):
    out = tmp_path / "out"
    # one NaN on rank 1 at iteration index 3 (logged as iter 4), then three in a row from index 6
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=30", "--eval_interval=5"],
                  faults="nan@3:1,nan@6-8:1")
    assert proc.returncode == settings.EXIT_DIVERGED, proc.stdout[-3000:]
    log = proc.stdout
    lines = {int(m.group(1)): m.group(0) for m in re.finditer(r"^iter (\d+)/30 .*$", log, re.M)}
    assert "skipped (NaN/inf loss) | 1 skipped in all" in lines[4] and "skipped (" not in lines[5]
    lr = {i: re.search(r"lr (\S+)", line).group(1) for i, line in lines.items()}
    assert lr[5] == lr[4] != lr[3]  # a skipped step does not advance the schedule
    assert all("skipped (NaN/inf loss)" in lines[i] for i in (7, 8, 9)) and 10 not in lines
    assert "error: the loss was NaN/inf on 3 iterations in a row (up to iteration 9)" in log
    assert "Try a lower --learning_rate, --dtype=bfloat16" in log
    assert ckpt.read_latest(str(out)) == "iter_5"  # nothing saved after the trouble began
    assert sorted(t for t in os.listdir(out) if t.startswith(("iter_", "final", "best"))) == ["best", "iter_5"]


def test_dead_rank_ends_the_run(shakespeare, tmp_path):
    t0 = time.time()
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={tmp_path / 'out'}", "--max_iters=50",
                   "--dist_timeout_minutes=1"], faults="crash@3:1", timeout=300)
    assert proc.returncode != 0
    assert "RuntimeError: injected crash on rank 1 at iteration 3" in proc.stdout
    assert time.time() - t0 < 120  # no rank waits forever for the dead one


def test_fp16_loss_scale_at_minimum_stops_clearly(shakespeare, tmp_path):
    """DeepSpeed raises on every rank when the fp16 scale cannot go lower (fp16 needs a GPU, so the test injects
    DeepSpeed's exception): the run stops with status 3, the advice, and no new checkpoint."""
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=30", "--eval_interval=3"],
                  faults="minscale@4:0,minscale@4:1")
    assert proc.returncode == settings.EXIT_DIVERGED, proc.stdout[-3000:]
    assert ("error: at iteration 5 the fp16 loss scale reached its minimum and the gradients still overflow"
            in proc.stdout)
    assert "Try a lower --learning_rate, --dtype=bfloat16" in proc.stdout
    assert ckpt.read_latest(str(out)) == "iter_3" and not (out / "final").exists()


def test_a_stuck_rank_times_out_instead_of_hanging(shakespeare, tmp_path):
    """Rank 1 stops answering inside an iteration; rank 0's collective gives up after dist_timeout_minutes."""
    t0 = time.time()
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={tmp_path / 'out'}", "--max_iters=50",
                   "--eval_interval=100", "--dist_timeout_minutes=0.25"], faults="stuck@2:1", timeout=300)
    elapsed = time.time() - t0
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert re.search(r"[Tt]imed out|[Tt]imeout", proc.stdout), proc.stdout[-3000:]
    assert 15 < elapsed < 150, elapsed  # waited for the timeout, not forever


def test_max_runtime_saves_and_exits_75(shakespeare, tmp_path):
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=1000", "--eval_interval=500",
                   "--max_runtime=0.0003"])  # about one second
    assert proc.returncode == settings.EXIT_PREEMPTED, proc.stdout[-3000:]
    n = int(re.search(r"stopped on max_runtime after iteration (\d+); continue with --init_from=resume",
                      proc.stdout).group(1))
    assert 1 <= n < 20 and ckpt.read_latest(str(out)) == f"iter_{n}"


def test_a_stop_file_stops_that_run_alone(shakespeare, tmp_path):
    """`touch out_dir/STOP`: this run saves after its current step and exits 75; another run on the machine goes
    on; the file goes, so that the resume does not stop at once, and a leftover one is removed at start."""
    out, other = tmp_path / "out", tmp_path / "other"
    args = [*TINY, f"--dataset={shakespeare}", "--max_iters=1000", "--eval_interval=500"]
    proc, bystander = start([*args, f"--out_dir={out}"]), start([*args, f"--out_dir={other}"])
    lines, other_lines = [], []
    read_until(proc, r"^iter 2/", lines)
    read_until(bystander, r"^iter 2/", other_lines)
    (out / "STOP").touch()
    lines += proc.stdout.readlines()
    assert proc.wait(timeout=120) == settings.EXIT_PREEMPTED, "".join(lines[-30:])
    log = "".join(lines)
    n = int(re.search(r"^stopped on the STOP file after iteration (\d+); continue with --init_from=resume$", log,
                      re.M).group(1))
    assert ckpt.read_latest(str(out)) == f"iter_{n}" and not (out / "STOP").exists()
    assert bystander.poll() is None  # the other run trains on
    os.kill(trainer_pids(bystander.pid)[0], signal.SIGTERM)
    other_lines += bystander.stdout.readlines()
    assert bystander.wait(timeout=120) == settings.EXIT_PREEMPTED
    (out / "STOP").touch()  # left over: it must not stop the resumed run
    resumed = launch([*args, f"--out_dir={out}", "--init_from=resume", f"--max_iters={n + 2}"])
    assert_ok(resumed)
    assert f"removed {out}/STOP, left from before this start" in resumed.stdout
    assert sorted(iter_losses(resumed.stdout)) == [n + 1, n + 2]


def test_nan_weights_are_never_saved(shakespeare, tmp_path):
    """Weights gone NaN on one rank: its loss is NaN (the step skipped), the next eval's loss is NaN, and the run
    stops with exit 3 naming the last good tag; nothing NaN becomes best, final or latest."""
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=12", "--eval_interval=3",
                   "--always_save_checkpoint=True"], faults="nan_weights@4:1")
    assert proc.returncode == settings.EXIT_DIVERGED, proc.stdout[-3000:]
    assert re.search(r"^eval 6: train loss nan \| val loss nan", proc.stdout, re.M), proc.stdout[-3000:]
    assert ("error: at iteration 6 the eval loss is no longer finite: nothing was saved; the last good checkpoint is "
            "iter_3. Resume from it with a lower --learning_rate or --dtype=bfloat16, or check the data") in proc.stdout
    assert ckpt.read_latest(str(out)) == "iter_3" and ckpt.saved_tags(str(out)) == ["best", "iter_3"]


def test_one_ranks_damaged_file_ends_every_rank_with_its_line(reference_run, tmp_path, shakespeare):
    """A damaged pickle in rank 1's own optimizer shard (the copy's best is intact: copytree makes no hard links):
    rank 1 says why, rank 0 that another rank failed; both exit 2, none left in a collective (the others used to die
    in gloo with `Connection closed by peer`)."""
    import shutil
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    shard = out / "final" / ckpt.zero_shard_name(1)
    data = bytearray(shard.read_bytes())
    data[:50] = b"x" * 50  # same size: the size check passes, reading it cannot
    shard.write_bytes(bytes(data))
    forget_hash(out / "final", shard.name)  # the hash would refuse it first (tests/test_integrity.py)
    proc = launch([*reference_args(shakespeare, out), "--init_from=resume", "--max_iters=14"])
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:]
    errors = sorted(line for line in proc.stdout.splitlines() if line.startswith("error:"))
    assert len(errors) == 2 and errors[0] == "error: [rank 0] 1 other rank(s) failed (their lines say why)", errors
    assert errors[1].startswith(f"error: [rank 1] checkpoint {out}/final could not be loaded (") and \
        errors[1].endswith("; choose another tag with --resume_tag=TAG: best, iter_6"), errors
    assert "Traceback" not in proc.stdout and "Connection closed" not in proc.stdout


def test_a_second_launch_on_the_port_of_a_starting_job_leaves_that_job_alone(shakespeare, tmp_path):
    """Issue 24, item 7: two bare launches on one port, each with its own out_dir. The first job's rank 1 comes to
    the rendezvous late, and the second's rank 0 later still (as a slow start-up can make them): the second's rank 1
    meets the first job's rank 0 (it used to take rank 1's place there, and the first job stopped with the out_dir
    line). It stops with the port line; the first job trains to its end."""
    def port_bound(port):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as TCPStore binds: only a listener counts
            try:
                s.bind(("", port))
            except OSError:
                return True
            return False

    port = free_port()
    job = [*TINY, f"--dataset={shakespeare}", "--max_iters=4", "--eval_interval=2"]
    first = start([*job, f"--out_dir={tmp_path / 'first'}"], faults="late_rendezvous@15:1", port=port)
    try:
        deadline = time.time() + 120
        while not port_bound(port):  # the first job's rank 0 holds the rendezvous
            assert first.poll() is None and time.time() < deadline, "the first job's rendezvous never came up"
            time.sleep(0.2)
        second = launch([*job, f"--out_dir={tmp_path / 'second'}"], faults="late_rendezvous@25:0", port=port,
                        timeout=300)
        out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert second.returncode == settings.EXIT_BAD_INPUT, second.stdout[-3000:]
    assert [line for line in second.stdout.splitlines() if line.startswith("error")] == [
        f"error: port {port} of the rendezvous belongs to another job on this machine (its rank 0 was started by "
        "another launcher); pass --master_port=<a free port> to deepspeed, or launch with ./run_deepspeed_xl.sh, "
        "which picks a free one"]
    assert first.returncode == 0, out[-4000:]
    assert "done: iterations 0 -> 4" in out and sorted(iter_losses(out)) == [1, 2, 3, 4]
