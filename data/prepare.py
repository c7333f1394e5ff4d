"""
Turn your own text into token bins for train_deepspeed.py.

    python data/prepare.py --name mydata --input notes.txt more/*.jsonl [--val_fraction 0.005 | --val_input val.txt]

Each `.txt` file is one document; each line of a `.jsonl` file is one document (its `text` field). Documents
are GPT-2 BPE encoded and each is followed by <|endoftext|>. Output: data/<name>/train.bin and val.bin
(uint16 token ids, np.memmap-able) and meta.json.

Prompt/completion data: `.jsonl` lines with `prompt` and `completion` fields (the first line of the first `.jsonl`
input decides the dataset's format; then every input is such a file and every line has both fields). Each example
is the prompt's tokens, the completion's and <|endoftext|> (prompt and completion encoded apart, as sampling
encodes a prompt). Besides the token bins: `<split>.mask.bin`, uint8, one per token: 1 where the token is trained
on as a target (a completion token or the closing <|endoftext|>), 0 for a prompt token; and `<split>.idx.bin`,
uint64, the offset in `<split>.bin` where each example starts. meta.json says "format": "prompt_completion" and
counts, per split, the examples, prompt and completion tokens (the closing <|endoftext|> among them) and the
examples that do not fit a window of train_deepspeed.py's default 1024 positions (a window of T positions holds an
example of up to T + 1 tokens: its last token is only a target). The val split takes whole examples. Input is streamed in chunks of about 1 MB, so memory stays
bounded whatever the file size. Without --val_input, the last `val_fraction` of the tokens become val: with
several inputs, that is the end of the last one(s); give --val_input to choose val yourself.
Bad input (a missing file, bad JSONL, non-UTF-8 text, an empty split) exits 2, as train_deepspeed.py does,
with the previous dataset untouched.
"""
import argparse
import contextlib
import json
import os
import re
import sys

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tokenizer import EOT_TOKEN, GPT2_VOCAB_SIZE, TokenizerUnavailable, gpt2_encoding  # noqa: E402

CHUNK_CHARS = 1 << 20
BIN_DTYPE = np.uint16  # GPT-2's 50257 ids fit; halves disk and memory against int32
MASK_DTYPE = np.uint8  # prompt/completion data: 1 = trained on as a target
IDX_DTYPE = np.uint64  # prompt/completion data: where each example starts
PROMPT_COMPLETION = "prompt_completion"
DEFAULT_WINDOW = 1024  # train_deepspeed.py's default block_size, against which meta.json counts long examples
EXIT_BAD_INPUT = 2  # as train_deepspeed.py's
INPUT_KINDS = (".txt", ".jsonl")
# tiktoken's pre-tokenizer overflows its stack (a Rust panic, not an exception) on whitespace runs of about a
# million characters; a piece cannot be cut inside a run without changing its tokens, so such runs are refused
LONGEST_WHITESPACE = 100_000
LONG_WHITESPACE = re.compile(r"\s{%d,}" % (LONGEST_WHITESPACE + 1))
JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "a bool", list: "an array",
              dict: "an object", type(None): "null"}


class InputError(SystemExit):
    """Bad input, with a one-line message: main() prints it and exits 2. A SystemExit, so that a script calling
    prepare() without catching it still stops with the message (exit 1)."""


@contextlib.contextmanager
def bad_input_exits_2():
    try:
        yield
    except InputError as e:
        print(e, file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def plural(n, noun):
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


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
    with open(path, "rb") as f:
        utf16 = f.read(2) in (b"\xff\xfe", b"\xfe\xff")  # its byte-order mark
    source = "UTF-16" if utf16 else "latin1"
    return InputError(f"error: {path} is not UTF-8 text ({e.reason}{'; it is UTF-16' if utf16 else ''}); convert it "
                      f"first, e.g. iconv -f {source} -t utf-8 {path} > converted.txt")


def iter_txt_pieces(path, chunk_chars=CHUNK_CHARS):
    """Stream one .txt document as text pieces that tokenize independently."""
    carry = ""
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark is no text
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


def input_kind(path):
    """".txt" or ".jsonl", whatever the case of the extension (UP.TXT is a .txt)."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in INPUT_KINDS:
        raise InputError(f"error: {path}: only .txt and .jsonl inputs are supported; convert it to one of them")
    return kind


def jsonl_object(line, where, wanted):
    """One JSONL line as a dict, or a one-line error naming what is wrong with it."""
    try:
        obj = json.loads(line.rstrip("\r\n"))  # so that a column past the end is on this line, not the next
    except json.JSONDecodeError as e:
        raise InputError(f"error: {where} is not valid JSON ({e.msg}, column {e.colno}); "
                         "fix or remove that line") from None
    if not isinstance(obj, dict):
        raise InputError(f"error: {where} is {JSON_TYPES[type(obj)]}, not an object with {wanted}; "
                         "fix or remove that line")
    return obj


def string_field(obj, key, where, hint=""):
    if key not in obj:
        fields = ", ".join(repr(k) for k in list(obj)[:5]) + (", ..." if len(obj) > 5 else "")
        raise InputError(f"error: {where} has no {key!r} field (it has {fields or 'none'}){hint}; "
                         "fix or remove that line")
    if not isinstance(obj[key], str):
        raise InputError(f"error: {where}: {key!r} is {JSON_TYPES[type(obj[key])]}, not a string; "
                         "fix or remove that line")
    return obj[key]


def jsonl_text(line, where):
    """The 'text' field of one JSONL line, or a one-line error naming what is wrong with it."""
    obj = jsonl_object(line, where, "a 'text' field")
    mixed = "prompt" in obj or "completion" in obj
    return string_field(obj, "text", where, "; the dataset is text (its first .jsonl line decides): prepare the "
                                            "prompt/completion lines as a dataset of their own" if mixed else "")


def jsonl_example(line, where):
    """(prompt, completion) of one JSONL line, or a one-line error naming what is wrong with it."""
    obj = jsonl_object(line, where, "'prompt' and 'completion' fields")
    hint = "; every line of a prompt/completion dataset needs 'prompt' and 'completion'"
    prompt, completion = string_field(obj, "prompt", where, hint), string_field(obj, "completion", where, hint)
    if not prompt:
        raise InputError(f"error: {where}: 'prompt' is empty; an example needs a prompt (its first token is never "
                         "predicted); fix or remove that line")
    return prompt, completion


def input_format(paths):
    """PROMPT_COMPLETION when the first line of the first .jsonl input has a 'prompt' or 'completion' field and
    no 'text' field, else "text"."""
    for path in paths:
        if input_kind(path) != ".jsonl":
            continue
        with open(path, encoding="utf-8-sig") as f:
            for line in _lines(f, path):
                if line.strip():
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        return "text"  # encoding the line reports it
                    pairs = isinstance(obj, dict) and "text" not in obj and ("prompt" in obj or "completion" in obj)
                    return PROMPT_COMPLETION if pairs else "text"
    return "text"


class Skipped:
    """Empty documents: how many, and where the first few are. Not all of them: memory stays bounded."""

    def __init__(self, shown=3):
        self.count, self.first, self.shown = 0, [], shown

    def add(self, where):
        self.count += 1
        if len(self.first) < self.shown:
            self.first.append(where)

    def __str__(self):
        more = ", ..." if self.count > len(self.first) else ""
        return f"skipped {plural(self.count, 'empty document')} ({', '.join(self.first)}{more})"


def iter_documents(paths, chunk_chars=CHUNK_CHARS, skipped=None):
    """Yield (pieces of one document, its size in bytes read) for every non-empty document. Empty ones go to
    `skipped` (a Skipped) as "a.txt" or "b.jsonl line 4"."""
    skipped = Skipped() if skipped is None else skipped
    for path in paths:
        if input_kind(path) == ".jsonl":
            with open(path, encoding="utf-8-sig") as f:
                for line_no, line in enumerate(_lines(f, path), 1):
                    if not line.strip():  # a blank line is no document ({"text": ""} is an empty one)
                        continue
                    text = jsonl_text(line, f"{path}:{line_no}")
                    if text:
                        yield list(split_text(text, chunk_chars)), len(line.encode("utf-8"))
                    else:
                        skipped.add(f"{path} line {line_no}")
        elif os.path.getsize(path) > 0:
            yield iter_txt_pieces(path, chunk_chars), None
        else:
            skipped.add(path)


def _lines(f, path):
    try:
        yield from f
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None


class BinWriter:
    """Appends values (uint16 token ids unless told otherwise) to a file."""

    def __init__(self, path, dtype=BIN_DTYPE):
        self.path = path
        self.dtype = dtype
        self.file = open(path, "wb")
        self.count = 0

    def write(self, ids):
        arr = np.asarray(ids, dtype=self.dtype)
        arr.tofile(self.file)
        self.count += arr.size

    def close(self):
        self.file.close()


class SplitWriter:
    """One split's files: the tokens, and for prompt/completion data the loss mask and each example's start."""

    def __init__(self, paths, split, examples=False):
        self.tokens = BinWriter(paths[f"{split}.bin"])
        self.mask = BinWriter(paths[f"{split}.mask.bin"], MASK_DTYPE) if examples else None
        self.starts = BinWriter(paths[f"{split}.idx.bin"], IDX_DTYPE) if examples else None

    @property
    def count(self):
        return self.tokens.count

    def write(self, ids):
        self.tokens.write(ids)

    def write_example(self, prompt, completion):
        self.starts.write([self.tokens.count])
        self.tokens.write(prompt + completion + [EOT_TOKEN])
        self.mask.write([0] * len(prompt) + [1] * (len(completion) + 1))

    def close(self):
        for writer in (self.tokens, self.mask, self.starts):
            if writer is not None:
                writer.close()


def check_whitespace(piece, path):
    run = LONG_WHITESPACE.search(piece)
    if run:
        raise InputError(f"error: {path} holds a run of {len(run.group()):,} whitespace characters, more than "
                         f"GPT-2's tokenizer (tiktoken) can take ({LONGEST_WHITESPACE:,}); shorten it and prepare "
                         "again")


def encode_documents(paths, writer, separator=True, chunk_chars=CHUNK_CHARS, desc="tokenizing", skipped=None):
    """Tokenize documents from `paths` into `writer`, empty ones into `skipped` (see iter_documents). Returns the
    number of documents and the writer's token count after each path."""
    enc = tokenizer_or_exit()
    total_bytes = sum(os.path.getsize(p) for p in paths)
    n_docs, ends = 0, []
    with tqdm(total=total_bytes, unit="B", unit_scale=True, desc=desc, disable=None) as bar:
        for path in paths:
            for pieces, nbytes in iter_documents([path], chunk_chars, skipped):
                for piece in pieces:
                    check_whitespace(piece, path)
                    writer.write(enc.encode_ordinary(piece))
                    if nbytes is None:
                        bar.update(len(piece.encode("utf-8")))
                if nbytes is not None:
                    bar.update(nbytes)
                if separator:
                    writer.write([EOT_TOKEN])
                n_docs += 1
            ends.append(writer.count)
    return n_docs, ends


def encode_examples(paths, writer, chunk_chars=CHUNK_CHARS, desc="tokenizing"):
    """Tokenize the prompt/completion lines of the .jsonl files `paths` into `writer` (a SplitWriter of
    examples). Returns the number of examples and the writer's token count after each path."""
    enc = tokenizer_or_exit()

    def encode(text, path):
        ids = []
        for piece in split_text(text, chunk_chars):
            check_whitespace(piece, path)
            ids += enc.encode_ordinary(piece)
        return ids

    n_examples, ends = 0, []
    with tqdm(total=sum(os.path.getsize(p) for p in paths), unit="B", unit_scale=True, desc=desc,
              disable=None) as bar:
        for path in paths:
            with open(path, encoding="utf-8-sig") as f:
                for line_no, line in enumerate(_lines(f, path), 1):
                    bar.update(len(line.encode("utf-8")))
                    if not line.strip():
                        continue
                    prompt, completion = jsonl_example(line, f"{path}:{line_no}")
                    writer.write_example(encode(prompt, path), encode(completion, path))
                    n_examples += 1
            ends.append(writer.count)
    return n_examples, ends


def example_stats(paths, split, window=DEFAULT_WINDOW):
    """meta.json's counts for one split of prompt/completion data."""
    mask = np.fromfile(paths[f"{split}.mask.bin"], dtype=MASK_DTYPE)
    starts = np.fromfile(paths[f"{split}.idx.bin"], dtype=IDX_DTYPE).astype(np.int64)
    lengths = np.diff(np.append(starts, len(mask)))
    completion = int(mask.sum(dtype=np.int64))
    return {"examples": len(starts), "prompt_tokens": len(mask) - completion, "completion_tokens": completion,
            "longest_example": int(lengths.max()), f"examples_over_{window}": int((lengths - 1 > window).sum())}


def split_tail(train_path, val_path, val_tokens, dtype=BIN_DTYPE):
    """Move the last val_tokens values of train_path into val_path, in bounded memory."""
    itemsize = np.dtype(dtype).itemsize
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
EXAMPLE_OUTPUTS = ("train.bin", "val.bin", "train.mask.bin", "val.mask.bin", "train.idx.bin", "val.idx.bin",
                   "meta.json")


@contextlib.contextmanager
def staged_outputs(out_dir, outputs=OUTPUTS):
    """Paths to write `outputs` (train.bin, val.bin, ..., meta.json last) to. They replace the dataset's files only
    when the block finishes, meta.json last, and the other format's files go; an error or Ctrl-C leaves the
    previous dataset as it was, and no folder if there was none. (A kill between the renames leaves bins that
    disagree with meta.json, which the trainer detects.)"""
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    staged = {name: os.path.join(out_dir, f".{name}.part") for name in outputs}
    try:
        yield staged
        for name in outputs:
            os.replace(staged[name], os.path.join(out_dir, name))
        for name in set(EXAMPLE_OUTPUTS) - set(outputs):  # a text dataset prepared where examples were
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, name))
    finally:
        for path in staged.values():
            if os.path.exists(path):
                os.remove(path)
        # an empty folder left by a failed first run would make the trainer say "val.bin is missing"
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)


def tokenizer_or_exit():
    try:
        return gpt2_encoding()
    except TokenizerUnavailable as e:
        raise SystemExit(f"error: {e}") from None


def check_name(name):
    """The dataset goes to <out_root>/<name>/: a name like ../evil or /tmp/x would write outside out_root."""
    if not name or name.startswith(".") or any(c in name for c in "/\\,:"):  # ',' and ':' split --dataset
        raise InputError(f"error: --name {name!r} is not a plain folder name (no '/', ',' or ':', not starting with "
                         "'.'); use e.g. --name mydata, which writes data/mydata/")


def check_inputs(flag, paths):
    for path in paths:
        if os.path.isdir(path):
            raise InputError(f"error: {flag} {path} is a directory; give its files, "
                             f"e.g. {flag} {path.rstrip(os.sep)}/*.txt")
        if not os.path.isfile(path):
            raise InputError(f"error: input file {path} does not exist; check the path")
        input_kind(path)


def val_sources(inputs, ends, start):
    """Which inputs the tokens from `start` on came from: `c.jsonl`, or `the end of b.txt and c.jsonl`."""
    spans = [(path, begin) for path, begin, end in zip(inputs, [0] + ends[:-1], ends) if end > max(begin, start)]
    if len(spans) == 1:
        return spans[0][0]
    names = [path for path, _ in spans]
    return ("the end of " if spans[0][1] < start else "") + ", ".join(names[:-1]) + " and " + names[-1]


def prepare(name, inputs, out_root, val_fraction=None, val_inputs=None, chunk_chars=CHUNK_CHARS):
    """val_fraction None: 0.5% of the tokens, unless val_inputs give the val split."""
    check_name(name)
    check_inputs("--input", inputs)
    check_inputs("--val_input", val_inputs or [])
    for val_path in val_inputs or []:
        if any(os.path.samefile(val_path, path) for path in inputs):
            raise InputError(f"error: {val_path} is both an --input and a --val_input: val would be text the model "
                             "trains on; give val files of their own, or leave out --val_input to hold out the end "
                             "of --input")
    if val_fraction is None:
        val_fraction = 0.005
    elif val_inputs:
        raise InputError("error: --val_fraction and --val_input both choose the val split; give one of them")
    if not val_inputs and not 0.0 < val_fraction < 1.0:
        raise InputError(f"error: --val_fraction must be between 0 and 1 (got {val_fraction}), or give --val_input")
    examples = input_format(inputs + (val_inputs or [])) == PROMPT_COMPLETION
    for path in inputs + (val_inputs or []) if examples else []:
        if input_kind(path) != ".jsonl":
            raise InputError(f"error: {path}: a prompt/completion dataset (the first .jsonl line has 'prompt' and "
                             "'completion') takes .jsonl inputs only; prepare the text as a dataset of its own and "
                             "mix the two with --dataset=text:0.5,pairs:0.5")
    unit = "example" if examples else "document"
    out_dir = os.path.join(out_root, name)
    skipped = Skipped()
    with staged_outputs(out_dir, EXAMPLE_OUTPUTS if examples else OUTPUTS) as paths:

        def encode(split, files):
            writer = SplitWriter(paths, split, examples)
            try:
                if examples:
                    return writer, *encode_examples(files, writer, chunk_chars=chunk_chars, desc=split)
                return writer, *encode_documents(files, writer, chunk_chars=chunk_chars, desc=split, skipped=skipped)
            finally:
                writer.close()

        train, n_docs, ends = encode("train", inputs)
        if val_inputs:
            val, n_val_docs, _ = encode("val", val_inputs)
            train_tokens, val_tokens = train.count, val.count
        else:
            n_val_docs = None
            val_tokens = int(train.count * val_fraction)
            if examples and train.count:  # val takes the examples that start in its share of the tokens
                starts = np.fromfile(paths["train.idx.bin"], dtype=IDX_DTYPE)
                first = int(np.searchsorted(starts, train.count - val_tokens))
                val_tokens = train.count - int(starts[first]) if first < len(starts) else 0
            train_tokens = train.count - val_tokens
        if skipped.count:
            print(f"note: {skipped}")
        # int() rounds val down, so with --val_fraction < 1 train is empty only when there is no text at all
        if train_tokens == 0:
            raise InputError(f"error: the train split of {name} is empty: the --input files hold no text; "
                             "give files with text")
        if val_tokens == 0 and val_inputs:
            raise InputError(f"error: the val split of {name} is empty: the --val_input files hold no text; "
                             "give files with text, or leave out --val_input to hold out --val_fraction of --input")
        if val_tokens == 0:
            under = "the last example" if examples else "one token"
            raise InputError(f"error: the val split of {name} is empty: --val_fraction {val_fraction:g} of "
                             f"{plural(train.count, 'token')} is under {under}; give a larger --val_fraction, "
                             f"more {'examples' if examples else 'text'}, or a --val_input file")
        if not val_inputs:
            split_tail(paths["train.bin"], paths["val.bin"], val_tokens)
        extra = {"format": "text"}
        if examples:
            if not val_inputs:
                split_tail(paths["train.mask.bin"], paths["val.mask.bin"], val_tokens, MASK_DTYPE)
                starts = np.fromfile(paths["train.idx.bin"], dtype=IDX_DTYPE)
                (starts[first:] - starts[first]).tofile(paths["val.idx.bin"])
                os.truncate(paths["train.idx.bin"], first * np.dtype(IDX_DTYPE).itemsize)
            extra = {"format": PROMPT_COMPLETION, "train": example_stats(paths, "train"),
                     "val": example_stats(paths, "val")}
        meta = write_meta(paths["meta.json"], train_tokens, val_tokens, **extra, documents=n_docs,
                          val_documents=n_val_docs, sources=[os.path.abspath(p) for p in inputs])
    print(f"{name}: {plural(n_docs, unit)} -> {plural(train_tokens, 'train token')}, "
          f"{plural(val_tokens, 'val token')} in {out_dir}")
    if examples:
        t, v = meta["train"], meta["val"]
        print(f"prompt/completion: {t['examples']:,} train / {v['examples']:,} val examples; trained on (completion "
              f"and closing <|endoftext|>): {t['completion_tokens']:,} of the train tokens; "
              f"{plural(t[f'examples_over_{DEFAULT_WINDOW}'], 'train example')} longer than a {DEFAULT_WINDOW}-token "
              "window")
    if val_inputs:
        print(f"val: {plural(n_val_docs, unit)} from --val_input ({', '.join(val_inputs)})")
    elif examples:
        print(f"val: the last {v['examples']:,} examples ({val_tokens / train.count * 100:.4g}% of the tokens), from "
              f"{val_sources(inputs, ends, train_tokens)}")
    else:
        print(f"val: the last {val_fraction * 100:.4g}% of the tokens, from {val_sources(inputs, ends, train_tokens)}")
    return meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="dataset name; output goes to <out_root>/<name>/")
    parser.add_argument("--input", nargs="+", required=True, help=".txt or .jsonl files")
    parser.add_argument("--val_fraction", type=float, help="share of tokens held out (tail); default 0.005")
    parser.add_argument("--val_input", nargs="+", help="separate validation .txt/.jsonl files")
    parser.add_argument("--out_root", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args(argv)
    with bad_input_exits_2():
        prepare(args.name, args.input, args.out_root, args.val_fraction, args.val_input)


if __name__ == "__main__":
    main()
