"""
What a training run saves beside DeepSpeed's engine state, and takes back on resume, on top of checkpoint.py's
protocol (crash-safe tags, `latest`, hashes, background writes):
    client_state["loop"]    the loop's plain dict (iteration, LR step, best val loss, tokens seen, ...)
    rank_<r>_state.pt       each rank's RNG states and sampler position
    complete.json           iteration, world size, ZeRO stage, dtype, model shape and settings (the marker)
Saves is the run's one saver: blocking, or (async_checkpoints) in the background.
"""
import contextlib
import os
import shutil
import time

import torch

import checkpoint as ckpt
from distributed import print0, print_line


class Saves:
    """The one place a run writes checkpoints: blocking, or (async_checkpoints) in the background, a save then
    blocking only for the copy into host RAM; its tag appears at a later step end, once every rank has written its
    part (the step's all-reduce carries state()), or when the next save or the end of the run waits for it."""

    def __init__(self, cfg, ctx, engine, monitor, zero_stage, model_config):
        self.cfg, self.ctx, self.engine, self.monitor = cfg, ctx, engine, monitor
        self.zero_stage, self.model_config = zero_stage, model_config
        # (PendingSave, tags, the start of a save that ends the run, else None) being written in the background
        self.pending, self.said_host_ram = None, False
        if cfg.save_checkpoints and cfg.async_checkpoints:
            from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
            if isinstance(engine.checkpoint_engine, TorchCheckpointEngine):
                engine.checkpoint_engine = ckpt.HostCopies(engine.checkpoint_engine, cfg.pinned_checkpoint_copies,
                                                           warn=lambda line: print_line(f"[rank {ctx.rank}] {line}"))
            else:  # a "checkpoint": {"writer": ...} section of the DeepSpeed config chose DeepSpeed's fast or
                # decoupled engine
                print0(f"warning: async_checkpoints: DeepSpeed's {type(engine.checkpoint_engine).__name__} writes "
                       "the checkpoints (the DeepSpeed config's checkpoint writer); saves block while it writes")
        self.background = isinstance(engine.checkpoint_engine, ckpt.HostCopies)

    def reserve(self):
        """Once, after the first step (the optimizer's state exists then): the host buffers of the background saves
        are allocated now, in a thread, instead of inside the first save while training waits."""
        if not self.background or self.said_host_ram:
            return
        self.said_host_ram = True
        reserved = ckpt.reserve_host_copies(self.engine, self.cfg.out_dir)
        if reserved is not None:
            print0(f"async_checkpoints: saves copy each rank's share of the checkpoint into host RAM and write it "
                   f"while training goes on ({reserved / 2 ** 30:.2f} GiB on rank 0, allocated now in the background "
                   "and kept from save to save)")

    def save(self, loop, tags, ending):
        """tags[0], with the others as hard links of it. A save that ends the run (`ending`) is written from the
        host copies where there are (kept from the saves before it: no new pinned buffers to allocate) while the run
        does what is left before its finish() (the loss plot)."""
        if not self.cfg.save_checkpoints:
            return
        self.finish(next_iteration=loop["iter"])  # one save at a time: the one before is complete (or has failed)
        t0 = time.time()
        result = save_run(self.engine, self.cfg, loop, tags[0], tags[1:], self.zero_stage, self.model_config,
                          background=self.background)
        if not isinstance(result, ckpt.PendingSave):
            return self.report(result, tags, loop["iter"])
        if not self.said_host_ram:
            self.said_host_ram = True
            print0(f"async_checkpoints: saves copy each rank's share of the checkpoint into host RAM and write it "
                   f"while training goes on ({self.engine.checkpoint_engine.host_bytes() / 2 ** 30:.2f} GiB on rank 0, "
                   "kept from save to save)")
        # a save that ends the run is waited for in finish(), after what the run can do meanwhile (the loss plot)
        self.pending = (result, tags, t0 if ending else None)

    def state(self):
        """[finished, failed] of this rank's part of the background save, for the step's all-reduce."""
        return self.pending[0].state() if self.pending else [0.0, 0.0]

    def finish(self, counts=None, next_iteration=None):
        """Make the background save visible: with counts (ranks finished, failed: the all-reduced state()) once
        every rank has written its part; without, after waiting for it (for the save of next_iteration, where
        given). A failed write raises SaveFailed."""
        if self.pending is None:
            return
        saving, tags, ending_since = self.pending
        t0 = time.time()
        result = (wait_run_save(saving, self.ctx.device) if counts is None
                  else finish_run_save(saving, *counts))
        if result is None:
            return
        self.pending = None
        if ending_since is not None:  # the run waited for this one: its time is the save's, from its start
            result = result and (time.time() - ending_since, *result[1:5], None)  # "" on the other ranks
        elif counts is None and time.time() - t0 > 0.5:
            # on one H200 the default job's 20.3 GiB saves 5 iterations (12.6 s) apart outran the disk: the final
            # save waited 7.9 s (bench/results/2026-12-04-jobs)
            gap = next_iteration - saving.marker["iteration"] if next_iteration is not None else None
            why = (f", begun {gap} iteration{'s' if gap != 1 else ''} before this save: this disk writes a checkpoint "
                   f"more slowly than they train (a larger --eval_interval saves less often)") if gap else ""
            print0(f"waited {time.time() - t0:.1f}s for the background write of {' + '.join(tags)}{why}")
        self.report(result, tags, saving.marker["iteration"])

    def report(self, result, tags, iteration):
        """Rank 0: the line of a save made visible, and its monitor events."""
        if not result:
            return
        seconds, size, total, removed, hash_seconds, written = result
        gone = f"; removed {', '.join(removed)}" if removed else ""
        behind = "" if written is None else f", written in the background in {written:.1f}s"
        print0(f"saved {' + '.join(tags)} in {seconds:.1f}s ({size / 2 ** 30:.2f} GiB{behind}, hashed in "
               f"{hash_seconds:.1f}s; {self.cfg.out_dir} holds {total / 2 ** 30:.2f} GiB{gone})")
        self.monitor.write_events([("Checkpoint/save_seconds", seconds, iteration),
                                   ("Checkpoint/size_gib", size / 2 ** 30, iteration)])


def is_write_error(e):
    """A file could not be written: OSError (ENOSPC, EDQUOT, EIO, ...), or torch.save's RuntimeError for a write cut
    short by a full disk ("unexpected pos ...", "basic_ios::clear: iostream error", "PytorchStreamWriter failed")."""
    text = str(e)
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and any(
        key in text for key in ("unexpected pos", "iostream error", "PytorchStreamWriter failed", "file write failed")))


def save_run(engine, cfg, loop, tag, also, zero_stage, model_config, background=False):
    """Save the run at loop["iter"] as `tag` (and the tags in `also`, hard links of it) on every rank. Returns
    save()'s (seconds, bytes of the tag, bytes of out_dir, removed tags, hashing seconds, background seconds) on
    rank 0, None elsewhere; with `background`, a PendingSave on every rank (finish it with finish_run_save or
    wait_run_save). A failed write raises SaveFailed with the line to print."""
    import deepspeed.comm as dist
    from distributed import rng_state
    rank, world_size = dist.get_rank(), dist.get_world_size()
    client_state = {"loop": dict(loop), "config": dict(cfg), "model_config": dict(model_config)}
    marker = {"iteration": loop["iter"], "world_size": world_size, "zero_stage": zero_stage, "dtype": cfg.dtype,
              "model_config": dict(model_config), "config": dict(cfg)}
    rank_state = {"rng": rng_state(), "sampler": {"seed": loop["data_seed"], "rank": rank,
                                                  "iteration": loop["iter"], "world_size": world_size}}
    with save_failures(cfg.out_dir, tag):
        return ckpt.save(engine, cfg.out_dir, tag, client_state, rank_state, marker, also=also,
                    keep_last_n=cfg.keep_last_n, pinned=cfg.pinned_checkpoint_copies, background=background)


def finish_run_save(pending, finished, failed):
    """finish_save, with a failed background write as save_run's SaveFailed line."""
    with save_failures(pending.out_dir, pending.tag):
        return ckpt.finish_save(pending, finished, failed)


def wait_run_save(pending, device):
    """wait_save, with a failed background write as save_run's SaveFailed line."""
    with save_failures(pending.out_dir, pending.tag):
        return ckpt.wait_save(pending, device)


@contextlib.contextmanager
def save_failures(out_dir, tag):
    """A write error inside as SaveFailed: the one line that says which rank, what failed and what to do."""
    try:
        yield
    except Exception as e:
        if not is_write_error(e):  # e.g. a collective broken by another rank's failure: that rank says why
            raise
        import deepspeed.comm as dist
        from settings import one_line
        free = shutil.disk_usage(out_dir).free
        latest = ckpt.read_latest(out_dir)  # a save updates it last, once the new tag is complete
        size = ckpt.dir_bytes(os.path.join(out_dir, latest)) if latest else 0
        room = (f"; a save needs room for one more checkpoint ({size / 2 ** 30:.2f} GiB) beside those kept, "
                "which go only once the new one is complete" if size else "")
        kept = f"latest still names {latest}" if latest else "nothing was saved before"
        raise ckpt.SaveFailed(f"[rank {dist.get_rank()}] saving {tag} failed ({type(e).__name__}: {one_line(e)}); "
                         f"{out_dir} has {free / 2 ** 30:.2f} GiB free{room}. {kept}: free space (or lower "
                         "--keep_last_n) and resume with --init_from=resume") from e


def load_run(engine, optimizer, load_dir, tag, loop, marker, device, seed, warn=print):
    """Resume: the engine's state from load_dir/tag, the loop's dict updated from it, and this rank's RNG state
    (on as many ranks as saved it; on another number they are re-derived from the seed). Raises CheckpointError."""
    import deepspeed.comm as dist
    from distributed import seed_everything, set_rng_state
    rank, world_size = dist.get_rank(), dist.get_world_size()
    try:
        _, client_state = engine.load_checkpoint(load_dir, tag=tag, load_optimizer_states=True,
                                                 load_lr_scheduler_states=False)
    except Exception as e:
        tag_dir = os.path.join(load_dir, tag)
        raise ckpt.CheckpointError(ckpt.refused(tag_dir, e) or f"checkpoint {tag_dir} could not be loaded "
                                   f"({ckpt.load_error(e)})") from None
    # a checkpoint from before last_eval_iter existed resumes as it did then: no eval at its own iteration
    data_tokens = loop["data_tokens"]
    loop.update({"last_eval_iter": client_state["loop"]["iter"], **client_state["loop"], "data_tokens": data_tokens})
    for name, (train_was, val_was) in client_state["loop"].get("data_tokens", {}).items():
        if name in data_tokens and data_tokens[name] != [train_was, val_was]:
            warn(f"warning: dataset {name} changed since {tag} was saved (train {train_was:,} -> "
                 f"{data_tokens[name][0]:,} tokens, val {val_was:,} -> {data_tokens[name][1]:,}): the run goes on "
                 "with other text, and its val loss is not comparable with the earlier one")
    # a universal checkpoint restores AdamW's step counts on the CPU; torch's fused AdamW wants them beside the
    # parameters
    for param_state in getattr(optimizer, "optimizer", optimizer).state.values():
        if torch.is_tensor(param_state.get("step")) and param_state["step"].device != device:
            param_state["step"] = param_state["step"].to(device)
    if marker["world_size"] == world_size:
        set_rng_state(ckpt.load_rank_state(os.path.join(load_dir, tag), rank)["rng"])
    else:
        seed_everything(seed, rank, loop["iter"])
        warn(f"resumed on {world_size} rank{'s' * (world_size > 1)} from {marker['world_size']}: iteration, best "
             "val loss, LR position, loss scale and optimizer moments carried over; per-rank RNG and batches "
             "re-derived")
