"""
The run's settings: parsed once (defaults, then config files, then --key=value), checked before anything starts,
and the one place each derived number (the accumulation steps, the DeepSpeed JSON's batch fields) comes from.

The defaults are the commented globals at the top of train_deepspeed.py; `training_defaults()` reads them from
that file's text (tools such as sample.py and bench/ must not import the training script).
"""
import ast
import builtins
import difflib
import inspect
import json
import os
import sys
import traceback

REPO = os.path.dirname(os.path.abspath(__file__))
TRAIN_SCRIPT = os.path.join(REPO, "train_deepspeed.py")
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; run again with init_from='resume'
EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: a second signal stopped at once, without saving
DTYPES = ("float16", "bfloat16", "float32")  # names of torch dtypes; no torch here: run_deepspeed_xl.sh reads
# the settings before it starts the launcher, and importing torch would hold the launch up by seconds
LR_SCHEDULES = ("constant", "cosine", "linear")


class InputError(Exception):
    """Bad input: reported in one line (by rank 0, or by every rank for a rank's own problem), exit code 2,
    nothing saved."""

    def __init__(self, message, every_rank=False):
        super().__init__(message)
        self.every_rank = every_rank


class Settings(dict):
    """The run's settings: one dict (saved as it is in config.json and every checkpoint), read as attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def one_line(error, limit=300):
    """An exception's message on one line (its lines joined), cut at `limit` characters."""
    text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def settings_block(source):
    """The lines between the first two `# ----` banners of `source`: every setting with its default and comment."""
    with open(source) as f:
        lines = f.read().splitlines()
    banners = [i for i, line in enumerate(lines) if line.startswith("# ----")]
    return "\n".join(lines[banners[0] + 1:banners[1]])


def training_defaults(source=TRAIN_SCRIPT):
    """The training script's settings and their defaults, read from its text without running it."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(settings_block(source)).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}


# -----------------------------------------------------------------------------
# parsing

BOOL_WORDS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def settings_help(source, usage):
    """--help: the usage line and the settings block of `source`."""
    return (f"usage: {usage}\nConfig files are Python files that set these globals; --key=value overrides them "
            f"(after every config file). The settings and their defaults:\n{settings_block(source)}")


def parse_config(argv, defaults=None, source=TRAIN_SCRIPT,
                 usage="deepspeed --num_gpus=N train_deepspeed.py [config.py ...] [--key=value ...]"):
    """Defaults, then config files (bare arguments, executed as Python) in order, then --key=value in order, so
    that the command line wins wherever it stands. Unknown keys and values of another type are errors naming the
    key; -h/--help prints the settings of `source` and exits."""
    if "-h" in argv or "--help" in argv:
        print(settings_help(source, usage))
        sys.exit(0)
    defaults = defaults if defaults is not None else training_defaults(source)
    cfg = Settings(defaults)
    argv = [a for a in argv if not a.startswith("--local_rank")]  # the launcher's; LOCAL_RANK says the same
    script = os.path.basename(source)
    for arg, after in zip(argv, argv[1:] + [None]):  # before the config files: `--key value` would read value as one
        key, sep, _ = arg.partition("=")
        if arg.startswith("--") and not sep:
            value = after if after is not None and not after.startswith("--") else "VALUE"
            raise InputError(f"{arg} has no value; write {key}={value}")
    for arg in [a for a in argv if not a.startswith("--")]:
        if not os.path.isfile(arg):
            folder = os.path.dirname(arg) or "."
            near = difflib.get_close_matches(os.path.basename(arg), sorted(os.listdir(folder)), n=1) \
                if os.path.isdir(folder) else []
            hint = f"did you mean {os.path.join(os.path.dirname(arg), near[0])}? Or " if near else ""
            raise InputError(f"config file {arg} not found; {hint}give the path of a .py file of settings, or "
                             "--key=value")
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


LAUNCHER_FLAGS = ("num_gpus", "num_nodes", "master_port", "master_addr", "hostfile", "include", "exclude",
                  "node_rank", "no_ssh", "launcher", "nproc_per_node", "nnodes", "rdzv_endpoint")


def check_setting(key, value, defaults, source, script="train_deepspeed.py"):
    if key not in defaults and key in LAUNCHER_FLAGS:
        raise InputError(f"--{key} is a flag of the launcher, not a setting of {script}; put it before the script: "
                         f"deepspeed --{key}=... {script} [config.py] [--key=value ...]")
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


def derive_batch(cfg, world_size, unit="GPUs"):
    """(micro-batch, accumulation steps, sequences per iteration), checked against target_batch_size; `unit` names
    the ranks in its message (GPUs, or CPU processes)."""
    mb, ga = cfg["batch_size"], cfg["gradient_accumulation_steps"]
    if mb < 1 or ga < 1:
        raise InputError(f"batch_size ({mb}) and gradient_accumulation_steps ({ga}) must be at least 1")
    target = cfg["target_batch_size"]
    if target > 0:
        if target % (mb * world_size):
            raise InputError(f"target_batch_size {target} is not a multiple of batch_size {mb} x {world_size} {unit} "
                             f"= {mb * world_size}; change target_batch_size or batch_size")
        ga = target // (mb * world_size)
    return mb, ga, mb * ga * world_size


MODEL_SETTINGS = ("n_layer", "n_head", "n_embd", "bias", "dropout")  # a resumed run keeps the checkpoint's model
TRAJECTORY_SETTINGS = ("dataset", "block_size", "long_examples", "learning_rate", "min_lr", "lr_schedule", "warmup_iters",
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
# pre-flight checks: every rank runs them and fails the same way, before anything is written


def check_settings(cfg, world_size, on_gpu, device_name="cuda"):
    """Settings that cannot work together or on this machine; derives the batch (the one owner of
    gradient_accumulation_steps from here on: with target_batch_size it is computed, and written back)."""
    from model import gpt2_name
    if not os.path.isdir(cfg.init_from):  # the hub's full name for a GPT-2 size is that size
        cfg["init_from"] = gpt2_name(cfg.init_from)
    if cfg.dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise InputError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    if cfg.long_examples not in ("cut", "skip"):
        raise InputError(f"long_examples must be 'cut' or 'skip', got {cfg.long_examples!r}")
    check_ranges(cfg)
    if cfg.init_from == "scratch" and cfg.n_embd % cfg.n_head:
        raise InputError(f"n_embd {cfg.n_embd} is not a multiple of n_head {cfg.n_head}; each head gets n_embd / "
                         "n_head channels (GPT-2: 768 / 12)")
    if not 0 <= cfg.profile_iteration <= cfg.max_iters:
        raise InputError(f"profile_iteration {cfg.profile_iteration} is never reached: iterations run 1 to "
                         f"{cfg.max_iters}; choose one in that range (after the first few, which warm up), or 0 for "
                         "none")
    unit = ("GPU", "GPUs") if on_gpu else ("CPU process", "CPU processes")
    _, cfg["gradient_accumulation_steps"], _ = derive_batch(cfg, world_size, unit[world_size > 1])
    if cfg.dtype == "float16" and not on_gpu:
        raise InputError(f"dtype='float16' needs a GPU (DeepSpeed: Type fp16 is not supported on {device_name}); "
                         "use --dtype=bfloat16 or --dtype=float32 here")
    if cfg.wandb_log:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise InputError("wandb_log=True needs the wandb package: pip install wandb (set WANDB_MODE=offline "
                             "without network)") from None
    if cfg.tensorboard_log:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise InputError("tensorboard_log=True needs the tensorboard package: pip install tensorboard") from None


def build_ds_config(cfg, world_size):
    """(the DeepSpeed JSON completed from the settings, the monitor sections taken out of it, its ZeRO stage)."""
    ds = fill_ds_config(load_ds_config(cfg.deepspeed_config), cfg, cfg.batch_size, cfg.gradient_accumulation_steps,
                        world_size, cfg.out_dir)
    monitors = monitor_config(ds, cfg, cfg.out_dir)
    return ds, monitors, ds.get("zero_optimization", {}).get("stage", 0)


def choose_with(message, how):
    """A checkpoint error's generic "choose another tag: a, b" made concrete: "choose another <how>: a, b"."""
    return message.replace("choose another tag: ", f"choose another {how}: ")


def resolve_init(cfg):
    """Check init_from before anything starts: (resume tag, its marker, the model's context length)."""
    import checkpoint as ckpt
    from model import GPT2_SIZES, PretrainedNotFound, resolve_pretrained
    if not cfg.out_dir.strip():
        raise InputError("out_dir is empty; give the run's folder, e.g. --out_dir=out-mydata")
    if cfg.resume_tag and cfg.init_from != "resume":
        raise InputError(f"resume_tag={cfg.resume_tag} is only read with --init_from=resume; add that, or drop "
                         f"--resume_tag (a new run from that tag's weights: --init_from="
                         f"{os.path.join(cfg.out_dir, cfg.resume_tag)} with another --out_dir)")
    if cfg.init_from == "resume":
        try:
            tag, marker = ckpt.resolve_resume(cfg.out_dir, cfg.resume_tag or None)
        except ckpt.CheckpointError as e:
            if ckpt.read_marker(cfg.out_dir) is not None:  # out_dir is itself a tag: out/iter_10
                parent, tag = os.path.split(os.path.normpath(cfg.out_dir))
                raise InputError(f"out_dir {cfg.out_dir} is a checkpoint tag, not a run's out_dir; resume it with "
                                 f"--out_dir={parent or '.'} --resume_tag={tag}") from None
            raise InputError(choose_with(str(e), "tag with --resume_tag=TAG")) from None
        return tag, marker, marker["model_config"]["block_size"]
    if cfg.init_from == "scratch":
        return None, None, cfg.block_size
    source_dir, tag = ckpt.split_checkpoint_path(cfg.init_from)
    if source_dir is not None:
        try:
            return None, None, ckpt.verify(os.path.join(source_dir, tag))["model_config"]["block_size"]
        except ckpt.CheckpointError as e:
            raise InputError(choose_with(str(e), f"with --init_from={source_dir}/TAG")) from None
    if os.path.isdir(cfg.init_from) and ckpt.is_run_dir(cfg.init_from):
        raise InputError(f"init_from {cfg.init_from} is a training run's out_dir that holds no checkpoint (yet); "
                         f"wait for its first save, resume it with --init_from=resume --out_dir={cfg.init_from}, or "
                         "choose another init_from")
    if not os.path.isdir(cfg.init_from) and cfg.init_from not in GPT2_SIZES:
        raise InputError(f"unknown init_from {cfg.init_from!r}: use 'scratch', 'resume', one of "
                         f"{', '.join(GPT2_SIZES)}, a Hugging Face GPT-2 directory or a checkpoint directory")
    try:
        return None, None, resolve_pretrained(cfg.init_from, with_weights=False)[0]["n_positions"]
    except PretrainedNotFound as e:
        raise InputError(str(e)) from None


def check_start(cfg, world_size, zero_stage):
    """What this start continues, checked against out_dir: {"tag", "marker", "saved_cfg", "done"} ("tag" and
    "marker" None for a new run; "done" for a finished run started again on as many ranks, a requeue)."""
    import checkpoint as ckpt
    busy = ckpt.out_dir_holder(cfg.out_dir)  # first: that run's checkpoints and its rendezvous port would be named too
    if busy:
        raise InputError(f"out_dir {cfg.out_dir} is in use by another run ({busy}); wait for it to end, or give "
                         "another --out_dir")
    tag, marker, context = resolve_init(cfg)
    held, latest = (ckpt.saved_tags(cfg.out_dir), ckpt.read_latest(cfg.out_dir)) if marker is None else ([], None)
    if held:
        raise InputError(f"out_dir {cfg.out_dir} already holds a run's checkpoints ({', '.join(held)}), which a new "
                         "run would replace; continue that run with --init_from=resume, or start afresh in another "
                         "--out_dir (or delete that one)")
    if latest:
        raise InputError(f"{os.path.join(cfg.out_dir, ckpt.LATEST)} names {latest}, which is not there; delete that "
                         "file (or the out_dir) to start afresh there, or choose another --out_dir")
    saved_cfg = marker.get("config", {}) if marker is not None else {}
    if saved_cfg.get("dtype", cfg.dtype) != cfg.dtype:
        raise InputError(f"{tag} was saved in {saved_cfg['dtype']} (DeepSpeed keeps optimizer state per "
                         f"precision); resume with --dtype={saved_cfg['dtype']}, or start a new run from its weights "
                         f"in {cfg.dtype} with --init_from={os.path.join(cfg.out_dir, tag)} and another --out_dir")
    if marker is not None and marker["iteration"] > cfg.max_iters:
        raise InputError(f"{tag} is at iteration {marker['iteration']}, past max_iters {cfg.max_iters}: nothing to "
                         "train; raise --max_iters to go on")
    # a finished job started again; on another number of ranks it is re-saved in their layout instead
    done = tag == "final" and marker["iteration"] == cfg.max_iters and marker["world_size"] == world_size
    if marker is not None and not done and marker["zero_stage"] != zero_stage:
        raise InputError(f"{tag} was saved with ZeRO stage {marker['zero_stage']} and {cfg.deepspeed_config} uses "
                         f"stage {zero_stage}; resume with the stage it was saved with (it ran with "
                         f"--deepspeed_config={saved_cfg.get('deepspeed_config', '?')})")
    if cfg.block_size > context:
        raise InputError(f"block_size {cfg.block_size} exceeds the model's context of {context} tokens; use "
                         f"--block_size={context} or less")
    return {"tag": tag, "marker": marker, "saved_cfg": saved_cfg, "done": done}


def start_warnings(cfg, start, world_size, model_config):
    """What the start-up summary warns of: a resume that changes the run it continues, a schedule that cannot do
    what its settings say, model settings that a pretrained start ignores."""
    import checkpoint as ckpt
    tag, marker, saved_cfg = start["tag"], start["marker"], start["saved_cfg"]
    warnings = []
    if marker is not None and "config" in marker:
        saved_seqs = derive_batch(marker["config"], marker["world_size"])[2]
        seqs = derive_batch(cfg, world_size)[2]
        if saved_seqs != seqs:
            warnings.append(f"{tag} was trained with {saved_seqs} sequences per iteration, this run uses {seqs}; to "
                            f"keep it, pass --target_batch_size={saved_seqs} (with a batch_size x GPUs that divides "
                            "it)")
    if saved_cfg:
        warnings += resume_warnings(saved_cfg, cfg, tag, marker["model_config"])
    latest = ckpt.read_latest(cfg.out_dir) if marker is not None else None
    newer = ckpt.read_marker(os.path.join(cfg.out_dir, latest)) if latest and latest != tag else None
    if newer and newer.get("iteration", 0) > marker["iteration"]:
        warnings.append(f"resuming from {tag} (iteration {marker['iteration']}) although latest is {latest} "
                        f"(iteration {newer['iteration']}): this run's saves replace {latest} and the tags after {tag}")
    if cfg.min_lr > cfg.learning_rate and cfg.lr_schedule != "constant":
        warnings.append(f"min_lr {cfg.min_lr:g} > learning_rate {cfg.learning_rate:g}: the {cfg.lr_schedule} "
                        "schedule rises instead of decaying")
    if cfg.warmup_iters >= cfg.max_iters > 0:
        warnings.append(f"warmup_iters {cfg.warmup_iters} >= max_iters {cfg.max_iters}: the learning rate never "
                        f"reaches learning_rate {cfg.learning_rate:g}")
    if marker is None and cfg.init_from != "scratch":
        defaults = training_defaults()
        shape = [f"{k}={cfg[k]!r} (the model has {model_config[k]!r})" for k in MODEL_SETTINGS
                 if k != "dropout" and cfg[k] != defaults[k] and cfg[k] != model_config[k]]
        if shape:
            warnings.append(f"ignored: {', '.join(shape)}; the model shape comes from {cfg.init_from} (these "
                            "settings shape only init_from=scratch)")
    return warnings
