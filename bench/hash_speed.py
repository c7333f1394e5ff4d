"""What complete.json's content hashes cost: checkpoint.file_hashes over a torch.save'd file (100 MB by default),
with one thread and with the threads a save uses, beside a plain streamed sha256 and the torch.save itself.

    python bench/hash_speed.py [--mb 100] [--repeats 5] [--out bench/results/<date>-goodput-cpu]

The file is read back from the page cache, as a save's hashing reads the file its rank has just written. On a
machine shared with other work, take the best of the repeats (printed beside the median).
"""
import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import checkpoint as ckpt  # noqa: E402


def plain_sha256(path, chunk=8 * 2 ** 20):
    h, buf = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def timed(fn, repeats):
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    return min(seconds), statistics.median(seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", help="folder for hash_speed.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shard.pt")
        tensor = torch.randn(args.mb * 10 ** 6 // 4)
        save = timed(lambda: torch.save({"t": tensor}, path), args.repeats)
        mb = os.path.getsize(path) / 1e6
        rows = {"torch.save (write)": save,
                "sha256, streamed, 1 thread": timed(lambda: plain_sha256(path), args.repeats),
                "file_hashes, 1 thread": timed(lambda: ckpt.file_hashes([path], threads=1), args.repeats),
                f"file_hashes, {ckpt.hash_threads()} threads": timed(lambda: ckpt.file_hashes([path]), args.repeats)}
    result = {"file_mb": round(mb, 1), "cpu": cpu_name(), "cores": len(os.sched_getaffinity(0)),
              "note": "CPU figures, page-cache reads; not a GPU machine's", "rows": {}}
    print(f"{mb:.1f} MB file on {result['cpu']} ({result['cores']} cores usable)")
    for name, (best, median) in rows.items():
        result["rows"][name] = {"best_s": round(best, 4), "median_s": round(median, 4),
                                "best_mb_s": round(mb / best), "median_mb_s": round(mb / median)}
        print(f"{name:32s} best {mb / best:7.0f} MB/s ({best:.3f}s), median {mb / median:7.0f} MB/s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "hash_speed.json"), "w") as f:
            json.dump(result, f, indent=1)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


if __name__ == "__main__":
    main()
