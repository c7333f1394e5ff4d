"""
The add + LayerNorm backward's launch settings inside the GPT-2 XL model (bf16, micro-batch 16, all fused kernels,
one GPU, no DeepSpeed): warps x grid (32 rows per program as before, or as many rows as make the grid fit the
programs the GPU holds at once). Wall time per micro-step (CUDA events, 5 steps) and the kernel's GPU time per call
(torch.profiler, 2 steps), each setting twice in alternation.

    python bench/results/2026-11-28-norm-grid/norm_grid.py      (run_grid.sh 1; output grid-h200/norm_grid.txt)

It imported the kernels from the top-level modules and train_deepspeed.setup_fused_kernels then; it imports the
same code from the kernels/ package now (not rerun on a GPU since).
"""
import collections
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3)))  # the repository
from kernels import enable as enable_fused_kernels  # noqa: E402
from kernels import fused_norm as fn  # noqa: E402
from model import GPT, GPT2_SIZES, GPTConfig  # noqa: E402

fit = fn.resident_backward_programs
settings = [(warps, grid) for warps in (8, 4, 16) for grid in ("32 rows", "fit")]


def apply(warps, grid):
    fn.BACKWARD_WARPS = warps
    fn.resident_backward_programs = fit if grid == "fit" else (lambda args, constants: None)


torch.backends.cuda.matmul.allow_tf32 = True
config = GPTConfig(**GPT2_SIZES["gpt2-xl"])
with torch.device("cuda"):
    model = GPT(config).to(torch.bfloat16)
enable_fused_kernels(model, strict=True)
x = torch.randint(0, 50257, (16, 1024), device="cuda")


def step():
    _, loss = model(x, targets=x)
    loss.backward()


results = collections.defaultdict(list)
for rnd, (warps, grid) in itertools.product(range(2), settings):
    apply(warps, grid)
    for _ in range(2):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        step()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / 5
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        step()
        torch.cuda.synchronize()
    kernel = [e for e in prof.key_averages() if e.key.startswith("add_ln_bwd_kernel")]
    us = sum(e.self_device_time_total for e in kernel) / sum(e.count for e in kernel)
    total = sum(e.self_device_time_total for e in kernel) / 2 / 1000
    results[(warps, grid)].append((ms, us, total))
    print(f"round {rnd} warps {warps:2d} grid {grid:7}: {ms:7.2f} ms per micro-step, add_ln_bwd {us:6.1f} us a "
          f"call, {total:5.2f} ms per micro-step", flush=True)

props = torch.cuda.get_device_properties(0)
print(f"\n{torch.cuda.get_device_name()}, {props.multi_processor_count} SMs; resident backward programs found:")
for key, programs in fn._resident_programs.items():
    constants = dict(key[4])
    rows = fn.backward_rows_per_program(16 * 1024, programs)
    print(f"  warps {constants['num_warps']:2d} HAS_DS {constants['HAS_DS']!s:5} HAS_DELTA_BIAS "
          f"{constants['HAS_DELTA_BIAS']!s:5}: {programs} programs at once -> {rows} rows, "
          f"{-(-16384 // rows)} programs")
print("\nmeans of two rounds: setting, ms per micro-step, us per add_ln_bwd call")
for key, runs in results.items():
    print(f"  warps {key[0]:2d} {key[1]:7}: {sum(r[0] for r in runs) / 2:7.2f} ms  {sum(r[1] for r in runs) / 2:6.1f} us"
          f"  ({', '.join(f'{r[0]:.2f}' for r in runs)})")
