"""
The data stream: memmapped uint16 token bins (made by data/prepare.py), checked when opened so that training cannot
fail on them later, and batches that are pure functions of (seed, rank, iteration, micro-step): a resumed run draws
exactly the batches the interrupted one would have.

Two kinds of dataset. Text: a window is block_size + 1 consecutive tokens from a random start. Prompt/completion
(meta.json "format": "prompt_completion"; see Examples): a window is packed from whole examples, with the targets
of prompt tokens and of the padding after the last example set to -1 (the model's loss skips them), and with each
position's example (doc_ids) and its position within it (pos_ids), so that the model keeps the examples apart.
"""
import difflib
import json
import os
import zlib

import numpy as np
import torch

from settings import REPO, InputError


def parse_datasets(spec):
    """'a' -> [('a', 1.0)]; 'a:0.3,b:0.7' -> [('a', 0.3), ('b', 0.7)] (weights normalised)."""
    parts = []
    for item in spec.split(","):
        name, _, weight = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "1")
        try:
            w = float(weight)
        except ValueError:
            raise InputError(f"dataset weight {weight!r} in {spec!r} is not a number; "
                             "write name:0.3,other:0.7") from None
        if not name or w <= 0:
            raise InputError(f"dataset entry {item!r} in {spec!r} needs a name and a positive weight")
        if name in (n for n, _ in parts):
            raise InputError(f"dataset {name!r} appears twice in {spec!r}; give each dataset once, with the sum of "
                             "its weights")
        parts.append((name, w))
    unweighted = [item.strip() for item in spec.split(",") if ":" not in item]
    if unweighted and len(unweighted) < len(parts):
        raise InputError(f"dataset {unweighted[0]} in {spec!r} has no weight while others have; give every dataset a "
                         "weight (name:0.3,other:0.7) or none (equal weights)")
    total = sum(w for _, w in parts)
    return [(n, w / total) for n, w in parts]


def dataset_dir(name):
    return name if os.path.isdir(name) else os.path.join(REPO, "data", name)


def prepare_command(name, folder):
    """How to (re)make a dataset's bins: its own prepare.py if it has one (shakespeare), else data/prepare.py."""
    own = os.path.join(folder, "prepare.py")
    if os.path.isfile(own):
        return f"python {os.path.relpath(own)}"
    if os.path.abspath(folder) == os.path.join(REPO, "data", name) and not os.path.isabs(name):
        return f"python data/prepare.py --name {name} --input FILES"
    parent, base = os.path.split(os.path.normpath(folder))
    return f"python data/prepare.py --name {base} --out_root {parent or '.'} --input FILES"


def load_split(name, split, block_size, vocab_size, long_examples="cut"):
    """The memmapped token bin of one split, checked so that training cannot fail on it later; for prompt/completion
    data, its Examples."""
    folder = dataset_dir(name)
    path = os.path.join(folder, f"{split}.bin")
    if not os.path.isdir(folder) and os.path.isfile(name):
        if name.endswith(".bin"):
            raise InputError(f"dataset {name!r} is a token file; give the folder that holds train.bin and val.bin: "
                             f"--dataset={os.path.dirname(name) or '.'}")
        stem = os.path.splitext(os.path.basename(name))[0] or "mydata"
        raise InputError(f"dataset {name!r} is a file; a dataset is a folder of token bins: prepare one with "
                         f"`python data/prepare.py --name {stem} --input {name}`, then use --dataset={stem}")
    if not os.path.isdir(folder):
        parent = os.path.dirname(os.path.abspath(folder))
        near = difflib.get_close_matches(os.path.basename(folder), os.listdir(parent) if os.path.isdir(parent) else [],
                                         n=1)
        hint = f"did you mean {os.path.join(os.path.dirname(name), near[0])!r}? Or " if near else ""
        raise InputError(f"dataset {name!r} not found ({folder} does not exist); {hint}prepare it with "
                         f"`python data/shakespeare/prepare.py` or `python data/prepare.py --name {name} --input ...`")
    if not os.path.isfile(path):
        raise InputError(f"{path} is missing; prepare the dataset with `{prepare_command(name, folder)}`")
    size = os.path.getsize(path)
    if size % 2:
        raise InputError(f"{path} has {size} bytes, not a multiple of 2: it is not a uint16 token file (truncated "
                         f"or another dtype); prepare the dataset again with `{prepare_command(name, folder)}`")
    if size == 0:
        raise InputError(f"the {split} split {path} is empty; prepare the dataset with more text or a larger "
                         "--val_fraction")
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        recorded = meta.get(f"{split}_tokens")
    except (OSError, ValueError, AttributeError):
        meta, recorded = {}, None  # bins made by other tools come without meta.json
    if isinstance(recorded, int) and recorded != size // 2:
        raise InputError(f"{path} has {size // 2:,} tokens but {folder}/meta.json says {recorded:,}: the bins and "
                         f"meta.json come from different or interrupted preparations; prepare the dataset again "
                         f"with `{prepare_command(name, folder)}`")
    data = np.memmap(path, dtype=np.uint16, mode="r")
    examples = meta.get("format") == "prompt_completion"
    if len(data) < block_size + 1 and not examples:  # packed windows are padded
        raise InputError(f"{path} has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}; use a smaller "
                         "--block_size or more text")
    head = data[:1 << 21]  # uint32 (or int32) ids read as uint16: every second value is a zero high half
    if len(head) >= 1024 and (head[1::2] == 0).mean() > 0.9 and (head[0::2] == 0).mean() < 0.5:
        raise InputError(f"{path} looks like 32-bit token ids (every second 16-bit value is 0); the trainer reads "
                         "uint16 bins: convert it with numpy (np.fromfile(path, np.uint32).astype(np.uint16)"
                         ".tofile(path)) or prepare the text with data/prepare.py")
    top = int(data.max())
    if top >= vocab_size:
        raise InputError(f"{path} contains token id {top}, outside the model's vocabulary of {vocab_size}; prepare "
                         "the data with the GPT-2 tokenizer (data/prepare.py)")
    if examples:
        return load_examples(folder, split, data, block_size, long_examples, prepare_command(name, folder))
    return data


def load_examples(folder, split, tokens, block_size, long_examples, prepare):
    """The Examples of a prompt/completion split, its mask and example starts checked against its tokens."""
    mask_path, idx_path = (os.path.join(folder, f"{split}.{kind}.bin") for kind in ("mask", "idx"))
    again = f"prepare the dataset again with `{prepare}`"
    for path in (mask_path, idx_path):
        if not os.path.isfile(path):
            raise InputError(f"{path} is missing ({folder}/meta.json says the dataset is prompt/completion); {again}")
    if os.path.getsize(mask_path) != len(tokens):
        raise InputError(f"{mask_path} has {os.path.getsize(mask_path):,} bytes, not one per token of {split}.bin "
                         f"({len(tokens):,}): the files come from different or interrupted preparations; {again}")
    starts = np.fromfile(idx_path, dtype=np.uint64).astype(np.int64)
    if len(starts) == 0 or starts[0] != 0 or (np.diff(starts) <= 0).any() or starts[-1] >= len(tokens):
        raise InputError(f"{idx_path} does not hold increasing example starts within {split}.bin; {again}")
    examples = Examples(tokens, np.memmap(mask_path, dtype=np.uint8, mode="r"), starts, block_size, long_examples)
    if not len(examples.eligible):
        raise InputError(f"every example of {folder}/{split} is longer than block_size {block_size} (needs more than "
                         f"{block_size + 1} tokens) and long_examples='skip' skips them; use --long_examples=cut or a "
                         "larger --block_size")
    return examples


class Examples:
    """One split of prompt/completion data (data/prepare.py): its tokens, mask (1 where a token is trained on as a
    target) and each example's start. An example of n tokens fills n - 1 positions of a window (inputs tokens
    0..n-2, targets 1..n-1); one that needs more than block_size is cut to its first block_size + 1 tokens or
    skipped (never drawn, left out of evaluation), as long_examples says, and counted in too_long."""

    def __init__(self, tokens, mask, starts, block_size, long_examples="cut"):
        self.tokens, self.mask, self.starts = tokens, mask, np.asarray(starts, dtype=np.int64)
        self.block_size = block_size
        positions = np.diff(np.append(self.starts, len(tokens))) - 1
        self.too_long = int((positions > block_size).sum())
        self.positions = np.minimum(positions, block_size)
        self.eligible = (np.flatnonzero(positions <= block_size) if long_examples == "skip"
                         else np.arange(len(self.starts)))

    def __len__(self):
        return len(self.tokens)

    def draw(self, rng, n_rows):
        """Rows of example indices drawn uniformly (with replacement), each row filled until the next example would
        not fit; that one starts the next row, and the one that fits no row left is dropped."""
        rows, row, used = [], [], 0
        while True:
            for e in self.eligible[rng.integers(0, len(self.eligible), size=64)].tolist():  # 64 draws per call
                n = int(self.positions[e])
                if used + n > self.block_size:
                    rows.append(row)
                    if len(rows) == n_rows:
                        return rows
                    row, used = [], 0
                row.append(e)
                used += n

    def pack(self, rows):
        """(x, y, doc_ids, pos_ids), int64 (len(rows), block_size), for rows of example indices. y is -1 where nothing
        is trained: prompt targets and the padding after a row's last example (which is a document of its own)."""
        T = self.block_size
        x = np.zeros((len(rows), T), dtype=np.int64)
        y = np.full((len(rows), T), -1, dtype=np.int64)
        doc_ids = np.empty((len(rows), T), dtype=np.int64)
        pos_ids = np.empty((len(rows), T), dtype=np.int64)
        for r, row in enumerate(rows):
            at = 0
            for d, e in enumerate(row):
                s, n = int(self.starts[e]), int(self.positions[e])
                tokens = self.tokens[s:s + n + 1].astype(np.int64)
                x[r, at:at + n] = tokens[:-1]
                y[r, at:at + n] = np.where(self.mask[s + 1:s + n + 1] == 1, tokens[1:], -1)
                doc_ids[r, at:at + n] = d
                pos_ids[r, at:at + n] = np.arange(n)
                at += n
            doc_ids[r, at:] = len(row)
            pos_ids[r, at:] = np.arange(T - at)
        return x, y, doc_ids, pos_ids

    def eval_rows(self, n_windows=-1):
        """Fixed rows for evaluation, each example in at most one: every example in order, packed (n_windows -1),
        or n_windows rows whose first examples are spread evenly over the split, each filled from there."""
        order = self.eligible
        firsts = [0] if n_windows < 0 else np.unique(np.linspace(0, len(order) - 1, n_windows).round()).astype(int)
        rows = []
        for k, first in enumerate(firsts):
            end = len(order) if n_windows < 0 or k + 1 == len(firsts) else firsts[k + 1]
            row, used = [], 0
            for e in order[first:end].tolist():
                n = int(self.positions[e])
                if used + n > self.block_size:
                    if n_windows > 0:
                        break
                    rows.append(row)
                    row, used = [], 0
                row.append(e)
                used += n
            rows.append(row)
        return rows

    def describe(self, split):
        what = f"{len(self.starts):,} {split} examples"
        if self.too_long:
            done = "cut" if len(self.eligible) == len(self.starts) else "skipped"
            what += f" ({self.too_long:,} longer than block_size {self.block_size}: {done})"
        return what


def get_batch(datasets, block_size, batch_size, seed, rank, iteration, micro_step):
    """(x, y) int64 arrays of shape (batch_size, block_size) for one micro-step of one rank; with a prompt/completion
    dataset among them, (x, y, doc_ids, pos_ids) (Examples.pack; a text window is one document, positions
    0..block_size-1). `datasets` is [(memmap or Examples, weight), ...]; with several, each sequence's dataset is
    drawn by weight from the same stream."""
    rng = np.random.default_rng([seed, rank, iteration, micro_step])
    if len(datasets) == 1:
        choice = np.zeros(batch_size, dtype=np.int64)
    else:
        choice = rng.choice(len(datasets), size=batch_size, p=[w for _, w in datasets])
    # contiguous: a strided view would be copied to the GPU through pageable memory, a copy that waits for the GPU
    x = np.empty((batch_size, block_size), dtype=np.int64)
    y = np.empty((batch_size, block_size), dtype=np.int64)
    packed = any(isinstance(data, Examples) for data, _ in datasets)
    if packed:
        doc_ids = np.zeros((batch_size, block_size), dtype=np.int64)
        pos_ids = np.tile(np.arange(block_size), (batch_size, 1))
    offsets = np.arange(block_size + 1)
    for d, (data, _) in enumerate(datasets):
        rows = np.flatnonzero(choice == d)
        if not rows.size:
            continue
        if isinstance(data, Examples):
            x[rows], y[rows], doc_ids[rows], pos_ids[rows] = data.pack(data.draw(rng, rows.size))
        else:
            starts = rng.integers(0, len(data) - block_size, size=rows.size)
            window = data[starts[:, None] + offsets]
            x[rows], y[rows] = window[:, :-1], window[:, 1:]
    return (x, y, doc_ids, pos_ids) if packed else (x, y)


def eval_batch(data, windows, block_size):
    """The arrays of get_batch for fixed evaluation windows: starts of a text split (eval_starts), rows of an
    Examples (Examples.eval_rows)."""
    if isinstance(data, Examples):
        return data.pack(windows)
    window = data[np.asarray(windows)[:, None] + np.arange(block_size + 1)].astype(np.int64)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


def loss_weights(counts, total, ga, world_size):
    """The factor for each of this rank's micro-batch losses that makes the optimizer step's gradient the gradient
    of the mean loss over the trained targets (y != -1) of all micro-batches of all ranks.

    counts[m]: the trained targets n_m of this rank's micro-batch m; total: N, their sum over the step's
    micro-batches on every rank. The model's loss of a micro-batch is the mean over its own targets, S_m / n_m (S_m
    the sum of their cross-entropies). DeepSpeed divides the loss given to engine.backward by the accumulation
    steps ga and averages the gradients over the world_size ranks, so the step's gradient is the sum over every
    rank's micro-batches of grad(L_m) / (ga * world_size). Given L_m = S_m / n_m * (n_m * ga * world_size / N),
    that is the sum of grad(S_m) / N: every trained target counts once, whichever window it sits in. Text windows
    all have n_m = block_size * batch_size targets: then every factor is 1."""
    return [n * ga * world_size / total if total else 0.0 for n in counts]


def continual_data_seed(seed, source_marker):
    """The sample stream of a run that starts from another run's checkpoint: batches are a function of (seed,
    rank, iteration), and such a run counts iterations from 0 again, so with the source's seed it would replay the
    source's batches in their order (and its logged loss would flatter it). Mixed from the seed and the source
    checkpoint's identity: reproducible, and another stream for each source."""
    key = f"{seed}:{source_marker.get('iteration')}:{source_marker.get('saved_at')}"
    return zlib.crc32(key.encode())


def eval_starts(n_tokens, block_size, n_windows=-1):
    """Fixed window starts for evaluation: consecutive non-overlapping windows tiling the split (the last
    aligned to its end), or n_windows of them spread evenly. Same windows at every eval and world size."""
    tiles = (n_tokens - 1) // block_size
    starts = np.arange(tiles) * block_size
    if (n_tokens - 1) % block_size:
        starts = np.append(starts, n_tokens - 1 - block_size)
    if 0 < n_windows < len(starts):
        starts = starts[np.linspace(0, len(starts) - 1, n_windows).round().astype(np.int64)]
    return starts


BATCH_KEYS = ("idx", "targets", "doc_ids", "pos_ids")  # GPT.forward's names for get_batch's arrays


def to_device(arrays, device, pin=False):
    """get_batch's arrays as GPT.forward's keyword arguments on the device."""
    tensors = [torch.from_numpy(a) for a in arrays]
    if pin:
        tensors = [t.pin_memory() for t in tensors]
    return {key: t.to(device, non_blocking=True) for key, t in zip(BATCH_KEYS, tensors)}


class Batches:
    """Micro-batches on the device, loaded ahead (pinned, non-blocking copies) while the current one computes: the
    next one, and for prompt/completion data at an iteration's last micro-batch all of the next iteration's, whose
    counts of trained targets the loss weights need before its first forward (trained_targets)."""

    def __init__(self, datasets, block_size, batch_size, seed, rank, device):
        self.args = (datasets, block_size, batch_size, seed, rank)
        self.device = device
        self.pin = device.type == "cuda"
        self.packed = any(isinstance(data, Examples) for data, _ in datasets)
        self.text_targets = block_size * batch_size  # a text window's targets are all trained
        self.ready = {}  # (iteration, micro_step) -> (batch, its trained targets)

    def _load(self, key):
        if key not in self.ready:
            arrays = get_batch(*self.args, *key)
            n = int((arrays[1] != -1).sum()) if self.packed else self.text_targets
            self.ready[key] = to_device(arrays, self.device, self.pin), n
        return self.ready[key]

    def get(self, iteration, micro_step, ga):
        """The micro-batch as GPT.forward's keyword arguments (idx, targets[, doc_ids, pos_ids])."""
        batch, _ = self._load((iteration, micro_step))
        self.ready = {k: v for k, v in self.ready.items() if k > (iteration, micro_step)}
        if micro_step + 1 < ga:
            self._load((iteration, micro_step + 1))
        else:
            for m in range(ga if self.packed else 1):
                self._load((iteration + 1, m))
        return batch

    def trained_targets(self, iteration, ga):
        """This rank's number of trained targets in each micro-batch of `iteration`."""
        if not self.packed:
            return [self.text_targets] * ga
        return [self._load((iteration, m))[1] for m in range(ga)]


def load_splits(cfg, vocab_size):
    """{"train": {name: (data, weight, eval windows)}, "val": {...}} for the datasets of cfg.dataset: data a memmap
    of tokens (text) or Examples (prompt/completion)."""
    splits = {"train": {}, "val": {}}
    for name, weight in parse_datasets(cfg.dataset):
        val = load_split(name, "val", cfg.block_size, vocab_size, cfg.long_examples)
        train = load_split(name, "train", cfg.block_size, vocab_size, cfg.long_examples)
        if isinstance(val, Examples):
            val_windows = val.eval_rows(cfg.eval_iters)
            train_windows = train.eval_rows(len(val_windows))
        else:
            val_windows = eval_starts(len(val), cfg.block_size, cfg.eval_iters)
            # the train loss is estimated on as many windows as val gets, spread over the (often far larger) split
            train_windows = eval_starts(len(train), cfg.block_size, len(val_windows))
        splits["val"][name] = (val, weight, val_windows)
        splits["train"][name] = (train, weight, train_windows)
    return splits


def describe(name, weight, train, val):
    """One dataset for the start-up summary's data line."""
    line = f"{name} ({weight:.0%}): {len(train):,} train / {len(val):,} val tokens"
    if isinstance(train, Examples):
        line += f", prompt/completion: {train.describe('train')}, {val.describe('val')}"
    return line
