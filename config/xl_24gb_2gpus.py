# GPT-2 XL on 2 GPUs of 24 GB (the guide's minimum, 2 x RTX 3090), ZeRO-2 without offload:
#   deepspeed --num_gpus=2 train_deepspeed.py config/xl_24gb_2gpus.py
# Model states take ~18.7 GB per GPU (DeepSpeed's estimate); recomputing every block's activations in backward
# leaves room for micro-batches of 4:
#   4 x 16 x 2 GPUs x 1024 = 131,072 tokens per iteration (the guide's 128 sequences)
out_dir = "out-shakespeare-xl-24gb"
init_from = "gpt2-xl"
batch_size = 4
target_batch_size = 128
gradient_checkpointing = -1
dtype = "float16"
max_iters = 20
eval_interval = 5
# workstations with these cards are often short of host RAM: no pinned checkpoint buffers (~10 GB per rank)
pinned_checkpoint_copies = False
# micro-batches of 4 with every block recomputed: the Triton add + LayerNorm kernels measured slower here, not
# faster (2 x H200 capped at 24 GB, fp16: 4,484-4,667 ms per iteration without, 4,979-5,048 with; bench/NOTES.md)
fused_norm = False
