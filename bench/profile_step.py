"""
Where the time of a training micro-step goes: model.py's GPT-2 XL (random init, bf16, one GPU, no DeepSpeed),
forward + backward of one micro-batch under torch.profiler, GPU kernel time grouped by kind; then each of the
model's matmul shapes timed alone, against the card's peak.

    python bench/profile_step.py --batch_size 16 [--compile] [--fused] [--deterministic]
"""
import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPT2_SIZES, GPTConfig, flops_per_token, peak_flops  # noqa: E402
from distributed import use_deterministic_kernels  # noqa: E402
from kernels import enable as enable_fused_kernels  # noqa: E402
from trace_summary import kind_of, print_idle_gaps  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--fused", action="store_true", help="as the trainer's fused_kernels: the cuBLASLt "
                        "epilogues of fused_dense.py, fused_loss.py's cross-entropy, fused_norm.py's add + LayerNorm")
    parser.add_argument("--deterministic", action="store_true", help="as train_deepspeed.py --deterministic=True")
    parser.add_argument("--no_shapes", action="store_true", help="skip timing each matmul shape alone")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.deterministic:
        use_deterministic_kernels()
    config = GPTConfig(**GPT2_SIZES["gpt2-xl"])
    with torch.device("cuda"):
        model = GPT(config).to(torch.bfloat16)
    if args.fused:
        enable_fused_kernels(model, strict=True)  # all three, as the trainer's fused_kernels
    if args.compile:
        for block in model.transformer.h:
            block.compile()
    x = torch.randint(0, 50257, (args.batch_size, 1024), device="cuda")

    def step():
        _, loss = model(x, targets=x)
        loss.backward()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        step()
    end.record()
    end.synchronize()
    ms = start.elapsed_time(end) / 3
    tokens = args.batch_size * 1024
    peak = peak_flops(torch.cuda.get_device_name(), torch.bfloat16)
    print(f"forward+backward of {args.batch_size} x 1024 tokens: {ms:.1f} ms, "
          f"{tokens / ms * 1000:,.0f} tok/s, MFU {tokens / ms * 1000 * flops_per_token(config) / peak:.1%}"
          f"{' (compiled blocks)' if args.compile else ''}{' (fused kernels)' if args.fused else ''}"
          f"{' (deterministic)' if args.deterministic else ''}")

    # Two steps back to back, as in training, so that the second starts with the CPU already ahead.
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        step()
        torch.cuda.synchronize()
    totals = collections.Counter()
    for evt in prof.key_averages():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            totals[kind_of(evt.key)] += evt.self_device_time_total / 1000 / 2
    busy = sum(totals.values())
    print(f"GPU kernel time per step {busy:.1f} ms:")
    for kind, t in totals.most_common():
        print(f"  {kind:40} {t:8.1f} ms  {t / busy:6.1%}")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=70))
    print_idle_gaps([(e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == torch.autograd.DeviceType.CUDA], "two steps")

    if args.no_shapes:
        return
    M, d = tokens, config.n_embd
    shapes = {"qkv": (M, d, 3 * d), "attn proj": (M, d, d), "mlp fc": (M, d, 4 * d), "mlp proj": (M, 4 * d, d),
              "head (chunk 4096)": (4096, d, config.padded_vocab_size)}
    for name, (m, k, n) in shapes.items():
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        start.record()
        for _ in range(20):
            a @ b
        end.record()
        end.synchronize()
        t = start.elapsed_time(end) / 20
        print(f"matmul {name:18} {m}x{k}x{n}: {t:.3f} ms, {2 * m * k * n / t / 1e9:.0f} TFLOP/s")


if __name__ == "__main__":
    main()
