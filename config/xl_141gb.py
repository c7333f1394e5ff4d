# GPT-2 XL on Tiny Shakespeare with ZeRO-2 on GPUs of ~141 GB (H200): micro-batches of 32, twice those of the 80 GB
# configuration (config/finetune_shakespeare_xl.py), for the same 128 sequences per iteration in half the
# micro-steps, so DeepSpeed's per-micro-step work (gradient hooks, bucket copies, the gradient reduction) runs half
# as often and the matmuls are twice as tall:
#   deepspeed --num_gpus=4 train_deepspeed.py config/xl_141gb.py    (or ./run_deepspeed_xl.sh config/xl_141gb.py)
#   4 GPUs: 32 x 1 x 4 x 1024 = 131,072 tokens per iteration
#   2 GPUs: 32 x 2 x 2 x 1024 = 131,072 tokens per iteration
#   1 GPU:  32 x 4 x 1 x 1024 = 131,072 tokens per iteration
# Measured on H200s (bench/results/2026-11-28-session10/), tok/s per GPU against micro-batch 16 in the same lease:
#   4 GPUs: bf16 51,697 (53.7% MFU) against 50,105-50,142 (+3.1%), fp16 50,474; peak 84.0 GiB per GPU (46.9 at 16)
#   2 GPUs: bf16 52,429; 52,091 / 52,237 against 50,384 in the ninth session (+3.5%); peak 89.8 GiB (52.0 at 16)
#   1 GPU:  bf16 53,791 (55.9%) against 52,331 (+2.8%); peak 100.0 GiB (62.2 at 16)
# Too large for 80 GB cards.
out_dir = "out-shakespeare-xl"
init_from = "gpt2-xl"
dataset = "shakespeare"
block_size = 1024
batch_size = 32
target_batch_size = 128
learning_rate = 3e-5
max_iters = 20
eval_interval = 5
eval_iters = -1  # the whole val split: 36 windows of 1024 tokens
dtype = "float16"
