# GPT-2 XL on Tiny Shakespeare with ZeRO-2 on GPUs of ~141 GB (H200): micro-batches of 32, twice those of the 80 GB
# configuration (config/finetune_shakespeare_xl.py), for the same 128 sequences per iteration in half the
# micro-steps, so DeepSpeed's per-micro-step work (gradient hooks, bucket copies, the gradient reduction) runs half
# as often and the matmuls are twice as tall. Too large for 80 GB cards.
#   ./run_deepspeed_xl.sh config/xl_141gb.py     (or: deepspeed --num_gpus=4 train_deepspeed.py config/xl_141gb.py)
# micro x accumulation x GPUs x block_size:
#   1 GPU:  32 x 4 x 1 x 1024 = 131,072 tokens per iteration
#   2 GPUs: 32 x 2 x 2 x 1024 = 131,072 tokens per iteration
#   4 GPUs: 32 x 1 x 4 x 1024 = 131,072 tokens per iteration
# Measured on H200s (bench/results/2026-11-28-grad-norm/), tok/s per GPU against micro-batch 16 side by side:
#   4 GPUs: bf16 51,697 (53.7% MFU) against 50,105-50,142 (+3.1%), fp16 50,474; peak 84.0 GiB per GPU (46.9 at 16)
#   2 GPUs: bf16 52,429; peak 89.8 GiB (52.0 at 16)
#   1 GPU:  bf16 53,791 (55.9%) against 52,331 (+2.8%); peak 100.0 GiB (62.2 at 16)
batch_size = 32
target_batch_size = 128
eval_interval = 5
