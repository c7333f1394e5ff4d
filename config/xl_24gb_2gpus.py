# GPT-2 XL on 2 GPUs of 24 GB (e.g. 2 x RTX 3090), ZeRO-2 without offload. Model states take ~18.7 GB per GPU
# (DeepSpeed's estimate); recomputing every block's activations in backward leaves room for micro-batches of 4.
#   deepspeed --num_gpus=2 train_deepspeed.py config/xl_24gb_2gpus.py
#   NUM_GPUS=2 ./run_deepspeed_xl.sh config/xl_24gb_2gpus.py       (the same through the launcher script)
# micro x accumulation x GPUs x block_size:
#   2 GPUs: 4 x 16 x 2 x 1024 = 131,072 tokens per iteration (128 sequences)
#   4 GPUs: 4 x 8 x 4 x 1024 = 131,072 tokens per iteration
out_dir = "out-shakespeare-xl-24gb"
batch_size = 4
target_batch_size = 128
gradient_checkpointing = -1
eval_interval = 5
# workstations with these cards are often short of host RAM: no pinned checkpoint buffers (~10 GB per rank), no
# host copies for background saves
pinned_checkpoint_copies = False
async_checkpoints = False
# micro-batches of 4 with every block recomputed: the Triton add + LayerNorm kernels measured slower here, not
# faster (2 x H200 capped at 24 GB, fp16: 4,484-4,667 ms per iteration without, 4,979-5,048 with; bench/NOTES.md)
fused_norm = False
