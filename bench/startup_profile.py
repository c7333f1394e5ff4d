"""
Where the trainer's start-up goes, in wall seconds (issue 27): train_deepspeed.run() in this process, as rank 0 of 1,
its main thread's stack sampled every 5 ms by another thread (a sample counts for the time since the one before,
so that a C call holding the interpreter's lock is counted in full, under the Python function that made it). Works
from the process's start (Python and the imports: sampled once the sampler runs, the rest from the process's start
time) to the end of run(), and prints the wall seconds of every function on the main thread's stack, most first.

    python bench/startup_profile.py --out /tmp/startup.txt -- config/finetune_shakespeare_xl.py --max_iters=1 \
        --eval_interval=1000 --save_checkpoints=False --plot=False --out_dir=/tmp/prof
    python bench/startup_profile.py --cpu -- config/cpu_tiny.py --max_iters=1 ...     # DeepSpeed's CPU accelerator
"""
import argparse
import collections
import os
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class StackSampler:
    def __init__(self, thread_id, interval=0.005):
        self.thread_id, self.interval = thread_id, interval
        self.inclusive = collections.Counter()  # function -> seconds on the stack
        self.innermost = collections.Counter()  # function -> seconds as the innermost Python frame
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    @staticmethod
    def name(code):
        path = code.co_filename
        for prefix in (REPO + os.sep, "site-packages" + os.sep):
            if prefix in path:
                path = path.split(prefix, 1)[1]
        return f"{path}:{code.co_firstlineno}({code.co_name})"

    def sample(self):
        last = time.perf_counter()
        while not self.done.wait(self.interval):
            frame = sys._current_frames().get(self.thread_id)
            now = time.perf_counter()
            weight, last = now - last, now
            if frame is None:
                continue
            seen = set()
            self.innermost[self.name(frame.f_code)] += weight
            while frame is not None:
                key = self.name(frame.f_code)
                if key not in seen and not key.startswith("<frozen"):  # importlib's frames: under every import
                    seen.add(key)
                    self.inclusive[key] += weight
                frame = frame.f_back


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="write the report here too")
    ap.add_argument("--cpu", action="store_true", help="DeepSpeed's CPU accelerator")
    ap.add_argument("--top", type=int, default=120)
    ap.add_argument("args", nargs="*", help="the trainer's arguments (after --)")
    args = ap.parse_args()
    # rank 0 of 1 as distributed.environment() makes a plain start, on a port of its own beside a running job's 29500
    os.environ.setdefault("MASTER_PORT", "29533")
    if args.cpu:
        os.environ["DS_ACCELERATOR"] = "cpu"
    sampler = StackSampler(threading.get_ident())
    sampler.thread.start()
    import psutil
    started = psutil.Process().create_time()
    before_sampler = time.time() - started
    sys.path.insert(0, REPO)
    os.chdir(REPO)
    t0 = time.time()
    import settings
    import train_deepspeed
    cfg = settings.parse_config(args.args + ["--local_rank=0"], train_deepspeed.DEFAULTS)
    status = train_deepspeed.run(cfg)
    sampler.done.set()
    sampler.thread.join()
    lines = [f"run() returned {status}; the process {time.time() - started:.1f}s old, {before_sampler:.1f}s of it "
             f"before the sampler (Python's start), {time.time() - t0:.1f}s in the trainer's imports and run()",
             "", "wall seconds on the main thread's stack (inclusive):"]
    lines += [f"{s:8.2f}  {k}" for k, s in sampler.inclusive.most_common(args.top)]
    lines += ["", "wall seconds as the innermost Python frame (a C call is counted under its caller):"]
    lines += [f"{s:8.2f}  {k}" for k, s in sampler.innermost.most_common(args.top // 2)]
    report = "\n".join(lines)
    print(report, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")
    sys.stdout.flush()
    os._exit(0 if status == 0 else 1)


if __name__ == "__main__":
    main()
