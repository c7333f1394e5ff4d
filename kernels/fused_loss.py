"""
The loss head's softmax cross-entropy in one Triton kernel. For each chunk of 4,096 rows the head's matmul writes
16-bit logits (4096 x 50304); plain PyTorch then converts them to fp32 and makes about eight passes over the
fp32 copy (logsumexp, subtract, exp, the one-hot, the mask, the cast back): ~11 GB of memory traffic per chunk
by count, 4.2 ms per chunk as measured, ~14 ms per GPT-2 XL micro-step of 16 x 1024 tokens (bench/NOTES.md). The
kernel reads each row twice and writes it once: the first pass finds the row's log-sum-exp (an online maximum and
sum in fp32), the second overwrites the logits with the gradient of the summed loss, softmax - one-hot, in the
logits' own dtype (0.57 ms per chunk).

The arithmetic is the plain path's (fp32 from the same 16-bit logits, gradient rounded to 16 bits once), so the
two agree to rounding; `softmax_xent_reference` is that plain path, used on the CPU, in fp32 and wherever Triton
is missing. The CPU tests run the kernel through Triton's interpreter against it.
"""
import torch

from kernels.fused_dense import relative_error

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs; the reference path computes the same
    triton = None

BLOCK = 4096  # columns per step of a row's loop (bench/fused_check.py times others)
NUM_WARPS = 8
_ready = False  # set by enable() once the kernel has compiled and passed its check on this GPU


def softmax_xent_reference(logits, targets, vocab_size, with_grad):
    """(loss per row, gradient of the rows' summed loss w.r.t. the logits or None), both fp32. Rows whose target
    is -1 get loss 0 and gradient 0; columns from vocab_size on are padding."""
    valid = targets != -1
    logits = logits.float()  # a copy for 16-bit logits; fp32 logits are updated in place
    logits[:, vocab_size:] = float("-inf")
    lse = torch.logsumexp(logits, dim=-1)
    safe = targets.clamp(min=0)
    loss = (lse - logits.gather(1, safe[:, None]).squeeze(1)) * valid
    if not with_grad:
        return loss, None
    probs = logits.sub_(lse[:, None]).exp_()  # softmax - one-hot: magnitudes <= 1
    probs[torch.arange(probs.size(0), device=probs.device), safe] -= 1.0
    return loss, probs * valid[:, None]


if triton is not None:
    @triton.jit
    def softmax_xent_kernel(logits_ptr, targets_ptr, loss_ptr, row_stride, vocab_size: tl.constexpr,
                            n_cols: tl.constexpr, WITH_GRAD: tl.constexpr, BLOCK: tl.constexpr):
        # the sizes are compile-time constants: one model has one vocabulary
        row = tl.program_id(0).to(tl.int64)
        ptr = logits_ptr + row * row_stride
        target = tl.load(targets_ptr + row)
        valid = target != -1
        safe = tl.where(valid, target, 0)
        row_max = tl.full((), float("-inf"), tl.float32)
        row_sum = tl.zeros((), tl.float32)
        for start in range(0, vocab_size, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(ptr + cols, mask=cols < vocab_size, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(row_max, tl.max(x, 0))
            row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(x - new_max), 0)
            row_max = new_max
        lse = row_max + tl.log(row_sum)
        target_logit = tl.load(ptr + safe).to(tl.float32)
        tl.store(loss_ptr + row, tl.where(valid, lse - target_logit, 0.0))
        if WITH_GRAD:
            # The gradient overwrites the logits in place, and a program's warps are not in step: without this
            # barrier the warp that owns the target's column could overwrite it before a slower warp has read the
            # target's logit, and that row's loss would come out as lse - (p - 1) (the gradient was right; the
            # logged loss of a micro-batch was off by up to 9e-4 in ~1 of 30 micro-steps, bench/NOTES.md).
            tl.debug_barrier()
            for start in range(0, n_cols, BLOCK):
                cols = start + tl.arange(0, BLOCK)
                x = tl.load(ptr + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
                p = tl.exp(x - lse)
                p = tl.where(cols == safe, p - 1.0, p)
                p = tl.where((cols < vocab_size) & valid, p, 0.0)
                tl.store(ptr + cols, p.to(logits_ptr.dtype.element_ty), mask=cols < n_cols)


def softmax_xent_fused(logits, targets, vocab_size, with_grad, block=BLOCK):
    """As softmax_xent_reference, through the kernel; with with_grad the logits are overwritten by the gradient
    (and returned as it)."""
    assert logits.dim() == 2 and logits.stride(1) == 1 and targets.dtype == torch.int64
    loss = torch.empty(logits.size(0), device=logits.device, dtype=torch.float32)
    softmax_xent_kernel[(logits.size(0),)](logits, targets, loss, logits.stride(0), vocab_size, logits.size(1),
                                           WITH_GRAD=with_grad, BLOCK=block, num_warps=NUM_WARPS)
    return loss, (logits if with_grad else None)


def softmax_xent(logits, targets, vocab_size, with_grad, fused):
    if fused and _ready and logits.is_cuda and logits.dtype in (torch.float16, torch.bfloat16):
        return softmax_xent_fused(logits, targets, vocab_size, with_grad)
    loss, grad = softmax_xent_reference(logits, targets, vocab_size, with_grad)
    return loss, (grad.to(logits.dtype) if grad is not None else None)


def self_test(vocab=5000, padded=5056, device="cuda"):
    """The kernel against the reference on 37 rows in both 16-bit types (rows with ignored targets and padding
    columns included); raises if they disagree beyond rounding."""
    gen = torch.Generator(device=device).manual_seed(0)
    rows = 37
    for dtype in (torch.bfloat16, torch.float16):
        logits = (torch.randn(rows, padded, device=device, generator=gen) * 3).to(dtype)
        targets = torch.randint(0, vocab, (rows,), device=device, generator=gen)
        targets[::7] = -1
        want_loss, want_grad = softmax_xent_reference(logits.clone(), targets, vocab, True)
        got_loss, got_grad = softmax_xent_fused(logits.clone(), targets, vocab, True)
        loss_err = ((got_loss - want_loss).abs().max() / want_loss.abs().max()).item()
        grad_err = relative_error(got_grad, want_grad)
        if not (loss_err < 1e-4 and grad_err < 2e-2):
            raise RuntimeError(f"the fused cross-entropy's check failed ({dtype}: loss error {loss_err:.1e}, "
                               f"gradient error {grad_err:.1e})")


def enable(vocab, padded):
    """Compile the kernel for this vocabulary and check it on this GPU; afterwards softmax_xent(fused=True) uses
    it. Raises (and stays off) where Triton is missing or the check fails."""
    global _ready
    if triton is None:
        raise RuntimeError("Triton is not installed")
    self_test(vocab, padded)
    _ready = True
