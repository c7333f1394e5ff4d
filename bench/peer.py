"""
The peer to beat: transformers' GPT2LMHeadModel (SDPA attention) in the same DeepSpeed ZeRO-2 engine, with the
same DeepSpeed JSON, the same AdamW and the same batches as train_deepspeed.py. Launched by bench/bench.py:

    deepspeed --num_gpus=4 bench/peer.py --dtype=bfloat16 --batch_size=8 --target_batch_size=128 --max_iters=8

Prints per-iteration lines in train_deepspeed.py's format, then the eval and checkpoint-save times.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import dir_bytes  # noqa: E402
from dataloader import eval_starts, get_batch, load_split  # noqa: E402
from model import GPT2_SIZES, GPTConfig, flops_per_token, peak_flops  # noqa: E402
from settings import DTYPES, derive_batch, fill_ds_config, load_ds_config, training_defaults  # noqa: E402

DEFAULTS = training_defaults()  # the trainer's settings, read from train_deepspeed.py without running it


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--model", default="gpt2-xl", choices=list(GPT2_SIZES))
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--target_batch_size", type=int, default=128)
    parser.add_argument("--max_iters", type=int, default=8)
    parser.add_argument("--dataset", default="shakespeare")
    parser.add_argument("--deepspeed_config", default="ds_config_zero2.json")
    parser.add_argument("--save_dir", default="")
    parser.add_argument("--local_rank", type=int, default=0)
    args = parser.parse_args()

    import deepspeed
    import deepspeed.comm as dist
    from transformers import GPT2Config, GPT2LMHeadModel
    rank, local_rank, world = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(local_rank)
    deepspeed.init_distributed()
    ptdtype = getattr(torch, args.dtype)
    cfg = dict(DEFAULTS, batch_size=args.batch_size, target_batch_size=args.target_batch_size, dtype=args.dtype,
               csv_log=False, deepspeed_config=args.deepspeed_config)
    mb, ga, _ = derive_batch(cfg, world)
    ds = fill_ds_config(load_ds_config(args.deepspeed_config), cfg, mb, ga, world, "/tmp/peer")
    shape = GPT2_SIZES[args.model]
    hf_config = GPT2Config(n_positions=1024, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           attn_implementation="sdpa", **shape)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = GPT2LMHeadModel(hf_config).to(ptdtype)
    engine, optimizer, _, _ = deepspeed.initialize(
        model=model, model_parameters=model.parameters(), config=ds,
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-5, betas=(0.9, 0.95), weight_decay=0.1, fused=True))

    train = load_split(args.dataset, "train", 1024, 50257)
    val = load_split(args.dataset, "val", 1024, 50257)
    tokens_per_iter = mb * ga * world * 1024
    flops_tok = flops_per_token(GPTConfig(**shape), 1024)
    peak = peak_flops(torch.cuda.get_device_name(), ptdtype)
    t_start = time.time()
    for it in range(args.max_iters):
        torch.cuda.synchronize()
        t0 = time.time()
        loss_sum = torch.zeros((), device="cuda")
        for micro in range(ga):
            x, _ = get_batch([(train, 1.0)], 1024, mb, 1337, rank, it, micro)
            x = torch.from_numpy(x).cuda(non_blocking=True)
            loss = engine(input_ids=x, labels=x).loss
            engine.backward(loss)
            loss_sum += loss.detach()
            if micro < ga - 1:
                engine.step()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        engine.step()
        end.record()
        dist.all_reduce(loss_sum)
        mean = loss_sum.item() / ga / world
        end.synchronize()
        dt = time.time() - t0
        tok_s = tokens_per_iter / dt / world
        if rank == 0:
            print(f"iter {it + 1}/{args.max_iters} | loss {mean:.4f} | lr 3.00e-05 | {dt * 1000:.0f} ms | "
                  f"{tok_s:,.0f} tok/s/gpu | MFU {tok_s * flops_tok / peak:.1%} | "
                  f"opt {begin.elapsed_time(end):.0f} ms | "
                  f"mem {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB", flush=True)
        if it == 0 and rank == 0:
            print(f"first optimizer step done {time.time() - t_start:.1f}s after the loop started", flush=True)

    # the whole val split, windows split across ranks, as train_deepspeed.py evaluates it
    starts = eval_starts(len(val), 1024)
    engine.eval()
    torch.cuda.synchronize()
    t0 = time.time()
    total = torch.zeros(2, device="cuda", dtype=torch.float64)
    with torch.no_grad():
        mine = starts[rank::world]
        for b in range(0, len(mine), mb):
            chunk = mine[b:b + mb]
            x = torch.from_numpy(val[chunk[:, None] + np.arange(1024)].astype(np.int64)).cuda()
            total[0] += engine(input_ids=x, labels=x).loss.double() * len(chunk)
            total[1] += len(chunk)
    dist.all_reduce(total)
    if rank == 0:
        print(f"eval {args.max_iters}: val loss {(total[0] / total[1]).item():.4f} | {len(starts)} windows | "
              f"{time.time() - t0:.2f}s val", flush=True)
    if args.save_dir:
        dist.barrier()
        t0 = time.time()
        engine.save_checkpoint(args.save_dir, tag="peer")
        if rank == 0:
            size = dir_bytes(os.path.join(args.save_dir, "peer"))
            print(f"saved peer in {time.time() - t0:.1f}s ({size / 2 ** 30:.2f} GiB)", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
