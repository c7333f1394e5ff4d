"""
Peak memory of export.py, sampled from /proc/self/status every 20 ms: anonymous memory (the process's own) and
file-backed memory (the page cache of DeepSpeed's memory-mapped checkpoint shards, which the kernel can drop).

    python bench/results/2026-11-27-export-memory-cpu/export_memory.py OUT_DIR --hf /tmp/hf --pt /tmp/model.pt

(export.py's arguments after it).
"""
import os
import runpy
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))  # the repository


def main():
    peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            with open("/proc/self/status") as f:
                for line in f:
                    key = line.split(":")[0]
                    if key in peak:
                        peak[key] = max(peak[key], int(line.split()[1]) * 1024)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    sys.path.insert(0, ROOT)
    sys.argv = [os.path.join(ROOT, "export.py")] + sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    done.set()
    thread.join()
    print("peak memory: " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in peak.items()))


if __name__ == "__main__":
    main()
