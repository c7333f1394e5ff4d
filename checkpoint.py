"""
The checkpoint lifecycle around DeepSpeed's own save/load: crash-safe tags, `latest`, retention, per-rank
state, consolidation to fp32 and conversion for another number of GPUs.

Layout of out_dir:
    latest                  the tag a resume continues from (iter_N or final; never best)
    iter_<N>/ best/ final/  DeepSpeed checkpoints (mp_rank_00_model_states.pt, zero_pp_rank_*_optim_states.pt)
        rank_<r>_state.pt   per rank: RNG states and sampler position (client_state is written by rank 0 only)
        complete.json       written last, after every rank finished: every file's size and content hash,
                            iteration, world size
    universal/<tag>/        a converted copy for resuming on another number of GPUs (the original is untouched;
                            removed by the first save on the new number)
    zero_to_fp32.py         DeepSpeed's consolidation script, copied by DeepSpeed

A save goes to `.tmp-<tag>/`, is marked complete, then renamed into place; only then does `latest` move.
A kill at any moment leaves either the old tag or the new one, never a half-written tag behind `latest`.
`best` (and `final` when it is the same state as iter_N) are hard links of the files just saved: no extra
disk, and they survive retention deleting iter_N.

Each rank hashes the files it wrote, right after writing them (they are still in the page cache), in threads, and
leaves the hashes in .tmp-<tag>/.hashes-<rank>.json; rank 0 puts them in complete.json's "files" as
{name: {"size": n, "sha256": h}} (older markers map name -> size). The hash of a file is the sha256 of the sha256
digests of its 64 MiB pieces (HASH_SCHEME): the pieces hash in parallel, so a 20 GB file takes seconds, not
a core's 15. verify(tag_dir, content=True) reads every file against it: a file whose bytes changed and whose size
did not (a flipped bit on disk, a copy gone wrong, a file edited in place) is refused instead of loaded.

Background saves (async_checkpoints): HostCopies takes the place of DeepSpeed's checkpoint engine, so that
engine.save_checkpoint only copies each state dict off the device into host buffers (kept from save to save) and
queues its write; a PendingSave's thread then writes the files through DeepSpeed's own engine, and hashes them, while
training goes on. The step's all-reduce carries each rank's "written" and "failed" flags: once every rank has
written its part, rank 0 writes complete.json, renames and moves `latest` as a blocking save does; a failed write
ends every rank (SaveFailed on the rank it failed on). A kill meanwhile leaves .tmp-<tag> behind, never `latest`.
DeepSpeed 0.19.8's own engines do not give this: the decoupled one hands the live tensors (CUDA IPC, not a copy)
to a spawned process and must commit before the next optimizer step changes them, so a write overlaps at most one
iteration's forward and backward; the fast one (aio) writes faster but blocks; datastates needs its own package.
"""
import contextlib
import glob
import hashlib
import io
import json
import os
import re
import shutil
import threading
import time

import numpy as np
import torch

LATEST = "latest"
COMPLETE = "complete.json"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
UNIVERSAL_DIR = "universal"
LOCK = ".lock"
MODEL_STATES = "mp_rank_00_model_states.pt"
ZERO3_16BIT_MODEL = "model_16bit.bin"
ITER_TAG = re.compile(r"^iter_(\d+)$")
HASHES = ".hashes-{rank:05d}.json"  # a rank's hashes of the files it wrote, in .tmp-<tag>/ until the marker is made
HASH_PIECE = 64 * 2 ** 20
HASH_SCHEME = "sha256 of the sha256 digests of the file's 64 MiB pieces"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and what to do."""


class ContentMismatch(CheckpointError):
    """A checkpoint file whose bytes no longer hash to what complete.json recorded."""


class SaveFailed(Exception):
    """A checkpoint could not be written (a full disk, most often): one line, exit 1; `latest` is untouched."""


class SaveFailedElsewhere(SaveFailed):
    """Another rank's part of a background save failed; that rank says why: exit 1, no line of this rank's own."""


def rank_state_name(rank):
    return f"rank_{rank:05d}_state.pt"


def zero_shard_name(rank):
    return f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


# -----------------------------------------------------------------------------
# loading without running code: every torch.load in the process loads weights only


def safe_loading():
    """From here on every torch.load of this process, and of processes it starts, uses torch's weights-only
    unpickler, which builds tensors, numbers, strings and containers and runs no code: DeepSpeed's own loads too
    (engine.load_checkpoint, zero_to_fp32, ds_to_universal pass weights_only=False, which TORCH_FORCE_WEIGHTS_ONLY_LOAD
    overrides). Allowed besides: the few plain-data classes that DeepSpeed's and this project's files hold."""
    import sys
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed's import-time notes are not a tool's output
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    torch.serialization.add_safe_globals([
        fragment_address, ZeroStageEnum, LossScaler, DynamicLossScaler,  # ZeRO optimizer shards
        np.ndarray, np.dtype, np.dtypes.UInt32DType, np._core.multiarray._reconstruct,  # numpy's RNG state
    ])


def load_error(error):
    """What went wrong in a torch.load, in a few words: for a damaged file under weights-only loading, the
    unpickler's own reason, not torch's advice to load it unsafely."""
    text = str(error)
    reason = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, re.S)
    if reason:
        return f"UnpicklingError: {' '.join(reason.group(1).split())}"
    return f"{type(error).__name__}: {text.splitlines()[0][:200] if text else ''}"


def refused(tag_dir, error):
    """The one line for a file that weights-only loading refused (it holds an object whose loading could run
    code), naming the files of tag_dir that hold such objects; None for any other error."""
    if "Weights only load failed" not in str(error):
        return None
    from torch.serialization import get_unsafe_globals_in_checkpoint
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
               if not isinstance(g, tuple)}
    bad = {}
    for name in sorted(os.listdir(tag_dir)) if os.path.isdir(tag_dir) else []:
        if name.endswith(".pt"):
            try:
                found = [g for g in get_unsafe_globals_in_checkpoint(os.path.join(tag_dir, name)) if g not in allowed]
            except Exception:
                continue  # not a torch zip file: it fails on its own terms
            if found:
                bad[name] = found
    if not bad:  # weights-only loading failed on a damaged file, not on an object
        return None
    what = "; ".join(f"{os.path.join(tag_dir, n)} ({', '.join(g)})" for n, g in bad.items())
    return (f"checkpoint file {what} holds Python objects that are not plain data: refused, since loading them "
            f"could run code; use a checkpoint from a source you trust, or {other_tags(tag_dir)}")


# -----------------------------------------------------------------------------
# small file-system helpers


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


@contextlib.contextmanager
def fast_torch_save(pinned=False):
    """torch.save settings for checkpoints. It computes a CRC32 of every byte, in one thread, that torch.load never
    checks: seconds of each GPT-2 XL save for nothing (complete.json's file sizes are what `verify` checks). With
    `pinned`, GPU tensors are copied through pinned host buffers that PyTorch keeps cached for the next save: much
    faster copies from the second save on, for host RAM the size of this rank's share of the checkpoint."""
    try:
        from torch.utils.serialization import config
    except ImportError:  # torch < 2.6 has neither switch
        yield
        return
    before = config.save.compute_crc32, config.save.use_pinned_memory_for_d2h
    config.save.compute_crc32, config.save.use_pinned_memory_for_d2h = False, pinned
    try:
        yield
    finally:
        config.save.compute_crc32, config.save.use_pinned_memory_for_d2h = before


def atomic_torch_save(obj, path):
    tmp = f"{path}.part"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def install_dir(src, dst):
    """Move a finished directory to dst, replacing an older one; a kill in between is undone by recover()."""
    old = os.path.join(os.path.dirname(dst), OLD_PREFIX + os.path.basename(dst))
    if os.path.exists(dst):
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dst, old)
    os.rename(src, dst)
    fsync_dir(os.path.dirname(dst))
    shutil.rmtree(old, ignore_errors=True)


def link_tree(src, dst):
    """Hard-link every file of src into a new dst (copy where the file system has no hard links)."""
    os.makedirs(dst)
    for root, _, files in os.walk(src):
        target_root = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target_root, exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(root, name), os.path.join(target_root, name))
            except OSError:
                shutil.copy2(os.path.join(root, name), os.path.join(target_root, name))


def dir_bytes(path):
    """Bytes on disk under path, hard-linked files counted once."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def hash_threads():
    """Threads for hashing: this process's share of the cores (hashlib and file reads release the GIL)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def piece_digest(path, offset, length, chunk=8 * 2 ** 20):
    """sha256 digest of length bytes of path from offset, read in 8 MiB chunks."""
    h, buf = hashlib.sha256(), bytearray(min(chunk, max(length, 1)))
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while length > 0:
            n = f.readinto(view[:min(length, len(buf))])
            if not n:  # the file is shorter than it was: its size check says so
                break
            h.update(view[:n])
            length -= n
    return h.digest()


def file_hashes(paths, threads=None):
    """{path: hex hash} (HASH_SCHEME), every 64 MiB piece of every file hashed in a pool of threads."""
    from concurrent.futures import ThreadPoolExecutor
    pieces = [(path, offset, min(HASH_PIECE, size - offset)) for path in paths
              for size in [os.path.getsize(path)] for offset in range(0, max(size, 1), HASH_PIECE)]
    with ThreadPoolExecutor(threads or hash_threads()) as pool:
        digests = list(pool.map(lambda piece: piece_digest(*piece), pieces))
    combined = {path: hashlib.sha256() for path in paths}
    for (path, _, _), digest in zip(pieces, digests):
        combined[path].update(digest)
    return {path: h.hexdigest() for path, h in combined.items()}


# -----------------------------------------------------------------------------
# reading the state of out_dir


_locks = {}  # out_dir -> the open file whose lock this process holds


def _held_elsewhere(error):
    """flock's error for a lock that another process holds; other errors (ENOSYS, ENOLCK, EOPNOTSUPP: a Lustre or NFS
    mount without locks) mean the filesystem cannot lock at all."""
    import errno
    return error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def _holder(fd):
    """Who holds the lock, as its holder wrote into the file: "pid N on HOST"."""
    return os.read(fd, 200).decode(errors="replace").strip() or "another process"


def out_dir_holder(out_dir):
    """The "pid N on HOST" of another process that holds out_dir's lock, or None; takes nothing (a check before the
    rendezvous, whose port the other run may hold too)."""
    import fcntl
    path = os.path.join(out_dir, LOCK)
    if os.path.realpath(out_dir) in _locks or not os.path.exists(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return _holder(fd) if _held_elsewhere(e) else None
    finally:
        os.close(fd)  # also drops the probe's own lock
    return None


def lock_out_dir(out_dir, warn=print):
    """Take out_dir for this process until it ends (the OS drops the lock however it ends, kill -9 included), so
    that a second run into the same out_dir cannot recover, move or replace what the first is writing. Returns None,
    or the holder's "pid N on HOST" when another process has it. On a filesystem without locks it warns and runs
    unguarded."""
    import fcntl
    import socket
    key = os.path.realpath(out_dir)
    if key in _locks:  # a second start in this process (the tests run several in one)
        return None
    fd = os.open(os.path.join(out_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if not _held_elsewhere(e):
            os.close(fd)
            warn(f"warning: {out_dir} is on a filesystem without file locks ({e.strerror}): nothing stops a second "
                 "run started into it while this one runs")
            return None
        holder = _holder(fd)
        os.close(fd)
        return holder
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    _locks[key] = fd
    return None


def recover(out_dir):
    """Undo what a kill during a save left behind: unfinished .tmp- tags go, a tag caught mid-swap returns."""
    if not os.path.isdir(out_dir):
        return []
    notes = []
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if name.startswith(TMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed unfinished checkpoint {name}")
        elif name.startswith(OLD_PREFIX):
            live = os.path.join(out_dir, name[len(OLD_PREFIX):])
            if os.path.exists(live):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.rename(path, live)
                notes.append(f"restored {name[len(OLD_PREFIX):]} from an interrupted replacement")
    return notes


def set_aside_logs(out_dir):
    """Move the logs of an earlier run that left no checkpoint to logs.<time>/, so that a new run's curves start
    empty (DeepSpeed's CSV monitor appends). Returns the new place, or None when there was nothing."""
    logs = os.path.join(out_dir, "logs")
    if not os.path.isdir(logs) or not os.listdir(logs):
        return None
    moved = f"{logs}.{time.strftime('%Y%m%d-%H%M%S')}"
    os.rename(logs, moved)
    return moved


def is_run_dir(path):
    """A training run's out_dir (its lock, logs or the trainer's config.json with its "deepspeed" section), with or
    without checkpoints."""
    if os.path.exists(os.path.join(path, LOCK)) or os.path.isdir(os.path.join(path, "logs")):
        return True
    try:
        with open(os.path.join(path, "config.json")) as f:
            return "deepspeed" in json.load(f)
    except (OSError, ValueError):
        return False


def read_marker(tag_dir):
    """The tag's completion marker, or None (none there, or damaged: not UTF-8 JSON)."""
    try:
        with open(os.path.join(tag_dir, COMPLETE), "rb") as f:
            marker = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return None
    return marker if isinstance(marker, dict) else None


def complete_tags(out_dir):
    """Complete iter_* tags, oldest first."""
    tags = []
    for name in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        m = ITER_TAG.match(name)
        if m and read_marker(os.path.join(out_dir, name)) is not None:
            tags.append((int(m.group(1)), name))
    return [name for _, name in sorted(tags)]


def saved_tags(out_dir):
    """Every complete tag in out_dir (iter_*, best, final, ...), sorted by name."""
    names = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    return [n for n in names if not n.startswith((TMP_PREFIX, OLD_PREFIX)) and n != UNIVERSAL_DIR
            and read_marker(os.path.join(out_dir, n)) is not None]


def read_latest(out_dir):
    try:
        with open(os.path.join(out_dir, LATEST)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def other_tags(tag_dir):
    """The fix to suggest when tag_dir cannot be used: the run's other complete tags."""
    out_dir, tag = os.path.split(os.path.normpath(tag_dir))
    out_dir = out_dir or "."

    def same_files(other):  # `best` is hard links to the tag it copies: it is no way out of a damaged one
        a, b = os.path.join(tag_dir, MODEL_STATES), os.path.join(out_dir, other, MODEL_STATES)
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)

    others = [t for t in saved_tags(out_dir) if t != tag and not same_files(t)]
    return f"choose another tag: {', '.join(others)}" if others else f"{out_dir} holds no other complete tag"


def verify(tag_dir, content=False, only=None):
    """The completion marker, after checking that every file it lists is there at its recorded size; with
    `content`, also that its bytes hash to what complete.json recorded (reads every file: seconds for GPT-2 XL,
    worth it where the files are about to be read anyway). `only`: the names to check (the others are not read)."""
    if not os.path.isdir(tag_dir):
        raise CheckpointError(f"checkpoint {tag_dir} does not exist; {other_tags(tag_dir)}")
    marker = read_marker(tag_dir)
    if marker is None and os.path.isfile(os.path.join(tag_dir, COMPLETE)):
        raise CheckpointError(f"checkpoint file {os.path.join(tag_dir, COMPLETE)} is damaged (not UTF-8 JSON of a "
                              f"completion marker); restore it, or {other_tags(tag_dir)}")
    if marker is None:
        raise CheckpointError(f"checkpoint {tag_dir} is incomplete (no {COMPLETE}): it was interrupted while "
                              f"saving; {other_tags(tag_dir)}")
    hashed = {}
    for name, entry in marker["files"].items():
        size, digest = (entry["size"], entry.get("sha256")) if isinstance(entry, dict) else (entry, None)
        if only is not None and name not in only:
            continue
        path = os.path.join(tag_dir, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint file {path} is missing; restore it, or {other_tags(tag_dir)}")
        if os.path.getsize(path) != size:
            raise CheckpointError(f"checkpoint file {path} is truncated ({os.path.getsize(path):,} bytes, "
                                  f"{size:,} when saved); {other_tags(tag_dir)}")
        if digest is not None:
            hashed[path] = digest
    if content and hashed:
        for path, digest in file_hashes(sorted(hashed, key=os.path.getsize, reverse=True)).items():
            if digest != hashed[path]:
                raise ContentMismatch(f"checkpoint file {path} does not match its hash in {COMPLETE} (its bytes "
                                      f"changed since it was saved); restore it, or {other_tags(tag_dir)}")
    return marker


def hashed_files(marker):
    """The names of a marker's files that carry a hash, largest first (how verify's work is shared out)."""
    entries = [(e["size"], n) for n, e in marker["files"].items() if isinstance(e, dict) and "sha256" in e]
    return [n for _, n in sorted(entries, reverse=True)]


def tag_dir(out_dir, tag):
    """Where a tag's files are; before recover() has run, a tag caught mid-replacement is still at .old-<tag>."""
    path = os.path.join(out_dir, tag)
    old = os.path.join(out_dir, OLD_PREFIX + tag)
    return old if not os.path.exists(path) and os.path.isdir(old) else path


def resolve_resume(out_dir, tag=None):
    """(tag, marker) to resume from: the named tag, else `latest`, else the newest complete iter_* tag, else a
    complete `final`. Only reads: it runs on every rank before rank 0 repairs what a kill left behind."""
    if not tag:
        tag = read_latest(out_dir)
    if not tag:
        tags = complete_tags(out_dir) or (["final"] if read_marker(os.path.join(out_dir, "final")) else [])
        if not tags:
            raise CheckpointError(f"init_from='resume' but {out_dir} holds no checkpoint; start a new run "
                                  "(init_from='gpt2-xl', 'scratch', ...) or point --out_dir at an earlier run")
        tag = tags[-1]
    return tag, verify(tag_dir(out_dir, tag))


def load_rank_state(tag_dir, rank):
    path = os.path.join(tag_dir, rank_state_name(rank))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(refused(tag_dir, e) or f"checkpoint file {path} could not be read ({load_error(e)}); "
                              f"{other_tags(tag_dir)}") from None


# -----------------------------------------------------------------------------
# saving


def missing_files(present, world_size, zero_stage):
    """What a complete tag lacks: DeepSpeed's model states and every rank's optimizer shard (prefixed bf16_
    in bf16 runs; ZeRO-3 also shards the model states), and our per-rank state files."""
    wanted = [rank_state_name(r) for r in range(world_size)]
    suffixes = []
    if zero_stage == 3:
        suffixes += [f"zero_pp_rank_{r}_mp_rank_00_model_states.pt" for r in range(world_size)]
    else:
        wanted.append(MODEL_STATES)
    if zero_stage > 0:
        suffixes += [zero_shard_name(r) for r in range(world_size)]
    return [n for n in wanted if n not in present] + \
        [sfx for sfx in suffixes if not any(name.endswith(sfx) for name in present)]


def own_files(tmp_dir, rank):
    """The files of a tag being saved that this rank wrote: its state file and its ZeRO shards; rank 0 also
    DeepSpeed's model states (and ZeRO-3's 16-bit model). Others may still be writing theirs."""
    mine = [rank_state_name(rank)]
    mine += [n for n in os.listdir(tmp_dir) if f"zero_pp_rank_{rank}_" in n and n.endswith(".pt")]
    if rank == 0:
        mine += [n for n in (MODEL_STATES, ZERO3_16BIT_MODEL) if os.path.isfile(os.path.join(tmp_dir, n))]
    return sorted(set(mine))


def hash_own_files(tmp_dir, rank):
    """Hash this rank's files of tmp_dir (just written: read back from the page cache) into its .hashes json."""
    names = own_files(tmp_dir, rank)
    digests = file_hashes([os.path.join(tmp_dir, n) for n in names])
    entries = {n: {"size": os.path.getsize(os.path.join(tmp_dir, n)), "sha256": digests[os.path.join(tmp_dir, n)]}
               for n in names}
    atomic_write(os.path.join(tmp_dir, HASHES.format(rank=rank)), json.dumps(entries))


def gather_file_entries(tmp_dir, world):
    """Rank 0, once every rank has hashed its files: {name: {"size", "sha256"}} for every file of tmp_dir (the
    ranks' .hashes files merged and removed; a file that no rank claimed is hashed here)."""
    entries = {}
    for r in range(world):
        path = os.path.join(tmp_dir, HASHES.format(rank=r))
        with open(path) as f:
            entries.update(json.load(f))
        os.remove(path)
    present = {name: os.path.getsize(os.path.join(tmp_dir, name)) for name in os.listdir(tmp_dir)
               if os.path.isfile(os.path.join(tmp_dir, name)) and not name.startswith(".")}
    changed = [n for n, e in entries.items() if present.get(n) != e["size"]]
    if changed:
        raise CheckpointError(f"checkpoint files {changed} of {tmp_dir} changed size after their rank hashed them; "
                              "is another process writing into out_dir?")
    rest = [os.path.join(tmp_dir, n) for n in present if n not in entries]
    for path, digest in file_hashes(rest).items():
        entries[os.path.basename(path)] = {"size": present[os.path.basename(path)], "sha256": digest}
    return {n: entries[n] for n in sorted(present)}


def save(engine, out_dir, tag, client_state, rank_state, marker, also=(), update_latest=True, keep_last_n=0,
         pinned=False, background=False):
    """Save on every rank (DeepSpeed hangs otherwise). Returns (seconds, bytes of this tag, bytes of out_dir,
    removed tags, seconds this rank spent hashing, seconds written in the background or None) on rank 0 and None
    elsewhere. With `background` (the engine's checkpoint engine a HostCopies), it returns a PendingSave on every
    rank as soon as the state is copied off the device: see finish_save."""
    import deepspeed.comm as dist
    t0 = time.time()
    rank, world = dist.get_rank(), dist.get_world_size()
    tmp_tag = TMP_PREFIX + tag
    tmp_dir = os.path.join(out_dir, tmp_tag)
    if rank == 0:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    dist.barrier()
    copies = engine.checkpoint_engine if isinstance(engine.checkpoint_engine, HostCopies) else None
    with fast_torch_save(pinned), copies.blocking(not background) if copies else contextlib.nullcontext():
        engine.save_checkpoint(out_dir, tag=tmp_tag, client_state=client_state, save_latest=False)
        if marker["zero_stage"] == 3 and tag == "final":  # ZeRO-3 also leaves a consolidated 16-bit model
            engine.save_16bit_model(tmp_dir, ZERO3_16BIT_MODEL)
    jobs = copies.take_jobs() if copies else []
    jobs.append((atomic_torch_save, rank_state, os.path.join(tmp_dir, rank_state_name(rank))))
    pending = PendingSave(out_dir, tag, also, marker, update_latest, keep_last_n, jobs, rank, t0)
    if background:
        pending.thread.start()
        return pending
    pending.write()
    if pending.error is not None:
        raise pending.error
    dist.barrier()
    result = finish_save(pending, world, 0)
    dist.barrier()  # the tag is in place on return, on every rank
    return result or None


def reserve_host_copies(engine, out_dir):
    """Every rank, once the optimizer's state exists (after the first step): have HostCopies allocate the host
    buffers of the background saves now, off the step's path, instead of inside the first save (GPT-2 XL on one
    H200: 28 GiB of pinned buffers, 18 s of a 19 s save). DeepSpeed's save runs once with every write left out to
    show what the files will hold; it leaves only its recovery scripts in a .tmp- folder, removed here. Returns the
    host bytes being allocated on this rank, or None where the host lacks them (saves then block)."""
    import deepspeed.comm as dist
    tag = TMP_PREFIX + "host-copies"
    reserved = engine.checkpoint_engine.reserve(
        lambda: engine.save_checkpoint(out_dir, tag=tag, client_state={}, save_latest=False))
    if dist.get_rank() == 0:
        shutil.rmtree(os.path.join(out_dir, tag), ignore_errors=True)
    return reserved


class PendingSave:
    """One rank's part of a save: the files still to be written (host copies, for a background save), written in
    order, then hashed (.hashes-<rank>.json); the tag is marked and installed once every rank's part is done."""

    def __init__(self, out_dir, tag, also, marker, update_latest, keep_last_n, jobs, rank, t0):
        self.out_dir, self.tag, self.also, self.marker = out_dir, tag, also, marker
        self.update_latest, self.keep_last_n, self.jobs, self.rank, self.t0 = update_latest, keep_last_n, jobs, rank, t0
        self.tmp_dir = os.path.join(out_dir, TMP_PREFIX + tag)
        self.error, self.hash_seconds, self.written_seconds = None, 0.0, None
        self.blocked_seconds = time.time() - t0
        self.thread = threading.Thread(target=self.write, name=f"save {tag}", daemon=True)

    def write(self):
        try:
            with fast_torch_save():
                for write, obj, path in self.jobs:
                    write(obj, path)
            self.jobs = None  # the host copies are HostCopies' to keep; the rest can go
            t = time.time()
            hash_own_files(self.tmp_dir, self.rank)
            self.hash_seconds = time.time() - t
        except Exception as e:  # reported by the main thread, at the next step end, save or the end of the run
            self.error = e
        if self.thread.ident is not None:  # written in the background (the hashing after it counted apart)
            self.written_seconds = time.time() - self.t0 - self.blocked_seconds - self.hash_seconds

    def state(self):
        """[finished, failed] on this rank, for the all-reduce that tells every rank where the save stands."""
        done = not self.thread.is_alive()
        return [float(done), float(done and self.error is not None)]


def finish_save(pending, finished, failed):
    """Every rank, with the number of ranks whose part of the save has finished and of those that failed (summed
    over the ranks): None while some are still writing; a failure raises it (SaveFailedElsewhere on the ranks
    whose own part went well); once every rank is done, rank 0 marks the tag complete and installs it, and
    returns save()'s tuple ("" on the other ranks)."""
    import deepspeed.comm as dist
    world = dist.get_world_size()
    if failed:
        if pending.error is not None:
            raise pending.error
        raise SaveFailedElsewhere("")
    if finished < world:
        return None
    if pending.rank != 0:
        return ""
    files = gather_file_entries(pending.tmp_dir, world)
    missing = missing_files(files, world, pending.marker["zero_stage"])
    if missing:
        raise CheckpointError(f"checkpoint {pending.tmp_dir} lacks {missing} after every rank saved; is out_dir on "
                              "a file system that every node shares?")
    atomic_write(os.path.join(pending.tmp_dir, COMPLETE), json.dumps(
        {**pending.marker, "tag": pending.tag, "files": files, "hash": HASH_SCHEME, "saved_at": time.time()},
        indent=1))
    size, total, removed = install_tag(pending.out_dir, pending.tag, pending.also, pending.update_latest,
                                       pending.keep_last_n)
    seconds = pending.blocked_seconds if pending.written_seconds is not None else time.time() - pending.t0
    return seconds, size, total, removed, pending.hash_seconds, pending.written_seconds


def wait_save(pending, device):
    """Every rank: wait for this rank's part of a background save, then finish it as finish_save does."""
    import deepspeed.comm as dist
    pending.thread.join()
    counts = torch.tensor(pending.state(), device=device)
    dist.all_reduce(counts)
    result = finish_save(pending, *counts.tolist())
    dist.barrier()  # the tag is in place on return, on every rank
    return result


class HostCopies:
    """DeepSpeed's checkpoint engine (engine.checkpoint_engine) wrapped for background saves: save() copies the
    state dict's tensors off the device into host buffers kept for the next save (pinned for GPU tensors, where
    asked: the copy then runs at the link's speed) and queues the write of that copy, which DeepSpeed's own engine
    does later, on PendingSave's thread; loading and the rest are DeepSpeed's. reserve() allocates the buffers ahead
    of the first save, in a thread. Where the host lacks the RAM for a copy, that file is written at once, as without
    it (said once). Each storage is copied whole, as torch.save writes it, so the files are those of a blocking save."""

    # PyTorch pins with cudaHostAlloc, which holds the CUDA driver's lock while it pins: allocating GPT-2 XL's 28 GiB
    # of buffers beside training stopped the GPU work for the whole 13.8 s; malloc, the pages touched by 8 threads,
    # then cudaHostRegister took 4.0 s with the work alongside at full speed but for one 0.6 s step (one H200,
    # bench/results/2026-12-02-host-memory)
    PINNED_BY_REGISTER = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"

    def __init__(self, inner, pinned, warn=print):
        self.inner, self.pinned, self.warn = inner, pinned, warn
        self.jobs, self.pool, self.now, self.warned = [], {}, True, False
        self.rehearsal, self.reserving = None, None  # reserve(): the buffers noted, the thread allocating them
        user_settings = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "") + os.environ.get("PYTORCH_ALLOC_CONF", "")
        if pinned and torch.cuda.is_available() and "pinned_" not in user_settings:
            set_settings = getattr(torch._C, "_accelerator_setAllocatorSettings", None)  # torch >= 2.10
            (set_settings or torch.cuda.memory._set_allocator_settings)(self.PINNED_BY_REGISTER)

    def __getattr__(self, name):  # load, makedirs, create, commit, is_decoupled, ...: DeepSpeed's engine
        return getattr(self.inner, name)

    @contextlib.contextmanager
    def blocking(self, now):
        self.now = now
        try:
            yield
        finally:
            self.now = True

    def take_jobs(self):
        jobs, self.jobs = self.jobs, []
        return jobs

    def host_bytes(self):
        """Host RAM the copies hold (kept from save to save)."""
        return sum(self.held(b.numel(), b.is_pinned()) for b in self.pool.values())

    @staticmethod
    def held(nbytes, pinned):
        """RAM a buffer of nbytes takes: PyTorch's pinned-memory allocator rounds each up to a power of two."""
        return 1 << max(nbytes - 1, 0).bit_length() if pinned and nbytes else nbytes

    def save(self, state_dict, path):
        name = os.path.basename(path)
        if self.rehearsal is not None:  # reserve(): note what this file's copy needs, write nothing
            self.rehearsal += self.missing_buffers(self.storages(state_dict), name)
            return
        copy = None if self.now else self.host_copy(state_dict, name)
        if copy is None:
            return self.inner.save(state_dict, path)
        self.jobs.append((self.inner.save, copy, path))

    def reserve(self, rehearse):
        """Allocate the buffers of the next save's copies now, in a thread, while training goes on: pinned host
        memory takes seconds per GiB to allocate. rehearse() is a save with every write left out (checkpoint.save's
        reserve_host_copies): it shows which storages the files will hold. Returns the bytes being allocated, or
        None where the host lacks the RAM (said once; saves then block)."""
        self.rehearsal = []
        try:
            rehearse()
        finally:
            buffers, self.rehearsal = self.rehearsal, None
        if not self.enough_ram(buffers, "the checkpoint"):
            return None

        def allocate():
            try:
                self.allocate(buffers)
            except Exception as e:  # e.g. pinned memory refused: the save allocates what is missing, on the spot
                self.warn(f"warning: async_checkpoints: host buffers could not be allocated ahead of the first "
                          f"save ({type(e).__name__}: {e}); that save allocates them")
        self.reserving = threading.Thread(target=allocate, name="reserve host copies", daemon=True)
        self.reserving.start()
        return sum(self.held(n, pin) for _, n, pin in buffers)

    @staticmethod
    def storages(obj):
        """{(data_ptr, nbytes, device): storage} of the tensors in obj, each storage once, in the order torch.save
        meets them."""
        storages = {}
        for t in tensors_in(obj):
            s = t.untyped_storage()
            storages.setdefault((s.data_ptr(), s.nbytes(), s.device), s)
        return storages

    def missing_buffers(self, storages, name):
        """(pool key, bytes, pinned) of each buffer the copy of file `name` needs and the pool lacks."""
        wanted = [((name, i), k[1], self.pinned and k[2].type == "cuda") for i, k in enumerate(storages)]
        return [w for w in wanted if w[0] not in self.pool or self.pool[w[0]].numel() != w[1]]

    def enough_ram(self, buffers, what):
        import psutil
        new = sum(self.held(n, pin) for _, n, pin in buffers)
        free = psutil.virtual_memory().available
        if new <= free - max(2 * 2 ** 30, free // 10):
            return True
        if not self.warned:
            self.warned = True
            self.warn(f"warning: async_checkpoints: a host copy of {what} needs {new / 2 ** 30:.2f} GiB more and "
                      f"{free / 2 ** 30:.2f} GiB is available: saves write while training waits, as with "
                      "--async_checkpoints=False")
        return False

    def allocate(self, buffers):
        for key, nbytes, pin in buffers:
            self.pool[key] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)

    def host_copy(self, obj, name):
        """obj with every tensor's storage copied into this file's host buffers, or None where RAM is short."""
        import collections
        import copy
        if self.reserving is not None:  # the buffers reserve() is allocating
            self.reserving.join()
            self.reserving = None
        storages = self.storages(obj)
        missing = self.missing_buffers(storages, name)
        if not self.enough_ram(missing, name):
            return None
        self.allocate(missing)
        host = {}
        for i, (key, storage) in enumerate(storages.items()):
            buf = self.pool[(name, i)]
            if key[1]:
                src = torch.empty(0, dtype=torch.uint8, device=key[2]).set_(storage)
                buf.copy_(src, non_blocking=True)
            host[key] = buf.untyped_storage()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the copies are done before training changes the tensors again

        def rebuild(o):
            if isinstance(o, torch.Tensor):
                s = o.untyped_storage()
                t = torch.empty(0, dtype=o.dtype).set_(host[(s.data_ptr(), s.nbytes(), s.device)],
                                                       o.storage_offset(), o.size(), o.stride())
                if isinstance(o, torch.nn.Parameter):
                    return torch.nn.Parameter(t, requires_grad=o.requires_grad)
                return t.requires_grad_(o.requires_grad)
            if type(o) in (dict, collections.OrderedDict):
                return type(o)((k, rebuild(v)) for k, v in o.items())
            if type(o) in (list, tuple):
                return type(o)(rebuild(v) for v in o)
            try:
                return copy.deepcopy(o)  # a loss scaler, a config: as they are now, not as they are at the write
            except Exception:
                return o

        return rebuild(obj)


def tensors_in(obj):
    """Every tensor in nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v)


def install_tag(out_dir, tag, also, update_latest, keep_last_n):
    """Rank 0, once .tmp-<tag> is complete and marked: rename it into place, link the `also` tags, move `latest`,
    apply retention. Returns (bytes of this tag, bytes of out_dir, removed tags)."""
    tmp_dir = os.path.join(out_dir, TMP_PREFIX + tag)
    saved_dir = os.path.join(out_dir, tag)
    install_dir(tmp_dir, saved_dir)
    for other in also:
        link_tmp = os.path.join(out_dir, TMP_PREFIX + other)
        shutil.rmtree(link_tmp, ignore_errors=True)
        link_tree(saved_dir, link_tmp)
        install_dir(link_tmp, os.path.join(out_dir, other))
    if update_latest:
        atomic_write(os.path.join(out_dir, LATEST), tag)
    removed = apply_retention(out_dir, keep_last_n, protect=read_latest(out_dir))
    universal = os.path.join(out_dir, UNIVERSAL_DIR)
    if os.path.isdir(universal):  # copies converted to load on this GPU count, as large as the checkpoints:
        doomed = os.path.join(out_dir, TMP_PREFIX + UNIVERSAL_DIR)  # a checkpoint saved on this count
        shutil.rmtree(doomed, ignore_errors=True)  # supersedes them; renamed first, so that a kill during the
        os.rename(universal, doomed)  # deletion leaves no half-deleted copy to reuse (recover() removes it)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(UNIVERSAL_DIR + "/")
    return dir_bytes(saved_dir), dir_bytes(out_dir), removed


def apply_retention(out_dir, keep_last_n, protect=None):
    """Delete all but the keep_last_n newest iter_* tags (0 keeps all). best, final and `latest` stay."""
    if keep_last_n <= 0:
        return []
    tags = complete_tags(out_dir)
    doomed = [t for t in tags[:-keep_last_n] if t != protect]
    for t in doomed:
        shutil.rmtree(os.path.join(out_dir, t), ignore_errors=True)
    return doomed


# -----------------------------------------------------------------------------
# consolidation and conversion


def fp32_state_dict(out_dir, tag):
    """Full fp32 weights (our parameter names) from a ZeRO checkpoint, through DeepSpeed's zero_to_fp32.
    The shards are memory-mapped and each tensor materialised once, so memory stays near one fp32 copy."""
    import sys
    verify(os.path.join(out_dir, tag), content=True)  # it reads every file next: the hashes cost one more read
    # DeepSpeed's notes (its accelerator choice at import, its progress) must not mix with sample.py's text
    with contextlib.redirect_stdout(sys.stderr):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        try:
            lazy = get_fp32_state_dict_from_zero_checkpoint(out_dir, tag=tag, lazy_mode=True)
        except Exception as e:  # a damaged file fails inside torch.load (UnpicklingError, RuntimeError, ...)
            tag_dir = os.path.join(out_dir, tag)
            raise CheckpointError(refused(tag_dir, e) or f"checkpoint {tag_dir} could not be read ({load_error(e)}); "
                                  f"{other_tags(tag_dir)}") from None
    state, done = {}, {}
    for name, tensor in lazy.items():
        if id(tensor) in done:  # tied weights (wte / lm_head) stay one tensor
            state[name] = state[done[id(tensor)]]
            continue
        done[id(tensor)] = name
        state[name] = tensor.contiguous().float()
    return state


def load_model(out_dir, tag, **config_overrides):
    """A GPT (fp32, CPU) with the weights of out_dir/tag, and the tag's completion marker. The model takes the
    consolidated tensors as they are (built on the meta device, assigned), so one copy of the weights exists."""
    marker = verify(os.path.join(out_dir, tag))
    return model_from_state({**marker["model_config"], **config_overrides}, fp32_state_dict(out_dir, tag)), marker


def model_from_state(model_config, state_dict):
    """A GPT that takes the tensors of state_dict as they are (built on the meta device, assigned), so one copy of
    the weights exists."""
    from model import GPT, GPTConfig
    with torch.device("meta"):
        model = GPT(GPTConfig(**model_config), init_weights=False)
    model.load_state_dict(state_dict, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign made two Parameters of the tied tensor
    return model


def split_checkpoint_path(path):
    """(out_dir, tag) for 'out_dir' (its `latest`) or 'out_dir/tag'; (None, None) if it is neither."""
    if not os.path.isdir(path):
        return None, None
    # a tag without its marker (a save cut short) is still a tag: verify() then says what is wrong with it
    if os.path.isfile(os.path.join(path, COMPLETE)) or glob.glob(os.path.join(path, "*model_states.pt")):
        path = os.path.abspath(path)
        return os.path.dirname(path), os.path.basename(path)
    tag = read_latest(path)
    return (path, tag) if tag is not None else (None, None)


def universal_dir(out_dir, tag):
    return os.path.join(out_dir, UNIVERSAL_DIR, tag)


def convert_to_universal(out_dir, tag, log=print):
    """DeepSpeed universal checkpoint of out_dir/tag, in out_dir/universal/<tag> (made once, reused).
    The original tag is only read."""
    from argparse import Namespace
    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal
    src = os.path.join(out_dir, tag)
    dst = universal_dir(out_dir, tag)
    marker = read_marker(src)
    done = read_marker(dst)
    if done is not None and done.get("saved_at") == marker["saved_at"]:
        log(f"using the universal checkpoint made earlier from this {tag} in {dst}")
        return dst
    verify(src, content=True)  # before DeepSpeed's converter loads a damaged file as it is
    tmp = dst + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    workers = max(1, min(4, (os.cpu_count() or 2) // 2))  # each worker holds one optimizer shard in memory
    args = Namespace(input_folder=src, output_folder=tmp, num_extract_workers=workers, num_merge_workers=workers,
                     keep_temp_folder=False, strict=True, inject_missing_state=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress lines and "*** Done!"; we say what it did
            ds_to_universal(args)
    except Exception as e:  # a damaged file fails inside torch.load (UnpicklingError, RuntimeError, ...)
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(refused(src, e) or f"cannot convert {src} for another number of GPUs "
                              f"({load_error(e)})") from None
    with open(os.path.join(tmp, COMPLETE), "w") as f:
        json.dump({**marker, "converted_from": src, "conversion_seconds": time.time() - t0}, f, indent=1)
    install_dir(tmp, dst)
    with open(os.path.join(os.path.dirname(dst), LATEST + "_universal"), "w") as f:
        f.write(tag)
    log(f"converted {src} ({marker['world_size']} ranks) to a universal checkpoint in {dst} "
        f"in {time.time() - t0:.1f}s")
    return dst
