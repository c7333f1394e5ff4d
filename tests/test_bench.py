"""The benchmark's tiny CPU mode, so that the script CI cannot run on GPUs keeps working."""
import gzip
import json
import os
import subprocess
import sys

import pytest

from bench import trace_summary
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


def test_goodput_cpu_mode(shakespeare, tmp_path):
    """bench/goodput.py's CI mode: the real trainer, 8 iterations with an eval and a save every 2; the JSON's parts
    add up to the wall time. The job keeps its compiled modules where the machine says not to (the GPU machines)."""
    proc = subprocess.run([sys.executable, "bench/goodput.py", "--cpu", "--out", str(tmp_path / "result"),
                           "--run-dir", str(tmp_path / "run")], cwd=REPO,
                          env=train_env({"BENCH_DATASET": shakespeare, "PYTHONDONTWRITEBYTECODE": "1"}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.load(open(tmp_path / "result" / "goodput.json"))
    assert data["exit_code"] == 0 and data["steps"] == 8 and "not a GPU one" in data["mode"]
    assert data["dropped_PYTHONDONTWRITEBYTECODE"] is True
    saves = [s for s in data["saves"] if not s["tags"].startswith("waiting for ")]  # a write that took 2 steps
    assert [s["tags"] for s in saves] == ["iter_2 + best", "iter_4 + best", "iter_6 + best", "final + best"]
    assert [e["iteration"] for e in data["evals"]] == [0, 2, 4, 6, 8]
    assert all(s["hash_seconds"] is not None for s in saves)
    # async_checkpoints (the default): the saves during the run are written in the background, the final one not
    assert all(s["background_seconds"] is not None for s in saves[:-1]) and saves[-1]["background_seconds"] is None
    parts = ("step_s", "saves_s", "evals_s", "startup_s", "exit_s", "other_s")
    assert all(data[k] >= 0 for k in parts[:-1]) and data["startup_s"] > 0 and data["exit_s"] > 0
    assert abs(sum(data[k] for k in parts) - data["wall_s"]) < 0.05
    assert abs(data["goodput"] - data["step_s"] / data["wall_s"]) < 1e-3 and 0 < data["goodput"] < 1
    assert 0 < data["process_to_first_step_s"] < data["launch_to_first_step_s"]
    assert (tmp_path / "result" / "run.log").read_text().count("saved ") == 4
    assert abs(data["saves_s"] - sum(s["seconds"] for s in data["saves"])) < 0.05


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


def test_trace_summary_separates_exposed_communication_and_idle_time(tmp_path, capsys):
    def event(cat, name, ts, dur, correlation=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": 7,
                "args": {} if correlation is None else {"correlation": correlation}}
    events = [  # host: the phases and the kernel launches inside them (backward's from another thread)
        event("user_annotation", "forward", 0, 10), event("user_annotation", "backward", 10, 30),
        event("user_annotation", "optimizer step", 300, 20), event("cpu_op", "aten::mm", 1, 3),
        event("cuda_runtime", "cudaLaunchKernel", 1, 1, 1), event("cuda_runtime", "cudaLaunchKernel", 15, 1, 2),
        event("cuda_driver", "cuLaunchKernel", 20, 1, 3), event("cuda_runtime", "cudaMemcpyAsync", 305, 1, 4),
        # GPU
        event("kernel", "nvjet_sm90_tst_192x192_bias_TNN", 0, 100, 1),
        event("kernel", "ncclDevKernel_ReduceScatter_Sum_bf16_RING_LL", 50, 150, 2),  # alone from 100 to 150
        event("kernel", "cudnn_generated_fort_native_sdpa_sm90_flash_bprop", 150, 150, 3),
        event("gpu_memcpy", "Memcpy DtoD (Device -> Device)", 400, 10, 4)]  # 100 us idle before it
    path = tmp_path / "rank_0.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"traceEvents": events + [{"ph": "M", "name": "process_name"}]}, f)
    s = trace_summary.summarise(trace_summary.load(str(path)))
    # (count, host ms, GPU ms of the kernels launched, their first-to-last span)
    assert s["phases"] == {"forward": (1, 0.01, 0.1, 0.1), "backward": (1, 0.03, 0.3, 0.25),
                           "optimizer step": (1, 0.02, 0.01, 0.01)}
    assert s["window_ms"] == 0.41 and s["busy_ms"] == 0.31 and s["compute_ms"] == 0.26
    assert s["comm_ms"] == 0.15 and s["exposed_comm_ms"] == 0.05
    assert dict(s["by_kind"]) == {"matmul": 0.1, "communication (NCCL)": 0.15, "attention": 0.15,
                                  "memory copies and fills": 0.01}
    assert trace_summary.idle_gaps(s["spans"]) == [(100, 400, "cudnn_generated_fort_native_sdpa_sm90_flash_bprop",
                                                    "Memcpy DtoD (Device -> Device)")]
    trace_summary.report(s)
    out = capsys.readouterr().out
    assert "backward         1 x, host      0.0 ms, GPU kernels      0.3 ms over      0.2 ms" in out
    assert "communication 0.1 ms, of which 0.1 ms with no compute kernel beside it" in out
    assert "GPU idle between kernels over the iteration: 0.1 ms of 0.4 ms (1 gaps" in out


def test_interval_arithmetic():
    merged = trace_summary.merge([(5, 8), (0, 2), (1, 3), (8, 9)])
    assert merged == [[0, 3], [5, 9]]
    assert trace_summary.length(merged) == 7
    assert trace_summary.minus(merged, [[1, 2], [4, 6], [7, 20]]) == [[0, 1], [2, 3], [6, 7]]
    assert trace_summary.minus([[0, 10]], []) == [[0, 10]]


def test_bench_reports_the_batch_the_trainer_ran():
    """--set batch_size=32 or a config file changes the micro-batch: the table shows the trainer's own batch line,
    not the run's default (the ninth session's micro-batch-32 runs were listed as 16 x 4 before)."""
    from bench import bench
    lines = [(30.0, "batch: 32 x 2 x 2 GPUs x 1024 = 131,072 tokens per iteration (128 sequences)")]
    lines += [(30.0 + i, f"iter {i}/5 | loss 9.0 | lr 1e-4 | 1255 ms | 52,237 tok/s/gpu | MFU 54.3%") for i in
              range(1, 6)]
    summary = bench.parse(lines)
    assert (summary["micro_batch"], summary["accumulation"], summary["tok_s_gpu"]) == (32, 2, 52237.0)
    summary.update(name="ours-bf16-2", gpus=2, dtype="bfloat16", batch_size=16, target_batch_size=128)
    env = {"card": "H200", "torch": "-", "deepspeed": "-", "cuda": "-", "transformers": "-", "date": "-"}
    assert "| ours-bf16-2 | 2 | bfloat16 | 32 x 2 | 52,237 | 54.3% | 1255 |" in bench.markdown(env, [summary])


def test_bench_gpus_names_only_gpus_that_exist(tmp_path):
    proc = subprocess.run([sys.executable, "bench/bench.py", "--cpu", "--gpus", "0,5", "--out", str(tmp_path)],
                          cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--gpus=0,5 names a GPU this machine lacks (it has 2)" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_write_speed_writes_the_same_bytes_every_way(tmp_path):
    """bench/write_speed.py at a thousandth of GPT-2 XL's sizes: torch.save and the parallel candidate write files
    with one hash, the one checkpoint.file_hashes gives."""
    out = tmp_path / "w.json"
    proc = subprocess.run([sys.executable, "bench/write_speed.py", "--scale", "0.001", "--dir", str(tmp_path / "w"),
                           "--threads", "1,3", "--rounds", "1", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.load(open(out))
    assert data["same_bytes"] is True
    rows = data["results"]
    assert [r["method"] for r in rows] == ["torch.save+hash"] * 2 + ["parallel-1"] * 2 + ["parallel-3"] * 2
    assert rows[0]["bytes"] > 3 * 4 * 1_557_611 and all(r["seconds"] > 0 for r in rows)


def test_startup_profile_cpu(shakespeare, tmp_path):
    """bench/startup_profile.py on DeepSpeed's CPU accelerator: the trainer's run() to its end, and the sampled
    wall seconds of the functions it went through."""
    report = tmp_path / "startup.txt"
    proc = subprocess.run([sys.executable, "bench/startup_profile.py", "--cpu", "--out", str(report), "--",
                           "config/cpu_tiny.py", f"--dataset={shakespeare}", "--max_iters=1", "--eval_interval=1000",
                           "--save_checkpoints=False", "--plot=False", f"--out_dir={tmp_path / 'run'}"], cwd=REPO,
                          env=train_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = report.read_text()
    assert text.startswith("run() returned 0;")
    seconds = {line.split()[1]: float(line.split()[0]) for line in text.splitlines()
               if line.startswith(" ") and len(line.split()) == 2}
    [run_s] = [v for k, v in seconds.items() if k.startswith("train_deepspeed.py:") and k.endswith("(run)")]
    [engine_s] = [v for k, v in seconds.items() if k.startswith("train_deepspeed.py:") and k.endswith("(make_engine)")]
    assert 0 < engine_s < run_s
