"""What background saves' host buffers cost on a GPU machine (issue 27), GPT-2 XL's share on one GPU:
fp16 weights 3.11 GB, fp32 master weights, exp_avg, exp_avg_sq 6.23 GB each.

    python host_memory.py --out DIR            # every part, each in its own process, results in DIR/host_memory.json

alloc-<mode>   the four pinned buffers allocated with torch.empty(pin_memory=True): seconds each, and a device-to-host
               copy into each (GB/s). Modes: cudaHostAlloc (PyTorch's default) and host-register (PyTorch's
               pinned_use_cuda_host_register with 8 threads: malloc, pages touched in parallel, cudaHostRegister).
overlap-<mode> a step-like GPU loop (bf16 matmuls, ~0.1 s a step, synchronised each step) while a thread allocates
               the buffers: step times before, during, after.
exit-<how>     a process holding 60 GB of GPU tensors, the pinned buffers and an NCCL group of one, from its
               "exiting" line to its end: Python's normal exit, or atexit handlers then os._exit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

SIZES = [3_113_000_000, 6_226_000_000, 6_226_000_000, 6_226_000_000]
REGISTER = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"


def allocate(sizes, seconds):
    import torch
    out = []
    for n in sizes:
        t0 = time.perf_counter()
        out.append(torch.empty(n, dtype=torch.uint8, pin_memory=True))
        seconds.append(round(time.perf_counter() - t0, 3))
    return out


def part_alloc():
    import torch
    torch.cuda.init()
    seconds = []
    bufs = allocate(SIZES, seconds)
    gbs = []
    for b in bufs:
        src = torch.empty(b.numel(), dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        b.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        gbs.append(round(b.numel() / (time.perf_counter() - t0) / 1e9, 1))
        del src
    return {"alloc_s": seconds, "alloc_total_s": round(sum(seconds), 2), "d2h_GBps": gbs}


def part_overlap():
    import torch
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

    def step():
        t0 = time.perf_counter()
        x = a
        for _ in range(60):
            x = torch.mm(x, a).mul_(1e-4)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    for _ in range(5):
        step()
    before = [step() for _ in range(20)]
    seconds, holder = [], []
    th = threading.Thread(target=lambda: holder.append(allocate(SIZES, seconds)))
    t0 = time.perf_counter()
    th.start()
    during = []
    while th.is_alive():
        during.append(step())
    alloc_wall = time.perf_counter() - t0
    after = [step() for _ in range(20)]
    med = lambda xs: round(statistics.median(xs), 4) if xs else None
    return {"step_median_before_s": med(before), "step_median_during_s": med(during),
            "step_max_during_s": round(max(during), 4) if during else None, "steps_during": len(during),
            "step_median_after_s": med(after), "alloc_wall_s": round(alloc_wall, 2), "alloc_s": seconds,
            "slowdown_during": round(sum(during) / len(during) / statistics.median(before), 3) if during else None}


def part_exit(how):
    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29511")
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda:0"))
    dist.all_reduce(torch.ones(1, device="cuda"))
    gpu = [torch.empty(6_300_000_000, dtype=torch.uint8, device="cuda") for _ in range(10)]
    host = allocate(SIZES, [])
    for b, g in zip(host, gpu):
        b.copy_(g[:b.numel()])
    dist.destroy_process_group()
    print(f"exiting {time.time():.3f}", flush=True)
    if how == "os_exit":
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        os._exit(0)
    return None


def child(part, mode):
    env = dict(os.environ)
    if mode == "host-register":
        env["PYTORCH_CUDA_ALLOC_CONF"] = REGISTER
    t0 = time.time()
    p = subprocess.run([sys.executable, __file__, "--child", part, "--mode", mode], env=env, capture_output=True,
                       text=True, timeout=300)
    end = time.time()
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 and not part.startswith("exit"):
        return {"error": p.stderr[-2000:]}
    if part.startswith("exit"):
        exiting = [float(l.split()[1]) for l in lines if l.startswith("exiting ")]
        return {"process_s": round(end - t0, 2), "exit_s": round(end - exiting[0], 2) if exiting else None,
                "rc": p.returncode, "stderr_tail": p.stderr[-500:]}
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--child")
    ap.add_argument("--mode", default="cudaHostAlloc")
    ap.add_argument("--parts", default="alloc,overlap,exit")
    args = ap.parse_args()
    if args.child:
        if args.child == "alloc":
            print(json.dumps(part_alloc()))
        elif args.child == "overlap":
            print(json.dumps(part_overlap()))
        else:
            part_exit(args.child.split("-", 1)[1])
        return
    results = {}
    for mode in ("cudaHostAlloc", "host-register") if "alloc" in args.parts else ():
        results[f"alloc-{mode}"] = child("alloc", mode)
        print(mode, "alloc", results[f"alloc-{mode}"], flush=True)
        results[f"overlap-{mode}"] = child("overlap", mode)
        print(mode, "overlap", results[f"overlap-{mode}"], flush=True)
    for mode in ("cudaHostAlloc", "host-register") if "exit" in args.parts else ():
        for how in ("normal", "os_exit"):
            results[f"exit-{how}-{mode}"] = child(f"exit-{how}", mode)
            print("exit", how, mode, results[f"exit-{how}-{mode}"], flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"host_memory-{args.parts.replace(',', '-')}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
