"""
Throughput of train_deepspeed.py (the real script: same engine, same config path) on GPT-2 XL shapes from random
initialisation (the compute of the pretrained model; its weights are not needed), seq 1024, ZeRO-2, against the
peer (bench/peer.py: transformers' GPT2LMHeadModel in the same DeepSpeed engine).

    python bench/bench.py                                  # the default plan on this machine's GPUs
    python bench/bench.py --runs ours-bf16-4,peer-bf16-4   # chosen runs (names: --list)
    python bench/bench.py --runs ours-bf16-4-141gb,peer-bf16-4-141gb   # each at the micro-batch an H200 holds
    python bench/bench.py --runs ours-bf16-1 --gpus 1      # only GPU 1 (another invocation can use GPU 0)
    python bench/bench.py --runs ours-bf16-1 --set compile=False --set batch_size=12   # an experiment
    python bench/bench.py --cpu --out /tmp/bench           # tiny CPU mode (CI keeps the script working)
    python bench/bench.py --runs ours-bf16-1,ours-bf16-1-pc,ours-bf16-1-pc-curve   # prompt/completion vs text

Each run is its own `deepspeed` launch; its output lines are time-stamped as they arrive. Per run: tokens/s per
GPU, MFU, step time and optimizer-step time (median over the iterations after the first 3), peak GPU memory,
time from launch to the first optimizer step, eval time of the whole val split and checkpoint-save time where the
run does them. With --concurrent, runs that need fewer GPUs than the machine has share it, each on its own GPUs
(the host's CPUs and PCIe are shared; the table says which runs overlapped). Results: <date>-<time>-<card>.json
and .md and the runs' logs, in bench/results/<date>-bench/ (a new experiment's folder; --out to write elsewhere).
"""
import argparse
import datetime
import json
import os
import re
import signal
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
XL = ["--init_from=scratch", "--n_layer=48", "--n_head=25", "--n_embd=1600", "--block_size=1024",
      "--dataset=shakespeare", "--eval_iters=-1", "--csv_log=False", "--plot=False"]
WARMUP = 3
# prompt/completion data for the -pc runs, made by pc_dataset() from Tiny Shakespeare (in the repository)
PC_DATASET = os.path.join(REPO, "data", "shakespeare_pc")


def ours(gpus, dtype, batch_size=16, target=128, iters=8, save=False, extra=()):
    """A run of train_deepspeed.py; batch_size None keeps the batch settings of a config file in `extra`."""
    batch = [f"--batch_size={batch_size}", f"--target_batch_size={target}"] if batch_size else []
    args = [*XL, f"--dtype={dtype}", *batch, f"--max_iters={iters}", f"--eval_interval={iters}",
            f"--save_checkpoints={save}", *extra]
    return {"kind": "ours", "gpus": gpus, "dtype": dtype, "batch_size": batch_size, "target": target, "args": args}


def peer(gpus, dtype, batch_size=8, target=128, iters=8, save=False):
    args = [f"--dtype={dtype}", f"--batch_size={batch_size}", f"--target_batch_size={target}", f"--max_iters={iters}"]
    return {"kind": "peer", "gpus": gpus, "dtype": dtype, "batch_size": batch_size, "target": target, "args": args,
            "save": save}


DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
RUNS = {
    **{f"ours-{d}-{g}": ours(g, DTYPES[d]) for d in DTYPES for g in (1, 2, 4, 8)},
    **{f"peer-{d}-{g}": peer(g, DTYPES[d]) for d in DTYPES for g in (1, 4, 8)},
    # each at the largest micro-batch that fits a ~141 GB card (H200): ours 32 (config/xl_141gb.py), the peer 16
    **{f"ours-{d}-{g}-141gb": ours(g, DTYPES[d], batch_size=32) for d in DTYPES for g in (1, 2, 4)},
    **{f"peer-{d}-{g}-141gb": peer(g, DTYPES[d], batch_size=16) for d in DTYPES for g in (1, 2, 4, 8)},
    # 80 GB cards at micro-batch 32 with every GELU output recomputed (config/xl_80gb_mb32.py; 2 or 4 GPUs)
    **{f"ours-{d}-{g}-80gb-mb32": ours(g, DTYPES[d], None, extra=["config/xl_80gb_mb32.py"])
       for d in DTYPES for g in (2, 4)},
    "ours-fp16-4-guide": ours(4, "float16", batch_size=1, iters=7),  # the guide's literal micro-batch 1 x 32
    "ours-fp16-4-save": ours(4, "float16", iters=5, save=True),
    "peer-fp16-4-save": peer(4, "float16", iters=5, save=True),
    # saves at iterations 2, 4 and 6 of one run: the first save and the later ones differ (pinned host buffers)
    "ours-fp16-4-saves": ours(4, "float16", iters=6, save=True,
                              extra=["--eval_interval=2", "--always_save_checkpoint=True", "--keep_last_n=1"]),
    # GPT-2 XL with the GPU's memory capped at 24 GB, as on the guide's minimum cards
    "ours-xl-24gb-2": ours(2, "float16", None, iters=7, extra=["config/xl_24gb_2gpus.py", "--max_gpu_memory_gb=24"]),
    "ours-xl-24gb-offload-1": ours(1, "float16", None, iters=8,
                                   extra=["config/xl_24gb_offload_1gpu.py", "--max_gpu_memory_gb=24"]),
    # bf16 has no loss scale to find, so from random init every timed step is a real (CPU) AdamW step
    "ours-xl-24gb-offload-1-bf16": ours(1, "bfloat16", None, iters=6,
                                        extra=["config/xl_24gb_offload_1gpu.py", "--max_gpu_memory_gb=24"]),
    # prompt/completion (issue 26) at ours-bf16-1's shapes: windows packed from whole examples, document-masked
    # attention (SDPA with a mask instead of is_causal), the loss on completions only; its cost against ours-bf16-1
    "ours-bf16-1-pc": ours(1, "bfloat16", extra=[f"--dataset={PC_DATASET}"]),
    "ours-bf16-4-pc": ours(4, "bfloat16", extra=[f"--dataset={PC_DATASET}"]),
    # a short loss curve at XL shapes (random init: the weights are not needed; add --set init_from=gpt2-xl where the
    # hub cache has them): train and val completion loss every 25 iterations
    "ours-bf16-1-pc-curve": ours(1, "bfloat16", iters=100, extra=[f"--dataset={PC_DATASET}", "--learning_rate=1e-4",
                                                                  "--warmup_iters=10", "--eval_interval=25",
                                                                  "--eval_iters=32"]),
}
DEFAULT_PLAN = ["ours-bf16-4", "ours-fp16-4", "ours-bf16-4-80gb-mb32", "peer-bf16-4", "peer-fp16-4",
                "ours-fp16-4-guide", "ours-bf16-2", "ours-fp16-2", "ours-bf16-1", "ours-fp16-1"]


def pc_dataset(out_dir=PC_DATASET, source=os.path.join(REPO, "tests", "data", "tinyshakespeare.txt")):
    """Prompt/completion pairs from Tiny Shakespeare: each speech the prompt, the speech after it the completion
    (about 7,000 examples of tens to hundreds of tokens), prepared by data/prepare.py into out_dir."""
    import tempfile
    from data import prepare
    with open(source, encoding="utf-8") as f:
        speeches = [s.strip() + "\n" for s in f.read().split("\n\n") if s.strip()]
    parent, name = os.path.split(out_dir.rstrip(os.sep))
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = os.path.join(tmp, "shakespeare_pairs.jsonl")
        with open(jsonl, "w", encoding="utf-8") as f:
            for prompt, completion in zip(speeches, speeches[1:]):
                f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
        return prepare.prepare(name, [jsonl], parent or ".", val_fraction=0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(run, gpu_ids, cpu):
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", f"--master_port={free_port()}"]
    launcher += [f"--num_gpus={run['gpus']}"] if cpu else [f"--include=localhost:{','.join(map(str, gpu_ids))}"]
    if run["kind"] == "peer":
        args = list(run["args"])
        if run.get("save"):
            args.append(f"--save_dir=/tmp/bench-{run['name']}")
        return launcher + ["bench/peer.py", *args]
    # config files (bare arguments) must come before --key=value overrides
    files = [a for a in run["args"] if not a.startswith("--")]
    keys = [a for a in run["args"] if a.startswith("--")]
    out_dir = f"--out_dir=/tmp/bench-{run['name']}"
    return launcher + ["train_deepspeed.py", *files, *keys, out_dir]


def parse(lines):
    """Summary of one run from its (seconds since launch, line) pairs."""
    iters, first_step, evals, saves, errors, batch = [], None, [], [], [], None
    for t, line in lines:
        m = re.match(r"batch: (\d+) x (\d+) x", line)  # what the trainer ran, whatever --set or a config file said
        if m:
            batch = {"micro_batch": int(m.group(1)), "accumulation": int(m.group(2))}
        m = re.match(r"iter (\d+)/\d+ \| loss (\S+) \| lr \S+ \| (\d+) ms \| ([\d,]+) tok/s/gpu(.*)", line)
        if m:
            rest = m.group(5)
            mfu = re.search(r"MFU (\S+)%", rest)
            opt = re.search(r"opt (\d+) ms", rest)
            mem = re.search(r"mem (\S+) GiB", rest)
            iters.append({"iter": int(m.group(1)), "loss": float(m.group(2)), "ms": int(m.group(3)),
                          "tok_s_gpu": float(m.group(4).replace(",", "")),
                          "mfu": float(mfu.group(1)) / 100 if mfu else None,
                          "opt_ms": int(opt.group(1)) if opt else None, "mem_gib": float(mem.group(1)) if mem else None,
                          "skipped": "skipped (" in rest})
            if first_step is None:
                first_step = t
        m = re.match(r"eval \d+: .*\| ([\d.]+)s val", line)
        if m:
            evals.append(float(m.group(1)))
        m = re.match(r"saved \S+(?: \+ \S+)* in ([\d.]+)s \(([\d.]+) GiB", line)
        if m:
            saves.append({"seconds": float(m.group(1)), "gib": float(m.group(2))})
        if "out of memory" in line.lower() or line.startswith("error:") or "Error" in line:
            errors.append(line.strip())
    timed = [i for i in iters if i["iter"] > WARMUP and not i["skipped"]] or iters[-1:]
    med = lambda key: statistics.median(i[key] for i in timed) if timed and timed[0][key] is not None else None
    status = "ok" if iters else ("out of memory" if any("out of memory" in e.lower() for e in errors) else "failed")
    return {"status": status, "iterations": len(iters), "tok_s_gpu": med("tok_s_gpu"), "mfu": med("mfu"),
            "step_ms": med("ms"), "opt_ms": med("opt_ms"),
            "peak_mem_gib": max((i["mem_gib"] for i in iters if i["mem_gib"] is not None), default=None),
            "launch_to_first_step_s": first_step, "eval_s": evals[-1] if evals else None,
            "save": saves[0] if saves else None, "later_saves_s": [x["seconds"] for x in saves[1:]],
            "skipped_steps": sum(i["skipped"] for i in iters), "timed_iterations": [i["iter"] for i in timed],
            "losses": [i["loss"] for i in iters], "errors": errors[-3:], **(batch or {})}


def execute(run, gpu_ids, cpu, timeout, log_dir):
    """Run one launch; returns its summary. Output goes to log_dir/<name>.log."""
    cmd = command(run, gpu_ids, cpu)
    shutil.rmtree(f"/tmp/bench-{run['name']}", ignore_errors=True)  # the trainer refuses an out_dir with checkpoints
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cpu:
        env["DS_ACCELERATOR"] = "cpu"
    t0 = time.time()
    started = t0
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    killer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    with open(os.path.join(log_dir, f"{run['name']}.log"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        for line in proc.stdout:
            lines.append((time.time() - t0, line.rstrip("\n")))
            log.write(f"[{time.time() - t0:7.1f}s] {line}")
    proc.wait()
    killer.cancel()
    summary = parse(lines)
    summary.update(name=run["name"], kind=run["kind"], gpus=run["gpus"], dtype=run["dtype"],
                   batch_size=run["batch_size"], target_batch_size=run["target"], gpu_ids=gpu_ids,
                   exit_code=proc.returncode, wall_s=round(time.time() - t0, 1), command=" ".join(cmd[3:]),
                   started=started, ended=time.time())
    if proc.returncode != 0 and summary["status"] == "ok":
        summary["status"] = f"exit {proc.returncode}"
    return summary


def environment(cpu):
    import torch
    import deepspeed
    import transformers
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "torch": torch.__version__, "deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
           "python": sys.version.split()[0], "cuda": torch.version.cuda}
    if cpu:
        env["card"] = "CPU (DeepSpeed CPU accelerator)"
        return env
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip().splitlines()
    env.update(card=smi[0].split(", ")[0], driver=smi[0].split(", ")[1], memory=smi[0].split(", ")[2],
               gpus_on_machine=len(smi))
    from model import peak_flops
    env["peak_tflops_bf16"] = peak_flops(env["card"], torch.bfloat16) / 1e12
    return env


def markdown(env, results, cpu=False):
    model = "tiny GPT-2 (config/cpu_tiny.py)" if cpu else "GPT-2 XL shapes (1.56B, seq 1024)"
    head = (f"{model}, ZeRO-2, random init; {env['card']}; driver {env.get('driver', '-')}; "
            f"torch {env['torch']}, DeepSpeed {env['deepspeed']}, CUDA {env['cuda']}, transformers "
            f"{env['transformers']}; {env['date']}. Medians over iterations {WARMUP + 1}+; MFU against "
            f"{env.get('peak_tflops_bf16', '-')} TFLOPS.\n\n")
    rows = ["| run | GPUs | dtype | micro x accum | tokens/s/GPU | MFU | step ms | optimizer ms | peak GiB | "
            "launch -> 1st step s | eval s | save s (GiB) | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "-" if v is None else format(v, f)
    for r in results:
        if "micro_batch" in r:  # the trainer's own line
            mb = f"{r['micro_batch']} x {r['accumulation']}"
        else:  # the peer: as the run asked
            ga = r["target_batch_size"] // (r["batch_size"] * r["gpus"]) if r["batch_size"] else None
            mb = f"{r['batch_size']} x {ga}" if ga else "config"
        later = "".join(f", {x:.1f}" for x in r.get("later_saves_s", ()))
        save = f"{r['save']['seconds']:.1f}{later} ({r['save']['gib']:.1f})" if r.get("save") else "-"
        rows.append(f"| {r['name']} | {r['gpus']} | {r['dtype']} | {mb} | {fmt(r['tok_s_gpu'], ',.0f')} | "
                    f"{fmt(r['mfu'] and r['mfu'] * 100, '.1f')}% | {fmt(r['step_ms'], '.0f')} | "
                    f"{fmt(r['opt_ms'], '.0f')} | "
                    f"{fmt(r['peak_mem_gib'], '.1f')} | {fmt(r['launch_to_first_step_s'], '.0f')} | "
                    f"{fmt(r['eval_s'], '.2f')} | {save} | {r['status']} |")
    return head + "\n".join(rows) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", help="comma-separated run names (default: the default plan)")
    parser.add_argument("--set", action="append", default=[], help="key=value added to every run of ours")
    parser.add_argument("--concurrent", action="store_true", help="runs of fewer GPUs share the machine")
    parser.add_argument("--gpus", help="comma-separated GPU ids this invocation may use (default: all), so that two "
                                       "invocations, e.g. of two trees, can share a machine")
    parser.add_argument("--timeout", type=int, default=420, help="seconds per run")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", f"{datetime.date.today()}-bench"))
    parser.add_argument("--tag", default="", help="added to the result file names")
    parser.add_argument("--cpu", action="store_true", help="tiny model, 2 CPU processes (CI)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list:
        print("\n".join(RUNS))
        return
    if args.cpu:
        plan = [dict(ours(2, "float32", batch_size=4, target=16, iters=5), name="ours-cpu-tiny")]
        plan[0]["args"] = ["config/cpu_tiny.py", *[a for a in plan[0]["args"] if not a.startswith(
            ("--n_layer", "--n_head", "--n_embd", "--block_size", "--init_from", "--dataset", "--learning_rate"))],
            "--eval_iters=4", f"--dataset={os.environ.get('BENCH_DATASET', 'shakespeare')}"]
        n_gpus = 2
    else:
        names = args.runs.split(",") if args.runs else DEFAULT_PLAN
        unknown = [n for n in names if n not in RUNS]
        if unknown:
            sys.exit(f"error: unknown runs {unknown}; see --list")
        plan = [dict(RUNS[n], name=n) for n in names]
        import torch
        n_gpus = torch.cuda.device_count()
    gpu_ids = [int(i) for i in args.gpus.split(",")] if args.gpus else list(range(n_gpus))
    if any(i >= n_gpus for i in gpu_ids):
        sys.exit(f"error: --gpus={args.gpus} names a GPU this machine lacks (it has {n_gpus})")
    n_gpus = len(gpu_ids)
    for run in plan:
        if run["kind"] == "ours":
            run["args"] = run["args"] + [f"--{kv}" for kv in args.set]
    if any(run["gpus"] > n_gpus for run in plan):
        sys.exit(f"error: a run needs more than the {n_gpus} GPUs here")
    if any(f"--dataset={PC_DATASET}" in run["args"] for run in plan) and not os.path.isdir(PC_DATASET):
        pc_dataset()
    os.makedirs(args.out, exist_ok=True)
    env = environment(args.cpu)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    card = re.sub(r"[^A-Za-z0-9]+", "-", env["card"]).strip("-").lower()
    base = os.path.join(args.out, f"{stamp}-{card}{'-' + args.tag if args.tag else ''}")
    log_dir = base + "-logs"
    os.makedirs(log_dir, exist_ok=True)

    results, lock = [], threading.Lock()
    free = list(gpu_ids)
    pending = list(plan)
    threads = []

    def worker(run, ids):
        summary = execute(run, ids, args.cpu, args.timeout, log_dir)
        with lock:
            results.append(summary)
            free.extend(ids)
        def shown(key, fmt):  # a CPU run has no MFU and no GPU memory
            return fmt.format(summary[key]) if summary.get(key) is not None else "-"
        print(f"{summary['name']}: {summary['status']}, {shown('tok_s_gpu', '{:,.0f}')} tok/s/gpu, MFU "
              f"{shown('mfu', '{:.1%}')}, peak {shown('peak_mem_gib', '{:.1f}')} GiB, first step "
              f"{shown('launch_to_first_step_s', '{:.1f}')} s", flush=True)

    while pending or threads:
        with lock:
            startable = None
            for run in pending:
                if run["gpus"] <= len(free) and (args.concurrent or not threads):
                    startable = run
                    break
                if not args.concurrent:
                    break
            if startable is not None:
                pending.remove(startable)
                ids = sorted(free)[:startable["gpus"]]
                for i in ids:
                    free.remove(i)
                t = threading.Thread(target=worker, args=(startable, ids), name=startable["name"])
                t.start()
                threads.append(t)
                continue
        for t in list(threads):
            if not t.is_alive():
                threads.remove(t)
        time.sleep(0.5)

    order = {run["name"]: i for i, run in enumerate(plan)}
    results.sort(key=lambda r: order[r["name"]])
    for r in results:
        r["overlapped_with"] = [o["name"] for o in results
                                if o is not r and o["started"] < r["ended"] and r["started"] < o["ended"]]
    with open(base + ".json", "w") as f:
        json.dump({"environment": env, "runs": results, "set": args.set}, f, indent=1)
    table = markdown(env, results, args.cpu)
    with open(base + ".md", "w") as f:
        f.write(table)
    print(table)
    print(f"wrote {base}.json, {base}.md and {log_dir}/")


if __name__ == "__main__":
    main()
