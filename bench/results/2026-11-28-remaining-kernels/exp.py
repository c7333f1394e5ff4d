"""Experiment of the eighth session (not product; bench/NOTES.md has the conclusions): cuBLASLt's algorithms for
the two GELU-epilogue matmuls (lt_sweep.cpp: fused_dense.cpp asking for up to 32 heuristic results), Triton
column sums against torch's sum(0), the q/k/v head gradients' concatenation with c_attn's bias gradient
(fused_qkv.py here), and fused_norm.sum_partials against torch. Timings of a CUDA graph's replays (graph_ms) are
GPU time; time_ms of eager calls includes host launch time for small kernels (call 1's column sums).

    python bench/results/2026-11-28-remaining-kernels/exp.py [sweep] [colsum] [qkv] [partials]      (on a GPU)

Its output is kernels-h200/call<N>_exp.txt. Since then the kernels moved into the kernels/ package; the imports
below follow them (not rerun on a GPU since).
"""
import itertools
import os
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.abspath(os.path.join(here, *[os.pardir] * 3))]  # fused_qkv here, the repository
from kernels import fused_dense as fd  # noqa: E402


def time_ms(fn, reps=20):
    for _ in range(3):
        fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    e.synchronize()
    return s.elapsed_time(e) / reps


def graph_ms(fn, reps=20):
    """GPU time of fn alone: captured once in a CUDA graph, replayed (no host launch overhead)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return time_ms(g.replay, reps)


def err(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def sweep():
    from torch.utils.cpp_extension import load
    torch.cuda.init()
    inc, lib = fd._cublaslt_paths()
    load(name="gpt2_sweep", sources=[os.path.join(here, "lt_sweep.cpp")], extra_include_paths=[inc],
         extra_cflags=["-O2"], extra_ldflags=[lib, f"-Wl,-rpath,{os.path.dirname(lib)}"], with_cuda=True,
         is_python_module=False)
    op = torch.ops.gpt2_sweep
    M, d = 16384, 1600
    for dtype in (torch.bfloat16, torch.float16):
        torch.manual_seed(0)
        x = torch.randn(M, d, device="cuda").to(dtype)
        fc_w = (torch.randn(4 * d, d, device="cuda") * 0.02).to(dtype)
        fc_b = (torch.randn(4 * d, device="cuda") * 0.02).to(dtype)
        proj_w = (torch.randn(d, 4 * d, device="cuda") * 0.02).to(dtype)
        g = (torch.randn(M, d, device="cuda") * 1e-2).to(dtype)
        pre = torch.randn(M, 4 * d, device="cuda").to(dtype)
        want_gelu = F.gelu(F.linear(x.float(), fc_w.float(), fc_b.float()), approximate="tanh")
        want_dgelu = torch.ops.aten.gelu_backward(g.float() @ proj_w.float(), pre.float(), approximate="tanh")
        print(f"{dtype}: plain F.linear c_fc {time_ms(lambda: F.linear(x, fc_w, fc_b)):.3f} ms, "
              f"plain g @ W {time_ms(lambda: g @ proj_w):.3f} ms")
        n = op.linear_gelu(x, fc_w, fc_b, 0)[2]
        for i in range(n):
            try:
                out = op.linear_gelu(x, fc_w, fc_b, i)
                t = time_ms(lambda: op.linear_gelu(x, fc_w, fc_b, i))
                print(f"  linear_gelu algo {i:2d}/{n}: {t:.3f} ms  err {err(out[0], want_gelu):.2e}")
            except RuntimeError as exc:
                print(f"  linear_gelu algo {i}: {str(exc).splitlines()[0][:100]}")
        n = op.linear_dgelu(g, proj_w, pre, 0)[1]
        for i in range(n):
            try:
                out = op.linear_dgelu(g, proj_w, pre, i)
                t = time_ms(lambda: op.linear_dgelu(g, proj_w, pre, i))
                print(f"  linear_dgelu algo {i:2d}/{n}: {t:.3f} ms  err {err(out[0], want_dgelu):.2e}")
            except RuntimeError as exc:
                print(f"  linear_dgelu algo {i}: {str(exc).splitlines()[0][:100]}")


@triton.jit
def colsum_kernel(x_ptr, part_ptr, M, N, stride, ROWS: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    pid_n, pid_m = tl.program_id(0), tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for r in range(0, ROWS, BLOCK_M):
        rows = pid_m * ROWS + r + tl.arange(0, BLOCK_M)
        m = (rows[:, None] < M) & (cols[None, :] < N)
        acc += tl.load(x_ptr + rows[:, None].to(tl.int64) * stride + cols[None, :], mask=m, other=0.0).to(tl.float32)
    tl.store(part_ptr + pid_m * N + cols, tl.sum(acc, 0), mask=cols < N)


def colsum(x, ROWS, BLOCK_M, BLOCK_N, warps):
    M, N = x.shape
    parts = torch.empty(triton.cdiv(M, ROWS), N, device=x.device, dtype=torch.float32)
    colsum_kernel[(triton.cdiv(N, BLOCK_N), parts.size(0))](x, parts, M, N, x.stride(0), ROWS=ROWS, BLOCK_M=BLOCK_M,
                                                            BLOCK_N=BLOCK_N, num_warps=warps)
    return parts.sum(0).to(x.dtype)


def colsums():
    M = 16384
    for N in (1600, 4800, 6400):
        x = torch.randn(M, N, device="cuda").to(torch.bfloat16)
        want = x.double().sum(0)
        gb = M * N * 2 / 1e9
        t = graph_ms(lambda: x.sum(0))
        print(f"N={N}: torch sum(0) {t * 1e3:.1f} us ({gb / t:.0f} GB/s... x1e3) err {err(x.sum(0), want):.2e}")
        best = []
        for ROWS, BM, BN, w in itertools.product((128, 256, 512), (16, 32, 64), (64, 128, 256), (4, 8)):
            if BM > ROWS or BM * BN > 16384:
                continue
            t = graph_ms(lambda: colsum(x, ROWS, BM, BN, w))
            best.append((t, ROWS, BM, BN, w, err(colsum(x, ROWS, BM, BN, w), want)))
        best.sort()
        for t, ROWS, BM, BN, w, e in best[:5]:
            print(f"  triton ROWS={ROWS} BM={BM} BN={BN} warps={w}: {t * 1e3:.1f} us ({gb / t:.0f}x1e3 GB/s) err {e:.2e}")


def qkv():
    B, T, H, D = 16, 1024, 25, 64
    C = H * D
    qkv = torch.randn(B, T, 3 * C, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = qkv.split(C, dim=2)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    grads = torch.autograd.grad(y, (q, k, v), torch.randn_like(y))
    for name, t in zip("qkv", grads):
        print(f"d{name}: shape {tuple(t.shape)} strides {t.stride()} contiguous {t.is_contiguous()}")
    dq, dk, dv = grads
    # the current backward of split + view + transpose
    base = lambda: torch.autograd.grad((q, k, v), qkv, grads, retain_graph=True)[0]  # noqa: E731
    t_base = time_ms(base)
    d = base()
    t_sum = graph_ms(lambda: d.view(-1, 3 * C).sum(0))
    t_cat = graph_ms(lambda: torch.cat([g.transpose(1, 2).reshape(B, T, C) for g in grads], dim=2))
    import fused_qkv
    t_new = graph_ms(lambda: fused_qkv.gather_heads(dq, dk, dv))
    out, bsum = fused_qkv.gather_heads(dq, dk, dv)
    print(f"graph-timed: cat of the three {t_cat * 1e3:.1f} us + sum {t_sum * 1e3:.1f} us; fused_qkv.gather_heads "
          f"{t_new * 1e3:.1f} us (equal {torch.equal(out, d)}, sum err {err(bsum, d.view(-1, 3 * C).double().sum(0)):.1e})")
    print(f"autograd split backward {t_base * 1e3:.1f} us, bias sum of it {t_sum * 1e3:.1f} us")
    want_sum = d.view(-1, 3 * C).double().sum(0)
    res = []
    for rows, bm, w in itertools.product((64, 128, 256, 512), (8, 16, 32, 64), (2, 4, 8)):
        if bm > rows:
            continue
        fused_qkv.ROWS_PER_PROGRAM, fused_qkv.BLOCK_ROWS, fused_qkv.WARPS = rows, bm, w
        out, bsum = fused_qkv.gather_heads(dq, dk, dv)
        ok = torch.equal(out, d) and err(bsum, want_sum) < 1e-2
        res.append((graph_ms(lambda: fused_qkv.gather_heads(dq, dk, dv)), rows, bm, w, ok))
    res.sort()
    for t, rows, bm, w, ok in res[:8]:
        print(f"  gather_heads ROWS={rows} BLOCK_ROWS={bm} warps={w}: {t * 1e3:.1f} us equal={ok}")


@triton.jit
def concat_colsum_kernel(src_ptr, out_ptr, part_ptr, M, T, sB, sH, sT, col0, OUT_N, C: tl.constexpr,
                         D: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_n, pid_m = tl.program_id(0), tl.program_id(1)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < C
    col_off = (cols // D) * sH + cols % D
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for r in range(0, ROWS, BLOCK_M):
        rows = (pid_m * ROWS + r + tl.arange(0, BLOCK_M)).to(tl.int64)
        m = (rows[:, None] < M) & cmask[None, :]
        src = (rows // T) * sB + (rows % T) * sT
        g = tl.load(src_ptr + src[:, None] + col_off[None, :], mask=m, other=0.0)
        tl.store(out_ptr + rows[:, None] * OUT_N + col0 + cols[None, :], g, mask=m)
        acc += g.to(tl.float32)
    tl.store(part_ptr + pid_m * OUT_N + col0 + cols, tl.sum(acc, 0), mask=cmask)


def qkv_concat_colsum(dq, dk, dv, ROWS, BM, BN, w):
    B, H, T, D = dq.shape
    C = H * D
    M = B * T
    out = torch.empty(B, T, 3 * C, device=dq.device, dtype=dq.dtype)
    parts = torch.empty(triton.cdiv(M, ROWS), 3 * C, device=dq.device, dtype=torch.float32)
    for i, g in enumerate((dq, dk, dv)):
        sB, sH, sT, sD = g.stride()
        assert sD == 1
        concat_colsum_kernel[(triton.cdiv(C, BN), parts.size(0))](g, out, parts, M, T, sB, sH, sT, i * C, 3 * C,
                                                                  C=C, D=D, ROWS=ROWS, BLOCK_M=BM, BLOCK_N=BN,
                                                                  num_warps=w)
    return out, parts.sum(0).to(dq.dtype)


def partials():
    from kernels import fused_norm
    parts = torch.randn(2, 512, 1600, device="cuda")
    want = parts.double().sum(1)
    t_torch = graph_ms(lambda: (parts[0].sum(0).to(torch.bfloat16), parts[1].sum(0).to(torch.bfloat16)))
    print(f"partials (2, 512, 1600): torch 2 x (sum + cast) {t_torch * 1e3:.1f} us")
    for bp, bn in itertools.product((16, 32, 64, 128), (16, 32, 64, 128)):
        fused_norm.PARTIALS_BLOCK_P, fused_norm.PARTIALS_BLOCK_N = bp, bn
        t = graph_ms(lambda: fused_norm.sum_partials(parts, torch.bfloat16))
        print(f"  sum_partials BLOCK_P={bp} BLOCK_N={bn}: {t * 1e3:.1f} us err "
              f"{err(fused_norm.sum_partials(parts, torch.bfloat16), want):.1e}")
    parts = torch.randn(64, 4800, device="cuda")
    t_torch = graph_ms(lambda: parts.sum(0).to(torch.bfloat16))
    fused_norm.PARTIALS_BLOCK_P, fused_norm.PARTIALS_BLOCK_N = 64, 32
    t = graph_ms(lambda: fused_norm.sum_partials(parts, torch.bfloat16))
    print(f"partials (64, 4800): torch {t_torch * 1e3:.1f} us, sum_partials {t * 1e3:.1f} us")


if __name__ == "__main__":
    what = sys.argv[1:] or ["sweep", "colsum", "qkv"]
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)
    if "sweep" in what:
        sweep()
    if "colsum" in what:
        colsums()
    if "qkv" in what:
        qkv()
    if "partials" in what:
        partials()
