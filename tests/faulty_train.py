"""
train_deepspeed.py with faults patched in, for the failure tests: launched by the deepspeed launcher in its place
(conftest.launch(..., faults=SPEC)), it patches the trainer's collaborators and then calls train_deepspeed.main, so
that production code carries no switch for a test.

SPEC, from $TRAIN_FAULT: KIND@FIRST[-LAST][:RANK],... (rank 0 when left out), iterations counted from 0 as the loop
counts them (iteration 3 is logged as iter 4). The kinds:
    nan               the training loss of that iteration is NaN
    nan_weights       that rank's weights turn NaN at that iteration's first micro-batch (ln_f's weight)
    crash             RuntimeError at that iteration's first micro-batch
    sigterm           SIGTERM to itself at that iteration's first micro-batch (as a scheduler would send it)
    hang              sleep for an hour at that iteration (a stuck rank)
    stuck             the same, but the launcher's SIGTERM ends it (as a rank stuck in a collective ends on its own
                      timeout), not its SIGKILL 30 s later
    oom               torch's out-of-memory error, with the words a 77 GiB cap gave on an H200
    minscale          DeepSpeed's exception at the minimum fp16 loss scale, from that iteration's optimizer step
    kill_in_save      SIGKILL inside the save of that iteration, after DeepSpeed's files, before the rank's own state
    disk_full_in_save ENOSPC at the same place
    sigterm_in_eval   SIGTERM to itself as the eval of that iteration starts
    sigint_in_startup SIGINT to itself once the model is built (FIRST is ignored)
    late_start        that rank starts FIRST seconds late (its imports done, before it reads its settings), as a rank
                      slowed by a busy machine
    late_rendezvous   that rank reaches the process group's rendezvous FIRST seconds late (as a rank 0 that lost the
                      race to its peers: they meet whoever holds the port first)
$TRAIN_SAME_STOP_SECONDS sets StopFlag's window for "the same stop passed on by a launcher".
"""
import errno
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import checkpoint  # noqa: E402
import dataloader  # noqa: E402
import distributed  # noqa: E402
import model  # noqa: E402
import train_deepspeed  # noqa: E402

OUT_OF_MEMORY = ("CUDA out of memory. Tried to allocate 394.00 MiB. GPU 1 has a total capacity of 139.80 GiB of which "
                 "61.05 GiB is free. Including non-PyTorch memory, this process has 78.75 GiB memory in use. 77.00 GiB "
                 "allowed; Of the allocated memory 75.33 GiB is allocated by PyTorch, and 1.37 GiB is reserved by "
                 "PyTorch but unallocated.")
MIN_SCALE = "Current loss scale already at minimum - cannot decrease scale anymore. Exiting run."  # DeepSpeed's words


def parse(spec):
    """{kind: [(first, last, rank), ...]}"""
    faults = {}
    for item in filter(None, spec.split(",")):
        kind, _, where = item.partition("@")
        span, _, rank = where.partition(":")
        first, _, last = span.partition("-")
        faults.setdefault(kind, []).append((int(first), int(last or first), int(rank or 0)))
    return faults


FAULTS = parse(os.environ.get("TRAIN_FAULT", ""))
RANK = int(os.environ.get("RANK", "0"))
now = {"iteration": None, "micro_step": None}  # what the loop trains on; None during an eval


def due(kind, iteration):
    return iteration is not None and any(a <= iteration <= b and r == RANK for a, b, r in FAULTS.get(kind, ()))


def patch(owner, name, make):
    setattr(owner, name, make(getattr(owner, name)))


def on_batch(get):
    def faulty_get(self, iteration, micro_step, ga):
        now.update(iteration=iteration, micro_step=micro_step)
        if micro_step == 0:
            if due("crash", iteration):
                raise RuntimeError(f"injected crash on rank {RANK} at iteration {iteration}")
            if due("sigterm", iteration):
                os.kill(os.getpid(), signal.SIGTERM)
            if due("hang", iteration):
                time.sleep(3600)
            if due("stuck", iteration):
                signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
                time.sleep(3600)
            if due("oom", iteration):
                raise torch.OutOfMemoryError(OUT_OF_MEMORY)
        return get(self, iteration, micro_step, ga)
    return faulty_get


def on_forward(forward):
    def faulty_forward(self, *args, **kwargs):
        if self.training and now["micro_step"] == 0 and due("nan_weights", now["iteration"]):
            self.transformer.ln_f.weight.data.fill_(float("nan"))
        logits, loss = forward(self, *args, **kwargs)
        if loss is not None and due("nan", now["iteration"]):
            loss = loss * float("nan")
        return logits, loss
    return faulty_forward


def on_eval(evaluate_all):
    def faulty_evaluate_all(*args, **kwargs):
        iteration = 0 if now["iteration"] is None else now["iteration"] + 1
        now["iteration"] = None
        if due("sigterm_in_eval", iteration):
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_all(*args, **kwargs)
    return faulty_evaluate_all


def on_rank_state_write(atomic_torch_save):
    def faulty_save(obj, path):
        iteration = obj.get("sampler", {}).get("iteration") if isinstance(obj, dict) else None
        if due("kill_in_save", iteration):
            os.kill(os.getpid(), signal.SIGKILL)
        if due("disk_full_in_save", iteration):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return atomic_torch_save(obj, path)
    return faulty_save


def on_step(step):
    def faulty_step(self, *args, **kwargs):
        if self.is_gradient_accumulation_boundary() and due("minscale", now["iteration"]):
            raise Exception(MIN_SCALE)
        return step(self, *args, **kwargs)
    return faulty_step


def on_build(build_model):
    def faulty_build(*args, **kwargs):
        built = build_model(*args, **kwargs)
        if "sigint_in_startup" in FAULTS and any(r == RANK for _, _, r in FAULTS["sigint_in_startup"]):
            # as `deepspeed` (runner.py) starts the ranks, SIGINT is Python's: a rank started from a background job
            # through launch.py alone inherits it ignored, and would not see this one
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.kill(os.getpid(), signal.SIGINT)
        return built
    return faulty_build


def on_compute_init(compute_init):
    def late_compute_init(*args, **kwargs):
        for first, _, rank in FAULTS.get("late_rendezvous", ()):
            if rank == RANK:
                time.sleep(first)
        return compute_init(*args, **kwargs)
    return late_compute_init


if __name__ == "__main__":
    from deepspeed.runtime.engine import DeepSpeedEngine
    patch(dataloader.Batches, "get", on_batch)
    patch(model.GPT, "forward", on_forward)
    patch(train_deepspeed, "evaluate_all", on_eval)
    patch(checkpoint, "atomic_torch_save", on_rank_state_write)
    patch(DeepSpeedEngine, "step", on_step)
    patch(train_deepspeed, "build_model", on_build)
    patch(train_deepspeed, "compute_init", on_compute_init)
    if "TRAIN_SAME_STOP_SECONDS" in os.environ:
        distributed.StopFlag.same_stop_seconds = float(os.environ["TRAIN_SAME_STOP_SECONDS"])
    for first, _, rank in FAULTS.get("late_start", ()):
        if rank == RANK:
            time.sleep(first)
    train_deepspeed.main(sys.argv[1:])
