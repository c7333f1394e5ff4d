"""Background saves (async_checkpoints): the host copy is the state as it was at the save, written as a blocking save
writes it; where RAM is short the save blocks (said once); the files of a background save equal a blocking one's.
The protocol under faults (a kill during the background write, a full disk) is tests/test_failures.py's, which run
with async_checkpoints on (the default)."""
import collections
import io
import os
import types

import pytest
import torch

import checkpoint as ckpt
from conftest import assert_ok, launch, reference_args


class Recorder:
    """DeepSpeed's engine stand-in: what it was asked to write, and when."""

    def __init__(self):
        self.saved = []

    def save(self, state_dict, path):
        buf = io.BytesIO()
        torch.save(state_dict, buf)
        self.saved.append((path, buf.getvalue()))

    def load(self, path, map_location=None):
        return "loaded " + path


class Scaler:
    def __init__(self):
        self.cur_scale = 1024.0


def state():
    flat = torch.arange(12, dtype=torch.float32)
    scaler = Scaler()
    return flat, scaler, {
        "module": collections.OrderedDict(wte=flat[:6].view(2, 3), lm_head=flat[:6].view(2, 3), bias=flat[6:]),
        "param": torch.nn.Parameter(torch.ones(3)),
        "fp32_groups": [flat.narrow(0, 2, 4)], "steps": (torch.tensor(5), 7), "shapes": torch.Size([2, 3]),
        "loss_scaler": scaler, "ds_version": "0.19.8"}


def test_host_copy_is_the_state_at_the_save_and_writes_the_same_file():
    flat, scaler, original = state()
    copies = ckpt.HostCopies(Recorder(), pinned=False)
    expected = io.BytesIO()
    torch.save(original, expected)
    with copies.blocking(False):  # as checkpoint.save asks for a background save
        copies.save(original, "/x/iter_2/zero_pp_rank_0_mp_rank_00_optim_states.pt")
    assert copies.inner.saved == [] and len(copies.jobs) == 1  # queued, not written
    flat.add_(100)  # training goes on: the tensors change, and the loss scale
    scaler.cur_scale = 2.0
    write, copy, path = copies.take_jobs()[0]
    assert copies.jobs == [] and copies.host_bytes() == 12 * 4 + 4 * 3 + 8  # each storage once
    write(copy, path)
    assert copies.inner.saved[0][1] == expected.getvalue()  # byte for byte what a save at that moment writes
    loaded = torch.load(io.BytesIO(copies.inner.saved[0][1]), weights_only=False)
    assert loaded["module"]["wte"].untyped_storage().data_ptr() == loaded["module"]["lm_head"].untyped_storage().data_ptr()
    assert isinstance(loaded["param"], torch.nn.Parameter) and loaded["loss_scaler"].cur_scale == 1024.0
    assert type(loaded["module"]) is collections.OrderedDict and loaded["steps"][1] == 7
    # the next save reuses the host buffers
    buffers = dict(copies.pool)
    with copies.blocking(False):
        copies.save(original, path)
    assert all(copies.pool[k] is b for k, b in buffers.items())
    assert copies.load("p") == "loaded p"  # everything else is DeepSpeed's engine's


def test_a_save_that_ends_the_run_writes_at_once():
    """checkpoint.save's blocking(True), and any save DeepSpeed makes outside checkpoint.save."""
    copies = ckpt.HostCopies(Recorder(), pinned=False)
    with copies.blocking(True):
        copies.save(state()[2], "/x/final/f.pt")
    copies.save(state()[2], "/x/final/g.pt")
    assert len(copies.inner.saved) == 2 and copies.jobs == []


def test_without_the_ram_for_a_host_copy_the_save_blocks_and_says_so_once(monkeypatch):
    import psutil
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=2 ** 30))
    lines = []
    copies = ckpt.HostCopies(Recorder(), pinned=False, warn=lines.append)
    big = {"t": torch.zeros(2 ** 28, dtype=torch.uint8)}  # 256 MiB, with 1 GiB free (2 GiB are left free)
    with copies.blocking(False):
        copies.save(big, "/x/iter_2/mp_rank_00_model_states.pt")
        copies.save(big, "/x/iter_4/mp_rank_00_model_states.pt")
    assert len(copies.inner.saved) == 2 and copies.jobs == [] and copies.host_bytes() == 0
    assert lines == ["warning: async_checkpoints: a host copy of mp_rank_00_model_states.pt needs 0.25 GiB more and "
                     "1.00 GiB is available: saves write while training waits, as with --async_checkpoints=False"]


@pytest.mark.slow
def test_background_and_blocking_saves_write_the_same_checkpoint(reference_run, shakespeare, tmp_path):
    """The reference run saved iter_6 in the background (the default); the same run with blocking saves writes the
    same tensors, and says nothing was written in the background."""
    ref_out, ref_log = reference_run
    assert "async_checkpoints: saves copy each rank's share of the checkpoint into host RAM" in ref_log
    assert "saved iter_6 + best in " in ref_log and ", written in the background in " in ref_log
    out = tmp_path / "out"
    blocking = launch([*reference_args(shakespeare, out), "--async_checkpoints=False"])
    assert_ok(blocking)
    assert "written in the background" not in blocking.stdout and "async_checkpoints:" not in blocking.stdout
    for name in sorted(os.listdir(os.path.join(ref_out, "iter_6"))):
        if not name.endswith(".pt"):
            continue
        a = torch.load(os.path.join(ref_out, "iter_6", name), map_location="cpu", weights_only=False)
        b = torch.load(out / "iter_6" / name, map_location="cpu", weights_only=False)
        assert_same(a, b, name)


def assert_same(a, b, where):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k not in ("ds_config", "config"):  # out_dir differs
                assert_same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
