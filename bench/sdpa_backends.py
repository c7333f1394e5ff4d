"""Forward + backward time of causal attention at GPT-2 XL's shape (25 heads of 64, seq 1024) for each SDPA
backend that runs on this GPU; the fastest one is what train_deepspeed.py should leave PyTorch to pick.

    python bench/sdpa_backends.py --batch_size 16
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    B, H, T, D = args.batch_size, 25, 1024, 64
    for dtype in (torch.bfloat16, torch.float16):
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        grad = torch.randn(B, H, T, D, device="cuda", dtype=dtype)
        flops = 4 * B * H * T * T * D / 2 * 3.5  # causal: half the scores; backward ~2.5x forward
        for backend in (None, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
            try:
                ctx = sdpa_kernel([backend]) if backend else torch.enable_grad()
                with ctx:
                    for _ in range(3):
                        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)
                    torch.cuda.synchronize()
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    for _ in range(20):
                        F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)
                    end.record()
                    end.synchronize()
                ms = start.elapsed_time(end) / 20
                print(f"{str(dtype):15} {str(backend or 'default'):35} {ms:7.2f} ms  {flops / ms / 1e9:6.0f} TFLOP/s")
            except RuntimeError as e:
                print(f"{str(dtype):15} {str(backend):35} unavailable: {str(e).splitlines()[0][:80]}")


if __name__ == "__main__":
    main()
