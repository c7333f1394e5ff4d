"""The real script through the deepspeed launcher, 2 CPU processes: training, evaluation, checkpoints, resume."""
import json
import os
import zipfile

import pytest
import torch

import checkpoint as ckpt
from bench import trace_summary
from conftest import TINY, assert_ok, eval_losses, iter_losses, launch

pytestmark = pytest.mark.slow


def test_loss_falls_and_checkpoints_appear(reference_run):
    out, log = reference_run
    evals = eval_losses(log)
    assert sorted(evals) == [0, 6, 12]
    assert evals[0][1] > 10.5  # ln(50257) = 10.8 at random initialisation
    assert evals[12][1] < evals[0][1] - 1.0, evals
    losses = iter_losses(log)
    assert sorted(losses) == list(range(1, 13))
    assert sum(list(losses.values())[-3:]) / 3 < sum(list(losses.values())[:3]) / 3 - 0.8
    assert "batch: 4 x 2 x 2 CPU processes x 64 = 1,024 tokens per iteration (16 sequences)" in log
    assert {"iter_6", "best", "final", "latest"} <= set(os.listdir(out))
    assert ckpt.read_latest(out) == "final"
    marker = ckpt.verify(os.path.join(out, "final"))
    assert marker["iteration"] == 12 and marker["world_size"] == 2
    client = torch.load(os.path.join(out, "final", ckpt.MODEL_STATES), map_location="cpu", weights_only=False)
    assert client["loop"]["iter"] == 12 and client["loop"]["lr_step"] == 12
    assert client["loop"]["best_val_loss"] == pytest.approx(evals[12][1], abs=1e-4)
    assert client["config"]["dropout"] == 0.1
    for r in range(2):
        rank_state = torch.load(os.path.join(out, "final", ckpt.rank_state_name(r)), weights_only=False)
        assert rank_state["sampler"] == {"seed": 1337, "rank": r, "iteration": 12, "world_size": 2}
    # best is the same state as final (val improved at the last eval): hard links, no second copy
    assert os.path.samefile(os.path.join(out, "best", ckpt.MODEL_STATES), os.path.join(out, "final", ckpt.MODEL_STATES))
    # written without torch.save's per-byte CRC32s, which torch.load never reads (checkpoint.fast_torch_save)
    shard = zipfile.ZipFile(os.path.join(out, "final", ckpt.zero_shard_name(0)))
    assert all(info.CRC == 0 for info in shard.infolist())
    resolved = json.load(open(os.path.join(out, "config.json")))
    assert resolved["tokens_per_iter"] == 1024 and resolved["deepspeed"]["train_batch_size"] == 16


def test_profiled_iteration_has_every_phase_on_every_rank(shakespeare, tmp_path, capsys):
    # Its own run: the profiler's own start/stop lines (from C++, on every rank) may land inside other log lines.
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=3", "--eval_interval=100",
                   "--save_checkpoints=False", "--profile_iteration=2", "--log_interval=2"])
    assert_ok(proc)
    assert sorted(iter_losses(proc.stdout)) == [2, 3]  # every log_interval-th iteration, and the last
    assert sorted(os.listdir(out / "profile")) == ["rank_0.json.gz", "rank_1.json.gz"]
    for r in range(2):
        summary = trace_summary.summarise(trace_summary.load(str(out / "profile" / f"rank_{r}.json.gz")))
        # 2 micro-steps, each a forward and a backward, then one optimizer step (a CPU run: no GPU kernels)
        assert {k: p[0] for k, p in summary["phases"].items()} == {"forward": 2, "backward": 2, "optimizer step": 1}
        assert all(host_ms > 0 and gpu_ms == 0 for _, host_ms, gpu_ms, _ in summary["phases"].values())
        assert not summary["by_kind"]
        capsys.readouterr()
        trace_summary.report(summary)
        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "phases: host time inside each (no GPU kernels in the trace: a CPU run)"
        assert len(lines) == 4 and all(" x, host " in line and "GPU" not in line for line in lines[1:])


def test_exact_resume(reference_run, shakespeare, tmp_path):
    """6 iterations, resume, 6 more: the same losses and bitwise the same weights as 12 in one go. The second half
    runs with deterministic=True, which GPUs need for bitwise equality (bench/NOTES.md); on the CPU the kernels are
    deterministic anyway, so the setting must change nothing here."""
    ref_out, ref_log = reference_run
    out = tmp_path / "out"
    common = [*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--dropout=0.1", "--eval_interval=6",
              "--lr_decay_iters=12"]
    first = launch([*common, "--max_iters=6"])
    assert_ok(first)
    second = launch([*common, "--max_iters=12", "--init_from=resume", "--deterministic=True", "--profile_iteration=3"])
    assert_ok(second)
    assert ("warning: profile_iteration 3 was done before this resume from iteration 6; nothing will be profiled"
            in second.stdout) and not (out / "profile").exists()
    assert "; deterministic kernels" in second.stdout and "; deterministic kernels" not in first.stdout
    resumed = iter_losses(second.stdout)
    assert sorted(resumed) == list(range(7, 13))  # continues from the saved iteration
    reference = iter_losses(ref_log)
    assert {i: reference[i] for i in range(7, 13)} == resumed
    assert {i: reference[i] for i in range(1, 7)} == iter_losses(first.stdout)
    assert eval_losses(second.stdout)[12] == eval_losses(ref_log)[12]
    a, b = ckpt.fp32_state_dict(ref_out, "final"), ckpt.fp32_state_dict(str(out), "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
