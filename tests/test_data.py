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


def test_generic_prepare_txt_and_jsonl(tmp_path, capsys):
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
    out_lines = capsys.readouterr().out.splitlines()
    assert out_lines[0] == f"note: skipped 2 empty documents ({empty}, {j} line 2)"
    assert out_lines[1] == f"mine: 3 documents -> {len(train):,} train tokens, {len(val)} val tokens in {out}"


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
    bad.write_text('{"txt": "no text field", "id": 7}\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="bad.jsonl:1 has no 'text' field \\(it has 'txt', 'id'\\); fix or remove"):
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
    for inputs, message in (([good, bad_json], "bad.jsonl:3 is not valid JSON \\(Expecting value, column 1\\); "
                                               "fix or remove that line$"),
                            ([number], "number.jsonl:1: 'text' is a number, not a string; fix or remove that line"),
                            ([good, latin1], "latin1.txt is not UTF-8 text \\(invalid continuation byte\\); "
                                             "convert it first, e.g. iconv -f latin1 -t utf-8"),
                            ([tiny], "val split of mine is empty")):
        with pytest.raises(SystemExit, match=message):
            generic.prepare("mine", [str(p) for p in inputs], str(tmp_path), val_fraction=0.1)
        assert {name: (folder / name).read_bytes() for name in before} == before
        assert sorted(os.listdir(folder)) == ["meta.json", "train.bin", "val.bin"]


def test_empty_documents_are_counted_and_named(tmp_path, capsys):
    """Empty documents are skipped with a note naming the first few; 1 is singular."""
    text = tmp_path / "text.txt"
    text.write_text("Some words to train on.\n" * 100, encoding="utf-8")
    empty = tmp_path / "a.txt"
    empty.write_text("", encoding="utf-8")
    docs = tmp_path / "b.jsonl"
    docs.write_text('{"text": ""}\n\n{"text": "kept"}\n{"text": ""}\n{"text": ""}\n', encoding="utf-8")
    generic.prepare("e", [str(empty), str(text), str(docs)], str(tmp_path), val_fraction=0.1)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"note: skipped 4 empty documents ({empty}, {docs} line 1, {docs} line 4, ...)"
    assert out[1].startswith("e: 2 documents -> ")  # the blank line 2 is no document at all
    generic.prepare("one", [str(text)], str(tmp_path), val_inputs=[str(docs)])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"note: skipped 3 empty documents ({docs} line 1, {docs} line 4, {docs} line 5)"
    assert out[1] == f"one: 1 document -> 701 train tokens, 2 val tokens in {tmp_path / 'one'}"
    assert out[2] == f"val: 1 document from --val_input ({docs})"


def test_empty_split_advice_and_no_folder_left(tmp_path, capsys):
    """An empty split says what helps for that split, and a failed first preparation leaves no folder behind
    (the trainer would report a missing val.bin); an existing folder and its files stay."""
    e1, e2 = tmp_path / "e1.txt", tmp_path / "e2.jsonl"
    e1.write_text("", encoding="utf-8")
    e2.write_text('{"text": ""}\n', encoding="utf-8")
    tiny, text = tmp_path / "tiny.txt", tmp_path / "text.txt"
    tiny.write_text("hi", encoding="utf-8")
    text.write_text("Some words to train on.\n" * 100, encoding="utf-8")
    root = tmp_path / "data"
    cases = (
        ([e1, e2], {}, "error: the train split of new is empty: the --input files hold no text; give files with text"),
        ([tiny], {"val_fraction": 0.1}, "error: the val split of new is empty: --val_fraction 0.1 of 2 tokens is under "
                                        "one token; give a larger --val_fraction, more text, or a --val_input file"),
        ([text], {"val_inputs": [str(e1)]}, "error: the val split of new is empty: the --val_input files hold no text; "
                                            "give files with text, or leave out --val_input to hold out "
                                            "--val_fraction of --input"))
    for inputs, kwargs, message in cases:
        with pytest.raises(SystemExit) as e:
            generic.prepare("new", [str(p) for p in inputs], str(root), **kwargs)
        assert str(e.value) == message
        assert not (root / "new").exists()
    assert capsys.readouterr().out.splitlines()[0] == f"note: skipped 2 empty documents ({e1}, {e2} line 1)"
    (root / "kept").mkdir()
    (root / "kept" / "notes.md").write_text("mine")
    with pytest.raises(SystemExit, match="train split of kept is empty"):
        generic.prepare("kept", [str(e1)], str(root))
    assert os.listdir(root / "kept") == ["notes.md"]
    (root / "mt").mkdir()  # made by the user: not ours to remove
    with pytest.raises(SystemExit):
        generic.prepare("mt", [str(e1)], str(root))
    assert os.listdir(root / "mt") == []


def test_input_checks(tmp_path):
    """A directory, a path-like --name and an odd extension each get a one-line error before any work."""
    folder = tmp_path / "texts"
    folder.mkdir()
    good = tmp_path / "good.txt"
    good.write_text("Some words to train on.\n" * 100, encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        generic.prepare("x", [str(folder)], str(tmp_path))
    assert str(e.value) == f"error: --input {folder} is a directory; give its files, e.g. --input {folder}/*.txt"
    with pytest.raises(SystemExit) as e:
        generic.prepare("x", [str(good)], str(tmp_path), val_inputs=[str(folder) + "/"])
    assert str(e.value) == (f"error: --val_input {folder}/ is a directory; give its files, "
                            f"e.g. --val_input {folder}/*.txt")
    root = tmp_path / "root"
    for name in ("../evil", "a/b", ".", "..", ".hidden", "", "/abs", "a\\b", "v1:2", "a,b"):
        with pytest.raises(SystemExit) as e:
            generic.prepare(name, [str(good)], str(root))
        assert str(e.value) == (f"error: --name {name!r} is not a plain folder name (no '/', ',' or ':', not "
                                "starting with '.'); use e.g. --name mydata, which writes data/mydata/")
    assert not root.exists() and sorted(os.listdir(tmp_path)) == ["good.txt", "texts"]
    odd = tmp_path / "notes.md"
    odd.write_text("text", encoding="utf-8")
    with pytest.raises(SystemExit, match="notes.md: only .txt and .jsonl inputs are supported"):
        generic.prepare("x", [str(good), str(odd)], str(tmp_path))
    assert not (tmp_path / "x").exists()


def test_jsonl_errors_name_json_types(tmp_path):
    for line, problem in (('{"text": 1.5}', "'text' is a number, not a string"),
                          ('{"text": [1]}', "'text' is an array, not a string"),
                          ('{"text": {"a": 1}}', "'text' is an object, not a string"),
                          ('{"text": true}', "'text' is a bool, not a string"),
                          ('{"text": null}', "'text' is null, not a string"),
                          ('["text"]', "is an array, not an object with a 'text' field"),
                          ('"text"', "is a string, not an object with a 'text' field"),
                          ('{}', "has no 'text' field (it has none)"),
                          ('{"text": "ok"', "is not valid JSON (Expecting ',' delimiter, column 14)")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
        with pytest.raises(SystemExit) as e:
            generic.prepare("x", [str(bad)], str(tmp_path))
        sep = ":" if problem.startswith("'") else ""
        assert str(e.value) == f"error: {bad}:2{sep} {problem}; fix or remove that line"


def test_extensions_are_case_insensitive(tmp_path):
    text = "Upper case extensions are fine.\n" * 50
    (tmp_path / "UP.TXT").write_text(text, encoding="utf-8")
    (tmp_path / "Docs.JsonL").write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    generic.prepare("up", [str(tmp_path / "UP.TXT"), str(tmp_path / "Docs.JsonL")], str(tmp_path), val_fraction=0.1)
    enc = offline_gpt2_encoding()
    out = tmp_path / "up"
    assert read_bin(out / "train.bin").tolist() + read_bin(out / "val.bin").tolist() == \
        2 * (enc.encode_ordinary(text) + [EOT_TOKEN])


def test_summary_says_where_val_came_from(tmp_path, capsys):
    enc = offline_gpt2_encoding()
    paths = []
    for name, text in (("a.txt", "Alpha text here.\n" * 60), ("b.txt", "Beta text here.\n" * 30),
                       ("c.jsonl", json.dumps({"text": "Gamma text here.\n" * 10}) + "\n")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        paths.append(str(tmp_path / name))
    sizes = [len(enc.encode_ordinary(t)) + 1 for t in ("Alpha text here.\n" * 60, "Beta text here.\n" * 30,
                                                       "Gamma text here.\n" * 10)]
    assert sizes == [301, 151, 61]  # so 0.05 of 513 tokens (25) lies in c, 0.2 (102) in the end of b and c
    generic.prepare("v", paths, str(tmp_path), val_fraction=0.05)
    assert capsys.readouterr().out.splitlines()[-1] == f"val: the last 5% of the tokens, from {paths[2]}"
    generic.prepare("v", paths, str(tmp_path), val_fraction=0.2)
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"val: the last 20% of the tokens, from the end of {paths[1]} and {paths[2]}"
    generic.prepare("v", paths, str(tmp_path), val_fraction=0.9)
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"val: the last 90% of the tokens, from the end of {paths[0]}, {paths[1]} and {paths[2]}"


def test_bad_input_exits_2(tmp_path, capsys):
    """Like the trainer: bad input exits 2 with one line on stderr; the same from the command line."""
    import subprocess
    import sys
    missing = str(tmp_path / "missing.txt")
    with pytest.raises(SystemExit) as e:
        generic.main(["--name", "x", "--input", missing, "--out_root", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"error: input file {missing} does not exist; check the path\n"
    good = tmp_path / "good.txt"
    good.write_text("Some words to train on.\n" * 100, encoding="utf-8")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(repo, "data", "prepare.py"), "--name", "../evil",
                           "--input", str(good), "--out_root", str(tmp_path / "data")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("error: --name '../evil' is not a plain folder name (no '/', ',' or ':', not starting "
                           "with '.'); use e.g. --name mydata, which writes data/mydata/\n")
    assert sorted(os.listdir(tmp_path)) == ["good.txt"]
    proc = subprocess.run([sys.executable, os.path.join(repo, "data", "shakespeare", "prepare.py"), "--input",
                           missing, "--out_dir", str(tmp_path / "s")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.endswith("does not exist; give the path of Tiny Shakespeare's "
                                                         "input.txt\n")


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


def test_text_edge_cases(tmp_path):
    """A byte-order mark is not text; UTF-16 input, a whitespace run tiktoken cannot take, val given twice, and a
    val file that is also an input are one-line errors that leave nothing behind."""
    body = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200
    plain, bom_txt, bom_jsonl = tmp_path / "plain.txt", tmp_path / "bom.txt", tmp_path / "bom.jsonl"
    plain.write_text(body, encoding="utf-8")
    bom_txt.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    bom_jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps({"text": body}) + "\n").encode("utf-8"))
    for name, path in (("plain", plain), ("bomtxt", bom_txt), ("bomjsonl", bom_jsonl)):
        generic.prepare(name, [str(path)], str(tmp_path), val_fraction=0.1)
    plain_tokens = [np.fromfile(tmp_path / "plain" / split, dtype=np.uint16) for split in ("train.bin", "val.bin")]
    for name in ("bomtxt", "bomjsonl"):
        tokens = [np.fromfile(tmp_path / name / split, dtype=np.uint16) for split in ("train.bin", "val.bin")]
        assert all(np.array_equal(a, b) for a, b in zip(tokens, plain_tokens)), name

    utf16 = tmp_path / "utf16.txt"
    utf16.write_text(body, encoding="utf-16")
    spaces = tmp_path / "spaces.txt"
    spaces.write_text("hello" + " " * 150_000 + "world\n" + body, encoding="utf-8")
    alias = tmp_path / "alias.txt"  # the same file under another name
    alias.symlink_to(plain)
    for args, message in (
            (([str(utf16)],), f"error: {utf16} is not UTF-8 text (invalid start byte; it is UTF-16); convert it first, "
                              f"e.g. iconv -f UTF-16 -t utf-8 {utf16} > converted.txt"),
            (([str(spaces)],), f"error: {spaces} holds a run of 150,000 whitespace characters, more than GPT-2's "
                               "tokenizer (tiktoken) can take (100,000); shorten it and prepare again"),
            (([str(plain)], 0.1, [str(bom_txt)]), "error: --val_fraction and --val_input both choose the val split; "
                                                  "give one of them"),
            (([str(plain), str(bom_txt)], None, [str(alias)]),
             f"error: {alias} is both an --input and a --val_input: val would be text the model trains on; give val "
             "files of their own, or leave out --val_input to hold out the end of --input")):
        with pytest.raises(SystemExit) as e:
            generic.prepare("bad", args[0], str(tmp_path), *args[1:])
        assert str(e.value) == message
        assert not (tmp_path / "bad").exists()
