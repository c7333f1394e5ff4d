"""
Generation speed with and without the KV cache, on the CPU, for a small GPT-2 (random weights: the compute is what
matters). Prints a markdown note; with --out DIR also writes it to DIR/kv_cache_cpu.md (this folder's is from
2026-11-27).

    python bench/results/2026-11-27-kv-cache-cpu/kv_cache.py --n_layer 6 --n_embd 384 --new_tokens 256 [--out DIR]
"""
import argparse
import datetime
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3)))  # the repository
from model import GPT, GPTConfig  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n_layer", type=int, default=6)
    parser.add_argument("--n_head", type=int, default=6)
    parser.add_argument("--n_embd", type=int, default=384)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--out", help="a folder to write kv_cache_cpu.md to (nothing is written without it)")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPTConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, block_size=1024)
    model = GPT(config).eval()
    prompt = torch.randint(0, config.vocab_size, (1, args.prompt))
    rows, outputs = [], {}
    for use_cache in (False, True):
        model.generate(prompt, 8, temperature=0, use_cache=use_cache)  # warm-up
        t0 = time.perf_counter()
        outputs[use_cache] = model.generate(prompt, args.new_tokens, temperature=0, use_cache=use_cache)
        seconds = time.perf_counter() - t0
        rows.append((use_cache, seconds, args.new_tokens / seconds))
    assert torch.equal(outputs[True], outputs[False]), "cache and no cache must give the same tokens"
    speedup = rows[0][1] / rows[1][1]
    note = [f"# KV cache: greedy generation on the CPU ({platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}), "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}",
            "",
            f"GPT-2 shape {args.n_layer} layers x {args.n_embd} wide ({model.get_num_params() / 1e6:.1f}M parameters), "
            f"fp32, prompt {args.prompt} tokens, {args.new_tokens} new tokens, batch 1. Same tokens with and without "
            "the cache (asserted).", "",
            "| KV cache | seconds | tokens/s |", "|---|---|---|"]
    note += [f"| {'on' if c else 'off'} | {s:.2f} | {r:.1f} |" for c, s, r in rows]
    note += ["", f"Speed-up: {speedup:.1f}x. Without the cache every new token re-runs the whole prefix, so the gap "
             "grows with the length of the sample."]
    text = "\n".join(note) + "\n"
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "kv_cache_cpu.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
