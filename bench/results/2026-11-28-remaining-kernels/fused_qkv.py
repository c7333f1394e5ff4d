"""
(Experiment of the eighth session, measured and not kept: bench/NOTES.md. Was importable from the repository root
and wired into model.py's attention as `split_heads(x, self.c_attn, self.n_head, self.fused)`; this is the second
version, timed in call 3, by exp.py beside it. Its imports follow the kernels/ package since.)

The attention's input projection c_attn with its output split into query, key and value heads, whose backward
gathers the three head gradients into one matrix and sums c_attn's bias gradient in the same pass (one Triton
kernel). Plain autograd copies each head gradient back to rows, concatenates the three, then reads the result
once more for the bias gradient's reduction.
"""
import torch
import torch.nn.functional as F

from kernels.fused_dense import relative_error
from kernels.fused_norm import sum_partials

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None

ROWS_PER_PROGRAM = 256
BLOCK_ROWS, WARPS = 32, 4
_ready = False


if triton is not None:
    @triton.jit
    def gather_heads_kernel(src_ptr, out_ptr, part_ptr, M, T, stride_b, stride_h, stride_t, col0,
                            OUT_N: tl.constexpr, D: tl.constexpr, ROWS: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr):
        """out[:, col0 + the program's columns] = those columns of src (B, H, T, D) as rows (b, t) with the heads
        side by side; part[program row] = their sum over the program's rows, in fp32. BLOCK_N divides D, so that
        a program's columns lie in one head and its loads are contiguous."""
        pid_n, pid_m = tl.program_id(0), tl.program_id(1)
        first = pid_n * BLOCK_N
        src_cols = (first // D) * stride_h + first % D + tl.arange(0, BLOCK_N)
        cols = first + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for r in range(0, ROWS, BLOCK_M):
            rows = (pid_m * ROWS + r + tl.arange(0, BLOCK_M)).to(tl.int64)
            mask = rows[:, None] < M
            g = tl.load(src_ptr + ((rows // T) * stride_b + (rows % T) * stride_t)[:, None] + src_cols[None, :],
                        mask=mask, other=0.0)
            tl.store(out_ptr + rows[:, None] * OUT_N + col0 + cols[None, :], g, mask=mask)
            acc += g.to(tl.float32)
        tl.store(part_ptr + pid_m * OUT_N + col0 + cols, tl.sum(acc, 0))


def gather_heads(dq, dk, dv):
    """(the (B, T, 3C) gradient of the projection's output, its sum over rows) from three (B, H, T, D) head
    gradients of any strides, through the kernel."""
    B, H, T, D = dq.shape
    C, M = H * D, B * T
    block_cols = min(D & -D, 64)  # the largest power of two that divides D, up to 64
    out = torch.empty(B, T, 3 * C, device=dq.device, dtype=dq.dtype)
    programs = triton.cdiv(M, ROWS_PER_PROGRAM)
    parts = torch.empty(programs, 3 * C, device=dq.device, dtype=torch.float32)
    for i, g in enumerate((dq, dk, dv)):
        if g.stride(3) != 1:
            g = g.contiguous()
        gather_heads_kernel[(C // block_cols, programs)](
            g, out, parts, M, T, g.stride(0), g.stride(1), g.stride(2), i * C, OUT_N=3 * C, D=D,
            ROWS=ROWS_PER_PROGRAM, BLOCK_M=BLOCK_ROWS, BLOCK_N=block_cols, num_warps=WARPS)
    return out, sum_partials(parts, dq.dtype)


def heads(t, n_head):
    """(B, T, C) -> (B, n_head, T, C / n_head), a view."""
    B, T, C = t.shape
    return t.view(B, T, n_head, C // n_head).transpose(1, 2)


class SplitHeadsLinear(torch.autograd.Function):
    """q, k, v heads of x W^T + b (W: (3C, C)) for 3-D 16-bit x on a GPU; backward through gather_heads."""

    @staticmethod
    def forward(ctx, x, weight, bias, n_head):
        qkv = F.linear(x, weight, bias)
        ctx.save_for_backward(x, weight)
        return tuple(heads(t, n_head) for t in qkv.split(weight.size(1), dim=2))

    @staticmethod
    def backward(ctx, dq, dk, dv):
        x, weight = ctx.saved_tensors
        grad_qkv, grad_bias = gather_heads(dq, dk, dv)
        rows = grad_qkv.view(-1, grad_qkv.size(-1))
        grad_weight = rows.t() @ x.reshape(-1, x.size(-1))
        return grad_qkv @ weight, grad_weight, grad_bias, None


def split_heads(x, linear, n_head, fused):
    if (fused and _ready and linear.bias is not None and torch.is_grad_enabled() and x.is_cuda
            and x.dtype in (torch.float16, torch.bfloat16)):
        return SplitHeadsLinear.apply(x, linear.weight, linear.bias, n_head)
    return tuple(heads(t, n_head) for t in linear(x).split(x.size(-1), dim=2))
