"""
The fused cross-entropy's per-row losses with the gradient pass (which overwrites the logits in place) against
those without it (which writes nothing): bitwise equal unless a warp overwrites the target's logit before another
warp of the same program has read it. Counts the rows that differ over many chunks of GPT-2-sized logits, for each
given copy of fused_loss.py (e.g. the one before the barrier, from git):

    git show ac526ad:fused_loss.py > /tmp/fused_loss_before.py
    python bench/results/2026-11-29-loss-race/xent_race.py kernels/fused_loss.py /tmp/fused_loss_before.py [--chunks 400]

Targets are drawn from the first 4,096 token ids (where most of GPT-2's frequent tokens are): the gradient pass
writes that block first, so that is where a slow warp can still be reading.
"""
import argparse
import importlib.util
import os
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
# the repository (kernels/fused_loss.py imports kernels.fused_dense); kernels/ for copies from before the package,
# which import fused_dense from the top level
sys.path[:0] = [ROOT, os.path.join(ROOT, "kernels")]


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("modules", nargs="+")
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=1, help="the modules in turn, this many times (timing)")
    args = parser.parse_args()
    vocab, padded = 50257, 50304
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {args.chunks} chunks of {args.rows} x {padded} "
          f"fp16 logits (randn x 3), targets in [0, 4096)")
    for i, path in enumerate(args.modules * args.rounds):
        fl = load(path, f"fused_loss_{i}")
        gen = torch.Generator(device="cuda").manual_seed(0)
        logits = torch.empty(args.rows, padded, device="cuda", dtype=torch.float16)
        rows_differ = chunks_differ = 0
        largest = 0.0
        times = []
        for _ in range(args.chunks):
            logits.normal_(0, 3, generator=gen)
            targets = torch.randint(0, 4096, (args.rows,), device="cuda", generator=gen)
            loss_only, _ = fl.softmax_xent_fused(logits, targets, vocab, False)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            with_grad, _ = fl.softmax_xent_fused(logits, targets, vocab, True)  # logits are the gradient now
            end.record()
            times.append((start, end))
            differ = (loss_only != with_grad)
            n = int(differ.sum())
            rows_differ += n
            chunks_differ += n > 0
            largest = max(largest, (loss_only - with_grad).abs().max().item())
        ms = sorted(s.elapsed_time(e) for s, e in times[10:])  # after the compile and warm-up
        print(f"{path}: rows whose loss differs with the gradient pass: {rows_differ} of {args.chunks * args.rows:,} "
              f"(in {chunks_differ} chunks), largest difference {largest:.4f}; the gradient pass "
              f"{ms[len(ms) // 2]:.3f} ms a chunk (median)")


if __name__ == "__main__":
    main()
