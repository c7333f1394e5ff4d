"""Nothing read from disk runs code: checkpoint files are loaded weights-only (DeepSpeed's own loads too), and a
file that holds anything else is refused with one line, exit 2, by the trainer, export.py and sample.py."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import checkpoint as ckpt
import settings
import train_deepspeed as T
from conftest import REPO, forget_hash, launch, reference_args, train_env

pytestmark = pytest.mark.slow


class RunsCode:
    """Unpickling it would create `path` (a stand-in for any command)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


def plant(tag_dir, name, marker_file):
    """Add a code-running object to tag_dir/name, keeping complete.json's size check satisfied."""
    path = tag_dir / name
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["extra"] = RunsCode(marker_file)
    torch.save(state, path)
    marker = json.loads((tag_dir / ckpt.COMPLETE).read_text())
    marker["files"][name] = path.stat().st_size
    (tag_dir / ckpt.COMPLETE).write_text(json.dumps(marker))


def errors(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("name", [ckpt.rank_state_name(0), ckpt.MODEL_STATES])
def test_a_checkpoint_that_would_run_code_is_refused(reference_run, shakespeare, tmp_path, name):
    out, ran = tmp_path / "out", tmp_path / "it-ran"
    shutil.copytree(reference_run[0], out)
    plant(out / "final", name, ran)
    line = (f"error: checkpoint file {out}/final/{name} (posix.system) holds Python objects that are not plain data: "
            "refused, since loading them could run code; use a checkpoint from a source you trust, or choose another "
            "tag")
    resumed = launch([*reference_args(shakespeare, out), "--init_from=resume", "--max_iters=14"])
    assert resumed.returncode == settings.EXIT_BAD_INPUT, resumed.stdout[-3000:]
    assert any(e.startswith(line.replace("error: ", "error: [rank 0] ", 1)) or e.startswith(line)
               for e in errors(resumed.stdout)), errors(resumed.stdout)
    if name == ckpt.MODEL_STATES:  # the tools read the model states
        for tool in (["export.py", str(out / "final")], ["sample.py", f"--init_from={out}/final", "--device=cpu",
                                                          "--max_new_tokens=2", "--num_samples=1"]):
            proc = subprocess.run([sys.executable, *tool], cwd=REPO, env=train_env(), capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stderr[-3000:]
            assert errors(proc.stderr) and errors(proc.stderr)[0].startswith(line), proc.stderr[-3000:]
            assert "Traceback" not in proc.stderr
    assert not ran.exists()  # nothing ran, anywhere
    assert "Traceback" not in resumed.stdout


def test_a_damaged_pickle_is_one_line_in_export(reference_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    states = out / "final" / ckpt.MODEL_STATES
    data = bytearray(states.read_bytes())
    data[:50] = b"x" * 50
    states.write_bytes(bytes(data))
    forget_hash(out / "final", ckpt.MODEL_STATES)  # the hash would refuse it first (tests/test_integrity.py)
    proc = subprocess.run([sys.executable, "export.py", str(out / "final")], cwd=REPO, env=train_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == settings.EXIT_BAD_INPUT and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors(proc.stderr) == [f"error: checkpoint {out}/final could not be read (UnpicklingError: Unsupported "
                                   "operand 120); choose another tag: best, iter_6"], proc.stderr


def test_a_complete_json_that_is_not_utf8_is_one_line(reference_run, shakespeare, tmp_path, monkeypatch):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    out = tmp_path / "out"
    shutil.copytree(reference_run[0], out)
    (out / "final" / ckpt.COMPLETE).write_bytes(b"\xff\xfe{not json")
    with pytest.raises(settings.InputError) as e:
        T.run(settings.parse_config([*reference_args(shakespeare, out), "--init_from=resume", "--max_iters=14"]))
    assert str(e.value) == (f"checkpoint file {out}/final/{ckpt.COMPLETE} is damaged (not UTF-8 JSON of a completion "
                            "marker); restore it, or choose another tag with --resume_tag=TAG: best, iter_6")
