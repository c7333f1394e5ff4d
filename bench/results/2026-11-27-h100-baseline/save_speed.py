"""
How fast torch.save writes what one rank of a GPT-2 XL ZeRO-2 checkpoint on 4 GPUs holds (a quarter of the
fp32 master weights and Adam moments, 4.7 GB, and on rank 0 the 16-bit module, 3.1 GB), from the GPU, with
torch.save's zip CRC32 on and off and with pinned or pageable device-to-host copies. One process; the file goes
to --dir and is deleted after each try.

    python bench/results/2026-11-27-h100-baseline/save_speed.py --dir /tmp
"""
import argparse
import os
import time

import torch
import torch.utils.serialization.config as save_config

XL_PARAMS = 1_557_611_200


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default="/tmp")
    parser.add_argument("--gpus", type=int, default=4, help="ZeRO-2 partitions the optimizer state this many ways")
    args = parser.parse_args()
    part = XL_PARAMS // args.gpus
    state = {"optimizer": {"fp32_master": torch.randn(part, device="cuda"),
                           "exp_avg": torch.randn(part, device="cuda"), "exp_avg_sq": torch.rand(part, device="cuda")},
             "module": torch.randn(XL_PARAMS, device="cuda", dtype=torch.float16)}
    size = sum(t.numel() * t.element_size() for t in [*state["optimizer"].values(), state["module"]])
    path = os.path.join(args.dir, "save_speed.pt")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: one rank's share, {size / 1e9:.2f} GB")
    for crc, pinned in [(True, False), (False, False), (False, True), (True, False), (False, False), (False, True)]:
        save_config.save.compute_crc32 = crc
        save_config.save.use_pinned_memory_for_d2h = pinned
        torch.cuda.synchronize()
        t0 = time.time()
        torch.save(state, path)
        seconds = time.time() - t0
        os.remove(path)
        print(f"crc32 {'on ' if crc else 'off'} | {'pinned  ' if pinned else 'pageable'} d2h | {seconds:5.2f} s | "
              f"{size / seconds / 1e9:.2f} GB/s", flush=True)


if __name__ == "__main__":
    main()
