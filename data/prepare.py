"""
Turn your own text into token bins for train_deepspeed.py.

    python data/prepare.py --name mydata --input notes.txt more/*.jsonl [--val_fraction 0.005 | --val_input val.txt]

Each `.txt` file is one document; each line of a `.jsonl` file is one document (its `text` field). Documents
are GPT-2 BPE encoded and each is followed by <|endoftext|>. Output: data/<name>/train.bin and val.bin
(uint16 token ids, np.memmap-able) and meta.json. Input is streamed in chunks of about 1 MB, so memory stays
bounded whatever the file size. Without --val_input, the last `val_fraction` of the tokens become val.
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, TokenizerUnavailable, gpt2_encoding  # noqa: E402

CHUNK_CHARS = 1 << 20
BIN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; halves disk and memory against int32


def find_safe_cut(text, end):
    """The largest cut <= end where BPE pre-tokenization of the two sides equals that of the whole.

    GPT-2's pre-tokenizer never joins a lone newline that follows a non-space character with what comes
    after it when that is a non-space character, so cutting right after such a newline cannot change the
    ids. Returns 0 if there is no such place before `end`.
    """
    cut = text.rfind("\n", 0, end - 1)
    while cut > 0:
        if not text[cut - 1].isspace() and not text[cut + 1].isspace():
            return cut + 1
        cut = text.rfind("\n", 0, cut)
    return 0


def split_text(text, chunk_chars=CHUNK_CHARS):
    """Pieces of `text` (concatenating to it) of about chunk_chars, cut where tokenization is unaffected."""
    start = 0
    while len(text) - start > chunk_chars:
        cut = find_safe_cut(text, start + chunk_chars)
        if cut <= start:  # no safe place in this stretch: take the first one after it
            cut = next((c + 1 for c in _newlines_after(text, start + chunk_chars)
                        if not text[c - 1].isspace() and not text[c + 1].isspace()), len(text))
        yield text[start:cut]
        start = cut
    if start < len(text):
        yield text[start:]


def _newlines_after(text, pos):
    pos = text.find("\n", pos)
    while 0 < pos < len(text) - 1:
        yield pos
        pos = text.find("\n", pos + 1)


def not_utf8(path, e):
    return SystemExit(f"error: {path} is not UTF-8 text ({e.reason}); convert it first, "
                      f"e.g. iconv -f latin1 -t utf-8 {path} > converted.txt")


def iter_txt_pieces(path, chunk_chars=CHUNK_CHARS):
    """Stream one .txt document as text pieces that tokenize independently."""
    carry = ""
    with open(path, encoding="utf-8") as f:
        while True:
            try:
                block = f.read(chunk_chars)
            except UnicodeDecodeError as e:
                raise not_utf8(path, e) from None
            if not block:
                break
            carry += block
            cut = find_safe_cut(carry, len(carry))
            if cut:
                yield carry[:cut]
                carry = carry[cut:]
    if carry:
        yield carry


def iter_documents(paths, chunk_chars=CHUNK_CHARS):
    """Yield (pieces of one document, its size in bytes read) for every non-empty document."""
    for path in paths:
        if path.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                for line_no, line in enumerate(_lines(f, path), 1):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise SystemExit(f"error: {path}:{line_no} is not a JSON object with a 'text' field ({e}); "
                                         "fix or remove that line") from None
                    if not isinstance(text, str):
                        raise SystemExit(f"error: {path}:{line_no}: 'text' is a {type(text).__name__}, not a string; "
                                         "fix or remove that line")
                    if text:
                        yield list(split_text(text, chunk_chars)), len(line.encode("utf-8"))
        elif path.endswith(".txt"):
            if os.path.getsize(path) > 0:
                yield iter_txt_pieces(path, chunk_chars), None
        else:
            raise SystemExit(f"error: {path}: only .txt and .jsonl inputs are supported; convert it to one of them")


def _lines(f, path):
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


class BinWriter:
    """Appends uint16 token ids to a file."""

    def __init__(self, path):
        self.path = path
        self.file = open(path, "wb")
        self.count = 0

    def write(self, ids):
        arr = np.asarray(ids, dtype=BIN_DTYPE)
        arr.tofile(self.file)
        self.count += arr.size

    def close(self):
        self.file.close()


def encode_documents(paths, writer, separator=True, chunk_chars=CHUNK_CHARS, desc="tokenizing"):
    """Tokenize documents from `paths` into `writer`; returns the number of documents."""
    enc = tokenizer_or_exit()
    total_bytes = sum(os.path.getsize(p) for p in paths)
    n_docs = 0
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
        for pieces, nbytes in iter_documents(paths, chunk_chars):
            for piece in pieces:
                writer.write(enc.encode_ordinary(piece))
                if nbytes is None:
                    bar.update(len(piece.encode("utf-8")))
            if nbytes is not None:
                bar.update(nbytes)
            if separator:
                writer.write([EOT_TOKEN])
            n_docs += 1
    return n_docs


def split_tail(train_path, val_path, val_tokens):
    """Move the last val_tokens ids of train_path into val_path, in bounded memory."""
    itemsize = np.dtype(BIN_DTYPE).itemsize
    size = os.path.getsize(train_path) // itemsize
    start = size - val_tokens
    with open(train_path, "rb") as src, open(val_path, "wb") as dst:
        src.seek(start * itemsize)
        while True:
            block = src.read(CHUNK_CHARS * itemsize)
            if not block:
                break
            dst.write(block)
    os.truncate(train_path, start * itemsize)


def write_meta(path, train_tokens, val_tokens, **extra):
    meta = {"tokenizer": "gpt2", "vocab_size": GPT2_VOCAB_SIZE, "dtype": np.dtype(BIN_DTYPE).name,
            "eot_token": EOT_TOKEN, "train_tokens": int(train_tokens), "val_tokens": int(val_tokens), **extra}
    with open(path, "w") as f:
        json.dump(meta, f, indent=2)
    return meta


OUTPUTS = ("train.bin", "val.bin", "meta.json")


@contextlib.contextmanager
def staged_outputs(out_dir):
    """Paths to write train.bin, val.bin and meta.json to. They replace the dataset's files only when the block
    finishes, meta.json last; an error or Ctrl-C leaves the previous dataset as it was. (A kill between the
    renames leaves bins that disagree with meta.json, which the trainer detects.)"""
    os.makedirs(out_dir, exist_ok=True)
    staged = {name: os.path.join(out_dir, f".{name}.part") for name in OUTPUTS}
    try:
        yield staged
        for name in OUTPUTS:
            os.replace(staged[name], os.path.join(out_dir, name))
    finally:
        for path in staged.values():
            if os.path.exists(path):
                os.remove(path)


def tokenizer_or_exit():
    try:
        return gpt2_encoding()
    except TokenizerUnavailable as e:
        raise SystemExit(f"error: {e}") from None


def prepare(name, inputs, out_root, val_fraction=0.005, val_inputs=None, chunk_chars=CHUNK_CHARS):
    for path in list(inputs) + list(val_inputs or []):
        if not os.path.isfile(path):
            raise SystemExit(f"error: input file {path} does not exist; check the path")
    if not val_inputs and not 0.0 < val_fraction < 1.0:
        raise SystemExit(f"error: --val_fraction must be between 0 and 1 (got {val_fraction}), or give --val_input")
    out_dir = os.path.join(out_root, name)
    with staged_outputs(out_dir) as paths:
        train = BinWriter(paths["train.bin"])
        try:
            n_docs = encode_documents(inputs, train, chunk_chars=chunk_chars, desc="train")
        finally:
            train.close()
        if val_inputs:
            val = BinWriter(paths["val.bin"])
            try:
                n_val_docs = encode_documents(val_inputs, val, chunk_chars=chunk_chars, desc="val")
            finally:
                val.close()
            train_tokens, val_tokens = train.count, val.count
        else:
            n_val_docs = None
            val_tokens = int(train.count * val_fraction)
            split_tail(paths["train.bin"], paths["val.bin"], val_tokens)
            train_tokens = train.count - val_tokens
        if train_tokens == 0 or val_tokens == 0:
            empty = "train" if train_tokens == 0 else "val"
            raise SystemExit(f"error: the {empty} split of {name} is empty ({train_tokens} train / {val_tokens} val "
                             "tokens); give more text, a larger --val_fraction, or a --val_input file")
        meta = write_meta(paths["meta.json"], train_tokens, val_tokens, documents=n_docs, val_documents=n_val_docs,
                          sources=[os.path.abspath(p) for p in inputs])
    print(f"{name}: {n_docs:,} documents -> {train_tokens:,} train tokens, {val_tokens:,} val tokens in {out_dir}")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="dataset name; output goes to <out_root>/<name>/")
    parser.add_argument("--input", nargs="+", required=True, help=".txt or .jsonl files")
    parser.add_argument("--val_fraction", type=float, default=0.005, help="share of tokens held out (tail)")
    parser.add_argument("--val_input", nargs="+", help="separate validation .txt/.jsonl files")
    parser.add_argument("--out_root", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    prepare(args.name, args.input, args.out_root, args.val_fraction, args.val_input)


if __name__ == "__main__":
    main()
