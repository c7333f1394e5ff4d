"""Forward + backward time of causal attention at GPT-2 XL's shape (25 heads of 64, seq 1024) for each SDPA
backend that runs on this GPU, and FlashAttention-4 (`flash_attn.cute`) where it is installed; the fastest one
is what model.py should use.

The inputs are what model.py feeds attention: q, k and v are strided views of one (B, T, 3C) c_attn output, and
the output is made (B, T, C)-contiguous for c_proj; the gradient flows back into the c_attn output. Each
backend's largest error in the output and in that gradient, against fp32 math on the same inputs, is printed
beside its time.

    python bench/sdpa_backends.py --batch_size 16
"""
import argparse
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

try:
    from flash_attn.cute.interface import flash_attn_func
except ImportError:
    flash_attn_func = None

N_HEAD, HEAD_DIM, SEQ = 25, 64, 1024


def sdpa_attention(backend):
    def attend(qkv):
        B, T, C3 = qkv.shape
        q, k, v = (t.view(B, T, N_HEAD, HEAD_DIM).transpose(1, 2) for t in qkv.split(C3 // 3, dim=2))
        with sdpa_kernel([backend]) if backend else torch.enable_grad():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).contiguous().view(B, T, C3 // 3)
    return attend


def fa4_attention(qkv):
    # FlashAttention takes (B, T, H, D): the split views as they are, and its output is already (B, T, C)
    B, T, C3 = qkv.shape
    q, k, v = (t.view(B, T, N_HEAD, HEAD_DIM) for t in qkv.split(C3 // 3, dim=2))
    y = flash_attn_func(q, k, v, causal=True)
    y = y[0] if isinstance(y, tuple) else y
    return y.reshape(B, T, C3 // 3)


def errors(attend, dtype, batch_size=2):
    """Largest absolute error of the output and of the c_attn-output gradient against fp32 math."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    # rounded to dtype first, so that the reference sees the same inputs and only the attention's error shows
    qkv = torch.randn(batch_size, SEQ, 3 * N_HEAD * HEAD_DIM, device="cuda", generator=gen).to(dtype).float()
    grad = torch.randn(batch_size, SEQ, N_HEAD * HEAD_DIM, device="cuda", generator=gen).to(dtype).float()
    ref_in = qkv.clone().requires_grad_(True)
    ref = sdpa_attention(SDPBackend.MATH)(ref_in)
    ref.backward(grad)
    low_in = qkv.to(dtype).requires_grad_(True)
    out = attend(low_in)
    out.backward(grad.to(dtype))
    return (out.float() - ref).abs().max().item(), (low_in.grad.float() - ref_in.grad).abs().max().item()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    B, T = args.batch_size, SEQ
    flops = 4 * B * N_HEAD * T * T * HEAD_DIM / 2 * 3.5  # causal: half the scores; backward ~2.5x forward
    candidates = [("default", sdpa_attention(None)), ("flash", sdpa_attention(SDPBackend.FLASH_ATTENTION)),
                  ("cudnn", sdpa_attention(SDPBackend.CUDNN_ATTENTION)),
                  ("efficient", sdpa_attention(SDPBackend.EFFICIENT_ATTENTION))]
    if flash_attn_func is not None:
        candidates.append(("flash-attn-4", fa4_attention))
    else:
        print("flash-attn-4 not installed (pip install flash-attn-4[cu13]): its row is left out")
    for dtype in (torch.bfloat16, torch.float16):
        qkv = torch.randn(B, T, 3 * N_HEAD * HEAD_DIM, device="cuda", dtype=dtype, requires_grad=True)
        grad = torch.randn(B, T, N_HEAD * HEAD_DIM, device="cuda", dtype=dtype)
        for name, attend in candidates:
            try:
                start_first = time.perf_counter()
                attend(qkv).backward(grad)
                torch.cuda.synchronize()
                first_s = time.perf_counter() - start_first
                for _ in range(3):
                    attend(qkv).backward(grad)
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.iters):
                    attend(qkv).backward(grad)
                end.record()
                end.synchronize()
                ms = start.elapsed_time(end) / args.iters
                out_err, grad_err = errors(attend, dtype)
                print(f"{str(dtype):15} {name:13} {ms:7.3f} ms  {flops / ms / 1e9:6.0f} TFLOP/s  "
                      f"first call {first_s:6.2f} s  max error: out {out_err:.2e} grad {grad_err:.2e}")
            except (RuntimeError, AssertionError, NotImplementedError) as e:
                print(f"{str(dtype):15} {name:13} unavailable: {str(e).splitlines()[0][:100]}")


if __name__ == "__main__":
    main()
