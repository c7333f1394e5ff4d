"""
Tiny Shakespeare as GPT-2 tokens, by nanoGPT's recipe: the first 90% of the characters are train, the rest
val, each encoded with GPT-2 BPE `encode_ordinary` (no <|endoftext|>). Gives 301,966 train and 36,059 val
tokens, nanoGPT's published counts.

    python data/shakespeare/prepare.py                 # downloads input.txt if it is not here
    python data/shakespeare/prepare.py --input PATH    # offline: use a local copy
"""
import argparse
import os
import sys
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from data.prepare import (BinWriter, InputError, bad_input_exits_2, split_text, staged_outputs,  # noqa: E402
                          tokenizer_or_exit, write_meta)

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9


def download(path, url=URL):
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as e:
        raise SystemExit(f"error: could not download Tiny Shakespeare from {url} ({e}); "
                         "pass a local copy with --input /path/to/input.txt") from None
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def prepare(input_path=None, out_dir=HERE):
    os.makedirs(out_dir, exist_ok=True)
    if input_path is None:
        input_path = os.path.join(out_dir, "input.txt")
        if not os.path.exists(input_path):
            download(input_path)
    elif not os.path.isfile(input_path):
        raise InputError(f"error: {input_path} does not exist; give the path of Tiny Shakespeare's input.txt")
    with open(input_path, encoding="utf-8") as f:
        text = f.read()
    n = len(text)
    enc = tokenizer_or_exit()
    counts = {}
    with staged_outputs(out_dir) as paths:
        for split, part in (("train", text[:int(n * TRAIN_FRACTION)]), ("val", text[int(n * TRAIN_FRACTION):])):
            writer = BinWriter(paths[f"{split}.bin"])
            for piece in split_text(part):
                writer.write(enc.encode_ordinary(piece))
            writer.close()
            counts[split] = writer.count
        write_meta(paths["meta.json"], counts["train"], counts["val"], source=os.path.abspath(input_path))
    print(f"shakespeare: {counts['train']:,} train tokens, {counts['val']:,} val tokens in {out_dir}")
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="local copy of input.txt (skips the download)")
    parser.add_argument("--out_dir", default=HERE)
    args = parser.parse_args()
    with bad_input_exits_2():
        prepare(args.input, args.out_dir)
