"""Run by tests/test_grad_norm.py under the deepspeed launcher (CPU accelerator, 2 ranks): DeepSpeed's own ZeRO-2
gradient norm against train_deepspeed.use_foreach_grad_norm's on the same gradients of a tiny GPT-2, once finite
and once with an inf planted in one rank's partition, for each dtype named on the command line. Prints one JSON
line per rank and dtype."""
import json
import os
import sys

import deepspeed
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import distributed
import ds_patches
from model import GPT, GPTConfig


def check(dtype, rank):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=32, vocab_size=96, n_layer=2, n_head=2, n_embd=32, dropout=0.0)).to(dtype)
    config = {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
              "bf16": {"enabled": dtype == torch.bfloat16},
              "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                    "reduce_bucket_size": 2000, "allgather_bucket_size": 2000}}
    engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=model.param_groups(0.1),
                                                   optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3), config=config)
    torch.manual_seed(1 + rank)  # each rank its own batch: the norm is of the averaged gradient
    x = torch.randint(0, 96, (3, 32))
    _, loss = engine(x, torch.roll(x, -1, 1))
    engine.backward(loss)
    groups = range(len(optimizer.bit16_groups))

    def norms():
        return [optimizer.get_grad_norm_direct(optimizer.averaged_gradients[i], optimizer.params_in_partition[i])
                .item() for i in groups]

    result = {"rank": rank, "dtype": str(dtype), "deepspeed": norms(), "installed": ds_patches.use_foreach_grad_norm(optimizer),
              "foreach": norms(), "method": optimizer.get_grad_norm_direct.__qualname__,
              "tensors": [len(optimizer.averaged_gradients[i]) for i in groups]}
    if rank == 1:
        next(g for g in optimizer.averaged_gradients[0] if g.numel() > 1).view(-1)[3] = float("inf")
    result["foreach_inf"] = norms()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    deepspeed.init_distributed(dist_backend="gloo")
    for name in (a for a in sys.argv[1:] if not a.startswith("--")):  # the launcher adds --local_rank
        check(getattr(torch, name), int(os.environ["RANK"]))
    ds_patches.release_cpu_allreduce_buffer(int(os.environ["RANK"]))  # DeepSpeed's 66 MB /dev/shm buffer, as the trainer does
    distributed.compute_cleanup()
    # Twice in CI (never in 60 local runs) a rank aborted after printing right results and tearing the group down:
    # "terminate called without an active exception", a C++ thread still joinable when the interpreter's teardown
    # destroyed it. The results are out; leave without that teardown.
    sys.stdout.flush()
    os._exit(0)
