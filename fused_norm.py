"""
UNMEASURED DRAFT (branch ln-kernel, sixth session): a block's residual add and the LayerNorm after it in one Triton
kernel each way. Forward: s = x + r and y = LayerNorm(s) from one read of x and r. Backward: the gradient reaching
s from the residual stream is added to LayerNorm's input gradient in the same pass, and each program keeps partial
sums of the weight and bias gradients over its rows (no separate GammaBeta reduction, no separate residual add).
Per GPT-2 XL micro-step the plain path spends ~12 ms in LayerNorm, ~8 ms in its weight gradients and ~7 ms in
backward's residual adds (bench/NOTES.md, 4 x H200 profile); how much of that this saves is not measured yet.

`add_layer_norm_reference` is the plain path (CPU, fp32, no Triton); the CPU tests run the kernels in Triton's
interpreter against it.
"""
import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

ROWS_PER_PROGRAM = 32  # backward: rows whose weight/bias gradients one program sums before writing a partial
_ready = False


def add_layer_norm_reference(x, r, weight, bias, eps):
    s = x + r
    return s, F.layer_norm(s, (s.size(-1),), weight, bias, eps)


if triton is not None:
    @triton.jit
    def add_ln_fwd_kernel(x_ptr, r_ptr, w_ptr, b_ptr, s_ptr, y_ptr, mean_ptr, rstd_ptr, eps,
                          N: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(r_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        s16 = (x + r).to(s_ptr.dtype.element_ty)
        tl.store(s_ptr + row * N + cols, s16, mask=mask)
        s = s16.to(tl.float32)  # normalise the rounded sum, as the plain path does
        mean = tl.sum(s, 0) / N
        d = tl.where(mask, s - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(d * d, 0) / N + eps)
        y = d * rstd * tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * N + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(mean_ptr + row, mean)
        tl.store(rstd_ptr + row, rstd)

    @triton.jit
    def add_ln_bwd_kernel(s_ptr, dy_ptr, ds_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, M,
                          N: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, HAS_DS: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK,), tl.float32)
        db = tl.zeros((BLOCK,), tl.float32)
        for i in range(ROWS):
            row = (pid * ROWS + i).to(tl.int64)
            m = mask & (row < M)
            s = tl.load(s_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + row, mask=row < M, other=0.0)
            rstd = tl.load(rstd_ptr + row, mask=row < M, other=0.0)
            xhat = tl.where(m, (s - mean) * rstd, 0.0)
            wdy = w * dy
            c1 = tl.sum(xhat * wdy, 0) / N
            c2 = tl.sum(wdy, 0) / N
            dx = (wdy - (xhat * c1 + c2)) * rstd
            if HAS_DS:
                dx += tl.load(ds_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
            tl.store(dx_ptr + row * N + cols, dx.to(dx_ptr.dtype.element_ty), mask=m)
            dw += dy * xhat
            db += dy
        tl.store(dw_ptr + pid * N + cols, dw, mask=mask)
        tl.store(db_ptr + pid * N + cols, db, mask=mask)


class AddLayerNorm(torch.autograd.Function):
    """(x + r, LayerNorm(x + r)) for 2-D 16-bit x, r on a GPU, through the kernels above."""

    @staticmethod
    def forward(ctx, x, r, weight, bias, eps):
        M, N = x.shape
        block = triton.next_power_of_2(N)
        s, y = torch.empty_like(x), torch.empty_like(x)
        mean = torch.empty(M, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        add_ln_fwd_kernel[(M,)](x, r, weight, bias if bias is not None else weight, s, y, mean, rstd, eps, N=N,
                                BLOCK=block, HAS_BIAS=bias is not None, num_warps=8)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return s, y

    @staticmethod
    def backward(ctx, ds, dy):
        s, weight, mean, rstd = ctx.saved_tensors
        M, N = s.shape
        programs = triton.cdiv(M, ROWS_PER_PROGRAM)
        dx = torch.empty_like(s)
        dw = torch.empty(programs, N, device=s.device, dtype=torch.float32)
        db = torch.empty_like(dw)
        dy = dy if dy is not None else torch.zeros_like(s)
        add_ln_bwd_kernel[(programs,)](s, dy.contiguous(), ds.contiguous() if ds is not None else s, weight, mean,
                                       rstd, dx, dw, db, M, N=N, ROWS=ROWS_PER_PROGRAM,
                                       BLOCK=triton.next_power_of_2(N), HAS_DS=ds is not None, num_warps=8)
        dw = dw.sum(0).to(weight.dtype)
        db = db.sum(0).to(weight.dtype) if ctx.has_bias else None
        return dx, dx, dw, db, None


def add_layer_norm(x, r, norm, fused):
    """(x + r, norm(x + r)) for a LayerNorm module `norm`; the kernels where they can run, else plain PyTorch."""
    if fused and _ready and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
        shape = x.shape
        s, y = AddLayerNorm.apply(x.reshape(-1, shape[-1]), r.reshape(-1, shape[-1]), norm.weight, norm.bias,
                                  norm.eps)
        return s.view(shape), y.view(shape)
    return add_layer_norm_reference(x, r, norm.weight, norm.bias, norm.eps)


def self_test(device="cuda", n=1600, rows=100):
    """Forward and backward against the plain path in both 16-bit types; raises on a mismatch."""
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        def randn(*shape, scale=1.0):
            return (torch.randn(shape, device=device, generator=gen) * scale).to(dtype)

        x, r = randn(rows, n), randn(rows, n, scale=0.5)
        w, b = randn(n, scale=0.2) + 1, randn(n, scale=0.1)
        ds, dy = randn(rows, n, scale=0.1), randn(rows, n, scale=0.1)
        want = _forward_backward(add_layer_norm_reference, x, r, w, b, ds, dy)
        got = _forward_backward(lambda *a: AddLayerNorm.apply(*a), x, r, w, b, ds, dy)
        for name, g, ref in zip(("s", "y", "dx", "dr", "dw", "db"), got, want):
            err = ((g.float() - ref.float()).norm() / ref.float().norm()).item()
            if not err < 2e-2:
                raise RuntimeError(f"the fused add + LayerNorm's check failed ({dtype}, {name}: error {err:.1e})")


def _forward_backward(fn, x, r, w, b, ds, dy):
    x, r, w, b = (t.detach().clone().requires_grad_(True) for t in (x, r, w, b))
    s, y = fn(x, r, w, b, 1e-5)
    torch.autograd.backward((s, y), (ds, dy))
    return s, y, x.grad, r.grad, w.grad, b.grad


def enable():
    global _ready
    if triton is None:
        raise RuntimeError("Triton is not installed")
    self_test()
    _ready = True
