"""
Goodput of a whole fine-tuning job (issue 27): its wall time against the time of its optimizer steps, and where the
rest goes: start-up, evals, time blocked in saves, the exit.

    python bench/goodput.py --cpu --out /tmp/goodput   # CI's tiny mode: config/cpu_tiny.py on 2 CPU processes
                                                       #   (--gpus N: N), 8 iterations, eval + save every 2
                                                       #   (keep_last_n=1)
    python bench/goodput.py                            # the issue's job on one GPU: ./run_deepspeed_xl.sh
                                                       #   --max_iters=100 --eval_interval=25
                                                       #   --always_save_checkpoint=True --keep_last_n=1 (fp16, 16 x 8)
    python bench/goodput.py --gpus 4                   # the same job on 4 GPUs (16 x 2 x 4)
    python bench/goodput.py --job default              # the default main job instead: ./run_deepspeed_xl.sh as it
                                                       #   comes (20 iterations, eval + save every 5 when val improves)
    python bench/goodput.py --standin-cache            # no hub (../shared/GPU.md): a random GPT2LMHeadModel of
                                                       #   gpt2-xl's config as the hub cache's gpt2-xl first, then the
                                                       #   real init_from=gpt2-xl path, offline
    python bench/goodput.py --init scratch             # GPT-2 XL shapes from random init instead (no cache needed)
    python bench/goodput.py --set max_iters=20         # more --key=value for the trainer (after the job's own)

The trainer is launched as a user launches it, through run_deepspeed_xl.sh, its lines time-stamped as they arrive.
From its log:
    wall_s        launch to the launcher's exit
    step_s        the sum of the logged iteration times (each one optimizer step: forward, backward, step;
                  the trainer's timer leaves evals and saves out)
    saves_s       time blocked in saves (the sum of the "saved ... in Xs" lines, and of "waited Xs for the
                  background write of ..." where a save waited for the one before it; each one in "saves")
    evals_s       the sum of the "eval N: ... Xs total" lines
    startup_s     launch to the start of the first optimizer step (launch_to_first_step_s less that step and
                  the evals before it; "process_to_first_step_s" is the trainer's own figure, from its process's
                  start, without the launcher's)
    exit_s        the end of the last save (or step) to the launcher's exit: the end of the run
    other_s       what is left (logging, the gaps between)
    goodput       step_s / wall_s
JSON and the run's log go to --out (default bench/results/<date>-goodput-<cpu|Ngpu>/): goodput.json, run.log.
The job runs without PYTHONDONTWRITEBYTECODE (the lent GPU machines set it): its modules compiled once, as installed.
"""
import argparse
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAKESPEARE_TXT = os.path.join(REPO, "tests", "data", "tinyshakespeare.txt")
GPU_JOB = ["--max_iters=100", "--eval_interval=25", "--always_save_checkpoint=True", "--keep_last_n=1"]
CPU_JOB = ["config/cpu_tiny.py", "--eval_iters=4", "--plot=False", "--max_iters=8", "--eval_interval=2",
           "--always_save_checkpoint=True", "--keep_last_n=1"]
XL_SCRATCH = ["--init_from=scratch", "--n_layer=48", "--n_head=25", "--n_embd=1600"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(lines, wall_s):
    """The job's figures from its (seconds since launch, line) pairs."""
    steps, saves, evals, first, hashes = [], [], [], None, []
    for t, line in lines:
        m = re.match(r"iter (\d+)/\d+ \| .*? \| (\d+) ms \|", line)
        if m:
            steps.append((t, int(m.group(1)), int(m.group(2)) / 1000))
        m = re.match(r"saved (\S+(?: \+ \S+)*) in ([\d.]+)s", line)
        if m:
            saves.append((t, m.group(1), float(m.group(2))))
            h = re.search(r"hashed in ([\d.]+)s", line)
            w = re.search(r"written in the background in ([\d.]+)s", line)
            hashes.append((float(h.group(1)) if h else None, float(w.group(1)) if w else None))
        m = re.match(r"waited ([\d.]+)s for the background write of (\S+(?: \+ \S+)*)", line)
        if m:  # a save that waited for the one before it: blocked as long
            saves.append((t, f"waiting for {m.group(2)}", float(m.group(1))))
            hashes.append((None, None))
        m = re.match(r"eval (\d+): .*\| ([\d.]+)s val, ([\d.]+)s total", line)
        if m:
            evals.append((t, int(m.group(1)), float(m.group(3))))
        m = re.match(r"first optimizer step done ([\d.]+)s after the loop started(?:, ([\d.]+)s after the process "
                     r"started)?", line)
        if m:
            first = (float(m.group(1)), float(m.group(2)) if m.group(2) else None)
    if not steps:
        return {"wall_s": round(wall_s, 2), "steps": 0, "goodput": None}
    t_first, _, first_step_s = steps[0]
    step_s = sum(s for _, _, s in steps)
    saves_s = sum(s for _, _, s in saves)
    evals_s = sum(s for _, _, s in evals)
    startup_s = t_first - first_step_s - sum(s for t, _, s in evals if t < t_first) - \
        sum(s for t, _, s in saves if t < t_first)
    t_end = max([steps[-1][0]] + [t for t, _, _ in saves])
    exit_s = wall_s - t_end
    result = {
        "wall_s": round(wall_s, 2), "steps": len(steps), "step_s": round(step_s, 2),
        "saves_s": round(saves_s, 2), "evals_s": round(evals_s, 2), "startup_s": round(startup_s, 2),
        "exit_s": round(exit_s, 2),
        "other_s": round(wall_s - step_s - saves_s - evals_s - startup_s - exit_s, 2),
        "goodput": round(step_s / wall_s, 4),
        "launch_to_first_step_s": round(t_first, 2),
        "loop_to_first_step_s": first[0] if first else None,
        "process_to_first_step_s": first[1] if first else None,
        "median_step_s": sorted(s for _, _, s in steps)[len(steps) // 2],
        "saves": [{"tags": tags, "seconds": s, "hash_seconds": h, "background_seconds": w, "at_s": round(t, 2)}
                  for (t, tags, s), (h, w) in zip(saves, hashes)],
        "evals": [{"iteration": i, "seconds": s} for _, i, s in evals],
    }
    return result


def stand_in_cache():
    """A random GPT2LMHeadModel of gpt2-xl's config as the Hugging Face cache's gpt2-xl (../shared/GPU.md), unless
    the cache already has one; returns its folder."""
    from huggingface_hub.constants import HF_HUB_CACHE
    repo = os.path.join(HF_HUB_CACHE, "models--gpt2-xl")
    snapshot = os.path.join(repo, "snapshots", "0" * 40)
    if os.path.isfile(os.path.join(snapshot, "model.safetensors")):
        return snapshot
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    t0 = time.time()
    config = GPT2Config(n_layer=48, n_head=25, n_embd=1600, n_positions=1024, vocab_size=50257)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = GPT2LMHeadModel(config)
    os.makedirs(snapshot, exist_ok=True)
    model.save_pretrained(snapshot, safe_serialization=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write("0" * 40)
    print(f"made a stand-in gpt2-xl (random weights) in {snapshot} in {time.time() - t0:.0f}s", flush=True)
    return snapshot


def command(args, out_dir):
    """(argv, environment) of the job."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The GPU machines lent here set PYTHONDONTWRITEBYTECODE=1, so each process compiled every import from source:
    # ~13 s of a GPT-2 XL start (bench/results/2026-12-04-startup). A pip install leaves the modules compiled, and
    # the job here keeps what it compiles, as a user's machine does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    extra = [f"--{s}" for s in args.set]
    if args.cpu:
        # no GPU here: the script runs NUM_GPUS processes on DeepSpeed's CPU accelerator
        env.update(NUM_GPUS=str(args.gpus or 2), MASTER_PORT=str(free_port()), PYTHON=sys.executable,
                   OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
                   PATH=os.pathsep.join([os.path.dirname(sys.executable), env["PATH"]]))
        return ["./run_deepspeed_xl.sh", *CPU_JOB, f"--dataset={args.dataset}", f"--out_dir={out_dir}", *extra], env
    env.setdefault("SHAKESPEARE_INPUT", SHAKESPEARE_TXT)  # no internet on the GPU machines
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    if args.gpus:
        env["NUM_GPUS"] = str(args.gpus)
    if args.init == "scratch":
        extra = XL_SCRATCH + extra
    else:
        env["HF_HUB_OFFLINE"] = "1"
    job = GPU_JOB if args.job == "issue" else []
    return ["./run_deepspeed_xl.sh", *job, f"--out_dir={out_dir}", *extra], env


def ensure_dataset(dataset):
    """The CPU mode's Tiny Shakespeare, prepared from the copy in tests/data when data/shakespeare lacks it."""
    if dataset == "shakespeare" and not os.path.isfile(os.path.join(REPO, "data", "shakespeare", "train.bin")):
        subprocess.run([sys.executable, "data/shakespeare/prepare.py", "--input", SHAKESPEARE_TXT], cwd=REPO,
                       check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="the tiny CPU mode (CI)")
    parser.add_argument("--gpus", type=int, help="GPUs (default: every visible one)")
    parser.add_argument("--init", choices=("hub", "scratch"), default="hub",
                        help="hub: init_from=gpt2-xl from the Hugging Face cache; scratch: XL shapes, random init")
    parser.add_argument("--job", choices=("issue", "default"), default="issue",
                        help="GPU mode: issue 27's 100-iteration job, or the default main job")
    parser.add_argument("--standin-cache", action="store_true",
                        help="make a random gpt2-xl in the Hugging Face cache first, when it has none")
    parser.add_argument("--set", action="append", default=[], help="key=value for the trainer (repeatable)")
    parser.add_argument("--dataset", default=os.environ.get("BENCH_DATASET", "shakespeare"), help="CPU mode's data")
    parser.add_argument("--out", help="folder for goodput.json and run.log")
    parser.add_argument("--run-dir", help="the job's out_dir (emptied first; default /tmp/goodput-<mode>)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds before the job is killed")
    args = parser.parse_args()
    mode = "cpu" if args.cpu else f"{args.gpus or 'all'}gpu"
    out = args.out or os.path.join(REPO, "bench", "results", f"{datetime.date.today()}-goodput-{mode}")
    run_dir = args.run_dir or f"/tmp/goodput-{mode}"
    os.makedirs(out, exist_ok=True)
    shutil.rmtree(run_dir, ignore_errors=True)  # the trainer refuses an out_dir that holds checkpoints
    if args.cpu:
        ensure_dataset(args.dataset)
    elif args.standin_cache and args.init == "hub":
        stand_in_cache()
    argv, env = command(args, run_dir)
    lines = []
    t0 = time.time()
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    killer = threading.Timer(args.timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    killer.start()
    with open(os.path.join(out, "run.log"), "w") as log:
        log.write(" ".join(argv) + "\n")
        for line in proc.stdout:
            t = time.time() - t0
            lines.append((t, line.rstrip("\n")))
            log.write(f"[{t:7.1f}s] {line}")
            log.flush()
    proc.wait()
    wall_s = time.time() - t0
    killer.cancel()
    result = {"mode": f"cpu (tiny config, {args.gpus or 2} CPU processes): a smoke figure, not a GPU one"
              if args.cpu else f"gpu ({args.gpus or 'all visible'} GPUs, init {args.init})",
              "command": " ".join(argv), "exit_code": proc.returncode,
              "dropped_PYTHONDONTWRITEBYTECODE": "PYTHONDONTWRITEBYTECODE" in os.environ,
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              **parse(lines, wall_s)}
    with open(os.path.join(out, "goodput.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k not in ("saves", "evals", "command")}))
    print(f"goodput {result['goodput']} ({result.get('step_s')}s of steps in {result['wall_s']}s); "
          f"{os.path.join(out, 'goodput.json')}")
    sys.exit(0 if proc.returncode == 0 and result["steps"] else 1)


if __name__ == "__main__":
    main()
