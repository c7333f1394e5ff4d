"""
Fine-tune GPT-2 (up to GPT-2 XL, 1.5B parameters) with DeepSpeed ZeRO-2 on every GPU of one or more machines.

    deepspeed --num_gpus=4 train_deepspeed.py                                    # the defaults below
    deepspeed --num_gpus=4 train_deepspeed.py config/finetune_shakespeare_xl.py --max_iters=200
    deepspeed --num_gpus=2 train_deepspeed.py config/cpu_tiny.py                 # CPU smoke run

Settings are the globals below; a config file (plain Python assignments) and then --key=value override them.
One iteration is one optimizer step: batch_size x gradient_accumulation_steps x GPUs sequences.
"""
import ast
import builtins
import contextlib
import csv
import difflib
import errno
import glob
import inspect
import io
import json
import math
import os
import random
import re
import shutil
import signal
import sys
import time
import traceback
import zlib
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import torch
from torch.profiler import record_function

# -----------------------------------------------------------------------------
# settings: fine-tune GPT-2 XL on Tiny Shakespeare, 16 x 2 x 4 GPUs = 128 sequences (131,072 tokens) per iteration
# I/O
out_dir = "out-shakespeare-xl"
init_from = "gpt2-xl"  # 'scratch', 'resume', gpt2[-medium|-large|-xl], a Hugging Face dir, or a checkpoint dir[/tag]
resume_tag = ""  # with init_from='resume': this tag instead of the one `latest` names
eval_interval = 25  # iterations between evaluations (and checkpoints)
eval_iters = -1  # fixed val windows of block_size tokens, spread evenly (-1 = all of val); train gets as many
log_interval = 1  # each log line is its own iteration's loss and speed, not an average
always_save_checkpoint = False  # save iter_N at every eval, not only when val loss improves
keep_last_n = 2  # iter_N checkpoints kept (best and final are never deleted); 0 keeps all
save_checkpoints = True  # False writes no checkpoint at all (benchmarks, dry runs)
pinned_checkpoint_copies = True  # faster saves for host RAM the size of each rank's share of a checkpoint
max_runtime = 0.0  # hours; when reached, save and exit like on SIGTERM (0 = no limit)
patience = 0  # stop after this many evals without val improvement (0 = never)
# data
dataset = "shakespeare"  # a folder under data/ or a path; several with weights: 'shakespeare:0.3,mydata:0.7'
block_size = 1024
batch_size = 16  # micro-batch per GPU
gradient_accumulation_steps = 2
target_batch_size = 0  # sequences per iteration; if set, gradient_accumulation_steps is derived from it
# model (n_layer/n_head/n_embd/bias apply to init_from='scratch')
n_layer = 12
n_head = 12
n_embd = 768
bias = True
dropout = 0.0
gradient_checkpointing = 0  # blocks recomputed in backward, from the first (0 = none; -1 or >= n_layer = all)
recompute_gelu = 0  # blocks whose MLP recomputes its GELU output in backward (0 = none; -1 = all): a cheaper saving
compile = False  # torch.compile each transformer block
fused_kernels = True  # GPU, fp16/bf16, ZeRO-1/2: GELU in cuBLASLt epilogues; cross-entropy, add + LayerNorm in Triton
fused_norm = True  # with fused_kernels: the add + LayerNorm kernels (config/xl_24gb_2gpus.py turns them off)
deterministic = False  # bitwise-repeatable GPU runs and resumes (deterministic kernels only), 7.6% slower
# optimizer: AdamW
learning_rate = 3e-5
max_iters = 20
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # 0 disables
# learning-rate schedule: 'constant', 'cosine' or 'linear', after warmup_iters of linear warmup
lr_schedule = "constant"
warmup_iters = 0
lr_decay_iters = 0  # 0 = max_iters
min_lr = 3e-6
# precision and DeepSpeed
dtype = "float16"  # 'float16' (dynamic loss scaling), 'bfloat16' or 'float32'
deepspeed_config = "ds_config_zero2.json"
max_consecutive_nonfinite = 3  # stop after this many iterations in a row with a NaN/inf loss
dist_timeout_minutes = 10.0  # a collective that waits longer than this fails instead of hanging
max_gpu_memory_gb = 0.0  # cap this process's GPU memory (to rehearse smaller cards); 0 = no cap
seed = 1337
# logging
tensorboard_log = False
wandb_log = False
wandb_project = "gpt2-deepspeed"
wandb_group = ""  # wandb run group (DeepSpeed's wandb monitor names runs itself)
csv_log = True  # DeepSpeed's CSV monitor under out_dir/logs; the loss plot reads it
plot = True  # write out_dir/loss.png at the end of the run
profile_iteration = 0  # record iteration N (as logged) with torch.profiler: out_dir/profile/rank_<r>.json.gz; 0 = off
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}

REPO = os.path.dirname(os.path.abspath(__file__))
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; run again with init_from='resume'
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: a second signal stopped at once, without saving
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
LR_SCHEDULES = ("constant", "cosine", "linear")


def one_line(error, limit=300):
    """An exception's message on one line (its lines joined), cut at `limit` characters."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class InputError(Exception):
    """Bad input: reported in one line (by rank 0, or by every rank for a rank's own problem), exit code 2,
    nothing saved."""

    def __init__(self, message, every_rank=False):
        super().__init__(message)
        self.every_rank = every_rank


# -----------------------------------------------------------------------------
# configuration


BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def settings_help(source, usage):
    """--help: the usage line and the settings block of `source` (the lines between its first two `# ----`
    banners: every setting with its default and comment)."""
    with open(source) as f:
        lines = f.read().splitlines()
    banners = [i for i, line in enumerate(lines) if line.startswith("# ----")]
    block = "\n".join(lines[banners[0] + 1:banners[1]])
    return (f"usage: {usage}\nConfig files are Python files that set these globals; --key=value overrides them "
            f"(after every config file). The settings and their defaults:\n{block}")


def parse_config(argv, defaults=DEFAULTS, source=__file__,
                 usage="deepspeed --num_gpus=N train_deepspeed.py [config.py ...] [--key=value ...]"):
    """Defaults, then config files (bare arguments, executed as Python) in order, then --key=value in order, so
    that the command line wins wherever it stands. Unknown keys and values of another type are errors naming the
    key; -h/--help prints the settings of `source` and exits."""
    if "-h" in argv or "--help" in argv:
        print(settings_help(source, usage))
        sys.exit(0)
    cfg = dict(defaults)
    argv = [a for a in argv if not a.startswith("--local_rank")]  # the launcher's; LOCAL_RANK says the same
    script = os.path.basename(source)
    for arg, after in zip(argv, argv[1:] + [None]):  # before the config files: `--key value` would read value as one
        key, sep, _ = arg.partition("=")
        if arg.startswith("--") and not sep:
            value = after if after is not None and not after.startswith("--") else "VALUE"
            raise InputError(f"{arg} has no value; write {key}={value}")
    for arg in [a for a in argv if not a.startswith("--")]:
        if not os.path.isfile(arg):
            raise InputError(f"config file {arg} not found; give the path of a .py file of settings, or --key=value")
        scope = {}
        try:
            with open(arg) as f:
                exec(builtins.compile(f.read(), arg, "exec"), scope)
        except Exception as e:
            line = next((fr.lineno for fr in reversed(traceback.extract_tb(e.__traceback__)) if fr.filename == arg),
                        getattr(e, "lineno", None))
            where = f" line {line}" if line else ""
            hint = " (config files are Python: True/False, quoted strings)" if isinstance(e, NameError) else ""
            raise InputError(f"config file {arg}{where} failed to run: {type(e).__name__}: {e}{hint}") from None
        for key, value in scope.items():  # modules, functions and classes a config file imports are not settings
            if not (key.startswith("_") or inspect.ismodule(value) or callable(value)):
                cfg[key] = check_setting(key, value, defaults, arg, script)
    for arg in [a for a in argv if a.startswith("--")]:
        key, _, raw = arg[2:].partition("=")
        if key in defaults and isinstance(defaults[key], str):
            value = raw  # strings need no quotes on the command line
        elif key in defaults and isinstance(defaults[key], bool) and raw.lower() in BOOL_WORDS:
            value = BOOL_WORDS[raw.lower()]
        else:
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
        cfg[key] = check_setting(key, value, defaults, "the command line", script)
    return cfg


def check_setting(key, value, defaults, source, script="train_deepspeed.py"):
    if key not in defaults:
        close = difflib.get_close_matches(key, defaults, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; the settings are the globals of {script}"
        raise InputError(f"unknown setting {key!r} in {source}{hint}")
    expected = type(defaults[key])
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected:
        spelled = " (True or False)" if expected is bool else ""
        raise InputError(f"setting {key} must be {expected.__name__}{spelled}, got {value!r} "
                         f"({type(value).__name__}) in {source}")
    return value


SETTING_RANGES = [  # (setting, its test, what it may be)
    ("learning_rate", lambda v: v >= 0, ">= 0"), ("min_lr", lambda v: v >= 0, ">= 0"),
    ("weight_decay", lambda v: v >= 0, ">= 0"), ("beta1", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("beta2", lambda v: 0 <= v < 1, "in [0, 1)"), ("grad_clip", lambda v: v >= 0, ">= 0 (0 disables clipping)"),
    ("dropout", lambda v: 0 <= v < 1, "in [0, 1)"), ("warmup_iters", lambda v: v >= 0, ">= 0"),
    ("lr_decay_iters", lambda v: v >= 0, ">= 0 (0 = max_iters)"), ("max_iters", lambda v: v >= 0, ">= 0"),
    ("eval_interval", lambda v: v >= 1, ">= 1"), ("block_size", lambda v: v >= 1, ">= 1"),
    ("log_interval", lambda v: v >= 1, ">= 1"),
    ("eval_iters", lambda v: v == -1 or v >= 1, "-1 (all of val) or >= 1"),
    ("keep_last_n", lambda v: v >= 0, ">= 0 (0 keeps every iter_N)"),
    ("gradient_checkpointing", lambda v: v >= -1, "-1 (all blocks), 0 (none) or a number of blocks"),
    ("recompute_gelu", lambda v: v >= -1, "-1 (all blocks), 0 (none) or a number of blocks"),
    ("patience", lambda v: v >= 0, ">= 0 (0 = never stop early)"),
    ("max_runtime", lambda v: v >= 0, ">= 0 hours (0 = no limit)"),
    ("max_consecutive_nonfinite", lambda v: v >= 1, ">= 1"),
    ("dist_timeout_minutes", lambda v: v > 0, "> 0"), ("max_gpu_memory_gb", lambda v: v >= 0, ">= 0 (0 = no cap)"),
    ("n_layer", lambda v: v >= 1, ">= 1"), ("n_head", lambda v: v >= 1, ">= 1"),
    ("n_embd", lambda v: v >= 1, ">= 1"), ("seed", lambda v: v >= 0, ">= 0"),
    ("target_batch_size", lambda v: v >= 0, ">= 0 (0 = batch_size x gradient_accumulation_steps x GPUs)"),
]


def check_ranges(cfg, rules=SETTING_RANGES):
    """Settings of the right type but outside what they can mean: an error naming the setting and its range."""
    for key, ok, allowed in rules:
        if not ok(cfg[key]):
            raise InputError(f"setting {key} must be {allowed}, got {cfg[key]!r}")


def derive_batch(cfg, world_size):
    """(micro-batch, accumulation steps, sequences per iteration), checked against target_batch_size."""
    mb, ga = cfg["batch_size"], cfg["gradient_accumulation_steps"]
    if mb < 1 or ga < 1:
        raise InputError(f"batch_size ({mb}) and gradient_accumulation_steps ({ga}) must be at least 1")
    target = cfg["target_batch_size"]
    if target > 0:
        if target % (mb * world_size):
            raise InputError(f"target_batch_size {target} is not a multiple of batch_size {mb} x {world_size} GPUs "
                             f"= {mb * world_size}; change target_batch_size or batch_size")
        ga = target // (mb * world_size)
    return mb, ga, mb * ga * world_size


MODEL_SETTINGS = ("n_layer", "n_head", "n_embd", "bias", "dropout")  # a resumed run keeps the checkpoint's model
TRAJECTORY_SETTINGS = ("dataset", "block_size", "learning_rate", "min_lr", "lr_schedule", "warmup_iters",
                       "weight_decay", "beta1", "beta2", "grad_clip", "seed")


def resume_warnings(saved, cfg, tag, model_config):
    """What a resume changes against the settings `tag` was saved with (`saved`; its model: `model_config`):
    model settings given anew, which it ignores; settings that make it another run than the one it continues; and
    a decaying schedule whose length moved (lr_decay_iters 0 means max_iters)."""
    warnings = []
    ignored = [f"{k}={cfg[k]!r} (the model has {model_config.get(k, saved[k])!r})"
               for k in MODEL_SETTINGS if k in saved and saved[k] != cfg[k]]
    if ignored:
        warnings.append(f"ignored on resume: {', '.join(ignored)}; a resumed run keeps {tag}'s model (to change it, "
                        f"start a new run from its weights with --init_from=<out_dir>/{tag})")
    changed = [f"{k} {saved[k]!r} -> {cfg[k]!r}" for k in TRAJECTORY_SETTINGS if k in saved and saved[k] != cfg[k]]
    decay_was = saved.get("lr_decay_iters", 0) or saved.get("max_iters", cfg["max_iters"])
    decay_now = cfg["lr_decay_iters"] or cfg["max_iters"]
    moved_by_max_iters = decay_was != decay_now and not cfg["lr_decay_iters"]
    if decay_was != decay_now and cfg["lr_schedule"] != "constant" and not moved_by_max_iters:
        changed.append(f"schedule length (lr_decay_iters) {decay_was} -> {decay_now}")
    if changed:
        warnings.append(f"settings changed since {tag} was saved: {', '.join(changed)}; the run goes on with them, "
                        "no longer an exact continuation")
    if moved_by_max_iters and cfg["lr_schedule"] != "constant":
        warnings.append(f"max_iters {saved.get('max_iters', decay_was)} -> {cfg['max_iters']} also moves the end "
                        f"of the {cfg['lr_schedule']} schedule (lr_decay_iters 0 = max_iters), so the learning rate "
                        f"jumps; pass --lr_decay_iters={decay_was} to keep it")
    return warnings


def fill_ds_config(ds, cfg, mb, ga, world_size, out_dir):
    """Complete the DeepSpeed JSON from the script's settings, which are the one source of truth: fields
    given as "auto" or left out are filled; a number that disagrees is an error."""
    wanted = {"train_micro_batch_size_per_gpu": mb, "gradient_accumulation_steps": ga,
              "train_batch_size": mb * ga * world_size, "gradient_clipping": cfg["grad_clip"]}
    for key, value in wanted.items():
        given = ds.get(key, "auto")
        if given != "auto" and given != value:
            raise InputError(f"{cfg['deepspeed_config']} sets {key}={given} but the script's settings give {value}; "
                             f"set it to \"auto\" in the JSON (the script fills it) or change the script's setting")
        ds[key] = value
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise InputError(f"{cfg['deepspeed_config']} has an {section!r} section; remove it: the script builds "
                             "AdamW and the LR schedule from learning_rate, weight_decay, lr_schedule, ...")
    precision = cfg["dtype"]
    for key, name in (("fp16", "float16"), ("bf16", "bfloat16")):
        section = ds.setdefault(key, {})
        enabled = section.get("enabled", "auto")
        if enabled not in ("auto", precision == name):
            raise InputError(f"{cfg['deepspeed_config']} sets {key}.enabled={enabled} but dtype={precision!r}; "
                             "set it to \"auto\" and choose the precision with --dtype")
        section["enabled"] = precision == name
    ds.setdefault("steps_per_print", 10 ** 9)  # our log line replaces DeepSpeed's
    return ds


MONITOR_SECTIONS = ("tensorboard", "csv_monitor", "wandb", "comet")


def monitor_config(ds, cfg, out_dir):
    """Takes the monitor sections out of the DeepSpeed JSON (the engine gets none: it would log lr and loss scale
    at step = samples seen, which pushes wandb's step past the iterations so that wandb drops every metric the
    trainer logs after) and returns them, completed from the settings, for the trainer's own MonitorMaster."""
    sections = {key: ds.pop(key) for key in MONITOR_SECTIONS if key in ds}
    logs = os.path.join(out_dir, "logs")
    sections["tensorboard"] = {"enabled": cfg["tensorboard_log"], "output_path": logs, "job_name": "tensorboard"}
    sections["csv_monitor"] = {"enabled": cfg["csv_log"], "output_path": logs, "job_name": "csv"}
    sections["wandb"] = {"enabled": cfg["wandb_log"], "project": cfg["wandb_project"],
                         **({"group": cfg["wandb_group"]} if cfg["wandb_group"] else {})}
    return sections


def load_ds_config(path):
    if not os.path.isfile(path) and os.path.isfile(os.path.join(REPO, path)):
        path = os.path.join(REPO, path)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"deepspeed_config {path} not found; pass --deepspeed_config=ds_config_zero2.json "
                         "or the path of your JSON") from None
    except json.JSONDecodeError as e:
        raise InputError(f"deepspeed_config {path} is not valid JSON ({e}); fix the file") from None


# -----------------------------------------------------------------------------
# learning rate


def get_lr(step, learning_rate, lr_schedule="constant", warmup_iters=0, lr_decay_iters=0, min_lr=0.0):
    """LR for the optimizer step that follows `step` applied steps: linear warmup, then constant or a
    cosine/linear decay to min_lr at lr_decay_iters (held there after)."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if lr_schedule == "constant" or lr_decay_iters <= warmup_iters:
        return learning_rate
    progress = min(1.0, (step - warmup_iters) / (lr_decay_iters - warmup_iters))
    if lr_schedule == "cosine":
        coeff = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        coeff = 1.0 - progress
    return min_lr + coeff * (learning_rate - min_lr)


# -----------------------------------------------------------------------------
# data: memmapped uint16 bins, batches that are pure functions of (seed, rank, iteration, micro-step)


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


# -----------------------------------------------------------------------------
# helpers for a distributed run


_progress_bar = None  # rank 0's tqdm bar while the loop runs on a terminal


def print_line(text, file=None):
    """A line from any rank (stderr by default) in one write: every rank (and C++ code in them) writes to the same
    pipe, and print() would send the text and its newline separately, letting another process's output land between
    them."""
    out = file or sys.stderr
    out.write(text + "\n")
    out.flush()


def print0(*args, **kwargs):
    if int(os.environ.get("RANK", "0")) != 0:
        return
    text = " ".join(str(a) for a in args)
    if _progress_bar is not None and kwargs.get("file", sys.stdout) is sys.stdout:
        _progress_bar.write(text, file=_progress_bar.fp)
    else:
        print_line(text, file=kwargs.get("file", sys.stdout))


class Progress:
    """A progress bar with ETA on rank 0 when stdout is a terminal; nothing otherwise (the log lines, which
    carry their own ETA, are then the progress)."""

    def __init__(self, total, initial, enabled, stream=None):
        global _progress_bar
        stream = stream or sys.stdout
        self.bar = None
        if enabled and stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, unit="it", file=stream, dynamic_ncols=True, leave=False)
        _progress_bar = self.bar

    def update(self, loss):
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(1)

    def close(self):
        global _progress_bar
        if self.bar is not None:
            self.bar.close()
        _progress_bar = None


def parse_faults(spec):
    """Test-only fault injection from $TRAIN_FAULT, e.g. 'nan@3:1,nan@6-8:1,crash@4:0,kill_in_save@12:1': a NaN
    loss, an exception, SIGKILL inside a save, 'sigterm' (to itself, as a scheduler would; 'sigterm_in_eval' during
    the eval at that iteration; 'sigint_in_startup@0' after the model is built), 'hang' (sleep for an hour), 'oom'
    (torch's out-of-memory error) or 'minscale' (DeepSpeed's exception at the minimum fp16 loss scale).
    KIND@FIRST[-LAST]:RANK. Returns {kind: [(first, last, rank), ...]}."""
    faults = {}
    for item in filter(None, spec.split(",")):
        kind, _, where = item.partition("@")
        span, _, rank = where.partition(":")
        first, _, last = span.partition("-")
        faults.setdefault(kind, []).append((int(first), int(last or first), int(rank or 0)))
    return faults


def fault_at(faults, kind, iteration, rank):
    return any(a <= iteration <= b and r == rank for a, b, r in faults.get(kind, ()))


class SecondSignal(KeyboardInterrupt):
    """A second SIGTERM/SIGINT after StopFlag's first: stop at once, without saving."""


class StopFlag:
    """SIGTERM/SIGINT set a flag that the ranks agree on at the end of the current step; a second signal stops at
    once, unless it comes within same_stop_seconds of the first: that is the same stop passed on (DeepSpeed's
    launch.py sends SIGTERM to the trainers on its own SIGINT/SIGTERM, which a terminal's Ctrl-C, `pkill -f
    train_deepspeed.py` or a scheduler signalling every process of the job delivers to it as well)."""
    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(self, saves=True, same_stop_seconds=float(os.environ.get("TRAIN_SAME_STOP_SECONDS", "2"))):
        self.signal = None
        self.then = "saving a checkpoint" if saves else "stopping (save_checkpoints=False: nothing is saved)"
        self.same_stop_seconds = same_stop_seconds
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        rank = os.environ.get("RANK", "0")
        if self.signal is not None:
            after = time.monotonic() - self.first_at
            if after >= self.same_stop_seconds or self.passed_on:
                raise SecondSignal
            self.passed_on = True
            print_line(f"[rank {rank}] {signal.Signals(signum).name} {after:.2f}s after the {self.signal}: the same "
                       "stop (passed on by a launcher); still finishing this step")
            return
        self.signal, self.first_at, self.passed_on = signal.Signals(signum).name, time.monotonic(), False
        print_line(f"[rank {rank}] {self.signal}: finishing this step, then {self.then} (send it again to stop at "
                   "once)")

    def requests(self):
        """This rank's vote per signal, to be summed over the ranks (one all-reduce) and read by agreed_stop."""
        return [float(self.signal == name) for name in self.SIGNALS]


def agreed_stop(summed, reasons=StopFlag.SIGNALS):
    """The first reason any rank voted for, from the all-reduced votes; None when no rank did."""
    return next((why for why, n in zip(reasons, summed) if n > 0), None)


class StepTimer:
    """Time of the optimizer step (engine.step() at the accumulation boundary: the last gradient reduction,
    clipping, AdamW, the parameter all-gather), with CUDA events on the GPU."""

    def __init__(self, on_gpu):
        self.on_gpu = on_gpu
        if on_gpu:
            self.begin, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self):
        if self.on_gpu:
            self.begin.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if self.on_gpu:
            self.end.record()
        else:
            self.t1 = time.perf_counter()

    def milliseconds(self):
        if self.on_gpu:
            self.end.synchronize()
            return self.begin.elapsed_time(self.end)
        return (self.t1 - self.t0) * 1000


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(*parts):
    seed = int(np.random.SeedSequence(list(parts)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_deterministic_kernels():
    """Bitwise-repeatable GPU runs (setting `deterministic`; also used by bench/). Without it two runs from the same
    seed agree only to ~1e-4 in the loss, and a resumed run differs from the straight one as much. The visible
    change is the attention: FlashAttention-2's deterministic backward instead of cuDNN's, 7.6% slower for GPT-2 XL
    on an H100 (bench/NOTES.md). Call it before the first matmul: cuBLAS reads its workspace setting then."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    # Filling every new tensor (a debugging aid that the mode turns on) cost 16 ms of 388 per GPT-2 XL micro-step;
    # the gradients were bitwise the same without it.
    torch.utils.deterministic.fill_uninitialized_memory = False


# what each iteration reports: (metric, its part of the log line, its monitor tag), in the order of the line
LOG_FIELDS = [
    ("loss", "loss {:.4f}", "Train/loss"), ("lr", "lr {:.2e}", "Train/lr"), ("ms", "{:.0f} ms", None),
    ("tok_s", "{:,.0f} tok/s/gpu", "Train/tokens_per_sec"), ("mfu", "MFU {:.1%}", "Train/mfu"),
    ("opt_ms", "opt {:.0f} ms", "Train/optimizer_step_ms"), ("mem_gib", "mem {:.1f} GiB", "Train/gpu_mem_gib"),
    ("scale", "scale {:.0f}", "Train/loss_scale"), ("grad_norm", "gnorm {:.2f}", "Train/grad_norm"),
    ("skipped", "{}", None), ("skipped_total", "{} skipped in all", "Train/skipped_steps"), ("eta", "eta {}", None),
    ("tokens_seen", None, "Train/tokens_seen"), ("rss_mib", None, "Host/rss_mib"),
    ("open_files", None, "Host/open_files"),
]


def start_profiler(on_gpu):
    """Record one iteration: the phases are marked with record_function("forward"/"backward"/"optimizer step")."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if on_gpu:
        torch.cuda.synchronize()  # the previous iteration's kernels stay out of the trace
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    profiler = torch.profiler.profile(activities=activities)
    profiler.start()
    return profiler


def stop_profiler(profiler, out_dir, rank, on_gpu):
    if on_gpu:
        torch.cuda.synchronize()
    profiler.stop()
    os.makedirs(os.path.join(out_dir, "profile"), exist_ok=True)
    path = os.path.join(out_dir, "profile", f"rank_{rank}.json.gz")
    profiler.export_chrome_trace(path)
    return path


def format_log(iteration, max_iters, metrics):
    """'iter 12/100 | loss 2.8341 | lr 3.00e-05 | ...' from a dict of metrics; None values are left out."""
    parts = [f"iter {iteration}/{max_iters}"]
    parts += [fmt.format(metrics[key]) for key, fmt, _ in LOG_FIELDS if fmt and metrics.get(key) is not None]
    return " | ".join(parts)


def step_of(row):
    """A CSV log row's step, or None for a header or a line a crash cut short."""
    try:
        return float(row[0])
    except (IndexError, ValueError):
        return None


def trim_csv_logs(csv_dir, last_step):
    """On resume: each CSV log keeps its header and its rows up to the checkpoint's iteration (a run that crashed
    logged iterations that the resumed run logs again). Returns the files' names as DeepSpeed's CSV monitor knows
    them, so that it adds no second header."""
    names = []
    for path in sorted(glob.glob(os.path.join(csv_dir, "*.csv"))):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if (step := step_of(r)) is not None and step <= last_step]
        if kept != rows:
            with open(path + ".tmp", "w", newline="") as f:
                csv.writer(f).writerows(kept)
            os.replace(path + ".tmp", path)
        names.append(os.path.basename(path)[:-len(".csv")])
    return names


def monitor_events(step, metrics):
    """DeepSpeed monitor events (tag, value, step) for the metrics that have a tag and a value."""
    return [(tag, metrics[key], step) for key, _, tag in LOG_FIELDS if tag and metrics.get(key) is not None]


def format_bytes(n):
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.0f} MiB"


def estimate_model_state_memory(model, zero_stage, offload_optimizer, offload_params, world_size):
    """DeepSpeed's own estimate of parameters + gradients + optimizer states per GPU, in bytes."""
    gpus_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    nodes = max(1, world_size // gpus_per_node)
    total = sum(p.numel() for p in model.parameters())
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
        largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
        return estimate_zero3_model_states_mem_needs(total, largest, gpus_per_node, nodes, offload_optimizer,
                                                     offload_params, zero_init=False)[1]
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs
    return estimate_zero2_model_states_mem_needs(total, gpus_per_node, nodes, cpu_offload=offload_optimizer)[1]


def format_duration(seconds):
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# -----------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(engine, data, starts, block_size, batch_size, rank, world_size, device):
    """Mean loss over fixed windows, split across ranks; every rank runs the same number of forwards
    (ZeRO-3 gathers parameters in forward) and the sums are all-reduced."""
    import deepspeed.comm as dist
    mine = starts[rank::world_size]
    n_batches = math.ceil(len(starts) / (world_size * batch_size))
    total = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, windows
    offsets = np.arange(block_size + 1)
    for b in range(n_batches):
        chunk = mine[b * batch_size:(b + 1) * batch_size]
        n = len(chunk)
        if n == 0:
            chunk = starts[:1]  # a dummy forward keeps the ranks in step; its loss is not counted
        buf = torch.from_numpy(data[chunk[:, None] + offsets].astype(np.int64)).to(device)
        _, loss = engine(buf[:, :-1], buf[:, 1:])
        total[0] += loss.double() * n
        total[1] += n
    dist.all_reduce(total)
    return (total[0] / total[1]).item()


def evaluate_all(engine, splits, block_size, batch_size, rank, world_size, device):
    """({'train': loss, 'val': loss, ...}, seconds spent on val). Losses are weighted means over datasets, with
    per-dataset entries when mixing."""
    engine.eval()
    out, val_seconds = {}, 0.0
    for split in ("val", "train"):
        t0 = time.time()
        mean = 0.0
        for name, (data, weight, starts) in splits[split].items():
            loss = evaluate(engine, data, starts, block_size, batch_size, rank, world_size, device)
            mean += weight * loss
            if len(splits[split]) > 1:
                out[f"{split}/{name}"] = loss
        out[split] = mean
        if split == "val":
            val_seconds = time.time() - t0  # evaluate() ends in an all-reduce read on the host: the work is done
    engine.train()
    return {k: out[k] for k in sorted(out, key=lambda k: (not k.startswith("train"), k))}, val_seconds


# -----------------------------------------------------------------------------
# model


def build_model(cfg, device, ptdtype, vocab_size, resume_marker=None):
    """GPTConfig + weights for init_from, built directly on the device in the training dtype."""
    from model import GPT, GPTConfig, PretrainedNotFound
    import checkpoint as ckpt
    init_from = cfg["init_from"]
    if resume_marker is not None:
        config = GPTConfig(**resume_marker["model_config"])
        with torch.device(device):
            return GPT(config, init_weights=False).to(ptdtype), f"resumed {resume_marker['tag']}"
    if init_from == "scratch":
        config = GPTConfig(block_size=cfg["block_size"], vocab_size=vocab_size, n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], n_embd=cfg["n_embd"], bias=cfg["bias"], dropout=cfg["dropout"])
        with torch.device(device):
            model = GPT(config)
        return model.to(ptdtype), "random initialisation"
    source_dir, tag = ckpt.split_checkpoint_path(init_from)
    if source_dir is not None:  # continual training: another run's weights, a fresh optimizer and schedule
        quiet = int(os.environ.get("RANK", "0")) != 0  # zero_to_fp32's progress lines once, not once per rank
        try:
            with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
                model, _ = ckpt.load_model(source_dir, tag, dropout=cfg["dropout"])
        except ckpt.CheckpointError as e:
            raise InputError(str(e)) from None
        model.to(device=device, dtype=ptdtype)
        return model, f"weights of {os.path.join(source_dir, tag)} (fresh optimizer and schedule)"
    # A shorter block_size trains on shorter windows but keeps every position embedding: the model (and its
    # export) keeps the context it came with instead of being cut to the training window
    try:
        model = GPT.from_pretrained(init_from, device=device, dtype=ptdtype, dropout=cfg["dropout"])
    except PretrainedNotFound as e:
        raise InputError(str(e)) from None
    return model, f"pretrained {init_from}"


def choose_with(message, how):
    """A checkpoint error's generic "choose another tag: a, b" made concrete: "choose another <how>: a, b"."""
    return message.replace("choose another tag: ", f"choose another {how}: ")


def resolve_init(C):
    """Check init_from before anything starts: (resume tag, its marker, the model's context length)."""
    import checkpoint as ckpt
    from model import GPT2_SIZES, PretrainedNotFound, resolve_pretrained
    if not C.out_dir.strip():
        raise InputError("out_dir is empty; give the run's folder, e.g. --out_dir=out-mydata")
    if C.resume_tag and C.init_from != "resume":
        raise InputError(f"resume_tag={C.resume_tag} is only read with --init_from=resume; add that, or drop "
                         f"--resume_tag (a new run from that tag's weights: --init_from="
                         f"{os.path.join(C.out_dir, C.resume_tag)} with another --out_dir)")
    if C.init_from == "resume":
        try:
            tag, marker = ckpt.resolve_resume(C.out_dir, C.resume_tag or None)
        except ckpt.CheckpointError as e:
            if ckpt.read_marker(C.out_dir) is not None:  # out_dir is itself a tag: out/iter_10
                parent, tag = os.path.split(os.path.normpath(C.out_dir))
                raise InputError(f"out_dir {C.out_dir} is a checkpoint tag, not a run's out_dir; resume it with "
                                 f"--out_dir={parent or '.'} --resume_tag={tag}") from None
            raise InputError(choose_with(str(e), "tag with --resume_tag=TAG")) from None
        return tag, marker, marker["model_config"]["block_size"]
    if C.init_from == "scratch":
        return None, None, C.block_size
    source_dir, tag = ckpt.split_checkpoint_path(C.init_from)
    if source_dir is not None:
        try:
            return None, None, ckpt.verify(os.path.join(source_dir, tag))["model_config"]["block_size"]
        except ckpt.CheckpointError as e:
            raise InputError(choose_with(str(e), f"with --init_from={source_dir}/TAG")) from None
    if not os.path.isdir(C.init_from) and C.init_from not in GPT2_SIZES:
        raise InputError(f"unknown init_from {C.init_from!r}: use 'scratch', 'resume', one of "
                         f"{', '.join(GPT2_SIZES)}, a Hugging Face GPT-2 directory or a checkpoint directory")
    try:
        return None, None, resolve_pretrained(C.init_from, with_weights=False)[0]["n_positions"]
    except PretrainedNotFound as e:
        raise InputError(str(e)) from None


# -----------------------------------------------------------------------------
# the run


def check_gpu_index(rank, local_rank, n_visible):
    if local_rank >= n_visible:
        raise InputError(f"rank {rank} needs GPU {local_rank} but this machine has {n_visible}; launch with "
                         f"--num_gpus={n_visible} or fewer", every_rank=True)


def is_write_error(e):
    """A file could not be written: OSError (ENOSPC, EDQUOT, EIO, ...), or torch.save's RuntimeError for a write cut
    short by a full disk ("unexpected pos ...", "basic_ios::clear: iostream error", "PytorchStreamWriter failed")."""
    text = str(e)
    return isinstance(e, OSError) or (isinstance(e, RuntimeError) and any(
        key in text for key in ("unexpected pos", "iostream error", "PytorchStreamWriter failed", "file write failed")))


class SaveFailed(Exception):
    """A checkpoint could not be written (a full disk, most often): one line, exit 1; `latest` is untouched."""


def out_of_memory_line(error, rank, cfg=None):
    """torch's out-of-memory message (a paragraph) as one line: how much, of what, and the settings that help
    (those of `cfg`, the run's settings, that are not already at their most frugal)."""
    text = str(error)
    size = r"([\d.]+ \w+)"
    asked = re.search("Tried to allocate " + size, text)
    in_use = re.search("this process has " + size + " memory in use", text)
    limit = re.search(size + " allowed", text) or re.search("total capacity of " + size, text)
    if asked and in_use and limit:
        what = (f"asked for {asked[1]} more with {in_use[1]} in use "
                f"({limit[1]} {'allowed' if 'allowed' in limit[0] else 'on the GPU'})")
    else:
        what = text.splitlines()[0][:200] if text else "no details"
    cfg = cfg or {}
    at = f" at micro-batch {cfg['batch_size']}" if "batch_size" in cfg else ""
    recompute = [flag for key, flag in (("recompute_gelu", "--recompute_gelu=-1"),
                                        ("gradient_checkpointing", "--gradient_checkpointing=N"))
                 if cfg.get(key) != -1]
    then = f", or recompute activations in backward with {' or '.join(recompute)}" if recompute else ""
    return (f"error: [rank {rank}] out of GPU memory{at}: {what}; lower --batch_size (--target_batch_size keeps the "
            f"sequences per iteration){then} (README: GPU memory guidance)")


def settings_or_none(argv):
    """The run's settings for an error report, or None where they cannot be read."""
    try:
        return parse_config(argv)
    except Exception:
        return None


class EndRun(Exception):
    """Leave the loop with an exit status (preempted, diverged) after the ranks agreed to."""

    def __init__(self, status):
        super().__init__(status)
        self.status = status


def apply_collective_timeout(timeout):
    """Make `timeout` torch's default for every process group. DeepSpeed gives it to the world group only and
    builds its data-parallel groups with new_group(), which takes torch's default (30 min for gloo) instead; the
    gradient reductions run in those groups, so without this a dead peer stalls them for half an hour."""
    import torch.distributed.distributed_c10d as c10d
    c10d.default_pg_timeout = timeout
    if isinstance(getattr(c10d, "default_pg_nccl_timeout", None), timedelta):
        c10d.default_pg_nccl_timeout = timeout


def stale_build_locks(root=None, max_age_s=600):
    """Lock files of torch extension builds (DeepSpeed's ops, fused_dense) older than max_age_s. A build that was
    killed leaves its lock behind and every later build of that extension waits on it for ever."""
    from torch.utils.cpp_extension import get_default_build_root
    root = root or os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    # root/<name>/lock under $TORCH_EXTENSIONS_DIR, root/<python>_<cuda>/<name>/lock under the default root
    locks = glob.glob(os.path.join(root, "*", "lock")) + glob.glob(os.path.join(root, "*", "*", "lock"))
    now = time.time()
    return sorted(p for p in locks if now - os.path.getmtime(p) > max_age_s)


def release_cpu_allreduce_buffer(rank):
    """DeepSpeed's CPU accelerator maps a 66 MB shared-memory buffer per rank and never unlinks it, so every run
    would leave its buffers in /dev/shm (that is, in RAM). After the barrier that follows init every rank has
    mapped its peers' buffers, so the names can go; the mappings stay valid."""
    name = (f"/dev/shm/deepspeed_allreduce_buffer_{os.getuid()}_{os.environ['MASTER_ADDR']}_"
            f"{os.environ['MASTER_PORT']}_{rank}")
    try:
        os.unlink(name)
    except FileNotFoundError:
        pass


def squared_norm(tensors):
    """Sum of squares of every element of `tensors`, one multi-tensor kernel for all of them (per-tensor norms
    accumulated in fp32, as torch.nn.utils.clip_grad_norm_ does, then squared and summed in fp64); non-finite if
    any element is."""
    if not tensors:
        return torch.zeros((), dtype=torch.float32)
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)
    return torch.stack(norms).double().square().sum().float()


def use_foreach_grad_norm(optimizer):
    """Make DeepSpeed ZeRO-1/2's gradient norm one multi-tensor pass. DeepSpeed 0.19 casts each parameter's gradient
    to fp64 and takes its norm, two kernels per tensor issued from Python after the backward has drained the GPU
    (580 tensors for GPT-2 XL on one GPU), so the GPU waits for the host: 6-24 ms of each optimizer step on H200s,
    +0.3-0.8% throughput (bench/NOTES.md). The result is the same up to fp32 rounding of each tensor's norm;
    clipping and the skipped-step checks read it as before. Returns whether it was installed (not with tensor or
    pipeline parallelism, whose parameters need DeepSpeed's filter)."""
    from deepspeed import comm as ds_dist
    from deepspeed.runtime.utils import mask_nan_or_inf_with_val_inplace
    original = getattr(optimizer, "get_grad_norm_direct", None)
    if original is None or getattr(optimizer, "mpu", None) is not None:
        return False

    def get_grad_norm_direct(gradients, params, norm_type=2):
        if float(norm_type) != 2.0:
            return original(gradients, params, norm_type)
        grads = [g.data for g in gradients if not getattr(g, "_zero_padding", False)]
        total = squared_norm(grads).to(optimizer.device)
        ds_dist.all_reduce(total, op=ds_dist.ReduceOp.SUM, group=optimizer.dp_process_group)
        total = total.sqrt()
        mask_nan_or_inf_with_val_inplace(total, device=optimizer.device)
        return total

    optimizer.get_grad_norm_direct = get_grad_norm_direct
    return True


def raise_together(failure, device):
    """An InputError on every rank when any rank has a failure (a one-line message, or None), so that a problem
    one rank finds ends the run on all of them instead of leaving them in a collective; rank 0's words are
    printed."""
    import deepspeed.comm as dist
    failed = torch.tensor([float(failure is not None)], device=device)
    dist.all_reduce(failed)
    if failed.item():
        raise InputError(failure or "another rank failed (its own line says why)")


def shutdown():
    """Tear the process group down on every rank, so that no rank exits while a peer still waits on it
    (gloo drops a barrier's last message if its sender exits first)."""
    import torch.distributed as tdist
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def main(argv):
    rank = os.environ.get("RANK", "0")
    try:
        run(argv)
    except InputError as e:
        if e.every_rank or rank == "0":
            print_line(f"error: {e}")
        sys.exit(EXIT_BAD_INPUT)
    except EndRun as e:
        shutdown()
        sys.exit(e.status)
    except SaveFailed as e:  # the other ranks may wait in the save's collectives: leave at once, as below
        print_line(f"error: {e}")
        os._exit(1)
    except torch.OutOfMemoryError as e:  # the launcher ends the other ranks, which may wait in a collective
        print_line(out_of_memory_line(e, rank, settings_or_none(argv)))
        os._exit(1)
    except SecondSignal:  # no traceback, no save
        print_line(f"[rank {rank}] stopped at once on a second signal; nothing saved since the last checkpoint")
        os._exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:  # Ctrl-C before StopFlag takes the signals over (SIGTERM then ends the process)
        print_line(f"[rank {rank}] interrupted during start-up, before the first step; nothing saved")
        os._exit(EXIT_INTERRUPTED)
    except Exception:
        # A failed collective (a peer died or timed out) can leave work that blocks the interpreter's exit in the
        # process-group teardown; report and leave at once so that the launcher ends the run.
        import traceback
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    shutdown()


def run(argv):
    from model import gpt2_name
    cfg = parse_config(argv)
    if not os.path.isdir(cfg["init_from"]):  # the hub's full name for a GPT-2 size is that size
        cfg["init_from"] = gpt2_name(cfg["init_from"])
    C = SimpleNamespace(**cfg)
    os.environ.setdefault("RANK", "0")  # also runnable as a single process: python train_deepspeed.py
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    master = rank == 0
    faults = parse_faults(os.environ.get("TRAIN_FAULT", ""))

    # ---- checks that need no process group: every rank fails the same way, before anything is written
    if C.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {C.dtype!r}")
    if C.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {C.lr_schedule!r}")
    check_ranges(cfg)
    if C.init_from == "scratch" and C.n_embd % C.n_head:
        raise InputError(f"n_embd {C.n_embd} is not a multiple of n_head {C.n_head}; each head gets n_embd / n_head "
                         "channels (GPT-2: 768 / 12)")
    if not 0 <= C.profile_iteration <= C.max_iters:
        raise InputError(f"profile_iteration {C.profile_iteration} is never reached: iterations run 1 to "
                         f"{C.max_iters}; choose one in that range (after the first few, which warm up), or 0 for none")
    mb, ga, seqs_per_iter = derive_batch(cfg, world_size)
    ds_config = fill_ds_config(load_ds_config(C.deepspeed_config), cfg, mb, ga, world_size, C.out_dir)
    monitor_sections = monitor_config(ds_config, cfg, C.out_dir)
    zero_stage = ds_config.get("zero_optimization", {}).get("stage", 0)
    ptdtype = DTYPES[C.dtype]

    from deepspeed.accelerator import get_accelerator
    accel = get_accelerator()
    on_gpu = accel.device_name() == "cuda"
    if C.dtype == "float16" and not on_gpu:
        raise InputError(f"dtype='float16' needs a GPU (DeepSpeed: Type fp16 is not supported on "
                         f"{accel.device_name()}); use --dtype=bfloat16 or --dtype=float32 here")
    if on_gpu:
        check_gpu_index(rank, local_rank, accel.device_count())
    if C.wandb_log:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise InputError("wandb_log=True needs the wandb package: pip install wandb (set WANDB_MODE=offline "
                             "without network)") from None
    if C.tensorboard_log:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise InputError("tensorboard_log=True needs the tensorboard package: pip install tensorboard") from None

    import checkpoint as ckpt
    busy = ckpt.out_dir_holder(C.out_dir)  # first: that run's checkpoints and its rendezvous port would be named too
    if busy:
        raise InputError(f"out_dir {C.out_dir} is in use by another run ({busy}); wait for it to end, or give "
                         "another --out_dir")
    resume_tag, resume_marker, context = resolve_init(C)
    held, latest = (ckpt.saved_tags(C.out_dir), ckpt.read_latest(C.out_dir)) if resume_marker is None else ([], None)
    if held:
        raise InputError(f"out_dir {C.out_dir} already holds a run's checkpoints ({', '.join(held)}), which a new run "
                         "would replace; continue that run with --init_from=resume, or start afresh in another "
                         "--out_dir (or delete that one)")
    if latest:
        raise InputError(f"{os.path.join(C.out_dir, ckpt.LATEST)} names {latest}, which is not there; delete that "
                         "file (or the out_dir) to start afresh there, or choose another --out_dir")
    saved_cfg = resume_marker.get("config", {}) if resume_marker is not None else {}
    if saved_cfg.get("dtype", C.dtype) != C.dtype:
        raise InputError(f"{resume_tag} was saved in {saved_cfg['dtype']} (DeepSpeed keeps optimizer state per "
                         f"precision); resume with --dtype={saved_cfg['dtype']}, or start a new run from its weights "
                         f"in {C.dtype} with --init_from={os.path.join(C.out_dir, resume_tag)} and another --out_dir")
    if resume_marker is not None and resume_marker["iteration"] > C.max_iters:
        raise InputError(f"{resume_tag} is at iteration {resume_marker['iteration']}, past max_iters {C.max_iters}: "
                         f"nothing to train; raise --max_iters to go on")
    # a finished job started again (a requeue); on another number of ranks it is re-saved in their layout instead
    if (resume_tag == "final" and resume_marker["iteration"] == C.max_iters
            and resume_marker["world_size"] == world_size):
        print0(f"final is at iteration {C.max_iters} = max_iters: the run is done, nothing to train or save; raise "
               "--max_iters to go on")
        raise EndRun(0)
    if resume_marker is not None and resume_marker["zero_stage"] != zero_stage:
        raise InputError(f"{resume_tag} was saved with ZeRO stage {resume_marker['zero_stage']} and "
                         f"{C.deepspeed_config} uses stage {zero_stage}; resume with the stage it was saved with"
                         f" (it ran with --deepspeed_config={saved_cfg.get('deepspeed_config', '?')})")
    if C.block_size > context:
        raise InputError(f"block_size {C.block_size} exceeds the model's context of {context} tokens; use "
                         f"--block_size={context} or less")
    vocab_size = resume_marker["model_config"]["vocab_size"] if resume_marker else 50257
    datasets = parse_datasets(C.dataset)
    splits = {"train": {}, "val": {}}
    for name, weight in datasets:
        val = load_split(name, "val", C.block_size, vocab_size)
        val_starts = eval_starts(len(val), C.block_size, C.eval_iters)
        train = load_split(name, "train", C.block_size, vocab_size)
        splits["val"][name] = (val, weight, val_starts)
        # the train loss is estimated on as many windows as val gets, spread over the (often far larger) train split
        splits["train"][name] = (train, weight, eval_starts(len(train), C.block_size, len(val_starts)))

    # out_dir is made only now, so that the bad input caught above leaves nothing behind
    try:
        os.makedirs(C.out_dir, exist_ok=True)
        probe = os.path.join(C.out_dir, f".write-test-{rank}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise InputError(f"out_dir {C.out_dir} is not writable ({e.strerror}); choose another --out_dir") from None

    # ---- the process group, with the timeout actually applied to it
    import deepspeed
    import deepspeed.comm as dist
    if on_gpu:
        accel.set_device(local_rank)
        if C.max_gpu_memory_gb > 0:
            total = torch.cuda.get_device_properties(local_rank).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, C.max_gpu_memory_gb * 2 ** 30 / total), local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if C.deterministic:
        use_deterministic_kernels()
    for lock in stale_build_locks() if local_rank == 0 else ():
        print(f"warning: {lock} is over 10 minutes old: a killed build of a torch extension leaves it, and the build "
              "of that extension (next) then waits for ever; delete it unless a build is running", flush=True)
    apply_collective_timeout(timedelta(minutes=C.dist_timeout_minutes))
    try:
        deepspeed.init_distributed(timeout=timedelta(minutes=C.dist_timeout_minutes))
    except Exception as e:
        if "EADDRINUSE" not in str(e) and "address already in use" not in str(e).lower():
            raise
        port = os.environ.get("MASTER_PORT", "29500")
        raise InputError(f"port {port} of the rendezvous is in use (another run?); pass --master_port=<a free port> "
                         "to deepspeed, or launch with ./run_deepspeed_xl.sh, which picks a free one") from None
    device = torch.device(accel.device_name(local_rank) if on_gpu else "cpu")
    failure = None
    if master:
        holder = ckpt.lock_out_dir(C.out_dir, warn=print0)
        if holder:
            failure = (f"out_dir {C.out_dir} is in use by another run ({holder}); wait for it to end, or give "
                       "another --out_dir")
        else:
            for note in ckpt.recover(C.out_dir):
                print0(f"checkpoint recovery: {note}")
            moved = ckpt.set_aside_logs(C.out_dir) if resume_marker is None else None
            if moved:
                print0(f"the logs of an earlier run that saved no checkpoint moved to {moved}")
            if C.wandb_log:
                os.environ.setdefault("WANDB_DIR", os.path.join(C.out_dir, "logs"))  # not the working directory
    # the monitors start here, before the model, so that wandb without credentials (or network) is one line, not
    # rank 0's traceback and the other ranks' broken collectives; rank 0 only (MonitorMaster's rule)
    from deepspeed.monitor.config import get_monitor_config
    from deepspeed.monitor.monitor import MonitorMaster
    try:
        monitor = None if failure else MonitorMaster(get_monitor_config(monitor_sections))
    except Exception as e:  # wandb.init's UsageError, CommError, ...
        failure = (f"the monitors could not start ({type(e).__name__}: {one_line(e)}); for wandb: `wandb login` or "
                   "WANDB_API_KEY, or WANDB_MODE=offline to log without network, or --wandb_log=False")
    try:
        raise_together(failure, device)  # also the barrier that keeps the other ranks behind the recovery above
    finally:  # after that collective every rank has mapped its peers' buffers: the names can go, even on failure
        if not on_gpu:
            release_cpu_allreduce_buffer(rank)

    # ---- model
    seed_everything(C.seed)  # identical initialisation on every rank
    model, origin = build_model(cfg, device, ptdtype, vocab_size, resume_marker)
    model.gradient_checkpointing = C.gradient_checkpointing
    try:
        model.set_recompute_gelu(C.recompute_gelu)
    except ValueError as e:
        raise InputError(f"{e}; drop --recompute_gelu, or use --gradient_checkpointing to save memory") from None
    model.universal_checkpoint_info = {"universal_checkpoint_version": 0.2}  # lets ds_to_universal convert it
    if fault_at(faults, "sigint_in_startup", 0, rank):
        os.kill(os.getpid(), signal.SIGINT)
    fused_note = "off"
    if C.fused_kernels and on_gpu and ptdtype != torch.float32 and zero_stage < 3:
        import kernels
        fused_note = kernels.enable(model, C.fused_norm, warn=print0)
    if C.compile:
        for block in model.transformer.h:
            block.compile()
    n_params = model.get_num_params()

    # ---- resume on another number of GPUs: DeepSpeed's universal checkpoint
    load_dir = C.out_dir
    if resume_marker is not None and resume_marker["world_size"] != world_size:
        failure = None
        if master:
            try:
                ckpt.convert_to_universal(C.out_dir, resume_tag, log=print0)
            except ckpt.CheckpointError as e:
                others = choose_with(ckpt.other_tags(os.path.join(C.out_dir, resume_tag)), "tag with --resume_tag=TAG")
                failure = f"{e}; resume on the {resume_marker['world_size']} GPUs it was saved with, or {others}"
        raise_together(failure, device)
        load_dir = os.path.join(C.out_dir, ckpt.UNIVERSAL_DIR)
        ds_config.setdefault("checkpoint", {})["load_universal"] = True

    # ---- DeepSpeed engine
    zero = ds_config.get("zero_optimization", {})
    offload = zero.get("offload_optimizer", {}).get("device", "none") != "none"
    offload_params = zero.get("offload_param", {}).get("device", "none") != "none"
    est_gpu = estimate_model_state_memory(model, zero_stage, offload, offload_params, world_size)

    def make_optimizer(params):
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            return DeepSpeedCPUAdam(params, lr=C.learning_rate, betas=(C.beta1, C.beta2), adamw_mode=True)
        return torch.optim.AdamW(params, lr=C.learning_rate, betas=(C.beta1, C.beta2), fused=on_gpu)

    if zero_stage == 3:  # the loss head reads the tied embedding outside its own module: gather it for GPT.forward
        deepspeed.zero.register_external_parameter(model, model.transformer.wte.weight)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.param_groups(C.weight_decay),
                                                   optimizer=make_optimizer, config=ds_config)
    # DeepSpeed's separate inf/NaN scan of every gradient partition costs ~80 ms per step for GPT-2 XL on one
    # H100 (bench/NOTES.md). The global gradient norm it computes anyway is non-finite in exactly those cases and
    # already makes fp16 (and fp32) skip the step; bf16 gets the scan back on a step whose loss was NaN/inf.
    zero_1_2_on_gpu_states = zero_stage in (1, 2) and not offload
    fast_overflow_check = (zero_1_2_on_gpu_states and hasattr(optimizer, "check_grad_overflow")
                           and getattr(optimizer, "compute_grad_norm", False))
    if fast_overflow_check:
        optimizer.check_grad_overflow = False
    if zero_1_2_on_gpu_states:
        use_foreach_grad_norm(optimizer)

    # ---- state of the loop, restored on resume
    state = {"iter": 0, "lr_step": 0, "best_val_loss": float("inf"), "evals_without_improvement": 0,
             "tokens_seen": 0, "skipped_steps": 0, "last_eval_iter": -1, "data_seed": C.seed,
             "data_tokens": {name: [len(splits["train"][name][0]), len(splits["val"][name][0])]
                             for name in splits["train"]}}
    source_dir, source_tag = ckpt.split_checkpoint_path(C.init_from) if resume_marker is None else (None, None)
    if source_dir is not None:
        state["data_seed"] = continual_data_seed(C.seed, ckpt.read_marker(os.path.join(source_dir, source_tag)))
        print0(f"data: a sample stream of its own (seed {state['data_seed']}, from seed {C.seed} and "
               f"{os.path.join(source_dir, source_tag)}), not the batches that run trained on")
    if resume_marker is not None:
        try:
            _, client_state = engine.load_checkpoint(load_dir, tag=resume_tag, load_optimizer_states=True,
                                                     load_lr_scheduler_states=False)
        except Exception as e:
            others = choose_with(ckpt.other_tags(os.path.join(C.out_dir, resume_tag)), "tag with --resume_tag=TAG")
            raise InputError(f"checkpoint {os.path.join(load_dir, resume_tag)} could not be loaded "
                             f"({type(e).__name__}: {one_line(e)}); {others}") from None
        # a checkpoint from before last_eval_iter existed resumes as it did then: no eval at its own iteration
        data_tokens = state["data_tokens"]
        state.update({"last_eval_iter": client_state["loop"]["iter"], **client_state["loop"],
                      "data_tokens": data_tokens})
        for name, (train_was, val_was) in client_state["loop"].get("data_tokens", {}).items():
            if name in data_tokens and data_tokens[name] != [train_was, val_was]:
                print0(f"warning: dataset {name} changed since {resume_tag} was saved (train {train_was:,} -> "
                       f"{data_tokens[name][0]:,} tokens, val {val_was:,} -> {data_tokens[name][1]:,}): the run goes "
                       "on with other text, and its val loss is not comparable with the earlier one")
        # a universal checkpoint restores AdamW's step counts on the CPU; torch's fused AdamW wants them beside
        # the parameters
        for param_state in getattr(optimizer, "optimizer", optimizer).state.values():
            if torch.is_tensor(param_state.get("step")) and param_state["step"].device != device and on_gpu:
                param_state["step"] = param_state["step"].to(device)
        if resume_marker["world_size"] == world_size:
            set_rng_state(ckpt.load_rank_state(os.path.join(load_dir, resume_tag), rank)["rng"])
        else:
            seed_everything(C.seed, rank, state["iter"])
            print0(f"resumed on {world_size} rank{'s' * (world_size > 1)} from {resume_marker['world_size']}: "
                   f"iteration, best val loss, LR "
                   "position, loss scale and optimizer moments carried over; per-rank RNG and batches re-derived")
    else:
        seed_everything(C.seed, rank)  # dropout differs across ranks, reproducibly

    # ---- the summary
    tokens_per_iter = seqs_per_iter * C.block_size
    from model import flops_per_token, peak_flops
    flops_tok = flops_per_token(model.config, C.block_size)
    peak = peak_flops(torch.cuda.get_device_name(local_rank), ptdtype) if on_gpu else None
    if master:
        gpu = torch.cuda.get_device_name(local_rank) if on_gpu else "CPU (DeepSpeed CPU accelerator)"
        context = (f", trained on {C.block_size}-token windows of its {model.config.block_size}-token context"
                   if C.block_size < model.config.block_size else "")
        print0(f"model: GPT-2 {model.config.n_layer} layers, {model.config.n_embd} wide, {n_params / 1e6:.1f}M "
               f"parameters, from {origin}{context}")
        offloaded = f" with optimizer{' and parameter' if offload_params else ''} offload" if offload else ""
        how = [f"{world_size} x {gpu}", f"precision {C.dtype}", f"ZeRO stage {zero_stage}{offloaded}",
               f"fused kernels {fused_note}"]
        if C.deterministic:
            how.append("deterministic kernels")
        if C.gradient_checkpointing:
            how.append("every block recomputed" if C.gradient_checkpointing < 0
                       else f"{C.gradient_checkpointing} blocks recomputed")
        if C.recompute_gelu:
            how.append("every GELU recomputed" if C.recompute_gelu < 0 or C.recompute_gelu >= model.config.n_layer
                       else f"{C.recompute_gelu} GELUs recomputed")
        if C.compile:
            how.append("blocks compiled")
        print0(f"hardware: {'; '.join(how)}")
        unit = ("GPU", "GPUs") if on_gpu else ("CPU process", "CPU processes")
        ranks = f"{world_size} {unit[world_size > 1]}"
        print0(f"batch: {mb} x {ga} x {ranks} x {C.block_size} = {tokens_per_iter:,} tokens per iteration "
               f"({seqs_per_iter} sequences)")
        if resume_marker is not None and "config" in resume_marker:
            saved_seqs = derive_batch(resume_marker["config"], resume_marker["world_size"])[2]
            if saved_seqs != seqs_per_iter:
                print0(f"warning: {resume_tag} was trained with {saved_seqs} sequences per iteration, this run uses "
                       f"{seqs_per_iter}; to keep it, pass --target_batch_size={saved_seqs} (with a batch_size x "
                       "GPUs that divides it)")
        notes = resume_warnings(saved_cfg, cfg, resume_tag, resume_marker["model_config"]) if saved_cfg else []
        for warning in notes:
            print0(f"warning: {warning}")
        latest = ckpt.read_latest(C.out_dir) if resume_marker is not None else None
        newer = ckpt.read_marker(os.path.join(C.out_dir, latest)) if latest and latest != resume_tag else None
        if newer and newer.get("iteration", 0) > resume_marker["iteration"]:
            print0(f"warning: resuming from {resume_tag} (iteration {resume_marker['iteration']}) although latest is "
                   f"{latest} (iteration {newer['iteration']}): this run's saves replace {latest} and the tags after "
                   f"{resume_tag}")
        if C.min_lr > C.learning_rate and C.lr_schedule != "constant":
            print0(f"warning: min_lr {C.min_lr:g} > learning_rate {C.learning_rate:g}: the {C.lr_schedule} schedule "
                   "rises instead of decaying")
        if C.warmup_iters >= C.max_iters > 0:
            print0(f"warning: warmup_iters {C.warmup_iters} >= max_iters {C.max_iters}: the learning rate never "
                   f"reaches learning_rate {C.learning_rate:g}")
        print0(f"memory: DeepSpeed estimates {format_bytes(est_gpu)} of model states per "
               f"{'GPU' if on_gpu else 'process'} (+ activations)")
        sizes = [f"{n} ({w:.0%}): {len(splits['train'][n][0]):,} train / {len(splits['val'][n][0]):,} val tokens"
                 for n, w in datasets]
        print0(f"data: {'; '.join(sizes)}")
        if resume_marker is None and C.init_from != "scratch":
            shape = [f"{k}={cfg[k]!r} (the model has {getattr(model.config, k)!r})" for k in MODEL_SETTINGS
                     if k != "dropout" and cfg[k] != DEFAULTS[k] and cfg[k] != getattr(model.config, k)]
            if shape:
                print0(f"warning: ignored: {', '.join(shape)}; the model shape comes from {C.init_from} (these "
                       "settings shape only init_from=scratch)")
        with open(os.path.join(C.out_dir, "config.json"), "w") as f:  # "model": the shape actually trained
            json.dump({**cfg, "world_size": world_size, "gradient_accumulation_steps": ga,
                       "tokens_per_iter": tokens_per_iter, "model": vars(model.config), "deepspeed": ds_config},
                      f, indent=2)

    # ---- checkpointing
    def save(tag, also=(), update_latest=True):
        if not C.save_checkpoints:
            return
        client_state = {"loop": dict(state), "config": cfg, "model_config": vars(model.config).copy()}
        marker = {"iteration": state["iter"], "world_size": world_size, "zero_stage": zero_stage, "dtype": C.dtype,
                  "model_config": vars(model.config).copy(), "config": cfg}
        rank_state = {"rng": rng_state(), "sampler": {"seed": state["data_seed"], "rank": rank,
                                                      "iteration": state["iter"], "world_size": world_size}}

        def fault_in_save(where, r):  # TRAIN_FAULT=kill_in_save@N:RANK or disk_full_in_save@N:RANK (tests)
            if fault_at(faults, "kill_in_save", state["iter"], r):
                os.kill(os.getpid(), signal.SIGKILL)
            if fault_at(faults, "disk_full_in_save", state["iter"], r):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        try:
            result = ckpt.save(engine, C.out_dir, tag, client_state, rank_state, marker, also=also,
                               update_latest=update_latest, keep_last_n=C.keep_last_n,
                               fault=fault_in_save if {"kill_in_save", "disk_full_in_save"} & set(faults) else None,
                               pinned=C.pinned_checkpoint_copies)
        except Exception as e:
            if not is_write_error(e):  # e.g. a collective broken by another rank's failure: that rank says why
                raise
            free = shutil.disk_usage(C.out_dir).free
            latest = ckpt.read_latest(C.out_dir)  # a save updates it last, once the new tag is complete
            size = ckpt.dir_bytes(os.path.join(C.out_dir, latest)) if latest else 0
            room = (f"; a save needs room for one more checkpoint ({size / 2 ** 30:.2f} GiB) beside those kept, "
                    "which go only once the new one is complete" if size else "")
            kept = f"latest still names {latest}" if latest else "nothing was saved before"
            raise SaveFailed(f"[rank {rank}] saving {tag} failed ({type(e).__name__}: {one_line(e)}); {C.out_dir} "
                             f"has {free / 2 ** 30:.2f} GiB free{room}. {kept}: free space (or lower --keep_last_n) "
                             "and resume with --init_from=resume") from e
        if result is not None:
            seconds, size, total, removed = result
            names = " + ".join((tag,) + tuple(also))
            gone = f"; removed {', '.join(removed)}" if removed else ""
            print0(f"saved {names} in {seconds:.1f}s ({size / 2 ** 30:.2f} GiB; {C.out_dir} holds "
                   f"{total / 2 ** 30:.2f} GiB{gone})")
            monitor.write_events([("Checkpoint/save_seconds", seconds, state["iter"]),
                                  ("Checkpoint/size_gib", size / 2 ** 30, state["iter"])])

    # ---- training loop
    import psutil
    process = psutil.Process()
    stop = StopFlag(saves=C.save_checkpoints)
    after_stop = ("continue with --init_from=resume" if C.save_checkpoints
                  else "nothing was saved (save_checkpoints=False)")
    step_timer = StepTimer(on_gpu)
    batches = Batches([(d, w) for d, w, _ in splits["train"].values()], C.block_size, mb, state["data_seed"], rank,
                      device)
    lr_decay_iters = C.lr_decay_iters or C.max_iters
    t_start = time.time()
    start_iter = state["iter"]
    if master and resume_marker is not None and monitor.csv_monitor is not None:
        monitor.csv_monitor.filenames += trim_csv_logs(monitor.csv_monitor.log_dir, start_iter)
    if 0 < C.profile_iteration <= start_iter:
        print0(f"warning: profile_iteration {C.profile_iteration} was done before this resume from iteration "
               f"{start_iter}; nothing will be profiled")
    consecutive_nonfinite = 0
    first_step_logged = False
    t_last, dt_avg = time.time(), None
    progress = Progress(C.max_iters, start_iter, master)
    try:
        for it in range(start_iter, C.max_iters + 1):
            last_step = it == C.max_iters
            state["iter"] = it

            # evaluate (and checkpoint), unless the checkpoint this run resumed from was saved after this eval (a
            # run stopped by a signal at an eval iteration saved before it)
            if (it % C.eval_interval == 0 or last_step) and state["last_eval_iter"] != it:
                t_eval = time.time()
                if fault_at(faults, "sigterm_in_eval", it, rank):
                    os.kill(os.getpid(), signal.SIGTERM)
                losses, val_seconds = evaluate_all(engine, splits, C.block_size, mb, rank, world_size, device)
                state["last_eval_iter"] = it
                improved = losses["val"] < state["best_val_loss"]
                if improved:
                    state["best_val_loss"] = losses["val"]
                    state["evals_without_improvement"] = 0
                else:
                    state["evals_without_improvement"] += 1
                extra = "".join(f" | {k} {v:.4f}" for k, v in losses.items() if "/" in k)
                print0(f"eval {it}: train loss {losses['train']:.4f} | val loss {losses['val']:.4f} | "
                       f"val ppl {math.exp(min(losses['val'], 50)):.2f}{extra} | {val_seconds:.2f}s val, "
                       f"{time.time() - t_eval:.2f}s total")
                monitor.write_events([(f"Eval/{k}_loss", v, it) for k, v in losses.items()] +
                                     [("Eval/val_ppl", math.exp(min(losses["val"], 50)), it)])
                early_stop = C.patience > 0 and state["evals_without_improvement"] >= C.patience
                if last_step or early_stop:
                    if early_stop and not last_step:
                        best = (f"; the best weights (val loss {state['best_val_loss']:.4f}) are in "
                                f"{os.path.join(C.out_dir, 'best')}: sample or export that tag, not final"
                                if C.save_checkpoints else "")
                        print0(f"early stop: val loss has not improved for {C.patience} evals{best}")
                    save("final", also=("best",) if improved else ())
                    break
                # not at a fresh run's iteration 0; on a resume, this eval was missing from the checkpoint's state
                saved = (it > start_iter or resume_marker is not None) and (improved or C.always_save_checkpoint)
                if saved:
                    save(f"iter_{it}", also=("best",) if improved else ())
                # a signal that came during the eval (which can take a while) stops here, at this iteration's
                # checkpoint, instead of after one more step and a second save
                requested = torch.tensor(stop.requests(), device=device)
                dist.all_reduce(requested)
                reason = agreed_stop(requested.tolist())
                if reason is not None:
                    if not saved:
                        save(f"iter_{it}")
                    print0(f"stopped on {reason} at iteration {it}, after its eval; {after_stop}")
                    raise EndRun(EXIT_PREEMPTED)
                t_last = time.time()  # the step timer measures training only
            if last_step:
                save("final")
                break

            # one optimizer step over ga micro-batches
            lr = get_lr(state["lr_step"], C.learning_rate, C.lr_schedule, C.warmup_iters, lr_decay_iters, C.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            profiler = start_profiler(on_gpu) if it + 1 == C.profile_iteration else None
            loss_sum = torch.zeros((), device=device, dtype=torch.float32)
            for micro_step in range(ga):
                x, y = batches.get(it, micro_step, ga)
                with record_function("forward"):
                    _, loss = engine(x, y)
                if fault_at(faults, "nan", it, rank):
                    loss = loss * float("nan")
                if fault_at(faults, "crash", it, rank):
                    raise RuntimeError(f"injected crash on rank {rank} at iteration {it}")
                if fault_at(faults, "sigterm", it, rank) and micro_step == 0:
                    os.kill(os.getpid(), signal.SIGTERM)
                if fault_at(faults, "hang", it, rank):
                    time.sleep(3600)
                if fault_at(faults, "oom", it, rank):  # torch's message, as a 77 GiB cap gave it on an H200
                    raise torch.OutOfMemoryError(
                        "CUDA out of memory. Tried to allocate 394.00 MiB. GPU 1 has a total capacity of 139.80 GiB "
                        "of which 61.05 GiB is free. Including non-PyTorch memory, this process has 78.75 GiB memory "
                        "in use. 77.00 GiB allowed; Of the allocated memory 75.33 GiB is allocated by PyTorch, and "
                        "1.37 GiB is reserved by PyTorch but unallocated.")
                with record_function("backward"):
                    engine.backward(loss)
                loss_sum += loss.detach().float()
                if micro_step < ga - 1:
                    engine.step()  # DeepSpeed counts micro-steps: only the step() after the last one updates weights
            # one all-reduce carries the loss of every micro-batch of every rank and the stop requests
            deadline = C.max_runtime > 0 and time.time() - t_start > C.max_runtime * 3600
            requests = stop.requests() + [float(deadline)]
            flags = torch.cat([(loss_sum / ga).view(1), torch.tensor(requests, device=device)])
            dist.all_reduce(flags)
            flags = flags.tolist()
            mean_loss = flags[0] / world_size
            stop_reason = agreed_stop(flags[1:], StopFlag.SIGNALS + ("max_runtime",))
            nonfinite = not math.isfinite(mean_loss)
            if fast_overflow_check and C.dtype == "bfloat16":
                optimizer.check_grad_overflow = nonfinite  # DeepSpeed then skips the step and clears the gradients
            step_timer.start()
            try:
                if fault_at(faults, "minscale", it, rank):
                    # DeepSpeed's own words, so that the handler below is tested against them
                    raise Exception("Current loss scale already at minimum - cannot decrease scale anymore. "
                                    "Exiting run.")
                with record_function("optimizer step"):
                    engine.step()
            except Exception as e:
                if "loss scale already at minimum" not in str(e):
                    raise
                print0(f"error: at iteration {it + 1} the fp16 loss scale reached its minimum and the gradients still "
                       "overflow: training has diverged. Nothing new was saved. Try a lower --learning_rate, "
                       "--dtype=bfloat16, or resume from an earlier checkpoint", file=sys.stderr)
                raise EndRun(EXIT_DIVERGED)
            step_timer.stop()
            applied = engine.was_step_applied()
            if nonfinite and applied:
                raise RuntimeError("a non-finite loss reached the optimizer; DeepSpeed should have skipped this step")
            if applied:
                state["lr_step"] += 1
            else:
                state["skipped_steps"] += 1
            consecutive_nonfinite = consecutive_nonfinite + 1 if nonfinite else 0
            state["tokens_seen"] += tokens_per_iter
            state["iter"] = it + 1

            # log
            t_now = time.time()
            dt, t_last = t_now - t_last, t_now
            dt_avg = dt if dt_avg is None else 0.9 * dt_avg + 0.1 * dt  # for the ETA
            if not first_step_logged:
                first_step_logged = True
                print0(f"first optimizer step done {t_now - t_start:.1f}s after the loop started")
            if master and ((it + 1) % C.log_interval == 0 or it + 1 == C.max_iters or nonfinite or not applied):
                grad_norm = engine.get_global_grad_norm()
                grad_norm = None if grad_norm is None else float(grad_norm)  # ZeRO's is a tensor: CSV would get str()
                tok_s = tokens_per_iter / dt / world_size
                metrics = {
                    "loss": mean_loss, "lr": lr, "ms": dt * 1000, "tok_s": tok_s,
                    "mfu": tok_s * flops_tok / peak if peak else None, "opt_ms": step_timer.milliseconds(),
                    "mem_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if on_gpu else None,
                    "scale": optimizer.loss_scale if C.dtype == "float16" else None,
                    "grad_norm": grad_norm if grad_norm is not None and math.isfinite(grad_norm) else None,
                    "skipped": None if applied else "skipped (NaN/inf loss)" if nonfinite else "skipped (overflow)",
                    "skipped_total": state["skipped_steps"] or None,
                    "eta": format_duration((C.max_iters - it - 1) * dt_avg),
                    "tokens_seen": state["tokens_seen"], "rss_mib": process.memory_info().rss / 2 ** 20,
                    "open_files": process.num_fds()}
                print0(format_log(it + 1, C.max_iters, metrics))
                monitor.write_events(monitor_events(it + 1, metrics))
            progress.update(mean_loss)
            if it == start_iter + 2 and on_gpu:
                peak_gib = torch.cuda.max_memory_allocated(device) / 2 ** 30
                print0(f"measured peak GPU memory after 3 steps: {peak_gib:.1f} GiB (rank 0)")
            if profiler is not None:
                path = stop_profiler(profiler, C.out_dir, rank, on_gpu)
                print0(f"profile of iteration {it + 1} (its logged time includes the profiler's): {path} on rank 0, "
                       f"one file per rank; summarise with python bench/trace_summary.py {path}")
                t_last = time.time()  # writing the trace is not the next iteration's time

            if consecutive_nonfinite >= C.max_consecutive_nonfinite:
                print0(f"error: the loss was NaN/inf on {consecutive_nonfinite} iterations in a row (up to iteration "
                       f"{it + 1}); the steps were skipped and nothing new was saved. Try a lower --learning_rate, "
                       "--dtype=bfloat16, check the data, or resume from the last checkpoint", file=sys.stderr)
                raise EndRun(EXIT_DIVERGED)
            if stop_reason is not None:
                save(f"iter_{state['iter']}")
                print0(f"stopped on {stop_reason} after iteration {state['iter']}; {after_stop}")
                raise EndRun(EXIT_PREEMPTED)
    finally:
        progress.close()

    if master and C.plot and C.csv_log:
        from plot import plot_run
        path = plot_run(C.out_dir)
        if path:
            print0(f"loss plot: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
