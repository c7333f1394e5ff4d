"""
The data stream: memmapped uint16 token bins (made by data/prepare.py), checked when opened so that training cannot
fail on them later, and batches that are pure functions of (seed, rank, iteration, micro-step): a resumed run draws
exactly the batches the interrupted one would have.
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


def load_split(name, split, block_size, vocab_size):
    """The memmapped token bin of one split, checked so that training cannot fail on it later."""
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
            recorded = json.load(f).get(f"{split}_tokens")
    except (OSError, ValueError, AttributeError):
        recorded = None  # bins made by other tools come without meta.json
    if isinstance(recorded, int) and recorded != size // 2:
        raise InputError(f"{path} has {size // 2:,} tokens but {folder}/meta.json says {recorded:,}: the bins and "
                         f"meta.json come from different or interrupted preparations; prepare the dataset again "
                         f"with `{prepare_command(name, folder)}`")
    data = np.memmap(path, dtype=np.uint16, mode="r")
    if len(data) < block_size + 1:
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
    return data


def get_batch(datasets, block_size, batch_size, seed, rank, iteration, micro_step):
    """(x, y) int64 arrays of shape (batch_size, block_size) for one micro-step of one rank. `datasets` is
    [(memmap, weight), ...]; with several, each sequence's dataset is drawn by weight from the same stream."""
    rng = np.random.default_rng([seed, rank, iteration, micro_step])
    if len(datasets) == 1:
        choice = np.zeros(batch_size, dtype=np.int64)
    else:
        choice = rng.choice(len(datasets), size=batch_size, p=[w for _, w in datasets])
    buf = np.empty((batch_size, block_size + 1), dtype=np.int64)
    offsets = np.arange(block_size + 1)
    for d, (data, _) in enumerate(datasets):
        rows = np.flatnonzero(choice == d)
        if rows.size:
            starts = rng.integers(0, len(data) - block_size, size=rows.size)
            buf[rows] = data[starts[:, None] + offsets]
    # contiguous: a strided view would be copied to the GPU through pageable memory, a copy that waits for the GPU
    return np.ascontiguousarray(buf[:, :-1]), np.ascontiguousarray(buf[:, 1:])


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


class Batches:
    """Micro-batches on the device, the next one copied (pinned, non-blocking) while the current computes."""

    def __init__(self, datasets, block_size, batch_size, seed, rank, device):
        self.args = (datasets, block_size, batch_size, seed, rank)
        self.device = device
        self.pin = device.type == "cuda"
        self.pending = {}

    def _load(self, iteration, micro_step):
        x, y = get_batch(*self.args, iteration, micro_step)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if self.pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def get(self, iteration, micro_step, ga):
        batch = self.pending.pop((iteration, micro_step), None) or self._load(iteration, micro_step)
        nxt = (iteration, micro_step + 1) if micro_step + 1 < ga else (iteration + 1, 0)
        self.pending = {nxt: self._load(*nxt)}
        return batch


def load_splits(cfg, vocab_size):
    """{"train": {name: (memmap, weight, eval window starts)}, "val": {...}} for the datasets of cfg.dataset."""
    splits = {"train": {}, "val": {}}
    for name, weight in parse_datasets(cfg.dataset):
        val = load_split(name, "val", cfg.block_size, vocab_size)
        val_starts = eval_starts(len(val), cfg.block_size, cfg.eval_iters)
        train = load_split(name, "train", cfg.block_size, vocab_size)
        splits["val"][name] = (val, weight, val_starts)
        # the train loss is estimated on as many windows as val gets, spread over the (often far larger) train split
        splits["train"][name] = (train, weight, eval_starts(len(train), cfg.block_size, len(val_starts)))
    return splits
