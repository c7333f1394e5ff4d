"""Pure helpers of the trainer: configuration, batch arithmetic, LR schedule, batches, eval windows."""
import json
import math
import re
import os
import time
import types

import numpy as np
import pytest

import dataloader
import distributed
import monitoring
import settings
import train_deepspeed as T
from dataloader import eval_starts, get_batch, parse_datasets
from settings import InputError, derive_batch, fill_ds_config, parse_config
from train_deepspeed import get_lr


# ---- configuration

def test_config_file_then_command_line(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("batch_size = 4\nlearning_rate = 1e-4\n_helper = 3\nimport math\ndtype = 'bfloat16'\n")
    cfg = parse_config([str(conf), "--batch_size=8", "--init_from=gpt2", "--compile=True", "--local_rank=1",
                        "--max_runtime=2", "--out_dir=123"])
    assert cfg["batch_size"] == 8 and cfg["learning_rate"] == 1e-4 and cfg["dtype"] == "bfloat16"
    assert cfg["init_from"] == "gpt2" and cfg["compile"] is True
    assert cfg["max_runtime"] == 2.0 and isinstance(cfg["max_runtime"], float)  # an int is fine for a float
    assert cfg["out_dir"] == "123"  # strings need no quotes
    assert parse_config([]) == T.DEFAULTS


@pytest.mark.parametrize("argv, message", [
    (["--batchsize=4"], "unknown setting 'batchsize' in the command line (did you mean 'batch_size'?)"),
    (["--batch_size=four"], "setting batch_size must be int, got 'four' (str)"),
    (["--batch_size=1.5"], "setting batch_size must be int, got 1.5 (float)"),
    (["--compile=maybe"], "setting compile must be bool (True or False), got 'maybe' (str)"),
    (["--batch_size=true"], "setting batch_size must be int, got 'true' (str)"),
    (["--max_iters"], "--max_iters has no value; write --max_iters=VALUE"),
    (["config/cpu_tiny.py", "--max_iters", "3"], "--max_iters has no value; write --max_iters=3"),
    (["--max_iters", "--dtype=bfloat16"], "--max_iters has no value; write --max_iters=VALUE"),
    (["missing_config.py"], "config file missing_config.py not found"),
])
def test_config_errors_name_the_key(argv, message):
    with pytest.raises(InputError) as e:
        parse_config(argv)
    assert message in str(e.value)


def test_command_line_wins_wherever_it_stands_and_bools_have_spellings(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("learning_rate = 1e-4\ncompile = True\n")
    cfg = parse_config(["--learning_rate=0.5", str(conf), "--compile=false"])
    assert cfg["learning_rate"] == 0.5 and cfg["compile"] is False
    for word, value in (("TRUE", True), ("yes", True), ("1", True), ("on", True), ("False", False), ("0", False),
                        ("no", False), ("OFF", False)):
        assert parse_config([f"--plot={word}"])["plot"] is value


def test_config_file_errors_say_where(tmp_path):
    conf = tmp_path / "c.py"
    conf.write_text("batch_size = 4\ncompile = true\n")
    with pytest.raises(InputError) as e:
        parse_config([str(conf)])
    assert str(e.value) == (f"config file {conf} line 2 failed to run: NameError: name 'true' is not defined "
                            "(config files are Python: True/False, quoted strings)")


def test_help_lists_the_settings(capsys):
    with pytest.raises(SystemExit) as e:
        parse_config(["config/cpu_tiny.py", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: deepspeed --num_gpus=N train_deepspeed.py [config.py ...] [--key=value ...]\n")
    assert '\nbatch_size = 16  # micro-batch per GPU\n' in text and '\ndtype = "float16"' in text
    for key in T.DEFAULTS:  # every setting is in the listing
        assert f"\n{key} = " in text, key


def test_config_file_unknown_key(tmp_path):
    conf = tmp_path / "bad.py"
    conf.write_text("learning_rat = 1e-4\n")
    with pytest.raises(InputError, match=f"unknown setting 'learning_rat' in {conf}"):
        parse_config([str(conf)])
    conf.write_text("import math\nfrom os.path import join\nsizes = [1, 2]\n")  # a list is no setting either
    with pytest.raises(InputError, match=f"unknown setting 'sizes' in {conf}"):
        parse_config([str(conf)])
    conf.write_text("batch_size = (4,)\n")
    with pytest.raises(InputError, match=r"setting batch_size must be int, got \(4,\) \(tuple\)"):
        parse_config([str(conf)])


# ---- batch arithmetic and the DeepSpeed JSON

def test_batch_arithmetic():
    cfg = dict(T.DEFAULTS, batch_size=16, gradient_accumulation_steps=2, target_batch_size=0)
    assert derive_batch(cfg, 4) == (16, 2, 128)
    cfg["target_batch_size"] = 128
    assert derive_batch(cfg, 1) == (16, 8, 128)
    assert derive_batch(cfg, 8) == (16, 1, 128)
    with pytest.raises(InputError, match="target_batch_size 128 is not a multiple of batch_size 16 x 3 GPUs = 48"):
        derive_batch(cfg, 3)


def test_ds_config_filled_and_checked():
    base = json.load(open(settings.REPO + "/ds_config_zero2.json"))
    cfg = dict(T.DEFAULTS, dtype="bfloat16", grad_clip=0.5)
    ds = fill_ds_config(json.loads(json.dumps(base)), cfg, 16, 2, 4, "out")
    assert ds["train_batch_size"] == 128 and ds["train_micro_batch_size_per_gpu"] == 16
    assert ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == 0.5
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage"] == 2 and ds["zero_optimization"]["overlap_comm"] is True
    disagree = dict(base, train_micro_batch_size_per_gpu=8)
    with pytest.raises(InputError, match="sets train_micro_batch_size_per_gpu=8 but the script's settings give 16"):
        fill_ds_config(disagree, cfg, 16, 2, 4, "out")
    with pytest.raises(InputError, match="has an 'optimizer' section"):
        fill_ds_config(dict(base, optimizer={"type": "Adam"}), cfg, 16, 2, 4, "out")
    with pytest.raises(InputError, match="sets fp16.enabled=True but dtype='bfloat16'"):
        fill_ds_config(dict(base, fp16={"enabled": True}), cfg, 16, 2, 4, "out")


# ---- learning rate

def test_lr_schedules():
    assert get_lr(0, 1.0) == get_lr(500, 1.0) == 1.0
    assert [get_lr(s, 1.0, "cosine", 4, 14, 0.1) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert get_lr(4, 1.0, "cosine", 4, 14, 0.1) == 1.0
    assert get_lr(9, 1.0, "cosine", 4, 14, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert get_lr(14, 1.0, "cosine", 4, 14, 0.1) == pytest.approx(0.1)
    assert get_lr(100, 1.0, "cosine", 4, 14, 0.1) == pytest.approx(0.1)
    assert get_lr(9, 1.0, "linear", 4, 14, 0.0) == pytest.approx(0.5)
    values = [get_lr(s, 1.0, "cosine", 4, 14, 0.1) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(values, values[1:]))


# ---- batches

def test_get_batch_is_a_pure_function_of_seed_rank_iteration():
    data = np.arange(10_000, dtype=np.uint16)
    ds = [(data, 1.0)]
    x, y = get_batch(ds, 32, 4, 1337, 1, 7, 0)
    assert x.shape == y.shape == (4, 32) and x.dtype == np.int64
    assert x.flags["C_CONTIGUOUS"] and y.flags["C_CONTIGUOUS"]  # else the copy to the GPU waits for the GPU
    assert (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()  # targets are inputs shifted by one
    again, _ = get_batch(ds, 32, 4, 1337, 1, 7, 0)
    assert (again == x).all()  # a resumed loader yields the same batches
    for other in [(1337, 0, 7, 0), (1337, 1, 8, 0), (1337, 1, 7, 1), (1, 1, 7, 0)]:
        assert not (get_batch(ds, 32, 4, *other)[0] == x).all()


def test_batches_cover_the_split():
    data = np.arange(200, dtype=np.uint16)
    seen = set()
    for it in range(2000):
        x, _ = get_batch([(data, 1.0)], 10, 2, 0, 0, it, 0)
        seen.update(x[:, 0].tolist())
    assert seen == set(range(0, 190))  # every start 0..len-block_size-1, the last target included


def test_mixing_frequencies_match_weights():
    a = np.zeros(5000, dtype=np.uint16)
    b = np.ones(5000, dtype=np.uint16)
    datasets = [(a, 0.3), (b, 0.7)]
    counts = np.zeros(2)
    for it in range(400):
        x, _ = get_batch(datasets, 16, 8, 1337, 0, it, 0)
        counts += [(x[:, 0] == 0).sum(), (x[:, 0] == 1).sum()]
    share = counts[1] / counts.sum()
    assert abs(share - 0.7) < 0.03, share  # 3,200 sequences: 3 sigma is 0.024


def test_parse_datasets():
    assert parse_datasets("shakespeare") == [("shakespeare", 1.0)]
    assert parse_datasets("a:1,b:3") == [("a", 0.25), ("b", 0.75)]
    assert parse_datasets("/data/x:2") == [("/data/x", 1.0)]
    with pytest.raises(InputError, match="dataset weight 'lots' in 'a:lots' is not a number"):
        parse_datasets("a:lots")
    with pytest.raises(InputError, match="dataset 'a' appears twice in 'a:0.3,b:0.5,a:0.2'; give each dataset once"):
        parse_datasets("a:0.3,b:0.5,a:0.2")
    assert parse_datasets("a,b") == [("a", 0.5), ("b", 0.5)]
    with pytest.raises(InputError) as e:
        parse_datasets("docs:0.5,js")
    assert str(e.value) == ("dataset js in 'docs:0.5,js' has no weight while others have; give every dataset a weight "
                            "(name:0.3,other:0.7) or none (equal weights)")


def test_continual_runs_draw_their_own_sample_stream():
    source = {"iteration": 12, "saved_at": 1764400000.25}
    seed = dataloader.continual_data_seed(1337, source)
    assert seed == dataloader.continual_data_seed(1337, dict(source))  # reproducible
    assert len({seed, 1337, dataloader.continual_data_seed(1338, source),
                dataloader.continual_data_seed(1337, dict(source, iteration=13))}) == 4  # another stream for each source
    data = [(np.arange(10_000, dtype=np.uint16), 1.0)]
    replayed = get_batch(data, 64, 4, 1337, 0, 0, 0)[0]
    assert not np.array_equal(get_batch(data, 64, 4, seed, 0, 0, 0)[0], replayed)


# ---- evaluation windows

def test_eval_windows_fixed_and_cover_the_split():
    starts = eval_starts(36_059, 1024)  # Tiny Shakespeare's val split
    assert len(starts) == 36 and starts[0] == 0 and starts[-1] == 36_059 - 1 - 1024
    assert (np.diff(starts[:-1]) == 1024).all()
    few = eval_starts(36_059, 1024, 8)
    assert len(few) == 8 and set(few) <= set(starts) and few[0] == 0 and few[-1] == starts[-1]
    assert (eval_starts(36_059, 1024, 8) == few).all()
    assert list(eval_starts(2049, 1024)) == [0, 1024]  # exact tiling: no tail window


def test_gpu_index_check():
    distributed.check_gpu_index(0, 3, 4)
    with pytest.raises(InputError, match="rank 5 needs GPU 5 but this machine has 4; launch with --num_gpus=4"):
        distributed.check_gpu_index(5, 5, 4)


def test_format_duration():
    assert monitoring.format_duration(75) == "1m15s" and monitoring.format_duration(3 * 3600 + 120) == "3h02m"
    assert math.isclose(get_lr(0, 2.0, "cosine", 0, 10, 0.0), 2.0)


# ---- the log line and progress

METRICS = {"loss": 2.5, "lr": 3e-5, "ms": 712.3, "tok_s": 46012.4, "mfu": 0.478, "opt_ms": 26.0, "mem_gib": 48.4,
           "scale": None, "grad_norm": 1.23, "skipped": "skipped (overflow)", "skipped_total": 3, "eta": "1m03s",
           "tokens_seen": 4096, "rss_mib": 500.0, "open_files": 30}


def test_log_line_and_monitor_events_agree():
    assert monitoring.format_log(12, 100, METRICS) == (
        "iter 12/100 | loss 2.5000 | lr 3.00e-05 | 712 ms | 46,012 tok/s/gpu | MFU 47.8% | opt 26 ms | mem 48.4 GiB | "
        "gnorm 1.23 | skipped (overflow) | 3 skipped in all | eta 1m03s")
    events = dict((tag, value) for tag, value, step in monitoring.monitor_events(12, METRICS))
    assert events["Train/loss"] == 2.5 and events["Train/skipped_steps"] == 3 and events["Host/open_files"] == 30
    assert "Train/loss_scale" not in events  # None (not fp16) is left out
    assert all(step == 12 for _, _, step in monitoring.monitor_events(12, METRICS))


class FakeTerminal:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_bar_on_a_terminal_plain_lines_otherwise(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    term = FakeTerminal(True)
    progress = distributed.Progress(10, 2, True, stream=term)
    progress.update(3.25)
    distributed.print0("eval 3: a line above the bar")
    progress.close()
    assert "3/10" in term.text and "loss 3.2500" in term.text and "<" in term.text  # tqdm's ETA
    assert "eval 3: a line above the bar" in term.text
    pipe = FakeTerminal(False)
    quiet = distributed.Progress(10, 2, True, stream=pipe)
    quiet.update(3.25)
    distributed.print0("iter 3/10 | loss 3.25")
    quiet.close()
    assert pipe.text == "" and "iter 3/10 | loss 3.25" in capsys.readouterr().out


def test_checkpoint_files_skip_only_the_zip_crc32(tmp_path):
    import zipfile

    import torch
    import torch.utils.serialization.config as save_config

    import checkpoint as ckpt
    weights = {"w": torch.randn(1000)}
    with ckpt.fast_torch_save():
        torch.save(weights, tmp_path / "fast.pt")
    assert save_config.save.compute_crc32  # restored for everything else in the process
    assert not save_config.save.use_pinned_memory_for_d2h
    torch.save(weights, tmp_path / "plain.pt")
    assert all(i.CRC == 0 for i in zipfile.ZipFile(tmp_path / "fast.pt").infolist())
    assert all(i.CRC != 0 for i in zipfile.ZipFile(tmp_path / "plain.pt").infolist() if i.file_size)
    assert torch.equal(torch.load(tmp_path / "fast.pt")["w"], weights["w"])


def test_every_shipped_config_file_parses():
    import glob
    import os
    files = sorted(glob.glob(os.path.join(settings.REPO, "config", "*.py")))
    assert len(files) >= 4
    for f in files:
        cfg = settings.parse_config([f])
        assert set(cfg) == set(T.DEFAULTS), f
    small_cards = settings.parse_config([os.path.join(settings.REPO, "config", "xl_24gb_2gpus.py")])
    assert not small_cards["pinned_checkpoint_copies"] and not small_cards["fused_norm"]
    large_cards = settings.parse_config([os.path.join(settings.REPO, "config", "xl_141gb.py")])
    assert (large_cards["batch_size"], large_cards["target_batch_size"]) == (32, 128)
    cards_80gb = settings.parse_config([os.path.join(settings.REPO, "config", "xl_80gb_mb32.py")])
    assert (cards_80gb["batch_size"], cards_80gb["recompute_gelu"]) == (32, -1)
    assert settings.derive_batch(cards_80gb, 4) == (32, 1, 128) and settings.derive_batch(cards_80gb, 2) == (32, 2, 128)


def test_stale_build_locks(tmp_path):
    """An interrupted torch extension build leaves root/<python+cuda>/<name>/lock; old ones are reported."""
    import time
    old, fresh = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock", tmp_path / "py311_cpu" / "cpu_adam" / "lock"
    flat = tmp_path / "gpt2_fused_dense" / "lock"  # the layout under $TORCH_EXTENSIONS_DIR
    for lock in (old, fresh, flat):
        lock.parent.mkdir(parents=True)
        lock.write_text("")
    for lock in (old, flat):
        os.utime(lock, (time.time() - 3600, time.time() - 3600))
    assert distributed.stale_build_locks(str(tmp_path)) == sorted([str(flat), str(old)])
    assert distributed.stale_build_locks(str(tmp_path), max_age_s=7200) == []


def test_resume_warnings_name_what_a_resume_changes():
    saved = dict(T.DEFAULTS, dataset="shakespeare", block_size=64, max_iters=40, lr_schedule="cosine")
    model = {"n_layer": 48, "n_head": 25, "n_embd": 1600, "bias": True, "dropout": 0.0}  # e.g. from gpt2-xl
    same = dict(saved, out_dir="elsewhere", eval_interval=5, compile=True)  # settings that change nothing learned
    assert settings.resume_warnings(saved, same, "iter_30", model) == []
    changed = dict(saved, n_layer=3, dataset="small", block_size=32, max_iters=50)
    assert settings.resume_warnings(saved, changed, "iter_30", model) == [
        "ignored on resume: n_layer=3 (the model has 48); a resumed run keeps iter_30's model (to change it, start a "
        "new run from its weights with --init_from=<out_dir>/iter_30)",
        "settings changed since iter_30 was saved: dataset 'shakespeare' -> 'small', block_size 64 -> 32; the run "
        "goes on with them, no longer an exact continuation",
        "max_iters 40 -> 50 also moves the end of the cosine schedule (lr_decay_iters 0 = max_iters), so the "
        "learning rate jumps; pass --lr_decay_iters=40 to keep it"]
    # following that advice, or a constant rate, goes on as it was
    assert settings.resume_warnings(saved, dict(saved, lr_decay_iters=40, max_iters=50), "f", model) == []
    assert settings.resume_warnings(dict(saved, lr_schedule="constant"),
                             dict(saved, lr_schedule="constant", max_iters=50), "f", model) == []
    # a schedule of another length set directly is a change like the others
    assert settings.resume_warnings(saved, dict(saved, lr_decay_iters=30), "f", model) == [
        "settings changed since f was saved: schedule length (lr_decay_iters) 40 -> 30; the run goes on with them, "
        "no longer an exact continuation"]


def test_out_dir_lock_held_free_and_on_a_filesystem_without_locks(tmp_path, monkeypatch):
    import errno
    import fcntl
    import checkpoint as ckpt
    out = tmp_path / "out"
    out.mkdir()
    assert ckpt.out_dir_holder(str(out)) is None  # no .lock yet
    fd = os.open(out / ckpt.LOCK, os.O_RDWR | os.O_CREAT)  # another run's lock (another open file: flock conflicts)
    os.write(fd, b"pid 42 on elsewhere")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert ckpt.out_dir_holder(str(out)) == "pid 42 on elsewhere"
    assert ckpt.lock_out_dir(str(out)) == "pid 42 on elsewhere"
    os.close(fd)
    assert ckpt.out_dir_holder(str(out)) is None

    def no_locks(fd, op):  # Lustre mounted without flock, an NFS without lockd
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    said = []
    assert ckpt.out_dir_holder(str(out)) is None
    assert ckpt.lock_out_dir(str(out), warn=said.append) is None
    assert said == [f"warning: {out} is on a filesystem without file locks (Function not implemented): nothing stops "
                    "a second run started into it while this one runs"]


def test_a_wait_on_a_torch_extension_lock_says_what_it_waits_for(tmp_path, monkeypatch):
    """A killed build of a torch extension leaves its lock, and every later build waits on it: the wait says so."""
    import threading
    import ds_patches
    from torch.utils.file_baton import FileBaton
    lock = tmp_path / "lock"
    lock.touch()
    said = []
    monkeypatch.setattr(FileBaton, "wait", FileBaton.wait)  # torch's own again after the test
    ds_patches.explain_build_lock_waits(first_after_s=0.2, every_s=0.3, say=said.append)
    threading.Timer(1.0, lock.unlink).start()  # the user deletes it
    t0 = time.time()
    FileBaton(str(lock), wait_seconds=0.05).wait()
    assert 0.9 < time.time() - t0 < 5 and 2 <= len(said) <= 4, said
    assert re.fullmatch(rf"waiting \d+s for {lock}: another process is building this torch extension, or a killed "
                        rf"build left its lock; if no build is running \(pgrep -f ninja finds none\), delete it: rm "
                        rf"{lock}", said[0]), said[0]
    # a build that ends before first_after_s (another rank's, on a first run) is waited for in silence
    lock.touch()
    said.clear()
    ds_patches.explain_build_lock_waits(first_after_s=2.0, say=said.append)
    threading.Timer(0.5, lock.unlink).start()
    FileBaton(str(lock), wait_seconds=0.05).wait()
    assert said == []


def test_the_one_gpu_barrier_warning_is_filtered():
    """On one GPU DeepSpeed binds no device to the process group, and torch then warns at every barrier (at each
    save, in a GPU run's log of 2026-12-02). The filter matches the text torch's own barrier() warns with."""
    import inspect
    import warnings
    import torch.distributed.distributed_c10d as c10d
    import ds_patches
    text = re.search(r'"(barrier\(\): using the device under current context\. )"', inspect.getsource(c10d.barrier))
    assert text, "torch's barrier() no longer warns with this text: check ds_patches.quiet_deprecations"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds_patches.quiet_deprecations()
        warnings.warn(text.group(1) + "You can specify `device_id` in `init_process_group` to mute this warning.")
        warnings.warn("another warning")
    assert [str(w.message) for w in caught] == ["another warning"]


def test_deepspeeds_muon_is_stood_in_for_and_the_compiler_not_imported():
    """ds_patches.skip_muon: DeepSpeed's ZeRO code finds stand-ins for its Muon modules (so that importing them does
    not import torch's compiler: 2-3 s of each launch); its own muon_update is never reached, and says so if it is."""
    import subprocess
    import sys
    code = """if True:
        import sys, torch, ds_patches
        ds_patches.skip_muon()
        import deepspeed.runtime.zero.stage_1_and_2
        from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam
        from deepspeed.runtime.zero.muon.original_muon import muon_update
        assert not isinstance(torch.optim.AdamW([torch.zeros(1, requires_grad=True)]), MuonWithAuxAdam)
        try:
            muon_update(None, None)
        except RuntimeError as e:
            print(e)
        print(sorted(m for m in sys.modules if m.startswith(("torch._inductor.compile_fx", "deepspeed.runtime.zero.muon."))))
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-2:] == [
        "DeepSpeed's Muon is switched off by ds_patches.skip_muon (this trainer uses AdamW)",
        "['deepspeed.runtime.zero.muon.muon_optimizer', 'deepspeed.runtime.zero.muon.original_muon']"]


def test_deepspeeds_engine_is_told_deepcompile_is_not_there():
    """ds_patches.skip_deepcompile_passes: on a GPU DeepSpeed's engine would register its DeepCompile passes, which
    imports deepspeed.compile.backend and torch's inductor (3.2 s of an H200 start); with the patch the engine's own
    check says no, where without it the same accelerator says yes."""
    import subprocess
    import sys
    code = """if True:
        import sys, types, ds_patches
        import deepspeed.compile.util as util, deepspeed.runtime.engine as engine
        util.get_accelerator = lambda: types.SimpleNamespace(device_name=lambda: "cuda")  # as on a GPU machine
        before = engine.is_deepcompile_supported()
        ds_patches.skip_deepcompile_passes()
        print(before, engine.is_deepcompile_supported(), "deepspeed.compile.backend" in sys.modules)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.path.dirname(
        os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1] == "True False False"


# ---- the rendezvous: whose launcher a rank came from

class FakeStore:
    def __init__(self):
        self.keys = {}

    def set(self, key, value):
        self.keys[key] = value.encode()

    def get(self, key):
        return self.keys[key]


def rank(r, local):
    return types.SimpleNamespace(rank=r, local_rank=local)


def test_ranks_of_another_launch_on_rank_0s_machine_stop_before_joining(monkeypatch):
    store = FakeStore()
    monkeypatch.setattr(distributed, "launched_by", lambda: "host-a, process 100")
    distributed.check_launcher(store, rank(0, 0), "29500")
    assert store.keys == {"launcher of rank 0": b"host-a, process 100"}
    distributed.check_launcher(store, rank(1, 1), "29500")  # rank 0's own launcher: joins
    monkeypatch.setattr(distributed, "launched_by", lambda: "host-a, process 200")  # another launch here
    with pytest.raises(InputError) as e:
        distributed.check_launcher(store, rank(1, 1), "29500")
    assert e.value.every_rank and str(e.value) == (
        "port 29500 of the rendezvous belongs to another job on this machine (its rank 0 was started by another "
        "launcher); pass --master_port=<a free port> to deepspeed, or launch with ./run_deepspeed_xl.sh, which picks "
        "a free one")
    distributed.check_launcher(store, rank(2, 0), "29500")  # another machine's rank: its own launcher
    monkeypatch.setattr(distributed, "launched_by", lambda: "")  # started by a launcher not known here: not checked
    distributed.check_launcher(store, rank(1, 1), "29500")


def test_the_launcher_is_the_nearest_launcher_ancestor(monkeypatch):
    import psutil

    class Process:
        def __init__(self, pid, command):
            self.pid, self.command = pid, command

        def cmdline(self):
            if self.command is None:
                raise psutil.AccessDenied(self.pid)
            return self.command.split()

    chains = {
        "under deepspeed, a wrapper between": [Process(40, "nsys profile python -u train_deepspeed.py"),
                                               Process(30, "python -u -m deepspeed.launcher.launch --world_info=x"),
                                               Process(20, "python /usr/bin/deepspeed --num_gpus=2"),
                                               Process(1, None)],
        "under torchrun": [Process(31, "python /usr/bin/torchrun --nproc_per_node=2 train_deepspeed.py"),
                           Process(2, "bash")],
        "none": [Process(5, "bash"), Process(1, None)]}
    found = {}
    for name, parents in chains.items():
        monkeypatch.setattr(psutil, "Process", lambda parents=parents: types.SimpleNamespace(parents=lambda: parents))
        found[name] = distributed.launched_by()
    host = __import__("socket").gethostname()
    assert found == {"under deepspeed, a wrapper between": f"{host}, process 30",
                     "under torchrun": f"{host}, process 31", "none": ""}
