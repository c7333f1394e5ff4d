"""
Loss and learning-rate curves of a run, from DeepSpeed's CSV monitor files in out_dir/logs/csv.

    python plot.py out-shakespeare-xl          # writes out-shakespeare-xl/loss.png (running or finished run)

train_deepspeed.py calls this at the end of a run when csv_log and plot are on.
"""
import csv
import os
import sys

import numpy as np


def read_series(csv_dir, name):
    """{step: value} from one DeepSpeed CSV monitor file; later rows win (a resumed run logs again)."""
    path = os.path.join(csv_dir, f"{name}.csv")
    series = {}
    if not os.path.isfile(path):
        return series
    with open(path) as f:
        for row in csv.reader(f):
            if len(row) == 2 and row[0] != "step":  # a resumed run repeats the header
                series[int(float(row[0]))] = float(row[1])
    return dict(sorted(series.items()))


def tokens_at(tokens, step):
    """Tokens seen after `step` iterations, from the {iterations done: tokens seen} series that is logged every
    log_interval iterations: linear between logged points (from 0 at 0, a fresh run's start), and past the last one at
    the last interval's rate (a running run's evals can be newer than its last log line)."""
    if step in tokens or not tokens:
        return tokens.get(step, 0)
    steps = sorted({0, *tokens})
    seen = [tokens.get(s, 0) for s in steps]
    if step <= steps[-1]:
        return float(np.interp(step, steps, seen))
    rate = (seen[-1] - seen[-2]) / (steps[-1] - steps[-2])
    return seen[-1] + (step - steps[-1]) * rate


def plot_run(out_dir, path=None):
    """Write the PNG and return its path, or None when the run has logged nothing yet."""
    import logging
    # matplotlib's first use on a machine builds its font cache and says so on stderr (5.5 s on an H200 machine,
    # while the final checkpoint was being written): nothing to act on, in a new user's first run
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_dir = os.path.join(out_dir, "logs", "csv")
    train = read_series(csv_dir, "Train_loss")
    lr = read_series(csv_dir, "Train_lr")
    tokens = read_series(csv_dir, "Train_tokens_seen")
    evals = {name: read_series(csv_dir, f"Eval_{name}_loss") for name in ("train", "val")}
    if not train and not evals["val"]:
        return None

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, use_tokens in ((axes[0], False), (axes[1], True)):
        def xs(steps):
            return [tokens_at(tokens, s) / 1e6 for s in steps] if use_tokens else list(steps)
        if train:
            ax.plot(xs(train), list(train.values()), lw=0.8, alpha=0.6, label="train loss (iteration)")
        for name, marker in (("train", "s"), ("val", "o")):
            if evals[name]:
                ax.plot(xs(evals[name]), list(evals[name].values()), marker=marker, label=f"{name} loss (eval)")
        ax.set_xlabel("tokens seen (millions)" if use_tokens else "iteration")
        ax.set_ylabel("cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("loss against iterations")
    axes[1].set_title("loss against tokens seen")
    if lr:
        axes[2].plot(list(lr), list(lr.values()), color="tab:green")
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("learning rate")
    axes[2].set_title("learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[2].grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.abspath(out_dir)))
    fig.tight_layout()
    path = path or os.path.join(out_dir, "loss.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv):
    def fail(message):  # bad input: one line, exit code 2 as train_deepspeed.py
        print(message, file=sys.stderr)
        sys.exit(2)

    if argv in (["-h"], ["--help"]):
        print(__doc__.strip())
        return
    if len(argv) != 1 or argv[0].startswith("-"):
        fail("usage: python plot.py OUT_DIR")
    out_dir = argv[0]
    if not os.path.exists(out_dir):
        fail(f"error: folder {out_dir} does not exist; give a run's out_dir")
    if not os.path.isdir(out_dir):
        fail(f"error: {out_dir} is not a folder; give a run's out_dir")
    written = plot_run(out_dir)
    if written is None:
        fail(f"error: {out_dir}/logs/csv holds no metrics yet; run with csv_log=True")
    print(written)


if __name__ == "__main__":
    main(sys.argv[1:])
