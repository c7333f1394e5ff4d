"""
Is a training step bitwise repeatable, within a process and across fresh processes? model.py alone (no
DeepSpeed), GPT-2-small shapes from a fixed seed, 4 x 1024 tokens, a few SGD steps on the 16-bit weights; prints
one digest of every gradient per step and of the final weights, and the cuBLASLt kernels the fused ops ran. Run it
several times and compare the digests (bench/NOTES.md, exact resume):

    for i in 1 2 3; do python bench/determinism.py --fused --dtype bfloat16 [--deterministic]; done
"""
import argparse
import hashlib
import os
import sys
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPT2_SIZES, GPTConfig  # noqa: E402
from trace_summary import kind_of  # noqa: E402
from distributed import use_deterministic_kernels  # noqa: E402
from kernels import enable as enable_fused_kernels  # noqa: E402


def digest(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fused", action="store_true")
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--deterministic", action="store_true", help="as train_deepspeed.py --deterministic=True")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=200, help="in-process repeats of each fused op")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.deterministic:
        use_deterministic_kernels()
    torch.manual_seed(0)
    config = GPTConfig(**GPT2_SIZES["gpt2"])
    with torch.device("cuda"):
        model = GPT(config).to(dtype)
    if args.fused:
        enable_fused_kernels(model, strict=True)  # all three, as the trainer's fused_kernels
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)  # AdamW on fp16 weights without a master copy overflows
    gen = torch.Generator(device="cuda").manual_seed(1)
    line = []
    for step in range(args.steps):
        x = torch.randint(0, config.vocab_size, (4, 1024), device="cuda", generator=gen)
        last = step == args.steps - 1  # profiled, for the attention kernels' names
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if last else nullcontext() \
                as prof:
            _, loss = model(x, targets=x)
            loss.backward()
            torch.cuda.synchronize()
        line.append(digest(p.grad for p in model.parameters()))
        opt.step()
        opt.zero_grad(set_to_none=True)
    print(f"fused={args.fused} deterministic={args.deterministic} {args.dtype}: gradient digests per step "
          f"{' '.join(line)}; weights {digest(model.parameters())}")
    attention = sorted({e.name[:60] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
                        and kind_of(e.name) == "attention"})
    print(f"  attention kernels: {attention}")

    if args.fused:
        from kernels import fused_dense as fd
        mlp = model.transformer.h[0].mlp
        xs = torch.randn(4096, config.n_embd, device="cuda", generator=gen).to(dtype)
        gs = (torch.randn(4096, config.n_embd, device="cuda", generator=gen) * 1e-2).to(dtype)
        out0, pre0 = fd.linear_gelu(xs, mlp.c_fc.weight, mlp.c_fc.bias)
        dg0 = fd.linear_dgelu(gs, mlp.c_proj.weight, pre0)
        differ = 0
        for _ in range(args.repeats):
            out, pre = fd.linear_gelu(xs, mlp.c_fc.weight, mlp.c_fc.bias)
            dg = fd.linear_dgelu(gs, mlp.c_proj.weight, pre0)
            differ += not (torch.equal(out, out0) and torch.equal(pre, pre0) and torch.equal(dg, dg0))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fd.linear_gelu(xs, mlp.c_fc.weight, mlp.c_fc.bias)
            fd.linear_dgelu(gs, mlp.c_proj.weight, pre0)
            torch.cuda.synchronize()
        kernels = [e.name[:70] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        print(f"  in-process: {differ} of {args.repeats} repeats of the fused ops differ from the first; "
              f"digest {digest([out0, pre0, dg0])}; kernels: {kernels}")


if __name__ == "__main__":
    main()
