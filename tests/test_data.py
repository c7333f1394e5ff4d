"""Tokenizer and data preparation, offline."""
import json
import os

import numpy as np
import pytest
from transformers import GPT2Tokenizer

from data import prepare as generic
from data.shakespeare import prepare as shakespeare
from tokenizer import EOT_TOKEN, offline_gpt2_encoding, save_hf_tokenizer_files

SHAKESPEARE = os.path.join(os.path.dirname(__file__), "data", "tinyshakespeare.txt")  # a copy of the usual input.txt
SAMPLE = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n  Tabs\tand   spaces,\r\n"
          "numbers 12345 and 3.14, contractions we'll don't I'M, unicode: café, naïve, 日本語, emoji 🎉.\n\n\n")


def test_offline_encoding_equals_reference_bpe(tmp_path):
    enc = offline_gpt2_encoding()
    assert enc.n_vocab == 50257 and enc.eot_token == EOT_TOKEN
    assert enc.encode_ordinary("Hello world") == [15496, 995]  # the well-known GPT-2 ids
    # an independent implementation of GPT-2 BPE over the same official files
    assert save_hf_tokenizer_files(tmp_path)
    reference = GPT2Tokenizer.from_pretrained(tmp_path)
    ids = enc.encode_ordinary(SAMPLE)
    assert ids == reference.encode(SAMPLE)
    assert enc.decode(ids) == SAMPLE


@pytest.fixture
def tiny_text(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(SAMPLE * 40, encoding="utf-8")
    return path


def read_bin(path):
    return np.memmap(path, dtype=np.uint16, mode="r")


def test_shakespeare_recipe_on_small_text(tiny_text, tmp_path):
    out = tmp_path / "out"
    counts = shakespeare.prepare(str(tiny_text), str(out))
    enc = offline_gpt2_encoding()
    text = tiny_text.read_text(encoding="utf-8")
    train, val = read_bin(out / "train.bin"), read_bin(out / "val.bin")
    assert train.dtype == np.uint16 and len(train) == counts["train"] and len(val) == counts["val"]
    assert train.tolist() == enc.encode_ordinary(text[:int(len(text) * 0.9)])
    assert enc.decode(train.tolist()) + enc.decode(val.tolist()) == text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train_tokens"] == len(train) and meta["vocab_size"] == 50257


def test_shakespeare_published_token_counts(tmp_path):
    counts = shakespeare.prepare(SHAKESPEARE, str(tmp_path))
    assert counts == {"train": 301_966, "val": 36_059}  # nanoGPT's published counts


def test_shakespeare_download_failure_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(shakespeare, "URL", "http://127.0.0.1:9/input.txt")  # nothing listens there
    with pytest.raises(SystemExit, match="pass a local copy with --input"):
        shakespeare.prepare(None, str(tmp_path))
    assert not (tmp_path / "input.txt").exists()


def test_chunked_tokenization_equals_whole():
    enc = offline_gpt2_encoding()
    text = (SAMPLE + "word\nnext\n\n  indented\nline:\n\nA\n") * 30
    pieces = list(generic.split_text(text, chunk_chars=50))
    assert len(pieces) > 10 and "".join(pieces) == text
    assert [t for p in pieces for t in enc.encode_ordinary(p)] == enc.encode_ordinary(text)


def test_generic_prepare_txt_and_jsonl(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("The first document.\nIt has two lines.\n" * 50, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    docs = [{"text": "café au lait ☕"}, {"text": ""}, {"text": "日本語のテキスト\nsecond line"}]
    j = tmp_path / "b.jsonl"
    j.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n", encoding="utf-8")
    meta = generic.prepare("mine", [str(a), str(empty), str(j)], str(tmp_path / "out"), val_fraction=0.1,
                           chunk_chars=64)
    enc = offline_gpt2_encoding()
    expected = []
    for text in [a.read_text(encoding="utf-8"), docs[0]["text"], docs[2]["text"]]:  # empty docs are skipped
        expected += enc.encode_ordinary(text) + [EOT_TOKEN]
    out = tmp_path / "out" / "mine"
    train, val = read_bin(out / "train.bin"), read_bin(out / "val.bin")
    assert train.tolist() + val.tolist() == expected
    assert len(val) == int(len(expected) * 0.1) and meta["documents"] == 3
    assert meta["train_tokens"] == len(train) and meta["val_tokens"] == len(val)


def test_generic_prepare_separate_val_file(tmp_path):
    train_txt, val_txt = tmp_path / "train.txt", tmp_path / "val.txt"
    train_txt.write_text("training text " * 100, encoding="utf-8")
    val_txt.write_text("held out text", encoding="utf-8")
    generic.prepare("sep", [str(train_txt)], str(tmp_path), val_inputs=[str(val_txt)])
    enc = offline_gpt2_encoding()
    assert read_bin(tmp_path / "sep" / "val.bin").tolist() == enc.encode_ordinary("held out text") + [EOT_TOKEN]


def test_generic_prepare_errors(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        generic.prepare("x", [str(tmp_path / "missing.txt")], str(tmp_path))
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hi", encoding="utf-8")
    with pytest.raises(SystemExit, match="val split of x is empty"):
        generic.prepare("x", [str(tiny)], str(tmp_path), val_fraction=0.1)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"txt": "no text field"}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="bad.jsonl:1 is not a JSON object with a 'text' field"):
        generic.prepare("x", [str(bad)], str(tmp_path))


def test_failed_preparation_keeps_the_previous_dataset(tmp_path):
    """Every failure (bad JSONL, a non-string text, non-UTF-8 input, an empty split) leaves the dataset made
    before it byte for byte, and no partial file."""
    good = tmp_path / "good.txt"
    good.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200, encoding="utf-8")
    generic.prepare("mine", [str(good)], str(tmp_path), val_fraction=0.1)
    folder = tmp_path / "mine"
    before = {name: (folder / name).read_bytes() for name in ("train.bin", "val.bin", "meta.json")}
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"text": "also fine"}\nnot json\n', encoding="utf-8")
    number = tmp_path / "number.jsonl"
    number.write_text('{"text": 123}\n', encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\u00e9 au lait\n".encode("latin-1") * 10)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hi", encoding="utf-8")
    for inputs, message in (([good, bad_json], "bad.jsonl:3 is not a JSON object with a 'text' field"),
                            ([number], "number.jsonl:1: 'text' is a int, not a string; fix or remove that line"),
                            ([good, latin1], "latin1.txt is not UTF-8 text \\(invalid continuation byte\\); "
                                             "convert it first, e.g. iconv -f latin1 -t utf-8"),
                            ([tiny], "val split of mine is empty")):
        with pytest.raises(SystemExit, match=message):
            generic.prepare("mine", [str(p) for p in inputs], str(tmp_path), val_fraction=0.1)
        assert {name: (folder / name).read_bytes() for name in before} == before
        assert sorted(os.listdir(folder)) == ["meta.json", "train.bin", "val.bin"]


def test_large_txt_streams_in_bounded_memory(tmp_path):
    """A 40 MB file through 1 MB chunks: peak memory of the process grows far less than the file."""
    import subprocess
    import sys
    big = tmp_path / "big.txt"
    line = "Streaming keeps memory bounded, whatever the size of the input file.\n"
    with open(big, "w", encoding="utf-8") as f:
        for _ in range(40 * 1024 * 1024 // len(line)):
            f.write(line)
    code = ("import resource, sys; sys.path.insert(0, %r); from data import prepare as p; "
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
            "p.prepare('big', [%r], %r, val_fraction=0.01); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
            % (os.path.dirname(os.path.dirname(os.path.abspath(__file__))), str(big), str(tmp_path)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    growth_kb = int(out.stdout.strip().splitlines()[-1])
    assert growth_kb < 40 * 1024 // 2, f"memory grew by {growth_kb} kB for a 40 MB input"
    n = os.path.getsize(tmp_path / "big" / "train.bin") + os.path.getsize(tmp_path / "big" / "val.bin")
    assert n // 2 == json.loads((tmp_path / "big" / "meta.json").read_text())["train_tokens"] + \
        json.loads((tmp_path / "big" / "meta.json").read_text())["val_tokens"]
