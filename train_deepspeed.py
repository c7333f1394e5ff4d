"""
Fine-tune GPT-2 (up to GPT-2 XL, 1.5B parameters) with DeepSpeed ZeRO-2 on every GPU of one or more machines.

    deepspeed --num_gpus=4 train_deepspeed.py                                    # the defaults below
    deepspeed --num_gpus=4 train_deepspeed.py config/finetune_shakespeare_xl.py --max_iters=200
    deepspeed --num_gpus=2 train_deepspeed.py config/cpu_tiny.py                 # CPU smoke run

Settings are the globals below; a config file (plain Python assignments) and then --key=value override them.
One iteration is one optimizer step: batch_size x gradient_accumulation_steps x GPUs sequences.
"""
import atexit
import contextlib
import io
import json
import math
import os
import sys
import time

import torch
from torch.profiler import record_function

import checkpoint as ckpt
import ds_patches
from checkpoint_manager import Saves, load_run
from dataloader import Batches, continual_data_seed, describe, eval_batch, load_splits, loss_weights, to_device
from distributed import (Progress, SecondSignal, StopFlag, agreed_stop, check_content, check_same_start,
                         check_shared_out_dir, compute_cleanup, compute_init, environment, print0, print_line,
                         raise_together, seed_everything, weights_finite)
from monitoring import (StartupClock, StepTimer, estimate_model_state_memory, format_bytes, format_duration,
                        format_log, monitor_events, out_of_memory_line, start_monitors, start_profiler,
                        stop_profiler, trim_csv_logs)
from settings import (EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_PREEMPTED, InputError,
                      build_ds_config, check_settings, check_start, choose_with, one_line, parse_config,
                      start_warnings, training_defaults)

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
async_checkpoints = True  # a save blocks only to copy the state into host RAM (each rank's share of a checkpoint,
# kept for the next save); the files are written, hashed and made visible while training goes on
max_runtime = 0.0  # hours; when reached, save and exit like on SIGTERM (0 = no limit)
patience = 0  # stop after this many evals without val improvement (0 = never)
# data
dataset = "shakespeare"  # a folder under data/ or a path; several with weights: 'shakespeare:0.3,mydata:0.7'
block_size = 1024
batch_size = 16  # micro-batch per GPU
gradient_accumulation_steps = 2
target_batch_size = 0  # sequences per iteration; if set, gradient_accumulation_steps is derived from it
long_examples = "cut"  # prompt/completion data: an example longer than a window is 'cut' (to its start) or 'skip'ped
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
DEFAULTS = training_defaults(__file__)  # the settings above, as parse_config and --help read them
STOP_FILE = "STOP"  # `touch out_dir/STOP` stops that run after its current step, with a checkpoint
SILENT_RANK_WAIT_S = 20.0  # a rank that leaves bad input to another rank to report waits this long for it (main)

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
# setup: the out_dir, the monitors, what a resume continues


def make_out_dir(out_dir, rank):
    """out_dir is made only after the pre-flight checks, so that bad input leaves nothing behind."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write-test-{rank}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise InputError(f"out_dir {out_dir} is not writable ({e.strerror}); choose another --out_dir") from None


def open_run_dir(cfg, ctx, resuming, monitor_sections):
    """Rank 0 takes out_dir's lock, repairs what a kill during a save left there and sets a failed earlier run's
    logs aside; every rank then starts the monitors (rank 0 writes). A failure on any rank ends every rank."""
    failure = None
    if ctx.master:
        holder = ckpt.lock_out_dir(cfg.out_dir, warn=print0)
        if holder:
            failure = (f"out_dir {cfg.out_dir} is in use by another run ({holder}); wait for it to end, or give "
                       "another --out_dir")
        else:
            for note in ckpt.recover(cfg.out_dir):
                print0(f"checkpoint recovery: {note}")
            if os.path.exists(os.path.join(cfg.out_dir, STOP_FILE)):  # it stops the run it is made during, only
                os.remove(os.path.join(cfg.out_dir, STOP_FILE))
                print0(f"removed {os.path.join(cfg.out_dir, STOP_FILE)}, left from before this start")
            moved = None if resuming else ckpt.set_aside_logs(cfg.out_dir)
            if moved:
                print0(f"the logs of an earlier run that saved no checkpoint moved to {moved}")
            if cfg.wandb_log:
                os.environ.setdefault("WANDB_DIR", os.path.join(cfg.out_dir, "logs"))  # not the working directory
    # before the model: wandb without credentials (or network) is one line, not rank 0's traceback and the other
    # ranks' broken collectives
    monitor = None
    try:
        monitor = None if failure else start_monitors(monitor_sections)
    except Exception as e:  # wandb.init's UsageError, CommError, ...
        failure = (f"the monitors could not start ({type(e).__name__}: {one_line(e)}); for wandb: `wandb login` or "
                   "WANDB_API_KEY, or WANDB_MODE=offline to log without network, or --wandb_log=False")
    try:
        raise_together(failure, ctx.device)  # also the barrier that keeps the other ranks behind the recovery
    finally:  # after that collective every rank has mapped its peers' buffers: the names can go, even on failure
        if not ctx.on_gpu:
            ds_patches.release_cpu_allreduce_buffer(ctx.rank)
    check_shared_out_dir(cfg.out_dir, ctx)
    return monitor


def resume_dir(cfg, ctx, start, ds_config):
    """Where the engine loads from: out_dir, or on another number of ranks than saved the tag, DeepSpeed's
    universal checkpoint of it (made by rank 0, once, beside the original). The tag's files are checked against
    their hashes first."""
    marker = start["marker"]
    if marker is None:
        return cfg.out_dir
    if marker["world_size"] == ctx.world_size:
        check_content(os.path.join(cfg.out_dir, start["tag"]), ctx)
        return cfg.out_dir
    failure = None
    if ctx.master:
        try:
            ckpt.convert_to_universal(cfg.out_dir, start["tag"], log=print0)
        except ckpt.ContentMismatch as e:
            failure = choose_with(str(e), "tag with --resume_tag=TAG")
        except ckpt.CheckpointError as e:
            others = choose_with(ckpt.other_tags(os.path.join(cfg.out_dir, start["tag"])), "tag with --resume_tag=TAG")
            failure = f"{e}; resume on the {marker['world_size']} GPUs it was saved with, or {others}"
    raise_together(failure, ctx.device)
    ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return os.path.join(cfg.out_dir, ckpt.UNIVERSAL_DIR)


def loop_state(cfg, ctx, start, splits, engine, optimizer, load_dir):
    """The loop's state, a plain dict saved in every checkpoint: fresh, or restored from the tag being resumed."""
    loop = {"iter": 0, "lr_step": 0, "best_val_loss": float("inf"), "evals_without_improvement": 0,
            "tokens_seen": 0, "skipped_steps": 0, "last_eval_iter": -1, "data_seed": cfg.seed,
            "data_tokens": {name: [len(splits["train"][name][0]), len(splits["val"][name][0])]
                            for name in splits["train"]}}
    source_dir, source_tag = ckpt.split_checkpoint_path(cfg.init_from) if start["marker"] is None else (None, None)
    if source_dir is not None:
        loop["data_seed"] = continual_data_seed(cfg.seed, ckpt.read_marker(os.path.join(source_dir, source_tag)))
        print0(f"data: a sample stream of its own (seed {loop['data_seed']}, from seed {cfg.seed} and "
               f"{os.path.join(source_dir, source_tag)}), not the batches that run trained on")
    if start["marker"] is None:
        seed_everything(cfg.seed, ctx.rank)  # dropout differs across ranks, reproducibly
        return loop
    tag, failure = start["tag"], None
    try:  # each rank reads files of its own: a failure on one is agreed, so that no rank is left in a collective
        load_run(engine, optimizer, load_dir, tag, loop, start["marker"], ctx.device, cfg.seed, warn=print0)
    except ckpt.CheckpointError as e:
        others = choose_with(ckpt.other_tags(os.path.join(cfg.out_dir, tag)), "tag with --resume_tag=TAG")
        failure = f"[rank {ctx.rank}] {e}; {others}"
    raise_together(failure, ctx.device, every_rank=True)
    return loop


def print_summary(cfg, ctx, model, origin, fused_note, ds_config, zero_stage, start, splits):
    """Rank 0: what is trained, on what, with which batch and memory; the warnings; config.json."""
    if not ctx.master:
        return
    mc = model.config
    gpu = torch.cuda.get_device_name(ctx.local_rank) if ctx.on_gpu else "CPU (DeepSpeed CPU accelerator)"
    context = (f", trained on {cfg.block_size}-token windows of its {mc.block_size}-token context"
               if cfg.block_size < mc.block_size else "")
    print0(f"model: GPT-2 {mc.n_layer} layers, {mc.n_embd} wide, {model.get_num_params() / 1e6:.1f}M parameters, "
           f"from {origin}{context}")
    zero = ds_config.get("zero_optimization", {})
    offload = zero.get("offload_optimizer", {}).get("device", "none") != "none"
    offload_params = zero.get("offload_param", {}).get("device", "none") != "none"
    offloaded = f" with optimizer{' and parameter' if offload_params else ''} offload" if offload else ""
    how = [f"{ctx.world_size} x {gpu}", f"precision {cfg.dtype}", f"ZeRO stage {zero_stage}{offloaded}",
           f"fused kernels {fused_note}"]
    if cfg.deterministic:
        how.append("deterministic kernels")
    if cfg.gradient_checkpointing:
        how.append("every block recomputed" if cfg.gradient_checkpointing < 0
                   else f"{cfg.gradient_checkpointing} blocks recomputed")
    if cfg.recompute_gelu:
        how.append("every GELU recomputed" if cfg.recompute_gelu < 0 or cfg.recompute_gelu >= mc.n_layer
                   else f"{cfg.recompute_gelu} GELUs recomputed")
    if cfg.compile:
        how.append("blocks compiled")
    print0(f"hardware: {'; '.join(how)}")
    unit = ("GPU", "GPUs") if ctx.on_gpu else ("CPU process", "CPU processes")
    mb, ga = cfg.batch_size, cfg.gradient_accumulation_steps
    seqs = mb * ga * ctx.world_size
    print0(f"batch: {mb} x {ga} x {ctx.world_size} {unit[ctx.world_size > 1]} x {cfg.block_size} = "
           f"{seqs * cfg.block_size:,} tokens per iteration ({seqs} sequences)")
    for warning in start_warnings(cfg, start, ctx.world_size, vars(mc)):
        print0(f"warning: {warning}")
    est = estimate_model_state_memory(model, zero_stage, offload, offload_params, ctx.world_size)
    print0(f"memory: DeepSpeed estimates {format_bytes(est)} of model states per "
           f"{'GPU' if ctx.on_gpu else 'process'} (+ activations)")
    sizes = [describe(n, w, d, splits["val"][n][0]) for n, (d, w, _) in splits["train"].items()]
    print0(f"data: {'; '.join(sizes)}")
    with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:  # "model": the shape actually trained
        json.dump({**cfg, "world_size": ctx.world_size, "tokens_per_iter": seqs * cfg.block_size, "model": vars(mc),
                   "deepspeed": ds_config}, f, indent=2)


def print_done(cfg, loop, start_iter, seconds):
    """Rank 0, at the end of a run: what it did, where its checkpoints are, and what to run next."""
    out = cfg.out_dir
    print0(f"done: iterations {start_iter} -> {loop['iter']} in {format_duration(seconds)} "
           f"({loop['tokens_seen']:,} tokens trained in all); best val loss {loop['best_val_loss']:.4f}")
    if not cfg.save_checkpoints:
        print0("no checkpoints were written (save_checkpoints=False)")
        return
    best = ckpt.read_marker(os.path.join(out, "best"))
    tag = "best" if best is not None else ckpt.read_latest(out)
    where = f" (iteration {best['iteration']})" if best is not None else ""
    print0(f"checkpoints in {out}: {', '.join(ckpt.saved_tags(out))}; latest = {ckpt.read_latest(out)}")
    print0(f"next: python sample.py --init_from={os.path.join(out, tag)}{' ' * 4}# sample from {tag}{where}")
    print0(f"      python export.py {os.path.join(out, tag)}{' ' * 4}# Hugging Face GPT-2 folder: "
           f"{os.path.join(out, 'export', tag + '-hf')}")


# -----------------------------------------------------------------------------
# model


def build_model(cfg, device, vocab_size, resume_marker=None):
    """The GPT to train, built directly on the device in the training dtype: (model, where its weights came from)."""
    from model import GPT, GPTConfig, PretrainedNotFound
    ptdtype = getattr(torch, cfg.dtype)
    if resume_marker is not None:
        with torch.device(device):
            model = GPT(GPTConfig(**resume_marker["model_config"]), init_weights=False).to(ptdtype)
        return model, f"resumed {resume_marker['tag']}"
    if cfg.init_from == "scratch":
        config = GPTConfig(block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                           n_embd=cfg.n_embd, bias=cfg.bias, dropout=cfg.dropout)
        with torch.device(device):
            model = GPT(config)
        return model.to(ptdtype), "random initialisation"
    source_dir, tag = ckpt.split_checkpoint_path(cfg.init_from)
    if source_dir is not None:  # continual training: another run's weights, a fresh optimizer and schedule
        quiet = int(os.environ.get("RANK", "0")) != 0  # zero_to_fp32's progress lines once, not once per rank
        try:
            with contextlib.redirect_stderr(io.StringIO()) if quiet else contextlib.nullcontext():
                model, _ = ckpt.load_model(source_dir, tag, dropout=cfg.dropout)
        except ckpt.CheckpointError as e:
            raise InputError(str(e)) from None
        return model.to(device=device, dtype=ptdtype), f"weights of {os.path.join(source_dir, tag)} (fresh optimizer " \
                                                       "and schedule)"
    # A shorter block_size trains on shorter windows but keeps every position embedding: the model (and its
    # export) keeps the context it came with instead of being cut to the training window
    try:
        return GPT.from_pretrained(cfg.init_from, device=device, dtype=ptdtype, dropout=cfg.dropout), \
            f"pretrained {cfg.init_from}"
    except PretrainedNotFound as e:
        raise InputError(str(e)) from None


def prepare_model(model, cfg, ctx, zero_stage):
    """Recomputation, the fused kernels and compilation as the settings ask; returns the fused kernels' words."""
    model.gradient_checkpointing = cfg.gradient_checkpointing
    try:
        model.set_recompute_gelu(cfg.recompute_gelu)
    except ValueError as e:
        raise InputError(f"{e}; drop --recompute_gelu, or use --gradient_checkpointing to save memory") from None
    model.universal_checkpoint_info = {"universal_checkpoint_version": 0.2}  # lets ds_to_universal convert it
    fused_note = "off"
    if cfg.fused_kernels and ctx.on_gpu and cfg.dtype != "float32" and zero_stage < 3:
        import kernels
        fused_note = kernels.enable(model, cfg.fused_norm, warn=print0)
    if cfg.compile:
        for block in model.transformer.h:
            block.compile()
    return fused_note


def make_engine(model, cfg, ds_config, zero_stage, on_gpu):
    """DeepSpeed's engine around the model, with AdamW: (engine, optimizer, whether the overflow scan is off)."""
    import deepspeed
    offload = ds_config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none") != "none"

    def make_optimizer(params):
        if offload:
            from deepspeed.ops.adam import DeepSpeedCPUAdam
            return DeepSpeedCPUAdam(params, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), adamw_mode=True)
        return torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=on_gpu)

    if zero_stage == 3:  # the loss head reads the tied embedding outside its own module: gather it for GPT.forward
        deepspeed.zero.register_external_parameter(model, model.transformer.wte.weight)
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.param_groups(cfg.weight_decay),
                                                   optimizer=make_optimizer, config=ds_config)
    return engine, optimizer, ds_patches.patch_zero_optimizer(optimizer, zero_stage, offload)


# -----------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def evaluate(engine, data, windows, block_size, batch_size, device):
    """Mean loss over the trained targets of fixed windows, split across ranks; every rank runs the same number
    of forwards (ZeRO-3 gathers parameters in forward) and the sums are all-reduced."""
    import deepspeed.comm as dist
    rank, world_size = dist.get_rank(), dist.get_world_size()
    mine = windows[rank::world_size]
    n_batches = math.ceil(len(windows) / (world_size * batch_size))
    total = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, trained targets
    for b in range(n_batches):
        chunk = mine[b * batch_size:(b + 1) * batch_size]
        n = len(chunk)
        if n == 0:
            chunk = windows[:1]  # a dummy forward keeps the ranks in step; its loss is not counted
        arrays = eval_batch(data, chunk, block_size)
        _, loss = engine(**to_device(arrays, device))
        targets = int((arrays[1] != -1).sum()) if n else 0
        total[0] += loss.double() * targets
        total[1] += targets
    dist.all_reduce(total)
    return (total[0] / total[1]).item()


def evaluate_all(engine, splits, block_size, batch_size, device):
    """({'train': loss, 'val': loss, ...}, seconds spent on val). Losses are weighted means over datasets, with
    per-dataset entries when mixing."""
    engine.eval()
    out, val_seconds = {}, 0.0
    for split in ("val", "train"):
        t0 = time.time()
        mean = 0.0
        for name, (data, weight, starts) in splits[split].items():
            loss = evaluate(engine, data, starts, block_size, batch_size, device)
            mean += weight * loss
            if len(splits[split]) > 1:
                out[f"{split}/{name}"] = loss
        out[split] = mean
        if split == "val":
            val_seconds = time.time() - t0  # evaluate() ends in an all-reduce read on the host: the work is done
    engine.train()
    return {k: out[k] for k in sorted(out, key=lambda k: (not k.startswith("train"), k))}, val_seconds


def eval_and_report(engine, splits, cfg, device, loop, monitor, it):
    """The eval at iteration `it`, printed and sent to the monitors; the loop's best val loss and its count of evals
    without improvement (for patience) follow it. Returns (losses, whether val loss improved)."""
    t_eval = time.time()
    losses, val_seconds = evaluate_all(engine, splits, cfg.block_size, cfg.batch_size, device)
    loop["last_eval_iter"] = it
    improved = losses["val"] < loop["best_val_loss"]
    if improved:
        loop["best_val_loss"], loop["evals_without_improvement"] = losses["val"], 0
    else:
        loop["evals_without_improvement"] += 1
    val_ppl = math.exp(min(losses["val"], 50))
    extra = "".join(f" | {k} {v:.4f}" for k, v in losses.items() if "/" in k)
    print0(f"eval {it}: train loss {losses['train']:.4f} | val loss {losses['val']:.4f} | "
           f"val ppl {val_ppl:.2f}{extra} | {val_seconds:.2f}s val, {time.time() - t_eval:.2f}s total")
    monitor.write_events([(f"Eval/{k}_loss", v, it) for k, v in losses.items()] + [("Eval/val_ppl", val_ppl, it)])
    return losses, improved


# -----------------------------------------------------------------------------
# the run


def run(cfg):
    """Train with the settings `cfg` (settings.parse_config); returns the exit status: 0 done, EXIT_PREEMPTED
    stopped with a checkpoint, EXIT_DIVERGED stopped without one. Bad input raises InputError."""
    # ---- checks that need no process group: every rank fails the same way, before anything is written
    startup = StartupClock()
    ctx = environment()
    startup.lap("imports")  # DeepSpeed's among them, which environment() makes
    ckpt.safe_loading()  # no file this run reads can run code
    check_settings(cfg, ctx.world_size, ctx.on_gpu, ctx.accelerator)
    ds_config, monitor_sections, zero_stage = build_ds_config(cfg, ctx.world_size)
    start = check_start(cfg, ctx.world_size, zero_stage)
    marker = start["marker"]
    if start["done"]:
        print0(f"final is at iteration {cfg.max_iters} = max_iters: the run is done, nothing to train or save; raise "
               "--max_iters to go on")
        return 0
    vocab_size = marker["model_config"]["vocab_size"] if marker else 50257  # GPT-2's tokenizer
    splits = load_splits(cfg, vocab_size)
    make_out_dir(cfg.out_dir, ctx.rank)
    startup.lap("data")

    # ---- the process group, the out_dir, the model and its engine
    compute_init(ctx, cfg)
    monitor = open_run_dir(cfg, ctx, marker is not None, monitor_sections)
    check_same_start(cfg, ctx, start)
    startup.lap("process group")
    seed_everything(cfg.seed)  # identical initialisation on every rank
    model, origin = build_model(cfg, ctx.device, vocab_size, marker)
    startup.lap("model")
    fused_note = prepare_model(model, cfg, ctx, zero_stage)
    startup.lap("kernels")
    load_dir = resume_dir(cfg, ctx, start, ds_config)
    engine, optimizer, overflow_scan_off = make_engine(model, cfg, ds_config, zero_stage, ctx.on_gpu)
    startup.lap("DeepSpeed")
    loop = loop_state(cfg, ctx, start, splits, engine, optimizer, load_dir)
    if marker is not None:
        startup.lap("resume")
    print_summary(cfg, ctx, model, origin, fused_note, ds_config, zero_stage, start, splits)

    saves = Saves(cfg, ctx, engine, monitor, zero_stage, vars(model.config))
    startup.lap("summary")

    # ---- the training loop
    import deepspeed.comm as dist
    import psutil
    process = psutil.Process()
    mb, ga, world_size = cfg.batch_size, cfg.gradient_accumulation_steps, ctx.world_size
    tokens_per_iter = mb * ga * world_size * cfg.block_size
    from model import flops_per_token, peak_flops
    flops_tok = flops_per_token(model.config, cfg.block_size)
    peak = peak_flops(torch.cuda.get_device_name(ctx.local_rank), getattr(torch, cfg.dtype)) if ctx.on_gpu else None
    stop = StopFlag(saves=cfg.save_checkpoints, stop_file=os.path.join(cfg.out_dir, STOP_FILE) if ctx.master else None)
    after_stop = ("continue with --init_from=resume" if cfg.save_checkpoints
                  else "nothing was saved (save_checkpoints=False)")
    step_timer = StepTimer(ctx.on_gpu)
    batches = Batches([(d, w) for d, w, _ in splits["train"].values()], cfg.block_size, mb, loop["data_seed"],
                      ctx.rank, ctx.device)
    lr_decay_iters = cfg.lr_decay_iters or cfg.max_iters
    start_iter = loop["iter"]
    if ctx.master and marker is not None and monitor.csv_monitor is not None:
        monitor.csv_monitor.filenames += trim_csv_logs(monitor.csv_monitor.log_dir, start_iter)
    if 0 < cfg.profile_iteration <= start_iter:
        print0(f"warning: profile_iteration {cfg.profile_iteration} was done before this resume from iteration "
               f"{start_iter}; nothing will be profiled")
    status, stop_reason, consecutive_nonfinite = None, None, 0
    t_start = t_last = time.time()
    dt_avg = None
    progress = Progress(cfg.max_iters, start_iter, ctx.master)
    try:
        for it in range(start_iter, cfg.max_iters + 1):
            last_step = it == cfg.max_iters
            loop["iter"] = it

            # ---- evaluate, save, stop: what to save is decided here, and saved in one place below
            tags, farewell, losses = [], None, None
            evaluating = (it % cfg.eval_interval == 0 or last_step) and loop["last_eval_iter"] != it
            if stop_reason is not None:  # the ranks agreed to stop after the step that ended here
                tags, status = [f"iter_{it}"], EXIT_PREEMPTED
                farewell = f"stopped on {stop_reason} after iteration {it}; {after_stop}"
            elif evaluating:  # unless the checkpoint this run resumed from was saved after this eval
                losses, improved = eval_and_report(engine, splits, cfg, ctx.device, loop, monitor, it)
                best = ["best"] if improved else []
                early_stop = cfg.patience > 0 and loop["evals_without_improvement"] >= cfg.patience
                if last_step or early_stop:
                    tags, status = ["final", *best], 0
                    if early_stop and not last_step:
                        where = (f"; the best weights (val loss {loop['best_val_loss']:.4f}) are in "
                                 f"{os.path.join(cfg.out_dir, 'best')}: sample or export that tag, not final"
                                 if cfg.save_checkpoints else "")
                        print0(f"early stop: val loss has not improved for {cfg.patience} evals{where}")
                else:
                    # not at a fresh run's iteration 0; on a resume, this eval was missing from the checkpoint's state
                    if (it > start_iter or marker is not None) and (improved or cfg.always_save_checkpoint):
                        tags = [f"iter_{it}", *best]
                    # a signal that came during the eval (which can take a while) stops here, at this iteration's
                    # checkpoint, instead of after one more step and a second save
                    requested = torch.tensor(stop.requests(), device=ctx.device)
                    dist.all_reduce(requested)
                    stop_reason = agreed_stop(requested.tolist())
                    if stop_reason is not None:
                        tags, status = tags or [f"iter_{it}"], EXIT_PREEMPTED
                        farewell = f"stopped on {stop_reason} at iteration {it}, after its eval; {after_stop}"
            elif last_step:
                tags, status = ["final"], 0
            broken_eval = losses is not None and not all(map(math.isfinite, losses.values()))
            if broken_eval or (tags and not weights_finite(model, ctx.device)):  # never best, final or latest
                last_good = ckpt.read_latest(cfg.out_dir) if cfg.save_checkpoints else None
                what = "eval loss is" if broken_eval else "weights are"
                print0(f"error: at iteration {it} the {what} no longer finite: nothing was saved; the last good "
                       f"checkpoint is {last_good or 'none (nothing was saved)'}. "
                       "Resume from it with a lower --learning_rate or --dtype=bfloat16, or check the data",
                       file=sys.stderr)
                tags, status, farewell = [], EXIT_DIVERGED, None
            if tags:
                saves.save(loop, tags, ending=status is not None)
            if farewell:
                print0(farewell)
            if status is not None:
                break
            if evaluating:
                t_last = time.time()  # the step timer measures training only

            # ---- one optimizer step over ga micro-batches
            lr = get_lr(loop["lr_step"], cfg.learning_rate, cfg.lr_schedule, cfg.warmup_iters, lr_decay_iters,
                        cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            profiler = start_profiler(ctx.on_gpu) if it + 1 == cfg.profile_iteration else None
            # the loss is the mean over the trained targets of the step (all micro-batches, all ranks); text windows
            # are all alike, prompt/completion ones are not: their losses are weighted (dataloader.loss_weights)
            targets = batches.trained_targets(it, ga)
            weights = None
            if batches.packed:
                total = torch.tensor(float(sum(targets)), device=ctx.device)
                dist.all_reduce(total)
                weights = loss_weights(targets, total.item(), ga, world_size)
            loss_sum = torch.zeros((), device=ctx.device, dtype=torch.float32)  # loss x trained targets
            for micro_step in range(ga):
                batch = batches.get(it, micro_step, ga)
                with record_function("forward"):
                    _, loss = engine(**batch)
                with record_function("backward"):
                    engine.backward(loss if weights is None else loss * weights[micro_step])
                loss_sum += loss.detach().float() * targets[micro_step]
                if micro_step < ga - 1:
                    engine.step()  # DeepSpeed counts micro-steps: only the step() after the last one updates weights
            deadline = cfg.max_runtime > 0 and time.time() - t_start > cfg.max_runtime * 3600
            # one all-reduce carries the loss and trained targets of every micro-batch of every rank, the stop
            # requests and where a background save stands (ranks whose part is written, ranks whose write failed)
            flags = torch.cat([loss_sum.view(1), torch.tensor([float(sum(targets))] + stop.requests() +
                                                              [float(deadline)] + saves.state(), device=ctx.device)])
            dist.all_reduce(flags)
            flags = flags.tolist()
            mean_loss = flags[0] / flags[1] if flags[1] else float("nan")
            stop_reason = agreed_stop(flags[2:-2], StopFlag.REASONS + ("max_runtime",))
            saves.finish(flags[-2:])
            nonfinite = not math.isfinite(mean_loss)
            if overflow_scan_off and cfg.dtype == "bfloat16":
                ds_patches.scan_this_step(optimizer, nonfinite)  # DeepSpeed then skips the step, clears the grads
            step_timer.start()
            try:
                with record_function("optimizer step"):
                    engine.step()  # clipping reads the gradient norm of ds_patches.use_foreach_grad_norm
            except Exception as e:
                if "loss scale already at minimum" not in str(e):
                    raise
                print0(f"error: at iteration {it + 1} the fp16 loss scale reached its minimum and the gradients still "
                       "overflow: training has diverged. Nothing new was saved. Try a lower --learning_rate, "
                       "--dtype=bfloat16, or resume from an earlier checkpoint", file=sys.stderr)
                status = EXIT_DIVERGED
                break
            step_timer.stop()
            applied = engine.was_step_applied()
            if nonfinite and applied:
                raise RuntimeError("a non-finite loss reached the optimizer; DeepSpeed should have skipped this step")
            loop["lr_step" if applied else "skipped_steps"] += 1
            consecutive_nonfinite = consecutive_nonfinite + 1 if nonfinite else 0
            loop["tokens_seen"] += tokens_per_iter
            loop["iter"] = it + 1
            # ---- the step is done: what follows is diagnostics (the log line, the monitors, the profile)
            t_now = time.time()
            dt, t_last = t_now - t_last, t_now
            dt_avg = dt if dt_avg is None else 0.9 * dt_avg + 0.1 * dt  # for the ETA
            if it == start_iter:
                startup.lap("eval", now=t_now - dt)
                startup.lap("the step")
                print0(f"first optimizer step done {t_now - t_start:.1f}s after the loop started, "
                       f"{t_now - process.create_time():.1f}s after the process started ({startup})")
            if ctx.master and ((it + 1) % cfg.log_interval == 0 or it + 1 == cfg.max_iters or nonfinite or not applied):
                grad_norm = engine.get_global_grad_norm()
                grad_norm = None if grad_norm is None else float(grad_norm)  # ZeRO's is a tensor: CSV would get str()
                tok_s = tokens_per_iter / dt / world_size
                metrics = {
                    "loss": mean_loss, "lr": lr, "ms": dt * 1000, "tok_s": tok_s,
                    "mfu": tok_s * flops_tok / peak if peak else None, "opt_ms": step_timer.milliseconds(),
                    "mem_gib": torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30 if ctx.on_gpu else None,
                    "scale": optimizer.loss_scale if cfg.dtype == "float16" else None,
                    "grad_norm": grad_norm if grad_norm is not None and math.isfinite(grad_norm) else None,
                    "skipped": None if applied else "skipped (NaN/inf loss)" if nonfinite else "skipped (overflow)",
                    "skipped_total": loop["skipped_steps"] or None,
                    "eta": format_duration((cfg.max_iters - it - 1) * dt_avg),
                    "tokens_seen": loop["tokens_seen"], "rss_mib": process.memory_info().rss / 2 ** 20,
                    "open_files": process.num_fds()}
                print0(format_log(it + 1, cfg.max_iters, metrics))
                monitor.write_events(monitor_events(it + 1, metrics))
            progress.update(mean_loss)
            if it == start_iter + 2 and ctx.on_gpu:
                peak_gib = torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30
                print0(f"measured peak GPU memory after 3 steps: {peak_gib:.1f} GiB (rank 0)")
            if profiler is not None:
                path = stop_profiler(profiler, cfg.out_dir, ctx.rank, ctx.on_gpu)
                print0(f"profile of iteration {it + 1} (its logged time includes the profiler's): {path} on rank 0, "
                       f"one file per rank; summarise with python bench/trace_summary.py {path}")
                t_last = time.time()  # writing the trace is not the next iteration's time

            # ---- a run whose loss stays NaN/inf stops, without saving
            if consecutive_nonfinite >= cfg.max_consecutive_nonfinite:
                print0(f"error: the loss was NaN/inf on {consecutive_nonfinite} iterations in a row (up to iteration "
                       f"{it + 1}); the steps were skipped and nothing new was saved. Try a lower --learning_rate, "
                       "--dtype=bfloat16, check the data, or resume from the last checkpoint", file=sys.stderr)
                status = EXIT_DIVERGED
                break

            # ---- the optimizer's state exists after the first step: the saves' host buffers are allocated now
            if it == start_iter:
                saves.reserve()
                t_last = time.time()  # not the next iteration's time
    finally:
        progress.close()
    try:
        if status == 0 and ctx.master and cfg.plot and cfg.csv_log:  # drawn while the final save is written
            from plot import plot_run
            path = plot_run(cfg.out_dir)
            if path:
                print0(f"loss plot: {path}")
    finally:  # a run that ends waits for its last save (a failed plot included), which becomes visible here
        saves.finish()

    if stop_reason == "the STOP file" and ctx.master:
        stop.consume_stop_file()
    if status == 0:
        print_done(cfg, loop, start_iter, time.time() - t_start)
    return status


def main(argv):
    rank = os.environ.get("RANK", "0")
    cfg = None
    try:
        cfg = parse_config(argv, DEFAULTS)
        status = run(cfg)
    except InputError as e:
        import torch.distributed as tdist
        if e.every_rank or rank == "0":
            print_line(f"error: {e}")
        elif os.environ.get("LOCAL_RANK") == "0" and not tdist.is_initialized():
            # found before the ranks could agree: another node's own disk state (its out_dir, its data) may differ
            # from rank 0's, so the first rank of each node says what it found
            print_line(f"error: [rank {rank}] {e}")
        elif not tdist.is_initialized():
            # The node's first rank finds the same, maybe a second later (a slower import): the launcher ends every
            # rank as soon as one exits, so a silent rank that left first would cut that rank's line. It stays until
            # the launcher ends it, and says why itself if no other rank did in that time.
            time.sleep(SILENT_RANK_WAIT_S)
            print_line(f"error: [rank {rank}] {e}")
        if tdist.is_initialized():  # the interpreter's exit with a live gloo group can abort ("terminate called
            sys.stdout.flush()  # without an active exception", once in a CI-like run): leave at once
            sys.stderr.flush()
            os._exit(EXIT_BAD_INPUT)
        sys.exit(EXIT_BAD_INPUT)
    except ckpt.SaveFailed as e:  # the other ranks may wait in the save's collectives: leave at once, as below
        if str(e):  # SaveFailedElsewhere: the rank whose write failed says so
            print_line(f"error: {e}")
        os._exit(1)
    except torch.OutOfMemoryError as e:  # the launcher ends the other ranks, which may wait in a collective
        print_line(out_of_memory_line(e, rank, cfg))
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
    compute_cleanup()  # every rank, so that no rank exits while a peer still waits on it
    # Python's teardown after this once aborted a rank of a finished run ("terminate called without an active
    # exception", in CI), a success reported as a failure: the exit handlers run (wandb, logging), then the process
    # leaves without the teardown, as the failure paths above do
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
