# GPT-2 XL on one 24 GB GPU: ZeRO-Offload keeps the fp32 master weights and AdamW moments (~18.7 GB) in CPU
# memory and runs AdamW there (DeepSpeedCPUAdam); the GPU holds the fp16 weights, gradients and activations.
# Needs ~25 GB of free host RAM. The optimizer step runs on the CPU (~1.5 s for XL on 16 cores).
# Measured on an H100 (bench/NOTES.md): 8.2 GiB peak at micro-batch 16 (the default) with every block recomputed.
#   deepspeed --num_gpus=1 train_deepspeed.py config/xl_24gb_offload_1gpu.py
# micro x accumulation x GPUs x block_size:
#   1 GPU: 16 x 8 x 1 x 1024 = 131,072 tokens per iteration (128 sequences)
out_dir = "out-shakespeare-xl-offload"
deepspeed_config = "ds_config_zero2_offload.json"
target_batch_size = 128
gradient_checkpointing = -1
eval_interval = 5
# the optimizer state already holds ~19 GB of pinned host RAM; keep checkpoint copies pageable, and no host copy
# of the whole state for background saves (another ~20 GB)
pinned_checkpoint_copies = False
async_checkpoints = False
