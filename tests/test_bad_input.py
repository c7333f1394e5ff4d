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
import settings
import train_deepspeed as T
from conftest import REPO, TINY, forget_hash, launch, shm_buffers, train_env


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
    with pytest.raises(settings.InputError) as e:
        T.run(settings.parse_config(argv))
    return str(e.value)


def base(tmp_path, dataset):
    return [*TINY, f"--dataset={dataset}", f"--out_dir={tmp_path / 'out'}"]


def test_missing_dataset(tmp_path):
    msg = error_of(base(tmp_path, tmp_path / "nowhere"))
    assert "dataset" in msg and "not found" in msg and "prepare.py" in msg


def test_misspelt_dataset_gets_the_near_name(tmp_path, shakespeare):
    misspelt = os.path.join(os.path.dirname(str(shakespeare)), "shakespaere")
    msg = error_of(base(tmp_path, misspelt))
    assert msg.startswith(f"dataset {misspelt!r} not found ({misspelt} does not exist); did you mean "
                          f"{str(shakespeare)!r}? Or prepare it with"), msg
    assert "did you mean" in error_of(base(tmp_path, "shakespear")) and "'shakespeare'?" in error_of(
        base(tmp_path, "shakespear"))


def test_dataset_given_as_a_file(tmp_path, shakespeare):
    text = tmp_path / "notes.txt"
    text.write_text("some text")
    assert error_of([*base(tmp_path, text)]) == (
        f"dataset '{text}' is a file; a dataset is a folder of token bins: prepare one with "
        f"`python data/prepare.py --name notes --input {text}`, then use --dataset={'notes'}")
    train_bin = os.path.join(shakespeare, "train.bin")
    assert error_of([*base(tmp_path, train_bin)]) == (
        f"dataset '{train_bin}' is a token file; give the folder that holds train.bin and val.bin: "
        f"--dataset={shakespeare}")


def test_missing_bin(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), range(1000))
    os.remove(os.path.join(d, "val.bin"))
    assert error_of(base(tmp_path, d)) == (f"{d}/val.bin is missing; prepare the dataset with "
                                           f"`python data/prepare.py --name d --out_root {tmp_path} --input FILES`")
    # a dataset with its own preparation script (as data/shakespeare) is pointed at that script
    (tmp_path / "d" / "prepare.py").write_text("")
    assert error_of(base(tmp_path, d)).endswith(f"prepare the dataset with `python {os.path.relpath(d)}/prepare.py`")
    assert not os.path.exists(tmp_path / "out")  # out_dir is made only after the data checks


def test_bins_disagreeing_with_meta(tmp_path):
    """A preparation that died between its renames leaves bins that meta.json does not describe."""
    d = make_dataset(tmp_path / "d", range(1000), range(500))
    (tmp_path / "d" / "meta.json").write_text(json.dumps({"train_tokens": 1000, "val_tokens": 400}))
    msg = error_of(base(tmp_path, d))
    assert msg.startswith(f"{d}/val.bin has 500 tokens but {d}/meta.json says 400: the bins and meta.json come from")
    # consistent, or a count that is not a number: past the data checks, stopped by the out_dir check after them
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for val_tokens in (500, "500"):
        (tmp_path / "d" / "meta.json").write_text(json.dumps({"train_tokens": 1000, "val_tokens": val_tokens}))
        msg = error_of([*TINY, f"--dataset={d}", f"--out_dir={blocker}/out"])
        assert msg.startswith(f"out_dir {blocker}/out is not writable")


@pytest.mark.parametrize("setting, message", [
    ("--learning_rate=-1.0", "setting learning_rate must be >= 0, got -1.0"),
    ("--dropout=1.5", "setting dropout must be in [0, 1), got 1.5"),
    ("--beta2=1.0", "setting beta2 must be in [0, 1), got 1.0"),
    ("--eval_iters=0", "setting eval_iters must be -1 (all of val) or >= 1, got 0"),
    ("--keep_last_n=-1", "setting keep_last_n must be >= 0 (0 keeps every iter_N), got -1"),
    ("--gradient_checkpointing=-2", "setting gradient_checkpointing must be -1 (all blocks), 0 (none) or a number of "
                                    "blocks, got -2"),
    ("--max_iters=-1", "setting max_iters must be >= 0, got -1"),
    ("--seed=-1", "setting seed must be >= 0, got -1"),
    ("--target_batch_size=-4", "setting target_batch_size must be >= 0 (0 = batch_size x gradient_accumulation_steps "
                               "x GPUs), got -4"),
    ("--dist_timeout_minutes=0", "setting dist_timeout_minutes must be > 0, got 0.0"),
    ("--n_head=3", "n_embd 64 is not a multiple of n_head 3; each head gets n_embd / n_head channels "
                   "(GPT-2: 768 / 12)"),
])
def test_settings_out_of_range(tmp_path, shakespeare, setting, message):
    assert error_of([*base(tmp_path, shakespeare), setting]) == message
    assert not os.path.exists(tmp_path / "out")


def test_new_run_refuses_an_out_dir_holding_checkpoints(tmp_path, shakespeare):
    """A fresh run would replace final, best and latest of the run already there."""
    out = tmp_path / "out"
    for tag in ("best", "final", "iter_20"):
        (out / tag).mkdir(parents=True)
        marker = {"iteration": 20, "files": {}, "model_config": {"block_size": 64}}
        (out / tag / ckpt.COMPLETE).write_text(json.dumps(marker))
    (out / ckpt.LATEST).write_text("final")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    for init_from in ("scratch", str(out / "final")):
        msg = error_of([*base(tmp_path, shakespeare), f"--init_from={init_from}"])
        assert msg == (f"out_dir {out} already holds a run's checkpoints (best, final, iter_20), which a new run "
                       "would replace; continue that run with --init_from=resume, or start afresh in another "
                       "--out_dir (or delete that one)")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # a `latest` naming a tag that is not there
    shutil.rmtree(out / "final")
    shutil.rmtree(out / "best")
    shutil.rmtree(out / "iter_20")
    assert error_of([*base(tmp_path, shakespeare)]) == (
        f"{out}/latest names final, which is not there; delete that file (or the out_dir) to start afresh there, "
        "or choose another --out_dir")
    # an out_dir whose run never finished a save (only logs) is free for a new run: nothing there to lose (past
    # the refusal, the next check stops it: an unknown dataset)
    (out / ckpt.LATEST).unlink()
    (out / "logs").mkdir()
    assert error_of([*base(tmp_path, tmp_path / "nowhere")]).startswith("dataset ")


def test_resume_tag_that_does_not_exist(tmp_path, shakespeare, monkeypatch):
    out = tmp_path / "out"
    for tag in ("best", "iter_4"):
        (out / tag).mkdir(parents=True)
        (out / tag / ckpt.COMPLETE).write_text(json.dumps({"files": {}, "model_config": {}}))
    (out / "iter_8").mkdir()  # interrupted: no complete.json
    (out / "logs").mkdir()
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume", "--resume_tag=iter_99"])
    assert msg == f"checkpoint {out}/iter_99 does not exist; choose another tag with --resume_tag=TAG: best, iter_4"
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume", "--resume_tag=iter_8"])
    assert msg == (f"checkpoint {out}/iter_8 is incomplete (no complete.json): it was interrupted while saving; "
                   "choose another tag with --resume_tag=TAG: best, iter_4")
    # without `latest`, resume takes the newest complete iter_N, else a complete final (never best)
    assert ckpt.resolve_resume(str(out))[0] == "iter_4"
    shutil.rmtree(out / "iter_4")
    with pytest.raises(ckpt.CheckpointError, match="holds no checkpoint"):
        ckpt.resolve_resume(str(out))
    (out / "final").mkdir()
    (out / "final" / ckpt.COMPLETE).write_text(json.dumps({"files": {}, "model_config": {}}))
    assert ckpt.resolve_resume(str(out))[0] == "final"
    # the tag's folder given as out_dir
    msg = error_of([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}/best", "--init_from=resume"])
    assert msg == f"out_dir {out}/best is a checkpoint tag, not a run's out_dir; resume it with --out_dir={out} " \
                  "--resume_tag=best"
    assert error_of([*TINY, f"--dataset={shakespeare}", "--out_dir="]) == (
        "out_dir is empty; give the run's folder, e.g. --out_dir=out-mydata")
    # an out_dir given as '.' still lists its tags
    monkeypatch.chdir(out)
    assert ckpt.other_tags("./iter_9") == "choose another tag: best, final"
    # a tag made of hard links to another's files (best is) is not offered as the way out of that one
    (out / "final" / ckpt.MODEL_STATES).write_bytes(b"damaged")
    os.link(out / "final" / ckpt.MODEL_STATES, out / "best" / ckpt.MODEL_STATES)
    assert ckpt.other_tags("./final") == ". holds no other complete tag"


def test_bin_shorter_than_block(tmp_path):
    d = make_dataset(tmp_path / "d", range(30), range(1000))
    assert "has 30 tokens, fewer than block_size + 1 = 65; use a smaller --block_size" in error_of(base(tmp_path, d))


def test_empty_val_split(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), b"")
    assert "the val split" in error_of(base(tmp_path, d)) and "is empty" in error_of(base(tmp_path, d))


def test_odd_byte_size(tmp_path):
    d = make_dataset(tmp_path / "d", range(1000), b"\x01" * 2001)
    assert "has 2001 bytes, not a multiple of 2" in error_of(base(tmp_path, d))


def test_32_bit_bins_are_named(tmp_path):
    ids = np.random.default_rng(0).integers(1, 50257, size=4000)
    d = make_dataset(tmp_path / "d", ids.astype(np.uint32).view(np.uint16), ids)  # train written as uint32
    assert error_of(base(tmp_path, d)) == (
        f"{d}/train.bin looks like 32-bit token ids (every second 16-bit value is 0); the trainer reads uint16 bins: "
        "convert it with numpy (np.fromfile(path, np.uint32).astype(np.uint16).tofile(path)) or prepare the text "
        "with data/prepare.py")


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
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        "error: batch_size (0) and gradient_accumulation_steps (2) must be at least 1"]


def test_bad_input_found_by_every_rank_is_said_even_when_rank_0_comes_to_it_last(tmp_path):
    """Before the process group every rank finds the same bad setting and rank 0 alone says so. Rank 1 used to exit
    first, and the launcher then ended rank 0 before its line (seen once in CI, as a run with no 'error:' line):
    here rank 0 starts 4 s late."""
    proc = launch([*TINY, f"--out_dir={tmp_path / 'out'}", "--batch_size=0"], faults="late_start@4:0", timeout=120)
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("error")] == [
        "error: batch_size (0) and gradient_accumulation_steps (2) must be at least 1"], proc.stdout[-3000:]
    assert not os.path.exists(tmp_path / "out")


def test_init_from_an_incomplete_tag_of_another_run(tmp_path, shakespeare):
    src = tmp_path / "src"
    (src / "final").mkdir(parents=True)
    (src / "final" / ckpt.MODEL_STATES).write_bytes(b"cut short")  # a save killed before complete.json
    (src / "best").mkdir()
    (src / "best" / ckpt.COMPLETE).write_text(json.dumps({"files": {}, "model_config": {"block_size": 64}}))
    assert error_of([*base(tmp_path, shakespeare), f"--init_from={src}/final"]) == (
        f"checkpoint {src}/final is incomplete (no complete.json): it was interrupted while saving; choose another "
        f"with --init_from={src}/TAG: best")


def tag_at_30(out, tag, world_size, dtype):
    """out/tag: a completion marker of iteration 30 (no files), named by `latest`."""
    (out / tag).mkdir(parents=True)
    marker = {"iteration": 30, "files": {}, "zero_stage": 2, "world_size": world_size,
              "model_config": {"block_size": 64}, "config": {"dtype": dtype}}
    (out / tag / ckpt.COMPLETE).write_text(json.dumps(marker))
    (out / ckpt.LATEST).write_text(tag)


def test_resume_in_another_dtype_or_past_max_iters(tmp_path, shakespeare):
    out = tmp_path / "out"
    tag_at_30(out, "iter_30", world_size=2, dtype="bfloat16")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume", "--dtype=float32", "--max_iters=40"])
    assert msg == ("iter_30 was saved in bfloat16 (DeepSpeed keeps optimizer state per precision); resume with "
                   "--dtype=bfloat16, or start a new run from its weights in float32 with "
                   f"--init_from={out}/iter_30 and another --out_dir")
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume", "--dtype=bfloat16", "--max_iters=20"])
    assert msg == "iter_30 is at iteration 30, past max_iters 20: nothing to train; raise --max_iters to go on"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    msg = error_of([*base(tmp_path, shakespeare), "--resume_tag=iter_30"])
    assert msg == (f"resume_tag=iter_30 is only read with --init_from=resume; add that, or drop --resume_tag (a new "
                   f"run from that tag's weights: --init_from={out}/iter_30 with another --out_dir)")


def test_resuming_a_finished_run_does_nothing(tmp_path, shakespeare, capsys):
    """A finished job started again on as many ranks (a requeue): exit 0 and nothing rewritten (a new final would
    stop sharing its files with best). On another number of ranks it is re-saved (test_universal.py)."""
    out = tmp_path / "out"
    tag_at_30(out, "final", world_size=1, dtype="float32")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert T.run(settings.parse_config([*base(tmp_path, shakespeare), "--init_from=resume", "--max_iters=30"])) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "final is at iteration 30 = max_iters: the run is done, nothing to train or save; raise --max_iters to go on")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.slow
def test_truncated_and_corrupted_checkpoints(reference_run, shakespeare, tmp_path):
    """A damaged checkpoint stops the resume with the file named, and nothing in out_dir changes."""
    ref_out, _ = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out, symlinks=True)
    shard = out / "final" / ckpt.zero_shard_name(1)
    shard.write_bytes(shard.read_bytes()[:1000])  # truncated
    msg = error_of([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--init_from=resume", "--max_iters=20"])
    assert f"checkpoint file {shard} is truncated (1,000 bytes" in msg and "; choose another tag with " in msg
    assert "final" not in msg.split("--resume_tag=TAG: ")[1].split(", ")  # the damaged tag is not suggested

    out2 = tmp_path / "out2"
    shutil.copytree(ref_out, out2, symlinks=True)
    states = out2 / "final" / ckpt.MODEL_STATES
    states.unlink()  # break the hard link to the reference run before scribbling on it
    shutil.copy(os.path.join(ref_out, "final", ckpt.MODEL_STATES), states)
    size = states.stat().st_size
    states.write_bytes(b"\0" * size)  # same size, garbage content
    forget_hash(out2 / "final", ckpt.MODEL_STATES)  # the hash would refuse it first (tests/test_integrity.py)
    before = {p: p.stat().st_mtime_ns for p in out2.rglob("*")}
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out2}", "--init_from=resume", "--max_iters=20"])
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:]
    assert f"error: [rank 0] checkpoint {out2}/final could not be loaded" in proc.stdout  # each rank, its own line
    assert "; choose another tag with --resume_tag=TAG: best, " in proc.stdout
    assert ckpt.read_latest(str(out2)) == "final"
    def checkpoint_files(times):  # the logs and the out_dir lock are the run's own
        return {p: m for p, m in times.items() if "logs" not in p.parts and p.name != ckpt.LOCK}
    assert checkpoint_files({p: p.stat().st_mtime_ns for p in out2.rglob("*")}) == checkpoint_files(before)


def test_missing_logging_package_is_a_clear_error(tmp_path, shakespeare, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if wandb were not installed
    msg = error_of([*base(tmp_path, shakespeare), "--wandb_log=True"])
    assert msg.startswith("wandb_log=True needs the wandb package: pip install wandb")


def test_wandb_without_credentials_is_one_line_on_every_rank(tmp_path, shakespeare):
    """wandb.init fails on rank 0 only (no API key, no network): one line and exit 2 from the whole run, not rank 0's
    traceback and the other rank's broken collective."""
    env = train_env({"WANDB_MODE": "online", "NETRC": str(tmp_path / "no-netrc"),
                     "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")})
    env.pop("WANDB_API_KEY", None)
    buffers = shm_buffers()
    proc = launch([*base(tmp_path, shakespeare), "--wandb_log=True", "--max_iters=2"], env=env, timeout=300)
    assert shm_buffers() == buffers  # DeepSpeed's /dev/shm buffers go even when the run ends here
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if "error" in line.lower()]
    assert errors[0] == ("error: the monitors could not start (UsageError: No API key configured. Use `wandb login` to "
                         "log in.); for wandb: `wandb login` or WANDB_API_KEY, or WANDB_MODE=offline to log without "
                         "network, or --wandb_log=False"), errors
    assert "Traceback" not in proc.stdout
    assert not os.path.exists(tmp_path / "out" / "latest")


def test_rendezvous_port_in_use(tmp_path, shakespeare):
    """The bare deepspeed launcher on a port another program holds: one line naming the port and the fix."""
    import socket
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus=2", f"--master_port={port}",
               "train_deepspeed.py", *base(tmp_path, shakespeare), "--max_iters=2"]
        proc = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error")] == [
        f"error: port {port} of the rendezvous is in use (another run?); pass --master_port=<a free port> to "
        "deepspeed, or launch with ./run_deepspeed_xl.sh, which picks a free one"]
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--temperature=-1.0"], "error: setting temperature must be >= 0 (0 = greedy), got -1.0"),
    (["--top_p=0.0"], "error: setting top_p must be in (0, 1] (1 = off), got 0.0"),
    (["--dtype=fp16"], "error: dtype must be one of float16, bfloat16, float32, got 'fp16'"),
    (["--device=cuda:0"], "error: --device=cuda:0 but this machine has no CUDA GPU that torch can use; "
                          "use --device=cpu"),
    (["--device=gpu"], "error: device 'gpu' is not a device name; use --device=cpu or --device=cuda"),
    (["--init_from=scratch"], "error: init_from 'scratch' is not a run's out_dir (or out_dir/tag), a Hugging Face "
                              "GPT-2 directory, export.py's .pt file or one of gpt2, gpt2-medium, gpt2-large, "
                              "gpt2-xl; check the path"),
    (["--init_from=sample.py"], "error: init_from 'sample.py' is not a run's out_dir (or out_dir/tag), a Hugging Face "
                                "GPT-2 directory, export.py's .pt file or one of gpt2, gpt2-medium, gpt2-large, "
                                "gpt2-xl; check the path"),
    (["--bogus=1"], "error: unknown setting 'bogus' in the command line; the settings are the globals of sample.py"),
])
def test_sample_settings(argv, message, monkeypatch, capsys):
    import sample
    monkeypatch.setattr(sample.torch.cuda, "is_available", lambda: False)  # as on this CPU machine, also on a GPU one
    with pytest.raises(SystemExit) as e:
        sample.main(["--device=cpu", "--dtype=float32", *argv])
    assert e.value.code == settings.EXIT_BAD_INPUT
    assert capsys.readouterr().err.splitlines() == [message]


@pytest.mark.parametrize("value", ["abc", "0", "-2"])
def test_launcher_script_rejects_a_bad_num_gpus(value):
    env = train_env({"NUM_GPUS": value, "PYTHON": sys.executable,
                     "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    proc = subprocess.run(["./run_deepspeed_xl.sh", "config/cpu_tiny.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [f"error: NUM_GPUS must be a whole number >= 1, got '{value}'"]


# ---- what a new user trips over: each message says what the input is and what to do


def test_init_from_a_run_without_checkpoints_says_so(tmp_path, shakespeare):
    run_dir = tmp_path / "earlier-run"
    (run_dir / "logs" / "csv").mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"deepspeed": {}, "init_from": "scratch"}))
    msg = error_of([*base(tmp_path, shakespeare), f"--init_from={run_dir}"])
    assert msg == (f"init_from {run_dir} is a training run's out_dir that holds no checkpoint (yet); wait for its "
                   f"first save, resume it with --init_from=resume --out_dir={run_dir}, or choose another init_from")


def test_a_launcher_flag_after_the_script_says_where_it_goes(tmp_path):
    msg = error_of([*TINY, "--master_port=29600"])
    assert msg == ("--master_port is a flag of the launcher, not a setting of train_deepspeed.py; put it before the "
                   "script: deepspeed --master_port=... train_deepspeed.py [config.py] [--key=value ...]")
    assert "did you mean" in error_of([*TINY, "--batchsize=4"])  # a misspelt setting is still that


def test_a_finished_run_resumed_with_a_bad_block_size_is_refused(tmp_path, shakespeare):
    out = tmp_path / "out"
    tag_at_30(out, "final", world_size=1, dtype="float32")
    msg = error_of([*base(tmp_path, shakespeare), "--init_from=resume", "--max_iters=30", "--block_size=128"])
    assert msg == "block_size 128 exceeds the model's context of 64 tokens; use --block_size=64 or less"


def test_batch_arithmetic_on_the_cpu_names_cpu_processes(tmp_path, shakespeare):
    msg = error_of([*base(tmp_path, shakespeare), "--target_batch_size=7"])
    assert msg == ("target_batch_size 7 is not a multiple of batch_size 4 x 1 CPU process = 4; change "
                   "target_batch_size or batch_size")


def test_a_missing_config_file_gets_the_near_name():
    msg = error_of(["config/cpu_tinny.py"])
    assert msg == ("config file config/cpu_tinny.py not found; did you mean config/cpu_tiny.py? Or give the path of a "
                   ".py file of settings, or --key=value")
