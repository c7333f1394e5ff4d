"""
How fast a checkpoint file gets from host memory into the page cache, and hashed (issue 27): torch.save in one
thread then checkpoint.file_hashes (what a background save does) against save_in_parallel below, a candidate
(torch.save's skeleton, the storages' bytes written and hashed by a pool of threads; faster alone, no faster in the
job, so not adopted: bench/results/2026-12-04-default-job-parallel), on GPT-2 XL's share of one
GPU: the optimizer shard (three fp32 tensors of 1.558e9 elements: master weights, exp_avg, exp_avg_sq; 18.7 GB)
and the model states (the fp16 weights as 580 tensors of GPT-2 XL's shapes; 3.1 GB).

    python bench/write_speed.py --out /tmp/w.json              # GPT-2 XL's sizes (needs ~25 GB of RAM and disk)
    python bench/write_speed.py --scale 0.01 --dir /tmp/ws     # a hundredth of them, for a quick look
Each row also has the page cache's dirty and writeback bytes (/proc/meminfo) before the write: the kernel makes a
writer wait for the disk once dirty pages pass vm.dirty_ratio.
"""
import argparse
import hashlib
import json
import os
import sys
import time
import zipfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import checkpoint  # noqa: E402

XL_PARAMS = 1_557_611_200  # GPT-2 XL's parameters without the tied head


# the candidate measured here (not in the trainer: see the results)
class _StorageWrites:
    """A file object for torch.save that keeps no bytes: it lists, in the order written, the storages of `storages`
    whose memory torch.save hands it (torch.save writes each storage record straight from the storage's memory)."""

    def __init__(self, storages):
        self.by_memory = {(s.data_ptr(), s.nbytes()): s for s in storages if s.nbytes()}
        self.order = []

    def write(self, data):
        view = memoryview(data)
        if view.nbytes:
            storage = self.by_memory.get((np.frombuffer(view, np.uint8).ctypes.data, view.nbytes))
            if storage is not None:
                self.order.append(storage)
        return view.nbytes

    def flush(self):
        pass


def save_in_parallel(obj, path, threads=None):
    """torch.save(obj, path) for tensors in host memory, written and hashed by a pool of threads; returns the file's
    hash (HASH_SCHEME), or None where it fell back to a plain torch.save (hash the file then).

    torch.save writes the file in one thread, at ~3 GB/s into the page cache: 6-7 s for GPT-2 XL's 18.6 GB optimizer
    shard, and then hashing read it all back. Here torch.save itself writes the file with every storage's bytes
    left out (skip_data: the same records at the same offsets, holes where the data goes), and the pool fills each
    64 MiB piece from the tensors' memory with pwrite and hashes it from that memory, pieces side by side: byte for
    byte torch.save's own file."""
    from concurrent.futures import ThreadPoolExecutor
    writes = _StorageWrites([s for (_, _, device), s in checkpoint.HostCopies.storages(obj).items()
                             if device.type == "cpu"])
    with checkpoint.fast_torch_save():
        torch.save(obj, writes)  # the order of the storage records: no bytes are copied
        with torch.serialization.skip_data():
            torch.save(obj, path)
    with zipfile.ZipFile(path) as archive:  # record sizes (torch 2.11's reader has no get_record_size)
        sizes = {info.filename.split("/", 1)[1]: info.file_size for info in archive.infolist()}
    with open(path, "rb") as f:
        reader = torch._C.PyTorchFileReader(f)
        records = sorted((int(name[len("data/"):]), reader.get_record_offset(name), sizes[name])
                         for name in reader.get_all_records() if name.startswith("data/"))
    records = [(offset, size) for _, offset, size in records if size]
    if [size for _, size in records] != [s.nbytes() for s in writes.order]:  # tensors torch.save found elsewhere
        with checkpoint.fast_torch_save():
            torch.save(obj, path)
        return None
    size = os.path.getsize(path)
    # the file as (offset, bytes) runs: each storage's memory where its record's data goes, the skeleton's own bytes
    # (headers, padding, the central directory) between them
    runs, at = [], 0
    with open(path, "rb") as f:
        for (offset, nbytes), storage in zip(records, writes.order):
            f.seek(at)
            runs.append((at, f.read(offset - at), False))
            runs.append((offset, torch.empty(0, dtype=torch.uint8).set_(storage).numpy().data, True))
            at = offset + nbytes
        f.seek(at)
        runs.append((at, f.read(size - at), False))

    fd = os.open(path, os.O_WRONLY)

    def fill_and_hash(start):
        end, h = min(start + checkpoint.HASH_PIECE, size), hashlib.sha256()
        for offset, data, from_memory in runs:
            lo, hi = max(start, offset), min(end, offset + len(data))
            if lo < hi:
                view = data[lo - offset:hi - offset]
                rest, at = view, lo
                while from_memory and rest:  # the skeleton's own bytes are in the file already
                    written = os.pwrite(fd, rest, at)
                    rest, at = rest[written:], at + written
                h.update(view)
        return h.digest()

    try:
        with ThreadPoolExecutor(threads or checkpoint.hash_threads()) as pool:
            digests = list(pool.map(fill_and_hash, range(0, max(size, 1), checkpoint.HASH_PIECE)))
    finally:
        os.close(fd)
    return hashlib.sha256(b"".join(digests)).hexdigest()


def model_states(scale):
    """A GPT-2 XL-shaped fp16 state dict (580 tensors), as DeepSpeed's model states file holds it."""
    d, layers, vocab = 1600, max(1, round(48 * scale)), 50257
    sd = {"wte": torch.empty(max(1, round(vocab * scale)), d, dtype=torch.float16),
          "wpe": torch.empty(1024, d, dtype=torch.float16)}
    for i in range(layers):
        for name, shape in (("ln_1.w", (d,)), ("ln_1.b", (d,)), ("attn.c_attn.w", (d, 3 * d)),
                            ("attn.c_attn.b", (3 * d,)), ("attn.c_proj.w", (d, d)), ("attn.c_proj.b", (d,)),
                            ("ln_2.w", (d,)), ("ln_2.b", (d,)), ("mlp.c_fc.w", (d, 4 * d)), ("mlp.c_fc.b", (4 * d,)),
                            ("mlp.c_proj.w", (4 * d, d)), ("mlp.c_proj.b", (d,))):
            sd[f"h.{i}.{name}"] = torch.empty(shape, dtype=torch.float16)
    for t in sd.values():
        t.normal_()
    return {"module": sd, "global_steps": 25}


def optimizer_shard(scale):
    n = int(XL_PARAMS * scale)
    master, m, v = (torch.empty(n, dtype=torch.float32) for _ in range(3))
    for t in (master, m, v):
        t.uniform_()
    return {"optimizer_state_dict": {"state": {0: {"exp_avg": m, "exp_avg_sq": v, "step": torch.tensor(25.0)}},
                                     "param_groups": [{"lr": 3e-5, "params": [0]}]},
            "fp32_flat_groups": [master], "ds_version": "0.19.8"}


def page_cache_dirty():
    """GB of the page cache that is dirty or being written back."""
    try:
        meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    except OSError:
        return None
    return round(sum(int(meminfo[k].split()[0]) for k in ("Dirty", "Writeback")) * 1024 / 1e9, 2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--dir", default="/tmp/write-speed")
    ap.add_argument("--threads", default="1,4,8,16")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--files", default="optim,model", help="which files: optim, model")
    ap.add_argument("--out")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    files = {}
    if "optim" in args.files:
        files["zero_pp_rank_0_mp_rank_00_optim_states.pt"] = optimizer_shard(args.scale)
    if "model" in args.files:
        files["mp_rank_00_model_states.pt"] = model_states(args.scale)
    vm = {name: open(f"/proc/sys/vm/{name}").read().strip() for name in ("dirty_ratio", "dirty_background_ratio",
                                                                          "dirty_bytes", "dirty_expire_centisecs")
          if os.path.exists(f"/proc/sys/vm/{name}")}
    print(json.dumps({"vm": vm}), flush=True)
    results = []
    for r in range(args.rounds):
        for method in ["torch.save+hash"] + [f"parallel-{n}" for n in args.threads.split(",")]:
            for name, obj in files.items():
                path = os.path.join(args.dir, name)
                dirty = page_cache_dirty()
                t = time.time()
                if method == "torch.save+hash":
                    with checkpoint.fast_torch_save():
                        torch.save(obj, path)
                    written = time.time() - t
                    digest = checkpoint.file_hashes([path])[path]
                else:
                    digest = save_in_parallel(obj, path, threads=int(method.split("-")[1]))
                    written = None
                total = time.time() - t
                size = os.path.getsize(path)
                results.append({"round": r, "method": method, "file": name, "bytes": size,
                                "seconds": round(total, 3), "write_seconds": written and round(written, 3),
                                "GB_per_s": round(size / total / 1e9, 2), "sha": digest[:16],
                                "dirty_GB_before": dirty})
                print(json.dumps(results[-1]), flush=True)
                os.remove(path)
    shas = {(x["file"], x["sha"]) for x in results}
    print(f"distinct hashes per file: {len(shas)} for {len(files)} files (1 each: every method wrote the same bytes)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"scale": args.scale, "vm": vm, "results": results, "same_bytes": len(shas) == len(files)}, f,
                      indent=1)


if __name__ == "__main__":
    main()
