"""
What a run reports: the per-iteration log line and the same metrics as DeepSpeed monitor events (CSV, TensorBoard,
wandb), the optimizer-step timer, the profiler of one iteration, memory estimates and the out-of-memory line.
"""
import csv
import glob
import os
import re
import time

import torch


def start_monitors(sections):
    """DeepSpeed's MonitorMaster (rank 0 writes; the others get one that writes nothing) for the monitor sections
    of the DeepSpeed JSON (settings.monitor_config)."""
    from deepspeed.monitor.config import get_monitor_config
    from deepspeed.monitor.monitor import MonitorMaster
    return MonitorMaster(get_monitor_config(sections))


# what each iteration reports: (metric, its part of the log line, its monitor tag), in the order of the line
LOG_FIELDS = [
    ("loss", "loss {:.4f}", "Train/loss"), ("lr", "lr {:.2e}", "Train/lr"), ("ms", "{:.0f} ms", None),
    ("tok_s", "{:,.0f} tok/s/gpu", "Train/tokens_per_sec"), ("mfu", "MFU {:.1%}", "Train/mfu"),
    ("opt_ms", "opt {:.0f} ms", "Train/optimizer_step_ms"), ("mem_gib", "mem {:.1f} GiB", "Train/gpu_mem_gib"),
    ("scale", "scale {:.0f}", "Train/loss_scale"), ("grad_norm", "gnorm {:.2f}", "Train/grad_norm"),
    ("skipped", "{}", None), ("skipped_total", "{} skipped in all", "Train/skipped_steps"), ("eta", "eta {}", None),
    ("tokens_seen", None, "Train/tokens_seen"), ("rss_mib", None, "Host/rss_mib"),
    ("open_files", None, "Host/open_files"),
]


def start_profiler(on_gpu):
    """Record one iteration: the phases are marked with record_function("forward"/"backward"/"optimizer step")."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        torch.cuda.synchronize()  # the previous iteration's kernels stay out of the trace
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    profiler.start()
    return profiler


def stop_profiler(profiler, out_dir, rank, on_gpu):
    if on_gpu:
        torch.cuda.synchronize()
    profiler.stop()
    os.makedirs(os.path.join(out_dir, "profile"), exist_ok=True)
    path = os.path.join(out_dir, "profile", f"rank_{rank}.json.gz")
    profiler.export_chrome_trace(path)
    return path


def format_log(iteration, max_iters, metrics):
    """'iter 12/100 | loss 2.8341 | lr 3.00e-05 | ...' from a dict of metrics; None values are left out."""
    parts = [f"iter {iteration}/{max_iters}"]
    parts += [fmt.format(metrics[key]) for key, fmt, _ in LOG_FIELDS if fmt and metrics.get(key) is not None]
    return " | ".join(parts)


def step_of(row):
    """A CSV log row's step, or None for a header or a line a crash cut short."""
    try:
        return float(row[0])
    except (IndexError, ValueError):
        return None


def trim_csv_logs(csv_dir, last_step):
    """On resume: each CSV log keeps its header and its rows up to the checkpoint's iteration (a run that crashed
    logged iterations that the resumed run logs again). Returns the files' names as DeepSpeed's CSV monitor knows
    them, so that it adds no second header."""
    names = []
    for path in sorted(glob.glob(os.path.join(csv_dir, "*.csv"))):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if (step := step_of(r)) is not None and step <= last_step]
        if kept != rows:
            with open(path + ".tmp", "w", newline="") as f:
                csv.writer(f).writerows(kept)
            os.replace(path + ".tmp", path)
        names.append(os.path.basename(path)[:-len(".csv")])
    return names


def monitor_events(step, metrics):
    """DeepSpeed monitor events (tag, value, step) for the metrics that have a tag and a value."""
    return [(tag, metrics[key], step) for key, _, tag in LOG_FIELDS if tag and metrics.get(key) is not None]


def format_bytes(n):
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def estimate_model_state_memory(model, zero_stage, offload_optimizer, offload_params, world_size):
    """DeepSpeed's own estimate of parameters + gradients + optimizer states per GPU, in bytes."""
    gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    nodes = max(1, world_size // gpus_per_node)
    total = sum(p.numel() for p in model.parameters())
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
        return estimate_zero3_model_states_mem_needs(total, largest, gpus_per_node, nodes, offload_optimizer,
                                                     offload_params, zero_init=False)[1]
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    return estimate_zero2_model_states_mem_needs(total, gpus_per_node, nodes, cpu_offload=offload_optimizer)[1]


def format_duration(seconds):
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class StartupClock:
    """Where the start-up goes, for the first step's line: lap(phase) ends the phase begun at the last lap (the first
    one at the process's start: Python and the imports)."""

    def __init__(self):
        import psutil
        self.t, self.laps = psutil.Process().create_time(), []

    def lap(self, phase, now=None):
        now = time.time() if now is None else now
        self.laps.append((phase, now - self.t))
        self.t = now

    def __str__(self):
        return ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in self.laps)


class StepTimer:
    """Time of the optimizer step (engine.step() at the accumulation boundary: the last gradient reduction,
    clipping, AdamW, the parameter all-gather), with CUDA events on the GPU."""

    def __init__(self, on_gpu):
        self.on_gpu = on_gpu
        if on_gpu:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self):
        if self.on_gpu:
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.on_gpu:
            self.end.record()
        else:
            self.t1 = time.perf_counter()

    def milliseconds(self):
        if self.on_gpu:
            self.end.synchronize()
            return self.begin.elapsed_time(self.end)
        return (self.t1 - self.t0) * 1000


def out_of_memory_line(error, rank, cfg=None):
    """torch's out-of-memory message (a paragraph) as one line: how much, of what, and the settings that help
    (those of `cfg`, the run's settings, that are not already at their most frugal)."""
    text = str(error)
    size = r"([\d.]+ \w+)"
    asked = re.search("Tried to allocate " + size, text)
    in_use = re.search("this process has " + size + " memory in use", text)
    limit = re.search(size + " allowed", text) or re.search("total capacity of " + size, text)
    if asked and in_use and limit:
        what = (f"asked for {asked[1]} more with {in_use[1]} in use "
                f"({limit[1]} {'allowed' if 'allowed' in limit[0] else 'on the GPU'})")
    else:
        what = text.splitlines()[0][:200] if text else "no details"
    cfg = cfg or {}
    at = f" at micro-batch {cfg['batch_size']}" if "batch_size" in cfg else ""
    recompute = [flag for key, flag in (("recompute_gelu", "--recompute_gelu=-1"),
                                        ("gradient_checkpointing", "--gradient_checkpointing=N"))
                 if cfg.get(key) != -1]
    then = f", or recompute activations in backward with {' or '.join(recompute)}" if recompute else ""
    return (f"error: [rank {rank}] out of GPU memory{at}: {what}; lower --batch_size (--target_batch_size keeps the "
            f"sequences per iteration){then} (README: GPU memory guidance)")
