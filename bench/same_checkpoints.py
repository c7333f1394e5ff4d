"""
How many tensors of two runs' checkpoints differ bitwise: every tensor in every .pt file of the tag (weights, fp32
master, Adam moments, RNG states), in file-name order. For bench/gpu_check.sh and
bench/results/2026-11-28-determinism/resume_ab.sh.

    python bench/same_checkpoints.py "two straight runs" /tmp/run-a /tmp/run-b [--tag final]
"""
import argparse
import glob
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checkpoint as ckpt  # noqa: E402


def tag_tensors(run_dir, tag):
    return [t for path in sorted(glob.glob(os.path.join(run_dir, tag, "*.pt")))
            for t in ckpt.tensors_in(torch.load(path, map_location="cpu", weights_only=True))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("label")
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--tag", default="final")
    args = parser.parse_args()
    ckpt.safe_loading()  # checkpoints are data: nothing in them runs
    a, b = tag_tensors(args.run_a, args.tag), tag_tensors(args.run_b, args.tag)
    differ = sum(not (x.shape == y.shape and torch.equal(x, y)) for x, y in zip(a, b))
    print(f"{args.label}: {len(a)} vs {len(b)} tensors in the {args.tag} checkpoints; differing: {differ}", flush=True)


if __name__ == "__main__":
    main()
