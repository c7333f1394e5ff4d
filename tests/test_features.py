"""Monitoring and the guide's training features, on the real script through the launcher (2 CPU processes)."""
import csv
import glob
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint as ckpt
from conftest import REPO, TINY, assert_ok, eval_losses, iter_losses, launch, train_env

pytestmark = pytest.mark.slow


def read_csv(path):
    with open(path) as f:
        return [row for row in csv.reader(f) if row and row[0] != "step"]


def test_monitoring_outputs(reference_run):
    out, log = reference_run
    csv_dir = os.path.join(out, "logs", "csv")
    loss_rows = read_csv(os.path.join(csv_dir, "Train_loss.csv"))
    assert [int(r[0]) for r in loss_rows] == list(range(1, 13))  # one row per iteration
    assert [round(float(r[1]), 4) for r in loss_rows] == [iter_losses(log)[i] for i in range(1, 13)]
    assert [int(r[0]) for r in read_csv(os.path.join(csv_dir, "Eval_val_loss.csv"))] == [0, 6, 12]
    for name in ("Train_lr", "Train_tokens_per_sec", "Train_grad_norm", "Train_tokens_seen", "Eval_val_ppl",
                 "Host_rss_mib"):
        rows = read_csv(os.path.join(csv_dir, f"{name}.csv"))
        assert len(rows) >= 3 and all(math.isfinite(float(value)) for _, value in rows), (name, rows[:3])
    assert float(read_csv(os.path.join(csv_dir, "Train_tokens_seen.csv"))[-1][1]) == 12 * 1024

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = glob.glob(os.path.join(out, "logs", "tensorboard", "**", "events.out.tfevents.*"), recursive=True)
    assert events
    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    assert {"Train/loss", "Train/lr", "Eval/val_loss"} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("Train/loss")] == list(range(1, 13))

    wandb_runs = glob.glob(os.path.join(out, "logs", "wandb", "offline-run-*", "run-*.wandb"))
    assert wandb_runs and os.path.getsize(wandb_runs[0]) > 1000  # wandb wrote its offline run beside the other logs
    # DeepSpeed's engine logs nothing itself: its lr at step = samples seen made wandb drop every later metric
    assert "Tried to log to step" not in log and not glob.glob(os.path.join(csv_dir, "Train_Samples_*.csv"))

    png = os.path.join(out, "loss.png")
    assert "loss plot: " + png in log
    # drawn while the final save is written (the run waits for that write anyway), so before its line
    lines = log.splitlines()
    assert lines.index("loss plot: " + png) < next(i for i, line in enumerate(lines) if line.startswith("saved final"))
    import matplotlib.image
    image = matplotlib.image.imread(png)
    assert image.shape[0] == 480 and image.shape[1] == 1600  # 16 x 4.8 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas

    resolved = json.load(open(os.path.join(out, "config.json")))
    assert resolved["dropout"] == 0.1 and resolved["world_size"] == 2


def test_plot_on_demand(reference_run, tmp_path):
    out, _ = reference_run
    target = tmp_path / "copy"
    os.makedirs(target / "logs")
    os.symlink(os.path.join(out, "logs", "csv"), target / "logs" / "csv")
    proc = subprocess.run([sys.executable, "plot.py", str(target)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and os.path.getsize(target / "loss.png") > 20_000
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, "plot.py", str(empty)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "holds no metrics yet" in proc.stderr


def test_summary_and_progress_lines(reference_run):
    _, log = reference_run
    assert re.search(r"^model: GPT-2 2 layers, 64 wide, 3\.3M parameters, from random initialisation$", log, re.M)
    assert "hardware: 2 x CPU (DeepSpeed CPU accelerator); precision float32; ZeRO stage 2; fused kernels off" in log
    assert re.search(r"^memory: DeepSpeed estimates \d+ MiB of model states per process \(\+ activations\)$", log, re.M)
    assert re.search(r"^iter 12/12 \| loss \S+ \| lr \S+ \| \d+ ms \| [\d,]+ tok/s/gpu \| opt \d+ ms \| "
                     r"gnorm \S+ \| eta 0m00s$", log, re.M)
    # where the start-up went: the phases add up to the time from the process's start to the first step's end
    m = re.search(r"^first optimizer step done ([\d.]+)s after the loop started, ([\d.]+)s after the process started "
                  r"\((.*)\)$", log, re.M)
    phases = dict((name, float(seconds)) for name, seconds in re.findall(r"([a-zA-Z ]+?) ([\d.]+)s(?:, |$)", m[3]))
    assert list(phases) == ["imports", "data", "process group", "model", "kernels", "DeepSpeed", "summary", "eval",
                            "the step"]
    assert abs(sum(phases.values()) - float(m[2])) <= 0.05 * len(phases)  # each is rounded to 0.1 s
    assert abs(phases["eval"] + phases["the step"] - float(m[1])) <= 0.15 and phases["the step"] > 0


@pytest.fixture(scope="module")
def other_dataset(tmp_path_factory):
    from data import prepare
    root = tmp_path_factory.mktemp("other")
    src = root / "docs.jsonl"
    lines = [json.dumps({"text": f"Document {i}: the quick brown fox jumps over the lazy dog {i % 7} times."})
             for i in range(2000)]
    src.write_text("\n".join(lines) + "\n")
    prepare.prepare("other", [str(src)], str(root), val_fraction=0.1)
    return str(root / "other")


def test_early_stopping_with_dataset_mixing(shakespeare, other_dataset, tmp_path):
    out = tmp_path / "out"
    (out / "logs" / "csv").mkdir(parents=True)  # an earlier run here that failed before its first checkpoint
    (out / "logs" / "csv" / "Train_loss.csv").write_text("step,value\n999,42.0\n")
    proc = launch([*TINY, f"--dataset={shakespeare}:0.5,{other_dataset}:0.5", f"--out_dir={out}",
                   "--learning_rate=0.0", "--min_lr=0.0", "--max_iters=20", "--eval_interval=2", "--patience=2"])
    assert_ok(proc)
    log = proc.stdout
    moved = [p for p in out.iterdir() if p.name.startswith("logs.")]
    assert len(moved) == 1 and f"the logs of an earlier run that saved no checkpoint moved to {moved[0]}" in log
    assert (moved[0] / "csv" / "Train_loss.csv").read_text() == "step,value\n999,42.0\n"
    assert "999," not in (out / "logs" / "csv" / "Train_loss.csv").read_text()  # this run's curve starts empty
    evals = eval_losses(log)
    assert sorted(evals) == [0, 2, 4]  # no improvement at 2 and 4: patience 2 stops at the eval of iteration 4
    assert (f"early stop: val loss has not improved for 2 evals; the best weights (val loss {evals[0][1]:.4f}) are "
            f"in {out}/best: sample or export that tag, not final") in log
    assert "iter 5/20" not in log and ckpt.read_latest(str(out)) == "final"
    assert ckpt.verify(str(out / "final"))["iteration"] == 4
    per_dataset = re.search(r"^eval 0: .*\| val/(\S+) (\S+) \| val/(\S+) (\S+)", log, re.M)
    assert per_dataset, log[-2000:]
    a, b = float(per_dataset.group(2)), float(per_dataset.group(4))
    assert evals[0][1] == pytest.approx(0.5 * a + 0.5 * b, abs=2e-4)  # the weighted mean
    client = torch.load(out / "final" / ckpt.MODEL_STATES, map_location="cpu", weights_only=False)
    assert client["loop"]["evals_without_improvement"] == 2


def test_zero3_with_cpu_offload_trains_and_exports(shakespeare, tmp_path):
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--deepspeed_config=ds_config_zero3.json",
                   "--max_iters=6", "--eval_interval=3"])
    assert_ok(proc)
    assert "ZeRO stage 3 with optimizer and parameter offload" in proc.stdout
    evals = eval_losses(proc.stdout)
    assert evals[6][1] < evals[0][1] - 0.3
    assert os.path.isfile(out / "final" / ckpt.ZERO3_16BIT_MODEL)
    model, marker = ckpt.load_model(str(out), "final")
    assert marker["zero_stage"] == 3
    sixteen = torch.load(out / "final" / ckpt.ZERO3_16BIT_MODEL, weights_only=True)
    assert torch.equal(sixteen["transformer.h.0.mlp.c_fc.weight"].float(), model.transformer.h[0].mlp.c_fc.weight)
    hf_dir = tmp_path / "hf"
    subprocess.run([sys.executable, "export.py", str(out), "--hf", str(hf_dir)], cwd=REPO, env=train_env(),
                   check=True, capture_output=True)
    from transformers import GPT2LMHeadModel
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    idx = torch.randint(0, 50257, (1, 32))
    with torch.no_grad():
        assert (hf(idx).logits - model.eval()(idx)[0]).abs().max().item() <= 1e-5


def test_compile_checkpointing_and_derived_accumulation_keep_the_losses(shakespeare, reference_run, tmp_path):
    """torch.compile of the blocks, activation checkpointing and target_batch_size (deriving accumulation 2)
    change how the step is computed, not what it computes."""
    plain = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={tmp_path / 'a'}", "--max_iters=3",
                    "--eval_interval=100"])
    assert_ok(plain)
    fancy = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={tmp_path / 'b'}", "--max_iters=3",
                    "--eval_interval=100", "--compile=True", "--gradient_checkpointing=-1",
                    "--gradient_accumulation_steps=1", "--target_batch_size=16"])
    assert_ok(fancy)
    assert "batch: 4 x 2 x 2 CPU processes x 64 = 1,024 tokens per iteration (16 sequences)" in fancy.stdout
    assert "; every block recomputed; blocks compiled" in fancy.stdout  # the start-up summary says how it runs
    a, b = iter_losses(plain.stdout), iter_losses(fancy.stdout)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    assert all(abs(a[i] - b[i]) < 2e-4 for i in a), (a, b)


def test_resume_warns_when_a_dataset_changed(shakespeare, tmp_path):
    """The same dataset name with other contents (re-prepared from another file): the resume says so."""
    data = tmp_path / "data"
    shutil.copytree(shakespeare, data)
    out = tmp_path / "out"
    common = [*TINY, f"--dataset={data}", f"--out_dir={out}", "--eval_interval=2"]
    assert_ok(launch([*common, "--max_iters=2"]))
    train = np.fromfile(data / "train.bin", dtype=np.uint16)
    train[: len(train) // 2].tofile(data / "train.bin")  # as prepare.py would leave it from half the text
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "train_tokens": len(train) // 2}))
    resumed = launch([*common, "--max_iters=4", "--init_from=resume"])
    assert_ok(resumed)
    assert (f"warning: dataset {data} changed since final was saved (train {len(train):,} -> {len(train) // 2:,} "
            "tokens, val 36,059 -> 36,059): the run goes on with other text, and its val loss is not comparable with "
            "the earlier one") in resumed.stdout
