"""The benchmark's tiny CPU mode, so that the script CI cannot run on GPUs keeps working."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, train_env

pytestmark = pytest.mark.slow


def test_bench_cpu_mode(shakespeare, tmp_path):
    proc = subprocess.run([sys.executable, "bench/bench.py", "--cpu", "--out", str(tmp_path)], cwd=REPO,
                          env=train_env({"BENCH_DATASET": shakespeare}), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [result] = [f for f in os.listdir(tmp_path) if f.endswith(".json")]
    data = json.load(open(tmp_path / result))
    [run] = data["runs"]
    assert run["status"] == "ok" and run["exit_code"] == 0 and run["iterations"] == 5
    assert run["timed_iterations"] == [4, 5] and run["tok_s_gpu"] > 0 and run["step_ms"] > 0
    assert run["opt_ms"] is not None and run["eval_s"] is not None and run["launch_to_first_step_s"] > 0
    assert data["environment"]["card"] == "CPU (DeepSpeed CPU accelerator)"
    table = open(tmp_path / result.replace(".json", ".md")).read()
    assert "| ours-cpu-tiny | 2 | float32 | 4 x 2 |" in table


def test_curves_reports_largest_loss_difference(tmp_path):
    a, b = tmp_path / "plain.log", tmp_path / "fused.log"
    a.write_text("noise\niter 1/3 | loss 10.5000 | lr 1e-4\niter 2/3 | loss 9.0000 | x\niter 3/3 | loss 8.0000 | x\n")
    b.write_text("iter 1/3 | loss 10.5000 | lr 1e-4\niter 2/3 | loss 9.0030 | x\niter 3/3 | loss 7.9990 | x\n")
    proc = subprocess.run([sys.executable, "bench/curves.py", str(a), str(b), "--out", str(tmp_path / "c.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"{b}: 3 iterations, loss 10.5000 -> 7.9990, largest difference from {a}: 0.0030 over 3 iterations" \
        in proc.stdout
    assert os.path.getsize(tmp_path / "c.png") > 10_000
