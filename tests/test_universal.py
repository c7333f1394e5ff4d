"""Resume a 2-rank ZeRO-2 checkpoint on 1 and on 3 ranks through DeepSpeed's universal checkpoint."""
import os
import shutil

import numpy as np
import pytest
import torch

import checkpoint as ckpt
from conftest import TINY, assert_ok, iter_losses, launch
from dataloader import get_batch

pytestmark = pytest.mark.slow
SAVED_AT = 6


def expected_first_loss(model, shakespeare, world_size, ga=2, batch_size=4, block_size=64):
    """The loss the 2-rank weights give on the batches that `world_size` ranks draw for the next iteration."""
    data = np.memmap(os.path.join(shakespeare, "train.bin"), dtype=np.uint16, mode="r")
    losses = []
    with torch.no_grad():
        for rank in range(world_size):
            for micro in range(ga):
                x, y = get_batch([(data, 1.0)], block_size, batch_size, 1337, rank, SAVED_AT, micro)
                losses.append(model(torch.from_numpy(x), targets=torch.from_numpy(y))[1].item())
    return sum(losses) / len(losses)


@pytest.fixture(scope="module")
def two_rank_run(shakespeare, tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--eval_interval=100",
                   "--lr_decay_iters=12", f"--max_iters={SAVED_AT}"])
    assert_ok(proc)
    return out


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_on_another_world_size(two_rank_run, shakespeare, tmp_path, world_size):
    out = tmp_path / "out"
    shutil.copytree(two_rank_run, out)
    original = {f.name: (f.stat().st_mtime_ns, f.stat().st_size) for f in (out / "final").iterdir()}
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--eval_interval=100",
                   "--lr_decay_iters=12", "--max_iters=12", "--init_from=resume", "--save_checkpoints=False"],
                  nproc=world_size)
    assert_ok(proc)
    log = proc.stdout
    assert f"converted {out}/final (2 ranks) to a universal checkpoint in {out}/universal/final" in log
    assert f"resumed on {world_size} rank{'s' if world_size > 1 else ''} from 2" in log
    losses = iter_losses(log)
    assert sorted(losses) == list(range(SAVED_AT + 1, 13))
    model, _ = ckpt.load_model(str(two_rank_run), "final")
    expected = expected_first_loss(model.eval(), shakespeare, world_size)
    assert abs(losses[SAVED_AT + 1] - expected) < 1e-4, (losses[SAVED_AT + 1], expected)
    assert losses[12] < losses[SAVED_AT + 1] - 0.3  # training continues to fall
    assert f"batch: 4 x 2 x {world_size} CPU process{'es' if world_size > 1 else ''} x 64" in log
    assert (f"warning: final was trained with 16 sequences per iteration, this run uses {8 * world_size}; to keep "
            "it, pass --target_batch_size=16 (with a batch_size x GPUs that divides it)") in log
    # the original checkpoint was only read; the converted copy sits beside it
    assert {f.name: (f.stat().st_mtime_ns, f.stat().st_size) for f in (out / "final").iterdir()} == original
    assert ckpt.read_marker(str(out / "universal" / "final"))["world_size"] == 2


def test_optimizer_state_carried_over_exactly(two_rank_run, shakespeare, tmp_path):
    """Resume on 1 rank and save without a step: its consolidated fp32 weights and Adam moments equal the
    2-rank checkpoint's."""
    out = tmp_path / "out"
    shutil.copytree(two_rank_run, out)
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", "--eval_interval=100",
                   f"--max_iters={SAVED_AT}", "--init_from=resume"], nproc=1)
    assert_ok(proc)
    assert ckpt.verify(str(out / "final"))["world_size"] == 1
    # the converted copy was needed to load only: the first save on the new number of ranks removed it
    assert "; removed universal/)" in proc.stdout and not (out / "universal").exists()
    before = ckpt.convert_to_universal(str(two_rank_run), "final")
    after = ckpt.convert_to_universal(str(out), "final")  # the 1-rank save, converted afresh
    zero_dir = os.path.join(before, "zero")
    params = sorted(d for d in os.listdir(zero_dir) if os.path.isdir(os.path.join(zero_dir, d)))
    assert "transformer.h.0.attn.c_attn.weight" in params
    compared = 0
    for param in params:
        states = sorted(os.listdir(os.path.join(before, "zero", param)))
        assert states == sorted(os.listdir(os.path.join(after, "zero", param)))
        for state in states:
            a = torch.load(os.path.join(before, "zero", param, state), weights_only=False)
            b = torch.load(os.path.join(after, "zero", param, state), weights_only=False)
            a, b = (a["param"] if isinstance(a, dict) else a), (b["param"] if isinstance(b, dict) else b)
            assert torch.equal(a, b), (param, state)
            compared += state in ("exp_avg.pt", "exp_avg_sq.pt")
    assert compared >= 2 * 26  # Adam's two moments of every trained parameter
    client = torch.load(out / "final" / ckpt.MODEL_STATES, map_location="cpu", weights_only=False)
    assert client["loop"]["iter"] == SAVED_AT and client["loop"]["lr_step"] == SAVED_AT


def test_stage_mismatch_is_a_clear_error(two_rank_run, shakespeare, tmp_path):
    import settings
    import train_deepspeed as T
    with pytest.raises(settings.InputError, match="final was saved with ZeRO stage 2 and ds_config_zero3.json uses stage 3"):
        T.run(settings.parse_config([*TINY, f"--dataset={shakespeare}", f"--out_dir={two_rank_run}",
                                     "--init_from=resume", "--deepspeed_config=ds_config_zero3.json"]))


def test_a_damaged_checkpoint_on_another_world_size_is_one_line(two_rank_run, shakespeare, tmp_path):
    """The conversion for another number of ranks reads every file: a damaged one is the same one-line error (exit
    2, every rank ends) as loading it on the ranks it was saved with, not a traceback from inside DeepSpeed. The
    file keeps its size: its hash in complete.json is what tells, before DeepSpeed's converter reads it."""
    import settings
    out = tmp_path / "out"
    # without the universal copy an earlier test may have made there: an intact one would be used, rightly
    shutil.copytree(two_rank_run, out, ignore=shutil.ignore_patterns(ckpt.UNIVERSAL_DIR))
    states = out / "final" / ckpt.MODEL_STATES
    data = bytearray(states.read_bytes())
    data[:50] = b"x" * 50  # same size: only reading it can tell (the copy's best is a file of its own, intact)
    states.write_bytes(bytes(data))
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", f"--max_iters={SAVED_AT + 2}",
                   "--init_from=resume"], nproc=1)
    assert proc.returncode == settings.EXIT_BAD_INPUT, proc.stdout[-3000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: checkpoint file {states} does not match its hash in complete.json (its bytes changed "
                      "since it was saved); restore it, or choose another tag with --resume_tag=TAG: best"]
    assert "Traceback" not in proc.stdout and not (out / "universal" / "final").exists()
