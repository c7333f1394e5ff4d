"""
Loss curves of trainer runs side by side, from their logs (the `iter N/M | loss X` lines): a plot and the
largest per-iteration difference from the first log. For checking that a speed change keeps the loss curve.

    python bench/curves.py plain.log fused.log --out curves.png
"""
import argparse
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LINE = re.compile(r"^iter (\d+)/\d+ \| loss (\S+)", re.M)


def losses(path):
    with open(path) as f:
        return {int(m[1]): float(m[2]) for m in LINE.finditer(f.read())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    curves = {path: losses(path) for path in args.logs}
    base = curves[args.logs[0]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for path, curve in curves.items():
        its = sorted(curve)
        ax.plot(its, [curve[i] for i in its], label=path.rsplit("/", 1)[-1], linewidth=1)
        common = [i for i in its if i in base]
        diff = max(abs(curve[i] - base[i]) for i in common)
        print(f"{path}: {len(curve)} iterations, loss {curve[its[0]]:.4f} -> {curve[its[-1]]:.4f}, "
              f"largest difference from {args.logs[0]}: {diff:.4f} over {len(common)} iterations")
    ax.set_xlabel("iteration")
    ax.set_ylabel("train loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
