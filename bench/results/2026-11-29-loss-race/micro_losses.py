"""
Compare the per-micro-step losses that the trainer patched by run_loss_trace.sh (beside this script) prints
(`microloss IT hex ...`) between runs, bitwise: which iterations differ from the first log, and by how much.

    python bench/results/2026-11-29-loss-race/micro_losses.py DIR/straight-1.log DIR/straight-2.log
        DIR/first-half.log DIR/resumed.log
"""
import sys


def micro_losses(path):
    found = {}
    for line in open(path):
        if line.startswith("microloss "):
            it, *rest = line.split()[1:]
            found[int(it)] = [float.fromhex(v) for v in rest if v.startswith("0x")]  # micro-steps, mean, logged
    return found


def main():
    base_path, *others = sys.argv[1:]
    base = micro_losses(base_path)
    for path in others:
        other = micro_losses(path)
        common = sorted(set(base) & set(other))
        differ = [it for it in common if other[it] != base[it]]
        steps = sum(len(other[it]) - 2 for it in common)
        print(f"{path} against {base_path}: {steps} micro-step losses in {len(common)} iterations, "
              f"{len(differ)} iterations differ")
        for it in differ:
            pairs = [(i, a, b) for i, (a, b) in enumerate(zip(base[it][:-2], other[it][:-2])) if a != b]
            print(f"  iteration {it}: " + "; ".join(f"micro-step {i} {a:.6f} vs {b:.6f} ({b - a:+.6f})"
                                                   for i, a, b in pairs)
                  + f"; logged mean {base[it][-1]:.6f} vs {other[it][-1]:.6f}")


if __name__ == "__main__":
    main()
