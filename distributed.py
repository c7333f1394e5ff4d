"""
The pieces of a run on many processes: the process group (compute_init / compute_cleanup), lines printed by one
rank or every rank, the stop vote that turns a signal on any rank into one agreed stop, failures raised on every
rank together, and the random state of each rank.
"""
import glob
import os
import random
import signal
import sys
import time
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import torch

from settings import InputError

# -----------------------------------------------------------------------------
# printing

_progress_bar = None  # rank 0's tqdm bar while the loop runs on a terminal


def print_line(text, file=None):
    """A line from any rank (stderr by default) in one write: every rank (and C++ code in them) writes to the same
    pipe, and print() would send the text and its newline separately, letting another process's output land between
    them."""
    out = file or sys.stderr
    out.write(text + "\n")
    out.flush()


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", "0")) != 0:
        return
    text = " ".join(str(a) for a in args)
    if _progress_bar is not None and kwargs.get("file", sys.stdout) is sys.stdout:
        _progress_bar.write(text, file=_progress_bar.fp)
    else:
        print_line(text, file=kwargs.get("file", sys.stdout))


class Progress:
    """A progress bar with ETA on rank 0 when stdout is a terminal; nothing otherwise (the log lines, which
    carry their own ETA, are then the progress)."""

    def __init__(self, total, initial, enabled, stream=None):
        global _progress_bar
        stream = stream or sys.stdout
        self.bar = None
        if enabled and stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="it", file=stream, dynamic_ncols=True, leave=False)
        _progress_bar = self.bar

    def update(self, loss):
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(1)

    def close(self):
        global _progress_bar
        if self.bar is not None:
            self.bar.close()
        _progress_bar = None


# -----------------------------------------------------------------------------
# stopping on a signal: one agreed stop


class SecondSignal(KeyboardInterrupt):
    """A second SIGTERM/SIGINT after StopFlag's first: stop at once, without saving."""


class StopFlag:
    """A file named STOP in out_dir, or SIGTERM/SIGINT, stop the run after the current step, with a checkpoint.
    SIGTERM/SIGINT set a flag that the ranks agree on at the end of the current step; a second signal stops at
    once, unless it comes within same_stop_seconds of the first: that is the same stop passed on (DeepSpeed's
    launch.py sends SIGTERM to the trainers on its own SIGINT/SIGTERM, which a terminal's Ctrl-C, `pkill -f
    train_deepspeed.py` or a scheduler signalling every process of the job delivers to it as well)."""
    SIGNALS = ("SIGTERM", "SIGINT")
    same_stop_seconds = 2.0  # launch.py passes a signal on within milliseconds; a person's second Ctrl-C takes longer

    REASONS = SIGNALS + ("the STOP file",)

    def __init__(self, saves=True, stop_file=None):
        self.signal = None
        self.then = "saving a checkpoint" if saves else "stopping (save_checkpoints=False: nothing is saved)"
        self.stop_file = stop_file  # out_dir/STOP, looked for by rank 0: a stop for this run alone
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        rank = os.environ.get("RANK", "0")
        if self.signal is not None:
            after = time.monotonic() - self.first_at
            if after >= self.same_stop_seconds or self.passed_on:
                raise SecondSignal
            self.passed_on = True
            print_line(f"[rank {rank}] {signal.Signals(signum).name} {after:.2f}s after the {self.signal}: the same "
                       "stop (passed on by a launcher); still finishing this step")
            return
        self.signal, self.first_at, self.passed_on = signal.Signals(signum).name, time.monotonic(), False
        print_line(f"[rank {rank}] {self.signal}: finishing this step, then {self.then} (send it again to stop at "
                   "once)")

    def requests(self):
        """This rank's vote per reason (REASONS), to be summed over the ranks (one all-reduce) and read by
        agreed_stop."""
        stop_file = self.stop_file is not None and os.path.exists(self.stop_file)
        return [float(self.signal == name) for name in self.SIGNALS] + [float(stop_file)]

    def consume_stop_file(self):
        """The STOP file has stopped the run: it goes, so that the resumed run does not stop at once."""
        if self.stop_file is not None and os.path.exists(self.stop_file):
            os.remove(self.stop_file)


def agreed_stop(summed, reasons=StopFlag.REASONS):
    """The first reason any rank voted for, from the all-reduced votes; None when no rank did."""
    return next((why for why, n in zip(reasons, summed) if n > 0), None)


# -----------------------------------------------------------------------------
# the process group


def environment():
    """Rank, world and device of this process, from the launcher's variables (a plain `python train_deepspeed.py`
    is rank 0 of 1); nothing is initialised yet."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    from deepspeed.accelerator import get_accelerator
    accel = get_accelerator()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    on_gpu = accel.device_name() == "cuda"
    if on_gpu:
        check_gpu_index(rank, local_rank, accel.device_count())
    return SimpleNamespace(rank=rank, local_rank=local_rank, world_size=int(os.environ["WORLD_SIZE"]),
                           master=rank == 0, on_gpu=on_gpu, accelerator=accel.device_name(),
                           accelerator_backend=accel.communication_backend_name(),
                           device=torch.device(accel.device_name(local_rank) if on_gpu else "cpu"))


def compute_init(ctx, cfg):
    """This process's GPU and the process group, with the collective timeout applied to every group."""
    import deepspeed
    import ds_patches
    if ctx.on_gpu:
        torch.cuda.set_device(ctx.local_rank)
        if cfg.max_gpu_memory_gb > 0:
            total = torch.cuda.get_device_properties(ctx.local_rank).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cfg.max_gpu_memory_gb * 2 ** 30 / total),
                                                       ctx.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if cfg.deterministic:
        use_deterministic_kernels()
    for lock in stale_build_locks() if ctx.local_rank == 0 else ():
        print(f"warning: {lock} is over 10 minutes old: a killed build of a torch extension leaves it, and the build "
              "of that extension (next) then waits for ever; delete it unless a build is running", flush=True)
    timeout = timedelta(minutes=cfg.dist_timeout_minutes)
    ds_patches.apply_collective_timeout(timeout)
    ds_patches.quiet_deprecations()
    ds_patches.explain_build_lock_waits()
    ds_patches.skip_muon()
    ds_patches.skip_deepcompile_passes()
    port = os.environ.get("MASTER_PORT", "29500")
    try:
        store, _, _ = next(torch.distributed.rendezvous("env://", ctx.rank, ctx.world_size, timeout=timeout))
    except Exception as e:
        if "EADDRINUSE" not in str(e) and "address already in use" not in str(e).lower():
            raise
        raise InputError(f"port {port} of the rendezvous is in use (another run?); pass --master_port=<a free port> "
                         "to deepspeed, or launch with ./run_deepspeed_xl.sh, which picks a free one") from None
    check_launcher(store, ctx, port)
    options = {"device_id": ctx.device} if ctx.on_gpu and ctx.world_size > 1 else {}  # as DeepSpeed binds it
    torch.distributed.init_process_group(ctx.accelerator_backend, store=store, rank=ctx.rank,
                                         world_size=ctx.world_size, timeout=timeout, **options)
    deepspeed.init_distributed(timeout=timeout)  # DeepSpeed's communication, on the group made here


def check_launcher(store, ctx, port):
    """The ranks on rank 0's machine descend from rank 0's launcher. Another launch on this machine that comes to the
    same port (the default one, 29500) finds a running job's rendezvous there; its ranks stop here, before they
    write into that job's store or reach its ranks (which once took a starting job down with them). Ranks on the
    other machines have launchers of their own; a rank whose launcher is not one named in LAUNCHERS is not checked."""
    launcher = launched_by()
    if ctx.rank == 0:
        store.set("launcher of rank 0", launcher)
    elif ctx.rank == ctx.local_rank and launcher:
        owner = store.get("launcher of rank 0").decode()
        if owner and owner != launcher:
            raise InputError(f"port {port} of the rendezvous belongs to another job on this machine (its rank 0 was "
                             "started by another launcher); pass --master_port=<a free port> to deepspeed, or launch "
                             "with ./run_deepspeed_xl.sh, which picks a free one", every_rank=True)


LAUNCHERS = ("deepspeed.launcher.launch", "torch.distributed.run", "torchrun")  # the processes that start the ranks


def launched_by():
    """'host, process PID' of the nearest ancestor of this process that is a launcher (a wrapper such as nsys or a
    shell script may stand between), or "" where none is."""
    import socket
    import psutil
    for parent in psutil.Process().parents():
        try:
            command = " ".join(parent.cmdline())
        except psutil.Error:
            continue
        if any(name in command for name in LAUNCHERS):
            return f"{socket.gethostname()}, process {parent.pid}"
    return ""


def check_gpu_index(rank, local_rank, n_visible):
    if local_rank >= n_visible:
        raise InputError(f"rank {rank} needs GPU {local_rank} but this machine has {n_visible}; launch with "
                         f"--num_gpus={n_visible} or fewer", every_rank=True)


def stale_build_locks(root=None, max_age_s=600):
    """Lock files of torch extension builds (DeepSpeed's ops, fused_dense) older than max_age_s. A build that was
    killed leaves its lock behind and every later build of that extension waits on it for ever."""
    from torch.utils.cpp_extension import get_default_build_root
    root = root or os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    # root/<name>/lock under $TORCH_EXTENSIONS_DIR, root/<python>_<cuda>/<name>/lock under the default root
    locks = glob.glob(os.path.join(root, "*", "lock")) + glob.glob(os.path.join(root, "*", "*", "lock"))
    now = time.time()
    return sorted(p for p in locks if now - os.path.getmtime(p) > max_age_s)


def raise_together(failure, device, every_rank=False):
    """An InputError on every rank when any rank has a failure (a one-line message, or None), so that a problem
    one rank finds ends the run on all of them instead of leaving them in a collective. Rank 0's words are printed;
    with every_rank (a failure of a rank's own files), each failing rank prints its own, and rank 0 says how many
    failed when it did not."""
    import deepspeed.comm as dist
    failed = torch.tensor([float(failure is not None)], device=device)
    dist.all_reduce(failed)
    if not failed.item():
        return
    if not every_rank:
        raise InputError(failure or "another rank failed (its own line says why)")
    if failure is None:
        failure = f"[rank {dist.get_rank()}] {int(failed.item())} other rank(s) failed (their lines say why)"
        if dist.get_rank() != 0:
            raise InputError(failure, every_rank=False)  # silent: rank 0 says it once
    raise InputError(failure, every_rank=True)


def same_on_every_rank(text, device):
    """Whether every rank passed the same text (one all-reduce of its CRC32 and its negation: max == min)."""
    import zlib
    import deepspeed.comm as dist
    h = float(zlib.crc32(text.encode()))
    both = torch.tensor([h, -h], device=device, dtype=torch.float64)
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return both[0].item() == -both[1].item()


def check_shared_out_dir(out_dir, ctx):
    """Every rank must see the out_dir rank 0 writes (rank 0 alone checks and renames a save's files): rank 0
    writes a file of a random token there, and each rank reads it back. One line on every rank that does not."""
    import deepspeed.comm as dist
    token = torch.randint(1, 2 ** 31 - 1, (1,), dtype=torch.int64).to(ctx.device)
    dist.broadcast(token, 0)
    probe = os.path.join(out_dir, ".shared-check")
    if ctx.master:
        with open(probe, "w") as f:
            f.write(str(token.item()))
    dist.barrier()
    try:
        with open(probe) as f:
            seen = f.read().strip() == str(token.item())
    except OSError:
        seen = False
    missing = torch.tensor([float(not seen)], device=ctx.device)
    dist.all_reduce(missing)
    if ctx.master:
        os.remove(probe)
    if missing.item():
        raise InputError(f"[rank {ctx.rank}] " + (
            f"out_dir {out_dir} is not the folder rank 0 writes to (rank 0's test file is not there): every node "
            "needs the same out_dir on a shared filesystem; mount it on every node, or give a path they all share"
            if not seen else f"{int(missing.item())} rank(s) do not see this out_dir {out_dir} (their lines say so): "
            "every node needs the same out_dir on a shared filesystem"), every_rank=True)


def check_same_start(cfg, ctx, start):
    """Every rank must resume the same checkpoint (a stale copy of out_dir on one node would resume another)."""
    marker = start["marker"]
    if marker is None:
        mine = "a new run"
    else:
        saved_at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(marker.get("saved_at", 0)))
        mine = f"{start['tag']} (iteration {marker['iteration']}, saved at {saved_at} UTC)"
    if not same_on_every_rank(mine, ctx.device):
        raise InputError(f"[rank {ctx.rank}] would start {mine} from {cfg.out_dir}, and another rank another state: "
                         "every rank must see the same out_dir (a shared filesystem, not a stale copy on one node); "
                         "nothing was loaded", every_rank=True)


def weights_finite(model, device):
    """Whether every weight of every rank is finite (one multi-tensor norm, then one all-reduce): a NaN that
    reached the weights must not be saved as a checkpoint to go on from."""
    import deepspeed.comm as dist
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    finite = torch.stack(norms).isfinite().all().to(device=device, dtype=torch.float32).view(1)
    dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


def check_content(tag_dir, ctx):
    """Every file of the tag being resumed against its hash in complete.json, the files shared out across the
    ranks (the reads warm the page cache for the load that follows); a file whose bytes changed ends every rank
    with the one line that names it."""
    import checkpoint as ckpt
    import deepspeed.comm as dist
    from settings import choose_with
    failure = None
    try:
        marker = ckpt.read_marker(tag_dir)
        ckpt.verify(tag_dir, content=True, only=ckpt.hashed_files(marker)[ctx.rank::ctx.world_size])
    except ckpt.CheckpointError as e:
        failure = choose_with(str(e), "tag with --resume_tag=TAG")
    failures = [None] * ctx.world_size
    dist.all_gather_object(failures, failure)
    failure = next((f for f in failures if f), None)
    if failure:
        raise InputError(failure)


def compute_cleanup():
    """Tear the process group down on every rank, so that no rank exits while a peer still waits on it
    (gloo drops a barrier's last message if its sender exits first)."""
    import torch.distributed as tdist
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


# -----------------------------------------------------------------------------
# random state


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(*parts):
    seed = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_deterministic_kernels():
    """Bitwise-repeatable GPU runs (setting `deterministic`; also used by bench/). Without it two runs from the same
    seed agree only to ~1e-4 in the loss, and a resumed run differs from the straight one as much. The visible
    change is the attention: FlashAttention-2's deterministic backward instead of cuDNN's, 7.6% slower for GPT-2 XL
    on an H100 (bench/NOTES.md). Call it before the first matmul: cuBLAS reads its workspace setting then."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    # Filling every new tensor (a debugging aid that the mode turns on) cost 16 ms of 388 per GPT-2 XL micro-step;
    # the gradients were bitwise the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False
