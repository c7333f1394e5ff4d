"""
The cuBLASLt fused ops of fused_dense.py on a GPU, against what they replace:
1. build (or cache load) time of the extension;
2. each primitive at GPT-2 XL shapes (16 x 1024 tokens, d = 1600) in bf16 and fp16: its error against an fp32
   computation from the same inputs, next to the error of the plain PyTorch path, and the time of each;
3. gradients of a whole model (GPT-2-medium shapes, 4 x 1024 tokens) in bf16 with and without the fused ops,
   each compared with the fp32 model's;
4. GPT-2 XL forward + backward of 16 x 1024 tokens (model.py alone, bf16) without and with them, eager and with
   compiled blocks;
5. fused_loss.py's Triton cross-entropy on one chunk of the loss head (4096 x 50304 logits) against the plain
   path (errors against an fp32 computation, time), for a few block sizes;
6. fused_norm.py's Triton residual add + LayerNorm at XL width (16 x 1024 rows of 1600) against the plain path
   (errors against float64, forward and backward times, a few launch configurations).

    python bench/fused_check.py > fused_check.txt       (exits 1 if a fused result is off)
"""
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels import fused_dense as fd  # noqa: E402
from kernels import fused_loss as fl  # noqa: E402
from kernels import fused_norm as fn  # noqa: E402
from model import GPT, GPT2_SIZES, GPTConfig, flops_per_token, peak_flops  # noqa: E402


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def check_primitives(dtype, M=16 * 1024, d=1600):
    torch.manual_seed(0)
    dev = "cuda"
    x = torch.randn(M, d, device=dev).to(dtype)
    fc_w = (torch.randn(4 * d, d, device=dev) * 0.02).to(dtype)
    fc_b = (torch.randn(4 * d, device=dev) * 0.02).to(dtype)
    proj_w = (torch.randn(d, 4 * d, device=dev) * 0.02).to(dtype)
    grad_out = (torch.randn(M, d, device=dev) * 1e-2).to(dtype)
    pre = (torch.randn(M, 4 * d, device=dev)).to(dtype)
    f32 = [t.float() for t in (x, fc_w, fc_b, proj_w, grad_out, pre)]
    X, FW, FB, PW, G, P = f32
    worst = 0.0
    rows = []

    def compare(name, fused_outs, plain_outs, want_outs, fused_fn, plain_fn):
        nonlocal worst
        for i, (f, p, w) in enumerate(zip(fused_outs, plain_outs, want_outs)):
            ef, ep = fd.relative_error(f, w), fd.relative_error(p, w)
            worst = max(worst, ef / max(ep, 1e-4))
            rows.append(f"  {name}[{i}] {tuple(f.shape)}: error vs fp32 fused {ef:.2e}, plain {ep:.2e}")
        tf, tp = time_ms(fused_fn), time_ms(plain_fn)
        rows.append(f"  {name}: fused {tf:.3f} ms, plain {tp:.3f} ms ({tp - tf:+.3f} ms saved)")

    want_pre = torch.nn.functional.linear(X, FW, FB)
    want = (torch.nn.functional.gelu(want_pre, approximate="tanh"), want_pre)
    compare("linear_gelu", fd.linear_gelu(x, fc_w, fc_b), fd.linear_gelu_reference(x, fc_w, fc_b), want,
            lambda: fd.linear_gelu(x, fc_w, fc_b), lambda: fd.linear_gelu_reference(x, fc_w, fc_b))
    want = (torch.ops.aten.gelu_backward(G @ PW, P, approximate="tanh"),)
    compare("linear_dgelu", (fd.linear_dgelu(grad_out, proj_w, pre),),
            (fd.linear_dgelu_reference(grad_out, proj_w, pre),), want,
            lambda: fd.linear_dgelu(grad_out, proj_w, pre), lambda: fd.linear_dgelu_reference(grad_out, proj_w, pre))
    # DeepSpeed's parameters are views into flat buffers: the same products from matrices that are only 16-byte
    # aligned (cuBLASLt is told their real alignment and may pick another algorithm) must agree with the above.
    shifted_worst = 0.0

    def misaligned(t):
        return torch.empty(t.numel() + 8, device=dev, dtype=dtype)[8:].view_as(t).copy_(t)

    for name, aligned, shifted in (
            ("linear_gelu", fd.linear_gelu(x, fc_w, fc_b), fd.linear_gelu(misaligned(x), misaligned(fc_w), fc_b)),
            ("linear_dgelu", (fd.linear_dgelu(grad_out, proj_w, pre),),
             (fd.linear_dgelu(misaligned(grad_out), misaligned(proj_w), pre),))):
        for i, (a, s) in enumerate(zip(aligned, shifted)):
            err = fd.relative_error(s, a)
            shifted_worst = max(shifted_worst, err)
            rows.append(f"  {name}[{i}] from 16-byte aligned inputs vs 256-byte aligned: relative difference "
                        f"{err:.2e}{' (bitwise equal)' if torch.equal(s, a) else ''}")
    xs, ws, gs, ps = misaligned(x), misaligned(fc_w), misaligned(grad_out), misaligned(proj_w)
    rows.append(f"  16-byte aligned inputs: linear_gelu {time_ms(lambda: fd.linear_gelu(xs, ws, fc_b)):.3f} ms, "
                f"linear_dgelu {time_ms(lambda: fd.linear_dgelu(gs, ps, pre)):.3f} ms")
    print(f"{dtype}: largest (fused error / plain error) = {worst:.2f}; largest difference between 16- and 256-byte "
          f"aligned inputs {shifted_worst:.2e}")
    print("\n".join(rows))
    return worst, shifted_worst


def check_model_grads():
    torch.manual_seed(0)
    config = GPTConfig(**GPT2_SIZES["gpt2-medium"])
    with torch.device("cuda"):
        ref = GPT(config)
    x = torch.randint(0, config.vocab_size, (4, 1024), device="cuda")
    results = {}
    for name, dtype, fused in (("fp32", torch.float32, False), ("bf16 plain", torch.bfloat16, False),
                               ("bf16 fused", torch.bfloat16, True)):
        model = copy.deepcopy(ref).to(dtype)
        model.set_fused_kernels(fused)
        _, loss = model(x, targets=x)
        loss.backward()
        results[name] = (loss.item(), {n: p.grad.float() for n, p in model.named_parameters()})
        del model
    loss32, grads32 = results["fp32"]
    worst = {}
    for name in ("bf16 plain", "bf16 fused"):
        loss, grads = results[name]
        errs = sorted(fd.relative_error(grads[n], grads32[n]) for n in grads32)
        worst[name] = errs[-1]
        print(f"model grads, {name}: loss {loss:.5f} (fp32 {loss32:.5f}); gradient error vs fp32 over "
              f"{len(errs)} tensors: median {errs[len(errs) // 2]:.2e}, largest {errs[-1]:.2e}")
    return worst["bf16 fused"] / worst["bf16 plain"]


def time_model():
    torch.backends.cuda.matmul.allow_tf32 = True
    config = GPTConfig(**GPT2_SIZES["gpt2-xl"])
    with torch.device("cuda"):
        model = GPT(config).to(torch.bfloat16)
    x = torch.randint(0, config.vocab_size, (16, 1024), device="cuda")
    peak = peak_flops(torch.cuda.get_device_name(), torch.bfloat16)

    def step():
        _, loss = model(x, targets=x)
        loss.backward()

    # plain, the fused MLP and cross-entropy (the sixth session's default), + the fused add & LayerNorm
    for compiled, fused, norm in ((False, False, False), (False, True, False), (False, True, True),
                                  (False, True, False), (False, True, True), (True, True, False), (True, True, True)):
        if compiled and model.transformer.h[0]._compiled_call_impl is None:
            for block in model.transformer.h:
                block.compile()
        model.set_fused_kernels(fused, norm=norm)
        label = ("fused MLP + cross-entropy + add & LayerNorm" if norm else "fused MLP + cross-entropy" if fused
                 else "plain")
        try:
            ms = time_ms(step, reps=3)
        except Exception as e:  # e.g. torch.compile tracing the Triton kernels
            print(f"GPT-2 XL, {'compiled' if compiled else 'eager'}, {label}: failed: {str(e)[:300]}", flush=True)
            continue
        tps = 16 * 1024 / ms * 1000
        print(f"GPT-2 XL forward+backward, 16 x 1024 tokens, {'compiled' if compiled else 'eager'}, "
              f"{label}: {ms:.1f} ms, {tps:,.0f} tok/s, MFU {tps * flops_per_token(config) / peak:.1%}", flush=True)


def check_loss(dtype, rows=4096, vocab=50257, padded=50304):
    torch.manual_seed(0)
    # logits of a trained-ish model: a few large values per row over a spread of small ones
    logits = (torch.randn(rows, padded, device="cuda") * 2).to(dtype)
    targets = torch.randint(0, vocab, (rows,), device="cuda")
    targets[::97] = -1
    want_loss, want_grad = fl.softmax_xent_reference(logits.float(), targets, vocab, True)  # fp32 throughout
    plain_loss, plain_grad = fl.softmax_xent(logits.clone(), targets, vocab, True, fused=False)
    fused_loss, fused_grad = fl.softmax_xent_fused(logits.clone(), targets, vocab, True)
    errors = {name: (fd.relative_error(loss, want_loss), fd.relative_error(grad, want_grad))
              for name, loss, grad in (("plain", plain_loss, plain_grad), ("fused", fused_loss, fused_grad))}
    times = {"plain": time_ms(lambda: fl.softmax_xent(logits.clone(), targets, vocab, True, fused=False)),
             "clone alone": time_ms(lambda: logits.clone())}
    for block in (2048, 4096, 8192, 16384):
        times[f"fused, block {block}"] = time_ms(lambda: fl.softmax_xent_fused(logits.clone(), targets, vocab, True,
                                                                              block=block))
    times["fused, no gradient"] = time_ms(lambda: fl.softmax_xent_fused(logits, targets, vocab, False))
    print(f"{dtype} cross-entropy of {rows} x {padded} logits: loss / gradient error vs fp32, plain "
          f"{errors['plain'][0]:.2e} / {errors['plain'][1]:.2e}, fused {errors['fused'][0]:.2e} / "
          f"{errors['fused'][1]:.2e}")
    print("  " + ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()) + " (each with a clone of the logits but "
          "the last)")
    return max(errors["fused"][i] / max(errors["plain"][i], 1e-6) for i in range(2))


def check_norm(rows=16 * 1024, n=1600):
    """The fused residual add + LayerNorm at XL width: errors against float64 next to the plain path's, and the
    GPU time of forward and backward of each (the fused kernels for a few launch configurations)."""
    torch.manual_seed(0)
    worst = 0.0
    for dtype in (torch.bfloat16, torch.float16):
        x, delta, delta_bias, weight, bias, ds, dy = [
            (torch.randn(*shape, device="cuda") * scale).to(dtype) for shape, scale in
            (((rows, n), 1.0), ((rows, n), 0.5), ((n,), 0.1), ((n,), 0.2), ((n,), 0.1), ((rows, n), 0.1),
             ((rows, n), 0.1))]
        weight += 1
        # as in a block (the projection's bias added here) and as ln_f (no residual gradient)
        for residual_grad in (ds, None):
            args = (x, delta, delta_bias, weight, bias, residual_grad, dy)
            exact = fn.forward_backward(fn.add_layer_norm_reference,
                                        *(t.double() if t is not None else None for t in args))
            plain = fn.forward_backward(fn.add_layer_norm_reference, *args)
            fused = fn.forward_backward(fn.AddLayerNorm.apply, *args)
            ratios = [fd.relative_error(f, e) / max(fd.relative_error(p, e), 1e-6)
                      for f, p, e in zip(fused, plain, exact)]
            worst = max(worst, *ratios)
            print(f"{dtype} add + LayerNorm {rows} x {n}, {'with' if residual_grad is not None else 'without'} a "
                  "residual gradient, error fused/plain vs float64: " + " ".join(
                      f"{name} {fd.relative_error(f, e):.1e}/{fd.relative_error(p, e):.1e}"
                      for name, f, p, e in zip(fn.GRADIENT_NAMES, fused, plain, exact)))
        # GPU time of the kernels alone (many calls queued; autograd's host work would hide it)
        s_ref = x + delta
        _, mean, rstd = torch.ops.aten.native_layer_norm(s_ref, [n], weight, bias, 1e-5)

        def plain_forward():  # the bias inside the projection's matmul, as the plain model has it
            F.layer_norm(x + delta, (n,), weight, bias, 1e-5)

        def plain_backward():  # and the projection's bias gradient reduced from the sum's gradient
            dx, _, _ = torch.ops.aten.native_layer_norm_backward(dy, s_ref, [n], mean, rstd, weight, bias,
                                                                  [True, True, True])
            (dx + ds).sum(0)

        with torch.no_grad():
            times = {"plain": (time_ms(plain_forward, reps=200), time_ms(plain_backward, reps=200))}
            launch_settings = fn.FORWARD_WARPS, fn.BACKWARD_WARPS, fn.MIN_ROWS_PER_PROGRAM
            for fwd_warps, bwd_warps, min_rows in ((4, 8, 32), (8, 8, 32), (4, 4, 16), (4, 8, 64), (4, 4, 32),
                                                   (8, 8, 16)):
                fn.FORWARD_WARPS, fn.BACKWARD_WARPS, fn.MIN_ROWS_PER_PROGRAM = fwd_warps, bwd_warps, min_rows
                ctx = type("Ctx", (), {})()
                ctx.set_materialize_grads = lambda _: None
                ctx.save_for_backward = lambda *t: setattr(ctx, "saved_tensors", t)
                fn.AddLayerNorm.forward(ctx, x, delta, delta_bias, weight, bias, 1e-5)
                times[f"fused, warps {fwd_warps} / {bwd_warps}, backward at least {min_rows} rows per program"] = (
                    time_ms(lambda: fn.AddLayerNorm.forward(ctx, x, delta, delta_bias, weight, bias, 1e-5), reps=200),
                    time_ms(lambda: fn.AddLayerNorm.backward(ctx, ds, dy), reps=200))
            fn.FORWARD_WARPS, fn.BACKWARD_WARPS, fn.MIN_ROWS_PER_PROGRAM = launch_settings
        for name, (forward, backward) in times.items():
            print(f"  {name}: forward {forward:.3f} ms, backward {backward:.3f} ms", flush=True)
    return worst


def main():
    print(torch.cuda.get_device_name(), torch.__version__, torch.version.cuda)
    print(f"extension built/loaded in {fd.load_extension():.1f} s")
    start = time.time()
    fl.enable(50257, 50304)
    print(f"Triton cross-entropy compiled and checked in {time.time() - start:.1f} s")
    loss_ratio = max(check_loss(torch.bfloat16), check_loss(torch.float16))
    start = time.time()
    fn.enable()
    print(f"Triton add + LayerNorm compiled and checked in {time.time() - start:.1f} s")
    norm_ratio = check_norm()
    (worst_bf16, shifted_bf16), (worst_fp16, shifted_fp16) = (check_primitives(torch.bfloat16),
                                                              check_primitives(torch.float16))
    worst, shifted = max(worst_bf16, worst_fp16), max(shifted_bf16, shifted_fp16)
    model_ratio = check_model_grads()
    time_model()
    ok = worst < 2.0 and model_ratio < 2.0 and shifted < 2e-3 and loss_ratio < 2.0 and norm_ratio < 2.0
    print(f"{'PASS' if ok else 'FAIL'}: fused errors at most {worst:.2f}x the plain path's (primitives), "
          f"{loss_ratio:.2f}x (cross-entropy), {norm_ratio:.2f}x (add + LayerNorm), {model_ratio:.2f}x "
          "(whole-model gradients); 16-byte aligned inputs "
          f"within {shifted:.1e} of aligned ones")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
