"""
Which cuBLASLt variant to use for each fused op of fused_dense.py: the top four algorithms of the heuristic
for each op at GPT-2 XL shapes (16 x 1024 tokens, d = 1600, bf16), timed against the plain PyTorch ops it
replaces; then GPT-2 XL forward + backward with the fastest variant of each (or the plain op where none wins)
against the model without fused ops.

    python bench/fused_algos.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fused_dense as fd  # noqa: E402
from model import GPT, GPT2_SIZES, GPTConfig, flops_per_token, peak_flops  # noqa: E402
from fused_check import rel_err, time_ms  # noqa: E402


def variants(op, *args):
    """{algo index: ms} for each algorithm cuBLASLt offers for op(*args, algo)."""
    times = {}
    for algo in range(4):  # the heuristic's top four (#6 of linear_gelu crashed inside cuBLASLt on an H100)
        try:
            op(*args, algo)
        except RuntimeError:
            break
        times[algo] = time_ms(lambda: op(*args, algo))
    return times


def best(name, times, plain_ms):
    algo = min(times, key=times.get) if times else None
    listed = ", ".join(f"#{a} {t:.3f}" for a, t in times.items())
    print(f"{name}: plain {plain_ms:.3f} ms; cuBLASLt {listed}")
    return algo if algo is not None and times[algo] < plain_ms else None, (times[algo] if algo is not None else None)


def model_ms(model, x):
    def step():
        _, loss = model(x, targets=x)
        loss.backward()
    return time_ms(step, reps=3)


def main():
    torch.backends.cuda.matmul.allow_tf32 = True
    print(torch.cuda.get_device_name(), torch.__version__, torch.version.cuda)
    fd.load_extension()
    ops = torch.ops.gpt2_fused
    dtype, M, d = torch.bfloat16, 16 * 1024, 1600
    x = torch.randn(M, d, device="cuda", dtype=dtype)
    fc_w = torch.randn(4 * d, d, device="cuda", dtype=dtype) * 0.02
    fc_b = torch.randn(4 * d, device="cuda", dtype=dtype) * 0.02
    proj_w = torch.randn(d, 4 * d, device="cuda", dtype=dtype) * 0.02
    g = torch.randn(M, d, device="cuda", dtype=dtype) * 1e-2
    pre = torch.randn(M, 4 * d, device="cuda", dtype=dtype)

    choice, _ = best("linear_gelu", variants(ops.linear_gelu, x, fc_w, fc_b),
                     time_ms(lambda: fd.linear_gelu_reference(x, fc_w, fc_b)))
    fd.CHOICES["linear_gelu"] = choice
    plain = time_ms(lambda: fd.linear_dgelu_bgrad_reference(g, proj_w, pre))
    with_bgrad = best("linear_dgelu_bgrad (bias grad in epilogue)",
                      variants(lambda *a: ops.linear_dgelu_bgrad(*a[:3], True, a[3]), g, proj_w, pre), plain)
    without = best("linear_dgelu_bgrad (bias grad summed after)",
                   variants(lambda *a: ops.linear_dgelu_bgrad(*a[:3], False, a[3]), g, proj_w, pre), plain)
    candidates = [(t, algo, epi) for (algo, t), epi in ((with_bgrad, True), (without, False)) if algo is not None]
    if candidates:
        _, fd.CHOICES["dgelu"], fd.CHOICES["dgelu_bgrad_epilogue"] = min(candidates)
    else:
        fd.CHOICES["dgelu"] = None
    wins = []
    for name, n_out, n_in in (("qkv", 3 * d, d), ("attn proj", d, d), ("mlp fc", 4 * d, d), ("mlp proj", d, 4 * d)):
        go = torch.randn(M, n_out, device="cuda", dtype=dtype) * 1e-2
        inp = torch.randn(M, n_in, device="cuda", dtype=dtype)
        plain = time_ms(lambda: fd.wgrad_bgrad_reference(go, inp))
        times = variants(ops.wgrad_bgrad, go, inp)
        best(f"wgrad_bgrad {name}", times, plain)
        wins.append({a: plain - t for a, t in times.items()})
    total = {a: sum(w.get(a, -1e9) for w in wins) for a in wins[0]}
    top = max(total, key=total.get) if total else None
    fd.CHOICES["wgrad_bgrad"] = top if top is not None and total[top] > 0 else None
    print(f"chosen: {fd.CHOICES}")

    a, b = fd.linear_gelu(x, fc_w, fc_b), fd.linear_gelu_reference(x, fc_w, fc_b)
    c, e = fd.linear_dgelu_bgrad(g, proj_w, pre), fd.linear_dgelu_bgrad_reference(g, proj_w, pre)
    print("chosen vs plain, relative difference:",
          [f"{rel_err(p, q.float()):.1e}" for p, q in ((a[0], b[0]), (a[1], b[1]), (c[0], e[0]), (c[1], e[1]))])

    config = GPTConfig(**GPT2_SIZES["gpt2-xl"])
    with torch.device("cuda"):
        model = GPT(config).to(dtype)
    tokens = torch.randint(0, config.vocab_size, (16, 1024), device="cuda")
    peak = peak_flops(torch.cuda.get_device_name(), dtype)
    for compiled, fused in ((False, False), (False, True), (False, False), (False, True), (True, False),
                            (True, True)):
        if compiled and not model.transformer.h[0]._compiled_call_impl:
            for block in model.transformer.h:
                block.compile()
        model.set_fused_kernels(fused)
        ms = model_ms(model, tokens)
        tps = 16 * 1024 / ms * 1000
        print(f"GPT-2 XL forward+backward, 16 x 1024 tokens, compiled {compiled}, fused {fused}: {ms:.1f} ms, "
              f"{tps:,.0f} tok/s, MFU {tps * flops_per_token(config) / peak:.1%}", flush=True)


if __name__ == "__main__":
    main()
