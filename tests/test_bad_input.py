"""Every bad input: one clear line naming the problem and the fix, exit code 2, nothing touched."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from transformers import GPT2Config, GPT2LMHeadModel

import checkpoint as ckpt
import train_deepspeed as T
from conftest import REPO, TINY, launch, train_env


@pytest.fixture(autouse=True)
def cpu_env(monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)


def make_dataset(root, train, val):
    root.mkdir(parents=True, exist_ok=True)
    for split, content in (("train", train), ("val", val)):
        if isinstance(content, bytes):
            (root / f"{split}.bin").write_bytes(content)
        else:
            np.asarray(content, dtype=np.uint16).tofile(root / f"{split}.bin")
    return str(root)


def error_of(argv):
    with pytest.raises(T.InputError) as e:
        T.run(argv)
    return str(e.value)


def base(tmp_path, dataset):
    return [*TINY, f"--dataset={dataset}", f"--out_dir={tmp_path / 'out'}"]


def test_missing_dataset(tmp_path):
    msg = error_of(base(tmp_path, tmp_path / "nowhere"))
    assert "dataset" in msg and "not found" in msg and "prepare.py" in msg


def test_missing_bin(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), range(1000))
    os.remove(os.path.join(d, "val.bin"))
    assert "val.bin is missing; prepare the dataset again" in error_of(base(tmp_path, d))


def test_bin_shorter_than_block(tmp_path):
    d = make_dataset(tmp_path / "d", range(30), range(1000))
    assert "has 30 tokens, fewer than block_size + 1 = 65; use a smaller --block_size" in error_of(base(tmp_path, d))


def test_empty_val_split(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), b"")
    assert "the val split" in error_of(base(tmp_path, d)) and "is empty" in error_of(base(tmp_path, d))


def test_odd_byte_size(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), b"\x01" * 2001)
    assert "has 2001 bytes, not a multiple of 2" in error_of(base(tmp_path, d))


def test_token_outside_vocabulary(tmp_path):
    d = make_dataset(tmp_path / "d", [5] * 500 + [60000] + [5] * 500, range(1000))
    assert "contains token id 60000, outside the model's vocabulary of 50257" in error_of(base(tmp_path, d))


def test_deepspeed_config_missing_invalid_and_disagreeing(tmp_path, shakespeare):
    argv = base(tmp_path, shakespeare)
    assert "deepspeed_config nope.json not found" in error_of([*argv, "--deepspeed_config=nope.json"])
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    assert "is not valid JSON" in error_of([*argv, f"--deepspeed_config={bad}"])
    disagree = tmp_path / "dis.json"
    disagree.write_text(json.dumps({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 2}}))
    assert "sets train_micro_batch_size_per_gpu=8 but the script's settings give 4" in \
        error_of([*argv, f"--deepspeed_config={disagree}"])


def test_block_size_beyond_model_context(tmp_path, shakespeare):
    hf = tmp_path / "hf"
    GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(hf)
    msg = error_of([*base(tmp_path, shakespeare), f"--init_from={hf}"])
    assert msg == "block_size 64 exceeds the model's context of 32 tokens; use --block_size=32 or less"


def test_unknown_init_from_and_directory_without_weights(tmp_path, shakespeare):
    assert "unknown init_from 'gpt5'" in error_of([*base(tmp_path, shakespeare), "--init_from=gpt5"])
    empty = tmp_path / "empty_model"
    empty.mkdir()
    assert "is not a Hugging Face GPT-2 directory: it needs config.json and model.safetensors" in \
        error_of([*base(tmp_path, shakespeare), f"--init_from={empty}"])


def test_resume_without_checkpoint(tmp_path, shakespeare):
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume"])
    assert "init_from='resume' but" in msg and "holds no checkpoint" in msg


def test_out_dir_not_writable(tmp_path, shakespeare):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    msg = error_of([*TINY, f"--dataset={shakespeare}", f"--out_dir={blocker}/out"])
    assert msg.startswith(f"out_dir {blocker}/out is not writable")


def test_fp16_without_gpu(tmp_path, shakespeare):
    assert "dtype='float16' needs a GPU" in error_of([*base(tmp_path, shakespeare), "--dtype=float16"])


def test_profile_iteration_never_reached(tmp_path, shakespeare):
    msg = error_of([*base(tmp_path, shakespeare), "--max_iters=40", "--profile_iteration=41"])
    assert msg == ("profile_iteration 41 is never reached: iterations run 1 to 40; choose one in that range (after "
                   "the first few, which warm up), or 0 for none")
    assert not os.path.exists(tmp_path / "out")


def test_exit_code_and_one_line(tmp_path):
    """Through the real entry point: exit status 2 and a single 'error:' line on stderr."""
    proc = subprocess.run([sys.executable, "train_deepspeed.py", *TINY, "--batch_size=0"], cwd=REPO,
                          env=train_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == T.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        "error: batch_size (0) and gradient_accumulation_steps (2) must be at least 1"]


@pytest.mark.slow
def test_truncated_and_corrupted_checkpoints(reference_run, shakespeare, tmp_path):
    """A damaged checkpoint stops the resume with the file named, and nothing in out_dir changes."""
    ref_out, _ = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out, symlinks=True)
    shard = out / "final" / ckpt.zero_shard_name(1)
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    msg = error_of([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--init_from=resume", "--max_iters=20"])
    assert f"checkpoint file {shard} is truncated or corrupted" in msg and "--resume_tag=iter_N" in msg

    out2 = tmp_path / "out2"
    shutil.copytree(ref_out, out2, symlinks=True)
    states = out2 / "final" / ckpt.MODEL_STATES
    states.unlink()  # break the hard link to the reference run before scribbling on it
    shutil.copy(os.path.join(ref_out, "final", ckpt.MODEL_STATES), states)
    size = states.stat().st_size
    states.write_bytes(b"\0" * size)  # same size, garbage content
    before = {p: p.stat().st_mtime_ns for p in out2.rglob("*")}
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out2}", "--init_from=resume", "--max_iters=20"])
    assert proc.returncode == T.EXIT_BAD_INPUT, proc.stdout[-3000:]
    assert f"error: checkpoint {out2}/final could not be loaded" in proc.stdout
    assert ckpt.read_latest(str(out2)) == "final"
    assert {p: p.stat().st_mtime_ns for p in out2.rglob("*") if p.name != "csv" and "logs" not in p.parts} == \
        {p: m for p, m in before.items() if "logs" not in p.parts}


def test_missing_logging_package_is_a_clear_error(tmp_path, shakespeare, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    msg = error_of([*base(tmp_path, shakespeare), "--wandb_log=True"])
    assert msg.startswith("wandb_log=True needs the wandb package: pip install wandb")
