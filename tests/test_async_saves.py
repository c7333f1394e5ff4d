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
    reserved = ref_log.index("async_checkpoints: saves copy each rank's share of the checkpoint into host RAM and "
                             "write it while training goes on (")
    assert "allocated now in the background" in ref_log[reserved:].splitlines()[0]
    assert reserved < ref_log.index("iter 2/") < ref_log.index("saved iter_6")  # after the first step, not in a save
    assert not [n for n in os.listdir(ref_out) if n.startswith(".tmp-")]  # the rehearsal's folder is gone
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


def test_reserve_allocates_the_next_saves_buffers_ahead_of_it():
    """checkpoint.reserve_host_copies: a rehearsal of the save writes nothing and leaves the buffers of its copies
    allocated (in a thread); the save then allocates nothing and writes what a save at that moment writes."""
    flat, scaler, original = state()
    copies = ckpt.HostCopies(Recorder(), pinned=False)
    name = "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    reserved = copies.reserve(lambda: copies.save(original, f"/x/.tmp-host-copies/{name}"))
    assert reserved == 12 * 4 + 4 * 3 + 8 and copies.inner.saved == [] and copies.jobs == []
    copies.reserving.join()
    buffers = dict(copies.pool)
    assert sorted(b.numel() for b in buffers.values()) == [8, 12, 48]
    expected = io.BytesIO()
    torch.save(original, expected)
    with copies.blocking(False):
        copies.save(original, f"/x/iter_2/{name}")
    assert copies.pool == buffers and all(copies.pool[k] is b for k, b in buffers.items())  # none allocated anew
    write, copy, path = copies.take_jobs()[0]
    write(copy, path)
    assert copies.inner.saved == [(f"/x/iter_2/{name}", expected.getvalue())]


def test_a_failed_reservation_is_said_and_the_save_allocates_its_buffers(monkeypatch):
    lines = []
    copies = ckpt.HostCopies(Recorder(), pinned=False, warn=lines.append)
    real = copies.allocate
    monkeypatch.setattr(copies, "allocate", lambda buffers: (_ for _ in ()).throw(RuntimeError("CUDA error: out of "
                                                                                               "memory")))
    copies.reserve(lambda: copies.save(state()[2], "/x/.tmp-host-copies/f.pt"))
    copies.reserving.join()
    assert lines == ["warning: async_checkpoints: host buffers could not be allocated ahead of the first save "
                     "(RuntimeError: CUDA error: out of memory); that save allocates them"]
    monkeypatch.setattr(copies, "allocate", real)
    with copies.blocking(False):
        copies.save(state()[2], "/x/iter_2/f.pt")
    assert len(copies.jobs) == 1 and copies.host_bytes() == 12 * 4 + 4 * 3 + 8


def test_without_the_ram_the_reservation_allocates_nothing_and_saves_block(monkeypatch):
    import psutil
    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=2 ** 30))
    lines = []
    copies = ckpt.HostCopies(Recorder(), pinned=False, warn=lines.append)
    big = {"t": torch.zeros(2 ** 28, dtype=torch.uint8)}
    assert copies.reserve(lambda: copies.save(big, "/x/.tmp-host-copies/f.pt")) is None and copies.reserving is None
    with copies.blocking(False):
        copies.save(big, "/x/iter_2/f.pt")
    assert len(copies.inner.saved) == 1 and copies.host_bytes() == 0 and len(lines) == 1
    assert lines[0].startswith("warning: async_checkpoints: a host copy of the checkpoint needs 0.25 GiB more")


@pytest.mark.parametrize("user_setting, expected", [("", [ckpt.HostCopies.PINNED_BY_REGISTER]),
                                                    ("pinned_num_register_threads:4", [])])
def test_pinned_buffers_are_registered_unless_the_user_chose(monkeypatch, user_setting, expected):
    """cudaHostAlloc stalls the GPU work beside it: pinned buffers come from malloc + cudaHostRegister, unless
    PYTORCH_CUDA_ALLOC_CONF says otherwise."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", calls.append, raising=False)
    monkeypatch.setattr(torch.cuda.memory, "_set_allocator_settings", calls.append)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", user_setting)
    ckpt.HostCopies(Recorder(), pinned=True)
    ckpt.HostCopies(Recorder(), pinned=False)
    assert calls == expected


def test_saves_wrap_deepspeeds_default_writer_and_leave_another_one_blocking(capsys):
    """Saves on objects made for it: DeepSpeed's TorchCheckpointEngine is wrapped for background saves; another
    writer chosen in the DeepSpeed config (its fast or decoupled engine) writes, and saves block, said once."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from checkpoint_manager import Saves
    capsys.readouterr()  # DeepSpeed's import says which accelerator it found
    cfg = types.SimpleNamespace(save_checkpoints=True, async_checkpoints=True, pinned_checkpoint_copies=False)
    ctx = types.SimpleNamespace(rank=0)
    default = types.SimpleNamespace(checkpoint_engine=TorchCheckpointEngine())
    assert Saves(cfg, ctx, default, None, 2, {}).background
    assert isinstance(default.checkpoint_engine, ckpt.HostCopies)

    class FastCheckpointEngine:  # stands for DeepSpeed's engines that are not TorchCheckpointEngine
        pass
    other = types.SimpleNamespace(checkpoint_engine=FastCheckpointEngine())
    assert not Saves(cfg, ctx, other, None, 2, {}).background
    assert isinstance(other.checkpoint_engine, FastCheckpointEngine)
    assert capsys.readouterr().out.splitlines() == [
        "warning: async_checkpoints: DeepSpeed's FastCheckpointEngine writes the checkpoints (the DeepSpeed config's "
        "checkpoint writer); saves block while it writes"]


def test_a_save_that_ends_the_run_is_waited_for_at_finish_and_reports_the_whole_wait(monkeypatch, capsys):
    """The save that ends a run starts its write and returns (the loss plot is drawn meanwhile); finish() waits for
    it, and its line gives the time from the save's start to its tag's install: what the run waited, not "written in
    the background"."""
    import checkpoint_manager as cm
    monkeypatch.delenv("RANK", raising=False)
    pending = object.__new__(ckpt.PendingSave)
    pending.marker = {"iteration": 20}
    waited, clock = [], iter([100.0, 109.5, 109.5])
    monkeypatch.setattr(cm, "time", types.SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(cm, "save_run", lambda *args, **kwargs: pending)
    monkeypatch.setattr(cm, "wait_run_save", lambda p, device: waited.append(p) or (0.4, 2 ** 30, 3 * 2 ** 30, [],
                                                                                     0.5, 7.2))
    events = []
    cfg = types.SimpleNamespace(save_checkpoints=True, async_checkpoints=False, out_dir="/out")
    saves = cm.Saves(cfg, types.SimpleNamespace(rank=0, device="cpu"), types.SimpleNamespace(checkpoint_engine=None),
                     types.SimpleNamespace(write_events=events.extend), 2, {})
    saves.said_host_ram = True  # as reserve() leaves it after the first step
    saves.save({"iter": 20}, ["final", "best"], ending=True)
    assert waited == []  # the write goes on while the run draws its plot
    saves.finish()
    assert waited == [pending]
    assert capsys.readouterr().out.splitlines() == [
        "saved final + best in 9.5s (1.00 GiB, hashed in 0.5s; /out holds 3.00 GiB)"]
    assert events == [("Checkpoint/save_seconds", 9.5, 20), ("Checkpoint/size_gib", 1.0, 20)]
    saves.finish()  # nothing pending any more
    assert waited == [pending]
    clock = iter([200.0, 201.0, 201.0])  # the other ranks: wait_save's "" there, and no line
    monkeypatch.setattr(cm, "wait_run_save", lambda p, device: waited.append(p) or "")
    saves.save({"iter": 30}, ["final"], ending=True)
    saves.finish()
    assert waited == [pending, pending] and capsys.readouterr().out == "" and len(events) == 2


def test_a_save_that_waits_for_the_write_before_it_says_the_saves_outrun_the_disk(monkeypatch, capsys):
    """The next save waits for the background write of the one before (one set of host buffers): its line says how
    many iterations apart they were and what spares the wait (on one H200 the default job's final save waited 7.9 s
    for a write begun 5 iterations earlier)."""
    import checkpoint_manager as cm
    monkeypatch.delenv("RANK", raising=False)
    before, after = object.__new__(ckpt.PendingSave), object.__new__(ckpt.PendingSave)
    before.marker, after.marker = {"iteration": 15}, {"iteration": 20}
    clock = iter([100.0, 107.9, 107.9, 108.0])
    monkeypatch.setattr(cm, "time", types.SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(cm, "wait_run_save", lambda p, device: (0.4, 2 ** 30, 3 * 2 ** 30, [], 0.5, 7.2))
    monkeypatch.setattr(cm, "save_run", lambda *args, **kwargs: after)
    cfg = types.SimpleNamespace(save_checkpoints=True, async_checkpoints=False, out_dir="/out")
    saves = cm.Saves(cfg, types.SimpleNamespace(rank=0, device="cpu"), types.SimpleNamespace(checkpoint_engine=None),
                     types.SimpleNamespace(write_events=lambda events: None), 2, {})
    saves.said_host_ram = True
    saves.pending = (before, ["iter_15", "best"], None)
    saves.save({"iter": 20}, ["final", "best"], ending=True)
    assert capsys.readouterr().out.splitlines() == [
        "waited 7.9s for the background write of iter_15 + best, begun 5 iterations before this save: this disk "
        "writes a checkpoint more slowly than they train (a larger --eval_interval saves less often)",
        "saved iter_15 + best in 0.4s (1.00 GiB, written in the background in 7.2s, hashed in 0.5s; /out holds "
        "3.00 GiB)"]
    assert saves.pending[0] is after
