"""
Every change this trainer makes to DeepSpeed's behaviour, in one place, each with the reason it exists (the
measurements are in bench/NOTES.md). Nothing else in the project reaches into DeepSpeed's objects.

- apply_collective_timeout: a dead peer fails a gradient reduction after dist_timeout_minutes, not 30 minutes.
- release_cpu_allreduce_buffer: DeepSpeed's CPU accelerator leaves a 66 MB /dev/shm buffer per rank per run.
- use_foreach_grad_norm: the gradient norm in one multi-tensor pass; optimizer step 53 -> 35 ms on one H200, +0.3 to
  +0.8% throughput (1, 2 and 4 H200s).
- quiet_deprecations: DeepSpeed's ZeRO calls torch's deprecated all_gather_into_tensor; torch's FutureWarning, once
  per rank, is nothing a user can act on.
- explain_build_lock_waits: torch's extension builds (DeepSpeed's ops, kernels/fused_dense) wait in silence, for
  ever, on a lock that a killed build left: the wait now says what it waits for and what to do.
- skip_muon, skip_deepcompile_passes: imports of the compiler that this trainer never uses, seconds of every start.
- skip_overflow_scan / scan_this_step: no separate inf/NaN scan of the gradients, which the norm already detects;
  optimizer step 156 -> 70 ms on one H100 (bf16), +2.9% throughput.
"""
import os
import sys
import time
from datetime import timedelta

import torch


def apply_collective_timeout(timeout):
    """Make `timeout` torch's default for every process group. DeepSpeed gives it to the world group only and
    builds its data-parallel groups with new_group(), which takes torch's default (30 min for gloo) instead; the
    gradient reductions run in those groups, so without this a dead peer stalls them for half an hour."""
    import torch.distributed.distributed_c10d as c10d
    c10d.default_pg_timeout = timeout
    if isinstance(getattr(c10d, "default_pg_nccl_timeout", None), timedelta):
        c10d.default_pg_nccl_timeout = timeout


def quiet_deprecations():
    import warnings
    warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
    # on one GPU DeepSpeed leaves the process group without a bound device (deepspeed/comm/torch.py: binding one
    # makes torch split communicators for every new group), so every barrier warns that it uses the current
    # device: compute_init has set that device, which is the one meant
    warnings.filterwarnings("ignore", message=r"barrier\(\): using the device under current context",
                            category=UserWarning)


def skip_muon():
    """DeepSpeed's ZeRO code imports its Muon optimizer on every run (zero/utils.is_zero_supported_optimizer, to add it
    to the supported list; stage_1_and_2, for isinstance checks and muon_update), and that import wraps Muon's
    kernels in torch.compile, which imports the compiler: 2.7 s of every process's start-up (cProfile, on the CPU,
    2026-12-02). This trainer's optimizer is torch's AdamW and no parameter is marked use_muon, so stand-ins take
    the modules' place: a class nothing is an instance of, and a muon_update that says it is not there."""
    import sys
    import types

    class MuonWithAuxAdam:  # never instantiated: DeepSpeed's isinstance checks are False
        pass

    def muon_update(*args, **kwargs):
        raise RuntimeError("DeepSpeed's Muon is switched off by ds_patches.skip_muon (this trainer uses AdamW)")

    for name, attrs in (("original_muon", {"MuonWithAuxAdam": MuonWithAuxAdam, "muon_update": muon_update}),
                        ("muon_optimizer", {"MuonWithAuxAdam": MuonWithAuxAdam})):
        module = types.ModuleType(f"deepspeed.runtime.zero.muon.{name}")
        module.__dict__.update(attrs)
        sys.modules.setdefault(module.__name__, module)


def skip_deepcompile_passes():
    """DeepSpeed's engine registers its DeepCompile passes whenever torch and the accelerator could run them
    (engine.py: `if is_deepcompile_supported()`), and registering imports deepspeed.compile.backend, which imports
    torch's inductor (sympy, networkx): 3.2 s of a GPT-2 XL start on an H200 (bench/results/2026-12-04-startup).
    The passes serve only engine.compile(deepcompile=True); this trainer compiles its blocks with torch.compile, so
    the engine is told DeepCompile is not there."""
    import deepspeed.runtime.engine as engine
    engine.is_deepcompile_supported = lambda: False


def explain_build_lock_waits(first_after_s=60.0, every_s=60.0, say=None):
    """Make torch.utils.file_baton.FileBaton.wait say, after first_after_s and then every every_s, which lock it
    waits for and how to free it (torch says nothing, or one warning after an optional delay). A first run's ranks
    wait for the one that builds: 30 s for DeepSpeed's shm op on 2 CPU cores, 10.5 s for kernels/fused_dense on an
    H200 machine (bench/results/2026-12-02-goodput-h200), so the first line comes after a minute; a lock over 10
    minutes old is named at start-up already (distributed.stale_build_locks)."""
    from torch.utils import file_baton

    def wait(self):
        start = next_at = time.monotonic() + first_after_s
        while os.path.exists(self.lock_file_path):
            time.sleep(self.wait_seconds)
            if time.monotonic() >= next_at:
                waited = time.monotonic() - start + first_after_s
                (say or print_now)(
                    f"waiting {waited:.0f}s for {self.lock_file_path}: another process is building this torch "
                    "extension, or a killed build left its lock; if no build is running (pgrep -f ninja finds "
                    f"none), delete it: rm {self.lock_file_path}")
                next_at = time.monotonic() + every_s

    file_baton.FileBaton.wait = wait


def print_now(text):
    print(text, file=sys.stderr, flush=True)


def release_cpu_allreduce_buffer(rank):
    """DeepSpeed's CPU accelerator maps a 66 MB shared-memory buffer per rank and never unlinks it, so every run
    would leave its buffers in /dev/shm (that is, in RAM). After the barrier that follows init every rank has
    mapped its peers' buffers, so the names can go; the mappings stay valid."""
    name = (f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_"
            f"{os.environ['MASTER_PORT']}_{rank}")
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def squared_norm(tensors):
    """Sum of squares of every element of `tensors`, one multi-tensor kernel for all of them (per-tensor norms
    accumulated in fp32, as torch.nn.utils.clip_grad_norm_ does, then squared and summed in fp64); non-finite if
    any element is."""
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    return torch.stack(norms).double().square().sum().float()


def use_foreach_grad_norm(optimizer):
    """Make DeepSpeed ZeRO-1/2's gradient norm one multi-tensor pass. DeepSpeed 0.19 casts each parameter's gradient
    to fp64 and takes its norm, two kernels per tensor issued from Python after the backward has drained the GPU
    (580 tensors for GPT-2 XL on one GPU), so the GPU waits for the host: 6-24 ms of each optimizer step on H200s,
    +0.3-0.8% throughput (bench/NOTES.md). The result is the same up to fp32 rounding of each tensor's norm;
    clipping and the skipped-step checks read it as before. Returns whether it was installed (not with tensor or
    pipeline parallelism, whose parameters need DeepSpeed's filter)."""
    from deepspeed import comm as ds_dist
    from deepspeed.runtime.utils import mask_nan_or_inf_with_val_inplace
    original = getattr(optimizer, "get_grad_norm_direct", None)
    if original is None or getattr(optimizer, "mpu", None) is not None:
        return False

    def get_grad_norm_direct(gradients, params, norm_type=2):
        if float(norm_type) != 2.0:
            return original(gradients, params, norm_type)
        grads = [g.data for g in gradients if not getattr(g, "_zero_padding", False)]
        total = squared_norm(grads).to(optimizer.device)
        ds_dist.all_reduce(total, op=ds_dist.ReduceOp.SUM, group=optimizer.dp_process_group)
        total = total.sqrt()
        mask_nan_or_inf_with_val_inplace(total, device=optimizer.device)
        return total

    optimizer.get_grad_norm_direct = get_grad_norm_direct
    return True



def skip_overflow_scan(optimizer):
    """Turn off DeepSpeed ZeRO-1/2's separate inf/NaN scan of every gradient partition (~80 ms of each GPT-2 XL
    optimizer step on one H100). The global gradient norm it computes anyway is non-finite in exactly those cases
    and already makes fp16 (and fp32) skip the step; bf16 needs the scan back on a step whose loss was not finite
    (scan_this_step). Returns whether it was turned off."""
    if hasattr(optimizer, "check_grad_overflow") and getattr(optimizer, "compute_grad_norm", False):
        optimizer.check_grad_overflow = False
        return True
    return False


def scan_this_step(optimizer, nonfinite_loss):
    """bf16 after skip_overflow_scan: scan (and so skip the step and clear the gradients) when the loss was NaN/inf."""
    optimizer.check_grad_overflow = nonfinite_loss


def patch_zero_optimizer(optimizer, zero_stage, offload):
    """The optimizer-step patches for ZeRO-1/2 with the optimizer states on the GPU (not with offload, which has its
    own CPU paths); returns whether the overflow scan is off (the trainer then calls scan_this_step in bf16)."""
    if zero_stage not in (1, 2) or offload:
        return False
    use_foreach_grad_norm(optimizer)
    return skip_overflow_scan(optimizer)
