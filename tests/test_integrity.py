"""complete.json's content hashes: a checkpoint file whose bytes changed but whose size did not is refused, with one
line naming it, by resume, export.py and sample.py (exit 2), instead of being loaded as it is."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import checkpoint as ckpt
import settings
from conftest import REPO, TINY, launch, train_env


def flip(path, offset=None):
    """Invert one byte of path (the middle one by default): same size, other bytes."""
    size = os.path.getsize(path)
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_file_hash_is_sha256_of_the_pieces_digests(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "HASH_PIECE", 1000)
    data = os.urandom(2500)
    path = tmp_path / "f"
    path.write_bytes(data)
    pieces = b"".join(hashlib.sha256(data[i:i + 1000]).digest() for i in (0, 1000, 2000))
    assert ckpt.file_hashes([str(path)], threads=2) == {str(path): hashlib.sha256(pieces).hexdigest()}
    (tmp_path / "empty").write_bytes(b"")
    empty = hashlib.sha256(hashlib.sha256(b"").digest()).hexdigest()
    assert ckpt.file_hashes([str(tmp_path / "empty")]) == {str(tmp_path / "empty"): empty}


def make_tag(tmp_path, entries):
    tag = tmp_path / "out" / "iter_2"
    tag.mkdir(parents=True)
    for name in entries:
        (tag / name).write_bytes(os.urandom(3000))
    return tag


def test_verify_checks_hashes_only_when_asked_and_reads_old_markers(tmp_path):
    tag = make_tag(tmp_path, ["a.pt", "b.pt"])
    digests = ckpt.file_hashes([str(tag / "a.pt"), str(tag / "b.pt")])
    files = {n: {"size": 3000, "sha256": digests[str(tag / n)]} for n in ("a.pt", "b.pt")}
    (tag / ckpt.COMPLETE).write_text(json.dumps({"files": files}))
    assert ckpt.verify(str(tag), content=True)["files"] == files
    flip(tag / "b.pt")
    assert ckpt.verify(str(tag))  # sizes only: the change goes unseen
    assert ckpt.verify(str(tag), content=True, only=["a.pt"])
    with pytest.raises(ckpt.ContentMismatch) as e:
        ckpt.verify(str(tag), content=True)
    assert str(e.value) == (f"checkpoint file {tag / 'b.pt'} does not match its hash in complete.json (its bytes "
                            f"changed since it was saved); restore it, or {tmp_path / 'out'} holds no other complete "
                            "tag")
    assert ckpt.hashed_files(ckpt.read_marker(str(tag))) == ["b.pt", "a.pt"]
    # a marker of before the hashes: name -> size, checked as before
    (tag / ckpt.COMPLETE).write_text(json.dumps({"files": {"a.pt": 3000, "b.pt": 3000}}))
    assert ckpt.verify(str(tag), content=True) and ckpt.hashed_files(ckpt.read_marker(str(tag))) == []
    (tag / ckpt.COMPLETE).write_text(json.dumps({"files": {"a.pt": 3000, "b.pt": 2999}}))
    with pytest.raises(ckpt.CheckpointError, match="is truncated"):
        ckpt.verify(str(tag))


def test_own_files_are_the_ranks_shards_and_state(tmp_path):
    names = [ckpt.MODEL_STATES, "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
             "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "bf16_zero_pp_rank_10_mp_rank_00_optim_states.pt",
             "zero_pp_rank_1_mp_rank_00_optim_states.pt.part", ckpt.rank_state_name(0), ckpt.rank_state_name(1)]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert ckpt.own_files(str(tmp_path), 0) == ["bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                                ckpt.MODEL_STATES, ckpt.rank_state_name(0)]
    assert ckpt.own_files(str(tmp_path), 1) == ["bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt",
                                                ckpt.rank_state_name(1)]


def run_tool(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, env=train_env(), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("damaged", ["zero_pp_rank_1_mp_rank_00_optim_states.pt", ckpt.MODEL_STATES])
def test_changed_bytes_are_refused_by_resume_export_and_sample(reference_run, shakespeare, tmp_path, damaged):
    ref_out, _ = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out, ignore=shutil.ignore_patterns(ckpt.UNIVERSAL_DIR, "export"))
    marker = ckpt.read_marker(str(out / "final"))
    assert set(marker["files"]) == set(os.listdir(out / "final")) - {ckpt.COMPLETE}
    assert all(re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in marker["files"].values())
    assert marker["hash"] == ckpt.HASH_SCHEME
    path = out / "final" / damaged
    flip(path)
    line = (f"checkpoint file {path} does not match its hash in complete.json (its bytes changed since it was "
            "saved); restore it, or choose another ")

    resumed = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--max_iters=14",
                      "--init_from=resume"])
    assert resumed.returncode == settings.EXIT_BAD_INPUT, resumed.stdout[-3000:]
    errors = [x for x in resumed.stdout.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: " + line + "tag with --resume_tag=TAG: "), errors
    assert "Traceback" not in resumed.stdout and "iter 13/14" not in resumed.stdout

    exported = run_tool("export.py", str(out / "final"), "--pt", str(tmp_path / "model.pt"))
    assert exported.returncode == settings.EXIT_BAD_INPUT, exported.stderr[-3000:]
    assert exported.stderr.splitlines()[-1].startswith("error: " + line + "tag: ") and \
        "Traceback" not in exported.stderr and not (tmp_path / "model.pt").exists()

    sampled = run_tool("sample.py", f"--init_from={out / 'final'}", "--num_samples=1", "--max_new_tokens=2",
                       "--device=cpu", "--dtype=float32")
    assert sampled.returncode == settings.EXIT_BAD_INPUT, sampled.stderr[-3000:]
    assert sampled.stderr.splitlines()[-1].startswith("error: " + line + "tag: ") and sampled.stdout == ""
