"""Prompt/completion fine-tuning: data/prepare.py's mask and example index, packed windows with document masking,
the token-weighted loss, and a tiny task (reverse the prompt's letters) learned in-process and by the real script."""
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoint as ckpt
import model as model_module
from conftest import REPO, TINY, assert_ok, iter_losses, launch
from data import prepare
from dataloader import Examples, eval_batch, get_batch, load_split, loss_weights
from model import GPT, GPTConfig
from settings import InputError
from tokenizer import EOT_TOKEN, offline_gpt2_encoding

LETTERS, LENGTH, BLOCK = "abcdef", 4, 32


def line(prompt, completion):
    return json.dumps({"prompt": prompt, "completion": completion})


def reversal(letters):
    """A prompt ' c a b d =' and its completion ' d b a c': the letters reversed, one token per letter."""
    return " " + " ".join(letters) + " =", " " + " ".join(reversed(letters))


@pytest.fixture(scope="module")
def reversal_data(tmp_path_factory):
    """Every 4-letter word over 6 letters; 64 held out as val (prompts never trained on). (dataset, held-out)"""
    root = tmp_path_factory.mktemp("reversal")
    words = ["".join(w) for w in itertools.product(LETTERS, repeat=LENGTH)]
    random.Random(0).shuffle(words)
    held, train = words[:64], words[64:]
    (root / "train.jsonl").write_text("".join(line(*reversal(w)) + "\n" for w in train))
    (root / "val.jsonl").write_text("".join(line(*reversal(w)) + "\n" for w in held))
    prepare.prepare("rev", [str(root / "train.jsonl")], str(root), val_inputs=[str(root / "val.jsonl")])
    return str(root / "rev"), held


def examples_of(pairs, tmp_path, block_size=BLOCK, long_examples="cut", name="pc"):
    """Prepare (prompt, completion) pairs (all train, one val example) and load the train split."""
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(line(p, c) + "\n" for p, c in pairs))
    (tmp_path / "val.jsonl").write_text(line("x", "y") + "\n")
    prepare.prepare(name, [str(src)], str(tmp_path), val_inputs=[str(tmp_path / "val.jsonl")])
    return load_split(str(tmp_path / name), "train", block_size, 50257, long_examples)


# ---- data/prepare.py


def test_prepare_writes_tokens_mask_and_example_starts(tmp_path, capsys):
    enc = offline_gpt2_encoding()
    pairs = [("Question: 2 + 2?", " 4"), ("Translate: chat", " cat, in English"), (" a" * 1100, " long")] * 10
    src = tmp_path / "qa.jsonl"
    src.write_text("".join(line(p, c) + "\n" for p, c in pairs) + "\n")  # a blank line is no example
    meta = prepare.prepare("qa", [str(src)], str(tmp_path), val_fraction=0.1)
    out = tmp_path / "qa"
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "train.idx.bin", "train.mask.bin", "val.bin",
                                       "val.idx.bin", "val.mask.bin"]
    tokens, mask, starts = [], [], []
    for p, c in pairs:
        ids_p, ids_c = enc.encode_ordinary(p), enc.encode_ordinary(c)
        starts.append(len(tokens))
        tokens += ids_p + ids_c + [EOT_TOKEN]
        mask += [0] * len(ids_p) + [1] * (len(ids_c) + 1)
    read = lambda name, dtype: np.fromfile(out / name, dtype=dtype).tolist()
    n_train = meta["train"]["examples"]
    assert n_train + meta["val"]["examples"] == 30 and meta["val"]["examples"] >= 1
    cut = starts[n_train]  # val is whole examples: those starting in the last 10% of the tokens
    assert starts[n_train - 1] < len(tokens) * 0.9 <= cut
    assert read("train.bin", np.uint16) + read("val.bin", np.uint16) == tokens
    assert read("train.mask.bin", np.uint8) + read("val.mask.bin", np.uint8) == mask
    assert read("train.idx.bin", np.uint64) == starts[:n_train]
    assert read("val.idx.bin", np.uint64) == [s - cut for s in starts[n_train:]]
    assert meta["format"] == "prompt_completion" and meta["train_tokens"] == cut
    long_prompt = len(enc.encode_ordinary(" a" * 1100))
    assert long_prompt > 1025
    train_pairs = pairs[:n_train]
    assert meta["train"]["completion_tokens"] == sum(len(enc.encode_ordinary(c)) + 1 for _, c in train_pairs)
    assert meta["train"]["prompt_tokens"] == sum(len(enc.encode_ordinary(p)) for p, _ in train_pairs)
    assert meta["train"]["examples_over_1024"] == sum(p.startswith(" a a") for p, _ in train_pairs)
    assert meta["train"]["longest_example"] == long_prompt + len(enc.encode_ordinary(" long")) + 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[-3].startswith(f"qa: 30 examples -> {cut:,} train tokens")
    assert printed[-1] == f"val: the last {30 - n_train} examples ({(len(tokens) - cut) / len(tokens) * 100:.4g}% of " \
                          f"the tokens), from {src}"
    # prepared again as text, the folder loses the mask and index files
    (tmp_path / "t.txt").write_text("plain text " * 100)
    prepare.prepare("qa", [str(tmp_path / "t.txt")], str(tmp_path), val_fraction=0.1)
    assert sorted(os.listdir(out)) == ["meta.json", "train.bin", "val.bin"]
    assert json.loads((out / "meta.json").read_text())["format"] == "text"


@pytest.mark.parametrize("lines, message", [
    ([line("a", "b"), '{"prompt": "a", "answer": "b"}'],
     "{path}:2 has no 'completion' field (it has 'prompt', 'answer'); every line of a prompt/completion dataset needs "
     "'prompt' and 'completion'; fix or remove that line"),
    ([line("a", "b"), '{"completion": "b"}'], "{path}:2 has no 'prompt' field (it has 'completion'); every line"),
    ([line("a", "b"), '{"prompt": "a", "completion": 7}'], "{path}:2: 'completion' is a number, not a string"),
    ([line("a", "b"), line("", "b")], "{path}:2: 'prompt' is empty; an example needs a prompt"),
    ([line("a", "b"), '["a", "b"]'], "{path}:2 is an array, not an object with 'prompt' and 'completion' fields"),
    (['{"text": "a"}', line("a", "b")], "{path}:2 has no 'text' field (it has 'prompt', 'completion'); the dataset "
                                        "is text (its first .jsonl line decides)"),
])
def test_prepare_errors_name_file_and_line(tmp_path, capsys, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as e:
        prepare.main(["--name", "bad", "--input", str(path), "--out_root", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: " + message.format(path=path)) and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["bad.jsonl"]


def test_prompt_completion_takes_jsonl_only(tmp_path):
    (tmp_path / "qa.jsonl").write_text(line("a", "b") + "\n")
    (tmp_path / "notes.txt").write_text("text")
    with pytest.raises(SystemExit, match="notes.txt: a prompt/completion dataset .* takes .jsonl inputs only"):
        prepare.prepare("x", [str(tmp_path / "qa.jsonl"), str(tmp_path / "notes.txt")], str(tmp_path))


# ---- packing


def test_windows_are_packed_from_whole_examples(tmp_path):
    rng = random.Random(1)
    pairs = [(" ".join("q" * rng.randint(1, 6)), " ".join("c" * rng.randint(0, 5))) for _ in range(200)]
    ex = examples_of(pairs, tmp_path)
    assert isinstance(ex, Examples) and ex.too_long == 0
    x, y, doc, pos = get_batch([(ex, 1.0)], BLOCK, 8, 1337, 1, 7, 0)
    assert x.shape == y.shape == doc.shape == pos.shape == (8, BLOCK) and x.flags["C_CONTIGUOUS"]
    again = get_batch([(ex, 1.0)], BLOCK, 8, 1337, 1, 7, 0)
    assert all((a == b).all() for a, b in zip((x, y, doc, pos), again))  # a pure function of the step
    assert not (get_batch([(ex, 1.0)], BLOCK, 8, 1337, 1, 8, 0)[0] == x).all()
    tokens, mask = np.asarray(ex.tokens, dtype=np.int64), np.asarray(ex.mask)
    starts = {int(s): i for i, s in enumerate(ex.starts)}
    for r in range(8):
        for d in np.unique(doc[r]):
            at = np.flatnonzero(doc[r] == d)
            assert (np.diff(at) == 1).all() and (pos[r, at] == np.arange(len(at))).all()  # contiguous, from 0
            s = next((s for s in starts if (tokens[s:s + len(at)] == x[r, at]).all()
                      and s + len(at) + 1 in list(starts) + [len(tokens)]), None)
            if s is None:  # the padding after the last example: nothing trained
                assert d == doc[r].max() and (y[r, at] == -1).all()
                continue
            whole = tokens[s:s + len(at) + 1]  # a whole example: inputs all but its last token
            assert (y[r, at] == np.where(mask[s + 1:s + len(at) + 1] == 1, whole[1:], -1)).all()
            assert whole[-1] == EOT_TOKEN and y[r, at[-1]] == EOT_TOKEN  # the closing <|endoftext|> is trained
    assert (y != -1).sum() > 0.3 * y.size


def test_long_examples_are_cut_or_skipped_and_counted(tmp_path):
    pairs = [(" a" * 40, " b"), (" c", " d" * 3)] * 5
    cut = examples_of(pairs, tmp_path, block_size=16)
    assert cut.too_long == 5 and cut.describe("train") == "10 train examples (5 longer than block_size 16: cut)"
    a = offline_gpt2_encoding().encode_ordinary(" a")[0]
    x, y, doc, pos = get_batch([(cut, 1.0)], 16, 20, 0, 0, 0, 0)
    long_rows = (x == a).all(1)  # a cut example fills its row alone: its first 17 tokens, all prompt
    assert long_rows.any() and (y[long_rows] == -1).all() and (doc[long_rows] == 0).all()
    skip = examples_of(pairs, tmp_path, block_size=16, long_examples="skip")
    assert skip.too_long == 5 and len(skip.eligible) == 5
    assert skip.describe("train") == "10 train examples (5 longer than block_size 16: skipped)"
    x, y, doc, pos = get_batch([(skip, 1.0)], 16, 20, 0, 0, 0, 0)
    assert not (x == a).all(1).any() and (y != -1).any(1).all()
    only_long = examples_of([(" a" * 40, " b")], tmp_path, block_size=16, name="long")
    with pytest.raises(InputError, match="every example of .*long/train is longer than block_size 16 .* use "
                                         "--long_examples=cut"):
        load_split(str(tmp_path / "long"), "train", 16, 50257, "skip")
    assert only_long.too_long == 1


def test_mixed_with_text_windows(tmp_path, shakespeare):
    ex = examples_of([(" q", " a b")] * 50, tmp_path)
    text = load_split(shakespeare, "train", BLOCK, 50257)
    counts = [0, 0]
    for it in range(20):
        x, y, doc, pos = get_batch([(text, 0.5), (ex, 0.5)], BLOCK, 8, 1337, 0, it, 0)
        plain = (doc == 0).all(1)  # a text window: one document, positions 0..T-1, every target trained
        assert (pos[plain] == np.arange(BLOCK)).all() and (y[plain] != -1).all()
        assert (y[plain][:, :-1] == x[plain][:, 1:]).all()
        counts[0] += plain.sum()
        counts[1] += (~plain).sum()
    assert min(counts) > 50
    # text alone: the arrays of before, (x, y)
    assert len(get_batch([(text, 1.0)], BLOCK, 8, 1337, 0, 0, 0)) == 2


def test_eval_rows_hold_every_example_once(tmp_path):
    ex = examples_of([(" q" * (1 + i % 5), " a" * (i % 3)) for i in range(100)], tmp_path)
    rows = ex.eval_rows()
    assert sorted(e for row in rows for e in row) == list(range(100))
    assert all(sum(int(ex.positions[e]) for e in row) <= BLOCK for row in rows)
    spread = ex.eval_rows(4)
    assert len(spread) == 4 and spread[0][0] == 0 and spread[-1][0] == 99
    assert len({e for row in spread for e in row}) == sum(len(row) for row in spread)  # none twice


def per_example_losses(model, x, y, doc, pos):
    """{(row, document): its mean loss over its trained targets} in the packed windows, from one forward per
    document with the other targets set to -1."""
    out = {}
    for r in range(x.shape[0]):
        for d in np.unique(doc[r]):
            keep = (doc[r] == d) & (y[r] != -1)
            if keep.any():
                xr, yr, dr, pr = (torch.from_numpy(a[None]) for a in (x[r], np.where(keep, y[r], -1), doc[r], pos[r]))
                out[r, int(d)] = model(xr, yr, doc_ids=dr, pos_ids=pr)[1].item()
    return out


def test_a_packed_window_gives_each_example_its_loss_alone(tmp_path):
    rng = random.Random(2)
    ex = examples_of([(" ".join(rng.choice("abc") for _ in range(rng.randint(1, 5))),
                       " ".join(rng.choice("xyz") for _ in range(rng.randint(1, 5)))) for _ in range(60)], tmp_path)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)).eval()
    x, y, doc, pos = get_batch([(ex, 1.0)], BLOCK, 4, 1337, 0, 0, 0)
    assert doc.max(1).min() >= 3  # several examples in every row
    with torch.no_grad():
        packed = per_example_losses(model, x, y, doc, pos)
        compared = 0
        for (r, d), loss in packed.items():
            at = np.flatnonzero(doc[r] == d)
            alone = model(torch.from_numpy(x[r:r + 1, at]), torch.from_numpy(y[r:r + 1, at]))[1].item()  # causal
            assert abs(loss - alone) < 1e-5, (r, d, loss, alone)
            compared += 1
        assert compared >= 12
        # without document masking the later examples would see the earlier ones: their losses change
        unmasked = model(torch.from_numpy(x), torch.from_numpy(y))[1].item()
        masked = model(torch.from_numpy(x), torch.from_numpy(y), doc_ids=torch.from_numpy(doc),
                       pos_ids=torch.from_numpy(pos))[1].item()
        assert abs(unmasked - masked) > 1e-3


def test_prompt_positions_get_no_gradient(tmp_path, monkeypatch):
    """The loss head's input gets no gradient at positions whose target is a prompt token (or padding); the model's
    gradient is that of the completion tokens' losses alone, whatever the prompt targets would have been."""
    ex = examples_of([(" a b c d e f", " x y"), (" g h", " z")] * 20, tmp_path)
    x, y, doc, pos = (torch.from_numpy(a) for a in get_batch([(ex, 1.0)], BLOCK, 4, 0, 0, 0, 0))
    assert (y == -1).sum() > (y != -1).sum() > 0
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, n_layer=2, n_head=2, n_embd=32))
    seen = {}
    plain = model_module.chunked_cross_entropy

    def keep_input(h, *args, **kwargs):
        h.retain_grad()
        seen["h"] = h
        return plain(h, *args, **kwargs)

    monkeypatch.setattr(model_module, "chunked_cross_entropy", keep_input)
    _, loss = model(x, y, doc_ids=doc, pos_ids=pos)
    loss.backward()
    grad = seen["h"].grad.view(4, BLOCK, -1)
    assert (grad[y == -1] == 0).all() and (grad[y != -1].abs().sum(-1) > 0).all()


def test_loss_weights_give_the_token_weighted_gradient(tmp_path):
    """2 ranks x 2 micro-batches of unequal trained targets: DeepSpeed's arithmetic (each weighted loss / ga,
    gradients averaged over ranks) gives the gradient of the mean over every trained target of the step."""
    rng = random.Random(3)
    ex = examples_of([(" a" * rng.randint(1, 8), " b" * rng.randint(0, 8)) for _ in range(80)], tmp_path)
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))
    ga, world = 2, 2
    batches = {(r, m): [torch.from_numpy(a) for a in get_batch([(ex, 1.0)], BLOCK, 2, 5, r, 0, m)]
               for r in range(world) for m in range(ga)}
    counts = {k: int((b[1] != -1).sum()) for k, b in batches.items()}
    assert len(set(counts.values())) > 1
    total = sum(counts.values())

    def grads():
        out = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return out

    ds = None
    for r in range(world):
        weights = loss_weights([counts[r, m] for m in range(ga)], total, ga, world)
        for m in range(ga):
            x, y, doc, pos = batches[r, m]
            _, loss = model(x, y, doc_ids=doc, pos_ids=pos)
            (loss * weights[m] / ga).backward()  # engine.backward divides by ga
        g = grads()
        ds = g if ds is None else [a + b for a, b in zip(ds, g)]
    ds = [g / world for g in ds]  # the all-reduce averages over ranks
    x, y, doc, pos = (torch.cat([b[i] for b in batches.values()]) for i in range(4))
    _, loss = model(x, y, doc_ids=doc, pos_ids=pos)  # one batch of everything: the mean over all trained targets
    loss.backward()
    for a, b in zip(ds, grads()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert loss_weights([64, 64], 256, 2, 2) == [1.0, 1.0]  # text windows: unweighted


# ---- the task, learned


def evaluate_examples(model, ex):
    model.eval()
    with torch.no_grad():
        x, y, doc, pos = (torch.from_numpy(a) for a in eval_batch(ex, ex.eval_rows(), BLOCK))
        loss = model(x, y, doc_ids=doc, pos_ids=pos)[1].item()
    model.train()
    return loss


def test_masked_training_learns_the_completions(reversal_data):
    """The same run with and without the loss mask (document masking and packing in both): with it the completion
    loss on held-out prompts falls far below the unmasked run's, and greedy decoding answers every held-out
    prompt."""
    path, held = reversal_data
    train, val = (load_split(path, split, BLOCK, 50257) for split in ("train", "val"))
    ids = np.unique(np.concatenate([train.tokens, val.tokens]))  # the 8 tokens of the task
    lookup = np.zeros(50257, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))

    def renumbered(ex, mask=None):
        return Examples(lookup[np.asarray(ex.tokens)], ex.mask if mask is None else mask, ex.starts, BLOCK)

    val_loss, models = {}, {}
    for masked in (True, False):
        data = renumbered(train, None if masked else np.ones(len(train.tokens), dtype=np.uint8))
        torch.manual_seed(0)
        model = GPT(GPTConfig(block_size=BLOCK, vocab_size=len(ids), n_layer=2, n_head=2, n_embd=64))
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
        for it in range(150):
            x, y, doc, pos = (torch.from_numpy(a) for a in get_batch([(data, 1.0)], BLOCK, 16, 1, 0, it, 0))
            _, loss = model(x, y, doc_ids=doc, pos_ids=pos)
            loss.backward()
            opt.step()
            opt.zero_grad()
        val_loss[masked] = evaluate_examples(model, renumbered(val))  # the completion loss, held-out prompts
        models[masked] = model
    assert val_loss[True] < 0.05 and val_loss[False] > 0.5, val_loss
    enc = offline_gpt2_encoding()
    for word in held:
        prompt, completion = reversal(word)
        p = enc.encode_ordinary(prompt)
        out = models[True].generate(torch.from_numpy(lookup[p])[None], LENGTH + 1, temperature=0)[0, len(p):]
        assert ids[out.numpy()].tolist() == enc.encode_ordinary(completion) + [EOT_TOKEN], word


# ---- the real script


def weighted_loss(model, arrays_list):
    """(mean over trained targets, mean of the windows' batch means) of the model on get_batch's arrays."""
    sums, counts, means = 0.0, 0, []
    with torch.no_grad():
        for arrays in arrays_list:
            batch = dict(zip(("idx", "targets", "doc_ids", "pos_ids"), (torch.from_numpy(a) for a in arrays)))
            loss = model(**batch)[1].item()
            n = int((arrays[1] != -1).sum())
            sums, counts = sums + loss * n, counts + n
            means.append(loss)
    return sums / counts, sum(means) / len(means)


@pytest.mark.slow
def test_trainer_learns_answers_token_weighted_and_resumes_exactly(reversal_data, shakespeare, tmp_path):
    """Two CPU processes through the deepspeed launcher, mixing Tiny Shakespeare with the reversal task: the logged
    loss is the token-weighted mean of the step's micro-batches (not their plain mean), the eval's val loss of the
    task the token-weighted mean over its held-out examples, a resume from iter_75 logs the uninterrupted run's
    losses, and after 150 iterations the model answers every held-out prompt (sample.py with a prompt file too)."""
    path, held = reversal_data
    out = tmp_path / "out"
    common = [*TINY, f"--dataset={shakespeare}:0.1,{path}:0.9", "--block_size=32", "--batch_size=4",
              "--lr_schedule=constant", "--learning_rate=3e-3", "--eval_interval=75", "--always_save_checkpoint=True",
              "--eval_iters=8"]
    run = launch([*common, f"--out_dir={out}", "--max_iters=150"])
    assert_ok(run)
    log = run.stdout
    assert "prompt/completion: 1,232 train examples, 64 val examples" in log
    losses = iter_losses(log)
    assert sorted(losses) == list(range(1, 151))

    # the logged loss of iteration 76 from the weights of iter_75
    model, _ = ckpt.load_model(str(out), "iter_75")
    model.eval()
    text = load_split(shakespeare, "train", 32, 50257)
    task = load_split(path, "train", 32, 50257)
    step = [get_batch([(text, 0.1), (task, 0.9)], 32, 4, 1337, rank, 75, m) for rank in range(2) for m in range(2)]
    token_weighted, window_weighted = weighted_loss(model, step)
    assert abs(losses[76] - token_weighted) < 1e-4, (losses[76], token_weighted)
    assert abs(token_weighted - window_weighted) > 1e-3  # the test tells the two apart
    # the eval at 75: the task's val loss over its held-out examples, token-weighted
    val = load_split(path, "val", 32, 50257)
    expected, _ = weighted_loss(model, [eval_batch(val, [row], 32) for row in val.eval_rows(8)])
    evals = {int(i): float(v) for i, v in re.findall(rf"^eval (\d+): .*\| val/{re.escape(path)} (\S+)", log, re.M)}
    assert abs(evals[75] - expected) < 1e-4, (evals, expected)
    assert evals[150] < 0.05, evals  # learned

    # resumed from iter_75 (a copy, where latest is final): the losses of the uninterrupted run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    resumed = launch([*common, f"--out_dir={again}", "--max_iters=80", "--init_from=resume", "--resume_tag=iter_75",
                      "--save_checkpoints=False"])
    assert_ok(resumed)
    assert iter_losses(resumed.stdout) == {i: losses[i] for i in range(76, 81)}

    # the model answers every held-out prompt, greedily; and through sample.py, which is unchanged
    enc = offline_gpt2_encoding()
    final, _ = ckpt.load_model(str(out), "final")
    for word in held:
        prompt, completion = reversal(word)
        p = enc.encode_ordinary(prompt)
        answer = final.eval().generate(torch.tensor([p]), LENGTH + 1, temperature=0)[0, len(p):].tolist()
        assert answer == enc.encode_ordinary(completion) + [EOT_TOKEN], word
    for word in held[:2]:
        prompt, completion = reversal(word)
        (tmp_path / "prompt.txt").write_text(prompt)
        proc = subprocess.run([sys.executable, "sample.py", f"--init_from={out}", f"--start=FILE:{tmp_path}/prompt.txt",
                               "--temperature=0", f"--max_new_tokens={LENGTH + 1}", "--num_samples=1",
                               "--device=cpu"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert prompt + completion + "<|endoftext|>" in proc.stdout.splitlines(), (word, proc.stdout)


def test_bench_prompt_completion_dataset(tmp_path):
    """bench.py's -pc runs train on pairs of Tiny Shakespeare's speeches, made here from the repository's copy."""
    from bench import bench
    meta = bench.pc_dataset(str(tmp_path / "shakespeare_pc"))
    assert meta["format"] == "prompt_completion" and meta["train"]["examples"] > 6000
    train = load_split(str(tmp_path / "shakespeare_pc"), "train", 1024, 50257)
    assert train.too_long == 0 and 0.4 < meta["train"]["completion_tokens"] / meta["train_tokens"] < 0.6
    assert {"ours-bf16-1-pc", "ours-bf16-1-pc-curve"} <= set(bench.RUNS)
