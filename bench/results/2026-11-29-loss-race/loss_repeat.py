"""
Is the loss value of one batch as repeatable as its gradients? The GPU checks with deterministic=True find every
tensor of a resumed run's final checkpoint bitwise equal to the straight run's, yet one or two logged losses of 20
differ in the 4th decimal. This runs model.py alone (no DeepSpeed) on one fixed batch, GPT-2-medium shapes, fused
kernels on, forward + backward again and again with other allocations in between (so that the caching allocator
hands out other addresses), and counts the distinct results of each stage: the logits each loss chunk reads, the
per-row losses, their sums, the loss, the gradients. Then the sum of one set of per-row losses at other addresses.

    python bench/results/2026-11-29-loss-race/loss_repeat.py [--dtype float16] [--deterministic] [--repeats 30]
"""
import argparse
import os
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]  # the repository; bench/ for determinism.py
import model as model_module  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from determinism import digest  # noqa: E402
from distributed import use_deterministic_kernels  # noqa: E402
from kernels import enable as enable_fused_kernels  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--deterministic", action="store_true")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.deterministic:
        use_deterministic_kernels()
    torch.manual_seed(0)
    config = GPTConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024)
    with torch.device("cuda"):
        model = GPT(config).to(dtype)
    enable_fused_kernels(model, strict=True)
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randint(0, config.vocab_size, (args.batch_size, 1024), device="cuda", generator=gen)
    y = torch.roll(x, -1, dims=1)

    seen = {}  # stage -> set of digests
    record = []  # this repeat's per-chunk digests
    plain_xent = model_module.softmax_xent

    def watched_xent(logits, targets, vocab_size, with_grad, fused):
        logits_digest = digest([logits])  # before: with_grad overwrites the logits with the gradient
        loss_rows, probs = plain_xent(logits, targets, vocab_size, with_grad, fused)
        record.append((logits_digest, digest([loss_rows]), loss_rows.sum().item().hex(), loss_rows.clone()))
        return loss_rows, probs

    model_module.softmax_xent = watched_xent
    churn = []
    rows_kept = None
    for r in range(args.repeats):
        # move the caching allocator's next addresses: a few live tensors of odd sizes, some freed each repeat
        churn = churn[r % 3:] + [torch.empty(int(torch.randint(1, 4_000_000, ()).item()) + r, device="cuda",
                                             dtype=torch.uint8) for _ in range(r % 4)]
        record.clear()
        model.zero_grad(set_to_none=True)
        _, loss = model(x, targets=y)
        loss.backward()
        stages = {"logits per chunk": tuple(c[0] for c in record), "per-row losses": tuple(c[1] for c in record),
                  "chunk sums": tuple(c[2] for c in record), "loss": loss.item().hex(),
                  "gradients": digest(p.grad for p in model.parameters())}
        for stage, value in stages.items():
            seen.setdefault(stage, set()).add(value)
        rows_kept = rows_kept if rows_kept is not None else record[0][3]
    print(f"{args.dtype}, deterministic={args.deterministic}, GPT-2-medium shapes, {args.batch_size} x 1024 tokens, "
          f"{args.repeats} repeats of forward + backward with allocations in between:")
    for stage, values in seen.items():
        print(f"  {stage}: {len(values)} distinct")
    print(f"  losses seen: {sorted(float.fromhex(v) for v in seen['loss'])}")

    # the same 4,096 per-row losses summed from copies at other addresses (aligned and not)
    sums = {}
    for offset in range(0, 64):
        buf = torch.empty(rows_kept.numel() + 64, device="cuda", dtype=torch.float32)
        view = buf[offset:offset + rows_kept.numel()]
        view.copy_(rows_kept)
        sums.setdefault(view.sum().item().hex(), []).append(offset)
    print(f"  one chunk's per-row losses summed at 64 element offsets: {len(sums)} distinct sums "
          f"{[(float.fromhex(s), offs[:6]) for s, offs in sums.items()]}")


if __name__ == "__main__":
    main()
