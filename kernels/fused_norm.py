"""
The residual add and the LayerNorm after it in one Triton kernel each way, at every place GPT-2 has them: after a
block's attention (ln_2), between blocks (the next block's ln_1) and before the head (ln_f). The model carries
the residual stream as a pair (x, delta) whose sum is formed inside the next LayerNorm's kernel.

Plain PyTorch spends, per GPT-2 XL micro-step of 16 x 1024 tokens, ~6 ms in LayerNorm's forward, ~6 ms in its
input gradient, ~8 ms in its weight and bias gradients (a separate reduction over every row) and ~7 ms in the
residual adds of forward and backward (bench/NOTES.md, 4-GPU profile). Forward here: s = x + delta and
y = LayerNorm(s) from one read of x and delta. Backward: LayerNorm's input gradient plus the gradient that
reaches s along the residual stream, in one pass that also keeps partial sums of the weight and bias gradients
over its rows; one small kernel then finishes both sums (2.7 -> 0.5 ms per micro-step against torch's reductions
and casts, one H200). Measured on one H100 at XL width (16,384 rows): forward 0.112 -> 0.074 ms, backward 0.196
-> 0.120 ms; the model alone 329.5 -> 320.2 ms per micro-step.

The backward's grid is sized to the programs the GPU holds at once, read from the registers of the compiled kernel:
one more fp32 accumulator (the delta bias's, below) took it from 4 to 3 programs per SM, and a fixed grid of 512
programs then ran in 1.29 waves: 124.5 us a call instead of 92.2 with the fitted grid (one H200, in the model).

The projection that makes delta may leave its bias to the kernel (delta_bias: s = x + delta + delta_bias), which then
also sums that bias's gradient from the rows of the sum's gradient it has anyway; the model does so wherever the
kernels run, which removes two bias-gradient reductions per layer (bench/NOTES.md: with the fitted grid the model
alone -1.6% per micro-step, the trainer on one H200 +2.3%).

The arithmetic is the plain path's: the sum is rounded to the 16-bit dtype before it is normalised, statistics
and gradients in fp32. `add_layer_norm_reference` is that plain path (any device and dtype, no Triton); the CPU
tests run the kernels in Triton's interpreter against it.
"""
import torch
import torch.nn.functional as F

from kernels.fused_dense import relative_error

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs; the reference path computes the same
    triton = None

# launch settings: the fastest of those bench/fused_check.py times (1 x H100, XL width; within ~10% of each other);
# in the model, with the fitted grid below, 4 and 8 backward warps ran equally fast (one H200)
FORWARD_WARPS = 4
BACKWARD_WARPS = 8
# backward: each program sums the weight/bias gradients of a run of rows before writing one partial row. At least
# this many rows (the partials stay <= 1/32 of the gradient's size), more where the GPU cannot hold all programs at
# once: a second, partial wave of programs ran the XL backward at 3/4 of its speed (bench/NOTES.md)
MIN_ROWS_PER_PROGRAM = 32
PARTIALS_BLOCK_P, PARTIALS_BLOCK_N = 32, 32  # sum_partials: rows and columns a program sums at once
_ready = False  # set by enable() once the kernels have compiled and passed their check on this GPU


def residual_sum(x, delta, delta_bias=None):
    """x + delta (+ delta_bias), the residual stream's sum as plain PyTorch forms it."""
    return x + delta if delta_bias is None else x + delta + delta_bias


def add_layer_norm_reference(x, delta, delta_bias, weight, bias, eps):
    s = residual_sum(x, delta, delta_bias)
    return s, F.layer_norm(s, (s.size(-1),), weight, bias, eps)


if triton is not None:
    @triton.jit
    def add_ln_fwd_kernel(x_ptr, delta_ptr, delta_bias_ptr, w_ptr, b_ptr, s_ptr, y_ptr, mean_ptr, rstd_ptr, eps,
                          N: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr,
                          HAS_DELTA_BIAS: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        x = tl.load(x_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        delta = tl.load(delta_ptr + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_DELTA_BIAS:
            delta += tl.load(delta_bias_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        s16 = (x + delta).to(s_ptr.dtype.element_ty)
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

    @triton.jit(do_not_specialize=["ROWS"])  # one compile whatever the rows per program
    def add_ln_bwd_kernel(s_ptr, dy_ptr, ds_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, dw_ptr, db_ptr, ddelta_bias_ptr,
                          M, ROWS, N: tl.constexpr, BLOCK: tl.constexpr, HAS_DS: tl.constexpr,
                          HAS_BIAS: tl.constexpr, HAS_DELTA_BIAS: tl.constexpr):
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        mask = cols < N
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK,), tl.float32)
        db = tl.zeros((BLOCK,), tl.float32)
        ddelta_bias = tl.zeros((BLOCK,), tl.float32)
        for i in range(ROWS):
            row = (pid * ROWS + i).to(tl.int64)
            m = mask & (row + tl.zeros((BLOCK,), tl.int64) < M)  # a block, not a scalar: Triton 3.9's interpreter
            s = tl.load(s_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * N + cols, mask=m, other=0.0).to(tl.float32)
            # rows past the end: any in-bounds statistics will do, everything they touch is masked
            mean = tl.load(mean_ptr + tl.minimum(row, M - 1))
            rstd = tl.load(rstd_ptr + tl.minimum(row, M - 1))
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
            ddelta_bias += dx  # the gradient of every row of delta, so of a bias added to each
        tl.store(dw_ptr + pid * N + cols, dw, mask=mask)
        if HAS_BIAS:
            tl.store(db_ptr + pid * N + cols, db, mask=mask)
        if HAS_DELTA_BIAS:
            tl.store(ddelta_bias_ptr + pid * N + cols, ddelta_bias, mask=mask)

    @triton.jit
    def sum_partials_kernel(parts_ptr, out_ptr, P, N, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr):
        """out[k, :] = parts[k].sum(0) for parts (K, P, N) in fp32, rounded once to out's dtype."""
        pid_n, k = tl.program_id(0), tl.program_id(1).to(tl.int64)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_P, BLOCK_N), tl.float32)
        for p in range(0, P, BLOCK_P):
            rows = p + tl.arange(0, BLOCK_P)
            mask = (rows[:, None] < P) & (cols[None, :] < N)
            acc += tl.load(parts_ptr + (k * P + rows[:, None]) * N + cols[None, :], mask=mask, other=0.0)
        tl.store(out_ptr + k * N + cols, tl.sum(acc, 0).to(out_ptr.dtype.element_ty), mask=cols < N)


def programs_per_sm(registers, warps, props):
    """Programs of `warps` warps using `registers` per thread that one SM of a GPU with CUDA device properties
    `props` holds at once (registers are handed out per warp in units of 256; shared memory is not the limit for
    these kernels, whose blocks fit in registers)."""
    per_warp = -(-registers * 32 // 256) * 256
    return max(1, min(props.regs_per_multiprocessor // (per_warp * warps),
                      props.max_threads_per_multi_processor // (32 * warps)))


def backward_rows_per_program(M, resident_programs):
    """Rows per backward program for M rows such that the grid fits in the programs a GPU holds at once (None: no
    limit, as in Triton's interpreter)."""
    rows = MIN_ROWS_PER_PROGRAM if resident_programs is None else -(-M // resident_programs)
    return max(MIN_ROWS_PER_PROGRAM, rows)


_resident_programs = {}  # (GPU, compile-time choices) -> backward programs the GPU holds at once


def resident_backward_programs(args, constants):
    """How many programs of the backward kernel compiled for `args` and `constants` the GPU holds at once; the
    kernel is compiled (not run) to read its registers. None off a GPU."""
    device = args[0].device
    if device.type != "cuda":
        return None
    key = (device.index, args[10], args[0].dtype, args[1].dtype, tuple(sorted(constants.items())))
    if key not in _resident_programs:
        kernel = add_ln_bwd_kernel.warmup(*args, **constants, grid=(1,))
        kernel._init_handles()
        props = torch.cuda.get_device_properties(device)
        per_sm = programs_per_sm(kernel.n_regs, constants["num_warps"], props)
        _resident_programs[key] = props.multi_processor_count * per_sm
    return _resident_programs[key]


def sum_partials(parts, dtype):
    """parts.sum(-2) in `dtype` for fp32 partial sums (P, N) or (K, P, N) that the kernels left one row per program:
    one launch instead of a reduction and a cast for each."""
    out = torch.empty(parts.shape[:-2] + parts.shape[-1:], device=parts.device, dtype=dtype)
    K = parts.numel() // (parts.size(-2) * parts.size(-1))
    sum_partials_kernel[(triton.cdiv(parts.size(-1), PARTIALS_BLOCK_N), K)](
        parts, out, parts.size(-2), parts.size(-1), BLOCK_P=PARTIALS_BLOCK_P, BLOCK_N=PARTIALS_BLOCK_N)
    return out


class AddLayerNorm(torch.autograd.Function):
    """(s, LayerNorm(s)) with s = x + delta (+ delta_bias, a vector added to every row) for 2-D 16-bit x and delta
    on a GPU, through the kernels above."""

    @staticmethod
    def forward(ctx, x, delta, delta_bias, weight, bias, eps):
        M, N = x.shape
        s, y = torch.empty_like(x), torch.empty_like(x)
        mean = torch.empty(M, device=x.device, dtype=torch.float32)
        rstd = torch.empty_like(mean)
        add_ln_fwd_kernel[(M,)](x, delta, delta_bias if delta_bias is not None else weight, weight,
                                bias if bias is not None else weight, s, y, mean, rstd, eps, N=N,
                                BLOCK=triton.next_power_of_2(N), HAS_BIAS=bias is not None,
                                HAS_DELTA_BIAS=delta_bias is not None, num_warps=FORWARD_WARPS)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.has_bias, ctx.has_delta_bias = bias is not None, delta_bias is not None
        ctx.set_materialize_grads(False)  # ln_f's sum is used by nothing else: no zeros to read in backward
        return s, y

    @staticmethod
    def backward(ctx, ds, dy):
        s, weight, mean, rstd = ctx.saved_tensors
        M, N = s.shape
        dx = torch.empty_like(s)
        names = ["weight"] + ["bias"] * ctx.has_bias + ["delta_bias"] * ctx.has_delta_bias
        dy = dy.contiguous() if dy is not None else torch.zeros_like(s)
        constants = dict(N=N, BLOCK=triton.next_power_of_2(N), HAS_DS=ds is not None, HAS_BIAS=ctx.has_bias,
                         HAS_DELTA_BIAS=ctx.has_delta_bias, num_warps=BACKWARD_WARPS)
        ds = ds.contiguous() if ds is not None else s  # a stand-in the kernel does not read
        args = [s, dy, ds, weight, mean, rstd, dx, mean, mean, mean, M, 1]  # partials' pointers: stand-ins to compile
        rows = backward_rows_per_program(M, resident_backward_programs(args, constants))
        programs = triton.cdiv(M, rows)
        parts = torch.empty(len(names), programs, N, device=s.device, dtype=torch.float32)
        partials = dict(zip(names, parts))  # each gradient's partial sums, one row per program
        args[7:12] = partials["weight"], partials.get("bias", parts[0]), partials.get("delta_bias", parts[0]), M, rows
        add_ln_bwd_kernel[(programs,)](*args, **constants)
        sums = dict(zip(names, sum_partials(parts, weight.dtype)))
        return dx, dx, sums.get("delta_bias"), sums["weight"], sums.get("bias"), None


def uses_kernels(fused, x):
    """Whether add_layer_norm(..., fused) runs the kernels for x: then the linear that makes delta may leave its
    bias to them (delta_bias), which saves that bias gradient's own reduction over every row."""
    return fused and _ready and _can_fuse(x)


def add_layer_norm(x, delta, norm, fused, delta_bias=None):
    """(s, norm(s)) with s = x + delta + delta_bias for a LayerNorm module `norm`; delta None means 0 (and then
    delta_bias must be None), delta_bias None means no bias. Through the kernels where they can run, else plain
    PyTorch."""
    if delta is None:
        return x, norm(x)
    if uses_kernels(fused, x):
        shape = x.shape
        s, y = AddLayerNorm.apply(x.reshape(-1, shape[-1]).contiguous(), delta.reshape(-1, shape[-1]).contiguous(),
                                  delta_bias, norm.weight, norm.bias, norm.eps)
        return s.view(shape), y.view(shape)
    return add_layer_norm_reference(x, delta, delta_bias, norm.weight, norm.bias, norm.eps)


def _can_fuse(x):
    return x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)


GRADIENT_NAMES = ("s", "y", "dx", "ddelta", "ddelta_bias", "dweight", "dbias")  # what forward_backward returns


def forward_backward(fn, x, delta, delta_bias, weight, bias, ds, dy, eps=1e-5):
    """(s, y, and the gradients of x, delta, delta_bias, weight, bias; None for an input that is None) of
    fn(x, delta, delta_bias, weight, bias, eps) for incoming gradients ds (None: s is used by nothing else) and dy."""
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None
              for t in (x, delta, delta_bias, weight, bias)]
    s, y = fn(*leaves, eps)
    if ds is None:
        y.backward(dy)
    else:
        torch.autograd.backward((s, y), (ds, dy))
    return (s, y) + tuple(t.grad if t is not None else None for t in leaves)


def self_test(device="cuda", n=1600, rows=100):
    """Forward and backward against the plain path in both 16-bit types, with and without a residual gradient and
    a bias added to delta; raises on a mismatch."""
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        def randn(*shape, scale=1.0):
            return (torch.randn(shape, device=device, generator=gen) * scale).to(dtype)

        x, delta = randn(rows, n), randn(rows, n, scale=0.5)
        weight, bias = randn(n, scale=0.2) + 1, randn(n, scale=0.1)
        dy = randn(rows, n, scale=0.1)
        for ds, delta_bias in ((randn(rows, n, scale=0.1), randn(n, scale=0.1)), (None, None)):
            want = forward_backward(add_layer_norm_reference, x, delta, delta_bias, weight, bias, ds, dy)
            got = forward_backward(AddLayerNorm.apply, x, delta, delta_bias, weight, bias, ds, dy)
            for name, g, ref in zip(GRADIENT_NAMES, got, want):
                err = relative_error(g, ref) if ref is not None else 0.0
                if not err < 2e-2:
                    raise RuntimeError(f"the fused add + LayerNorm's check failed ({dtype}, {name}: error {err:.1e})")


def enable():
    """Compile the kernels and check them on this GPU; afterwards add_layer_norm(fused=True) uses them. Raises
    (and stays off) where Triton is missing or the check fails."""
    global _ready
    if triton is None:
        raise RuntimeError("Triton is not installed")
    self_test()
    _ready = True
