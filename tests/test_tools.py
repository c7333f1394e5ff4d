"""The tools around the trainer: export.py, sample.py, plot.py and run_deepspeed_xl.sh, on bad input and around
files already there. Fast: no training run (export gets a tiny model in place of a checkpoint, the launcher
script a stand-in `deepspeed` that prints its command line)."""
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import checkpoint as ckpt
import export
import settings
from conftest import REPO, free_port, train_env
from model import GPT, GPTConfig

# -----------------------------------------------------------------------------
# export.py


@pytest.fixture
def fake_checkpoint(monkeypatch, tmp_path):
    """export.main reads a tiny random model as out_dir/final of iteration 5; returns out_dir."""
    config = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=16)
    out_dir = str(tmp_path / "run")
    monkeypatch.setattr(ckpt, "split_checkpoint_path", lambda path: (out_dir, "final"))
    monkeypatch.setattr(ckpt, "verify", lambda path: {"model_config": vars(config).copy(), "iteration": 5})
    monkeypatch.setattr(ckpt, "fp32_state_dict", lambda *a: {k: v.clone() for k, v in GPT(config).state_dict().items()})
    return out_dir


def refused(capsys, argv):
    """export.main's one error line, after checking it exits 2."""
    with pytest.raises(SystemExit) as e:
        export.main(argv)
    assert e.value.code == settings.EXIT_BAD_INPUT
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


def test_export_refuses_a_folder_with_other_files(fake_checkpoint, tmp_path, capsys):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    assert refused(capsys, ["run", "--hf", str(dest)]) == (
        f"error: --hf folder {dest} is not empty and holds more than an earlier export; give a new or empty folder, "
        "or add --force to write the export's files into it (other files there stay)")
    assert os.listdir(dest) == ["notes.txt"]

    export.main(["run", "--hf", str(dest), "--force"])
    assert (dest / "notes.txt").read_text() == "keep me"
    assert {"config.json", "model.safetensors", "notes.txt"} <= set(os.listdir(dest))


def test_export_replaces_an_earlier_export(fake_checkpoint, tmp_path, capsys):
    dest = tmp_path / "hf"
    export.main(["run", "--hf", str(dest)])
    first = (dest / "model.safetensors").read_bytes()
    (dest / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 99}))  # stale, to be replaced
    export.main(["run", "--hf", str(dest)])  # the same folder again: no --force needed
    assert json.loads((dest / "config.json").read_text())["n_layer"] == 1
    assert (dest / "model.safetensors").read_bytes() != first  # a new random model: the weights were rewritten
    assert set(os.listdir(dest)) <= export.HF_FILES
    assert f"wrote {dest} (Hugging Face GPT-2, iteration 5" in capsys.readouterr().out
    # the default destination, out_dir/export/<tag>-hf, likewise
    export.main(["run"])
    export.main(["run"])
    assert os.path.isfile(os.path.join(fake_checkpoint, "export", "final-hf", "model.safetensors"))


def test_export_pt_refuses_a_file_it_did_not_write(fake_checkpoint, tmp_path, capsys):
    path = tmp_path / "model.pt"
    path.write_text("someone's file")
    assert refused(capsys, ["run", "--pt", str(path)]) == (
        f"error: --pt file {path} exists and is not an earlier export; give another file name, or add --force to "
        "overwrite it")
    assert path.read_text() == "someone's file"
    assert refused(capsys, ["run", "--pt", str(tmp_path)]) == (
        f"error: --pt {tmp_path} is a folder; give a file name, e.g. {tmp_path}/model.pt")

    export.main(["run", "--pt", str(path), "--force"])
    export.main(["run", "--pt", str(path)])  # an earlier export: replaced without --force
    saved = torch.load(path, weights_only=True)
    assert saved["model_config"]["n_embd"] == 8 and "transformer.wte.weight" in saved["state_dict"]


def test_export_is_refused_before_the_checkpoint_is_read(fake_checkpoint, tmp_path, capsys, monkeypatch):
    def no_read(*a):
        raise AssertionError("the checkpoint was read before the destination was checked")
    monkeypatch.setattr(ckpt, "fp32_state_dict", no_read)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert "is not empty" in refused(capsys, ["run", "--hf", str(tmp_path / "full")])


def test_export_refuses_a_tag_that_contradicts_the_path(fake_checkpoint, tmp_path, capsys):
    path = os.path.join(fake_checkpoint, "final")
    assert refused(capsys, [path, "--tag", "iter_4", "--pt", str(tmp_path / "m.pt")]) == (
        f"error: {path} is tag final but --tag says iter_4; give one of them: {fake_checkpoint}/iter_4, or {path} "
        "without --tag")
    assert not (tmp_path / "m.pt").exists()
    export.main([path, "--tag", "final", "--pt", str(tmp_path / "m.pt")])  # saying it twice is no contradiction
    export.main([fake_checkpoint, "--tag", "final", "--pt", str(tmp_path / "m.pt")])


def test_export_not_a_checkpoint_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "export.py", str(tmp_path)], cwd=REPO, env=train_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path} is not a checkpoint (no `latest` file and no {ckpt.COMPLETE}); give a run's out_dir or "
        "out_dir/<tag>"]


# -----------------------------------------------------------------------------
# sample.py


def sample_error(capsys, *argv):
    import sample
    with pytest.raises(SystemExit) as e:
        sample.main(["--device=cpu", "--dtype=float32", *argv])
    assert e.value.code == settings.EXIT_BAD_INPUT
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    return err[0]


def test_sample_prompt_file_missing_exits_2(tmp_path):
    """Through the real entry point; the prompt is read before any model loads (init_from is never looked at)."""
    missing = tmp_path / "nope.txt"
    proc = subprocess.run([sys.executable, "sample.py", f"--start=FILE:{missing}", "--device=cpu",
                           "--dtype=float32", "--init_from=/no/such/run"], cwd=REPO, env=train_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"error: prompt file {missing} not found; check the path, or give the prompt itself with --start=TEXT"]


def test_sample_prompt_file_unreadable(tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ROMEO: café".encode("latin-1"))
    assert sample_error(capsys, f"--start=FILE:{latin1}") == (
        f"error: prompt file {latin1} is not UTF-8 text (byte 0xe9 at offset 10); save it as UTF-8")
    assert sample_error(capsys, f"--start=FILE:{tmp_path}") == (
        f"error: prompt file {tmp_path} could not be read (Is a directory); check the path, or give the prompt "
        "itself with --start=TEXT")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert sample_error(capsys, f"--start=FILE:{empty}") == (
        "error: the prompt is empty; give --start=TEXT (e.g. a newline) or FILE:path")


# -----------------------------------------------------------------------------
# plot.py


@pytest.mark.parametrize("name, message", [
    ("nonexistent", "error: folder {path} does not exist; give a run's out_dir"),
    ("a_file", "error: {path} is not a folder; give a run's out_dir"),
])
def test_plot_bad_folder(tmp_path, name, message):
    path = tmp_path / name
    (tmp_path / "a_file").write_text("")
    proc = subprocess.run([sys.executable, "plot.py", str(path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message.format(path=path)]
    assert not os.path.exists(tmp_path / "loss.png")


SLOW_FONT_SCAN = """
import sys, threading
real_timer = threading.Timer
threading.Timer = lambda interval, function, *args, **kwargs: real_timer(0, function, *args, **kwargs)
import plot  # matplotlib says it is building its font cache when that takes over 5 s: here at once
print(plot.plot_run(sys.argv[1]))
"""


def test_plot_on_a_machine_without_matplotlibs_font_cache_prints_only_the_png(tmp_path):
    """A new user's first plot: matplotlib builds its font cache (an empty MPLCONFIGDIR here, the scan made to look
    slow) without a line of its own; on an H200 machine it said so, 5.5 s into the final save."""
    csv_dir = tmp_path / "run" / "logs" / "csv"
    csv_dir.mkdir(parents=True)
    (csv_dir / "Train_loss.csv").write_text("step,Train_loss\n1,10.5\n2,9.75\n")
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"), PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", SLOW_FONT_SCAN, str(tmp_path / "run")], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(tmp_path / "run" / "loss.png")] and proc.stderr == ""
    assert any(f.startswith("fontlist") for f in os.listdir(tmp_path / "mpl"))  # the cache was built
    assert (tmp_path / "run" / "loss.png").stat().st_size > 10_000


def test_plot_tokens_at_interpolates_between_log_lines():
    """Evals fall between the log lines that record tokens seen: a fresh run's tokens grow from 0, a resume with a
    bigger batch changes the rate, and past the last log line the last interval's rate holds."""
    import plot
    tokens = {10: 1_000, 20: 2_000, 30: 5_000}  # 100 tokens an iteration, then 300 after a resume at 20
    assert [plot.tokens_at(tokens, s) for s in (0, 5, 10, 15, 20, 25, 30, 32)] == [
        0, 500, 1_000, 1_500, 2_000, 3_500, 5_000, 5_600]
    assert plot.tokens_at({}, 7) == 0


# -----------------------------------------------------------------------------
# run_deepspeed_xl.sh, with stand-ins that print the command line of what it starts: the `deepspeed` runner, and a
# Python that prints a start of launch.py or of the trainer and runs everything else (the script's own checks)


def run_script(tmp_path, *args, **extra_env):
    """The script's output, MASTER_PORT unset unless given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "deepspeed"
    fake.write_text('#!/bin/sh\necho "deepspeed $*"\n')
    fake.chmod(0o755)
    python = bin_dir / "python"
    python.write_text('#!/bin/sh\ncase "$1 $2 $3" in "-u -m deepspeed.launcher.launch" | "-u train_deepspeed.py "*)\n'
                      f'    echo "python $*"; exit 0;;\nesac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    env = train_env({"NUM_GPUS": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHON": str(python),
                     "PATH": os.pathsep.join([str(bin_dir), os.path.dirname(sys.executable), os.environ["PATH"]])})
    env.pop("MASTER_PORT", None)
    env.update(extra_env)
    return subprocess.run(["./run_deepspeed_xl.sh", "config/cpu_tiny.py", "--dataset=/unused", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def listening(port):
    """A socket listening on `port` as a running job's rendezvous would (None if another process has it already)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's TCPStore: a TIME_WAIT left here is no obstacle
    try:
        s.bind(("", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s


def test_script_prints_no_batch_arithmetic_of_its_own(tmp_path):
    """12 sequences do not divide over 4 x 2 GPUs; the trainer says so. The script must not print 8 as if it ran."""
    port = free_port()
    proc = run_script(tmp_path, "--target_batch_size=12", MASTER_PORT=str(port))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "model scratch on 2 CPU processes, float32",
        f"python -u -m deepspeed.launcher.launch --world_info={world_info([0, 1])} --master_addr=127.0.0.1 "
        f"--master_port={port} --log_level=critical train_deepspeed.py config/cpu_tiny.py --dataset=/unused "
        "--target_batch_size=12"]


def world_info(ids):
    """launch.py's --world_info for these local GPUs, as DeepSpeed's runner encodes it."""
    from deepspeed.launcher.runner import encode_world_info
    return encode_world_info({"localhost": ids})


def test_script_gives_launch_py_the_first_num_gpus_of_cuda_visible_devices(tmp_path):
    """Indices or UUIDs, as the user set them; launch.py sets each rank's CUDA_VISIBLE_DEVICES from them."""
    port = free_port()
    for visible, chosen in [("2,3,5", [2, 3]), ("GPU-aa,GPU-bb,GPU-cc", ["GPU-aa", "GPU-bb"])]:
        proc = run_script(tmp_path, MASTER_PORT=str(port), CUDA_VISIBLE_DEVICES=visible)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[1].startswith(
            f"python -u -m deepspeed.launcher.launch --world_info={world_info(chosen)} --master_addr=127.0.0.1 ")


def test_script_starts_one_process_without_a_launcher(tmp_path):
    """One process needs no launcher (each costs seconds of imports): the trainer itself, with launch.py's
    --local_rank (by which the script forwards signals), on the port the script checked."""
    port = free_port()
    proc = run_script(tmp_path, MASTER_PORT=str(port), NUM_GPUS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["model scratch on 1 CPU process, float32",
                                        "python -u train_deepspeed.py --local_rank=0 config/cpu_tiny.py --dataset=/unused"]


def test_script_picks_a_free_port_when_29500_is_taken(tmp_path):
    held = listening(29500)  # another job on this machine
    try:
        proc = run_script(tmp_path)
    finally:
        if held:
            held.close()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    port = int(lines[0].split("using port ")[1].split()[0])
    assert port != 29500
    assert lines[0] == (f"port 29500 is in use (another job on this machine?); using port {port} "
                        "(set MASTER_PORT to choose)")
    assert f"--master_addr=127.0.0.1 --master_port={port} --log_level=critical train_deepspeed.py" in lines[2]


def test_script_leaves_the_port_to_the_hostfile_run(tmp_path):
    """Several machines: the rendezvous is on the first host, which this one cannot check."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    held = listening(29500)
    try:
        proc = run_script(tmp_path, HOSTFILE=str(hostfile))
        with_port = run_script(tmp_path, HOSTFILE=str(hostfile), MASTER_PORT="29501")
    finally:
        if held:
            held.close()
    assert proc.stdout.splitlines()[-1].startswith(f"deepspeed --log_level=critical --hostfile={hostfile} train_deepspeed.py ")
    assert with_port.stdout.splitlines()[-1].startswith(
        f"deepspeed --log_level=critical --hostfile={hostfile} --master_port=29501 train_deepspeed.py ")


@pytest.mark.parametrize("value", ["abc", "0", "65536", "-1"])
def test_script_rejects_a_bad_master_port(tmp_path, value):
    proc = run_script(tmp_path, MASTER_PORT=value)
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"error: MASTER_PORT must be a port number from 1 to 65535, got '{value}'"]


def test_script_refuses_a_master_port_in_use(tmp_path):
    port = free_port()
    held = listening(port)
    try:
        proc = run_script(tmp_path, MASTER_PORT=str(port))
    finally:
        held.close()
    assert proc.returncode == settings.EXIT_BAD_INPUT
    assert proc.stderr.strip().splitlines() == [
        f"error: MASTER_PORT={port} is in use on this machine (or needs root); choose another, or unset MASTER_PORT "
        "to have a free port picked"]
    assert "deepspeed" not in proc.stdout


def test_sample_help_lists_its_own_settings():
    proc = subprocess.run([sys.executable, "sample.py", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: python sample.py [--key=value ...]\n")
    assert "\ntemperature = 0.8  # 0 = greedy\n" in proc.stdout and "batch_size" not in proc.stdout


def test_script_help_shows_its_header_and_the_settings(tmp_path):
    proc = run_script(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("Fine-tune GPT-2 XL with DeepSpeed ZeRO-2")
    assert "MASTER_PORT=29600 ./run_deepspeed_xl.sh" in proc.stdout
    assert "\nbatch_size = 16  # micro-batch" in proc.stdout
    assert "deepspeed " not in proc.stdout.split("usage:")[0]  # nothing launched


@pytest.mark.slow
def test_a_run_through_the_script_is_quiet_and_ends_with_what_next(shakespeare, tmp_path):
    """Through ./run_deepspeed_xl.sh: none of DeepSpeed's [INFO] lines, no warning about a missing GPU, no
    FutureWarning; the run ends with its summary and the next commands, which work as printed."""
    out = tmp_path / "out"
    env = train_env({"NUM_GPUS": "2", "PYTHON": sys.executable,
                     "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]})
    env.pop("DS_ACCELERATOR")  # the script chooses it
    proc = subprocess.run(["./run_deepspeed_xl.sh", "config/cpu_tiny.py", f"--dataset={shakespeare}",
                           f"--out_dir={out}", "--max_iters=4", "--eval_interval=2", "--eval_iters=2", "--plot=False"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "[INFO]" not in output and "[WARNING]" not in output and "FutureWarning" not in output, output[:3000]
    lines = proc.stdout.splitlines()
    assert lines[-4].startswith("done: iterations 0 -> 4 in ") and "(4,096 tokens trained in all); best val loss" \
        in lines[-4]
    assert lines[-3] == f"checkpoints in {out}: best, final, iter_2; latest = final"
    sample, export = lines[-2].split("#")[0].split()[1:], lines[-1].split("#")[0].split()
    assert sample == ["python", "sample.py", f"--init_from={out}/best"] and export == ["python", "export.py",
                                                                                          f"{out}/best"]
    sampled = subprocess.run([sys.executable, *sample[1:], "--max_new_tokens=5", "--num_samples=1", "--device=cpu"],
                             cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0 and sampled.stdout.strip(), sampled.stderr[-2000:]
    exported = subprocess.run([sys.executable, *export[1:]], cwd=REPO, env=train_env(), capture_output=True,
                              text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert lines[-1].endswith(f"# Hugging Face GPT-2 folder: {out}/export/best-hf")
    assert (out / "export" / "best-hf" / "model.safetensors").exists()
