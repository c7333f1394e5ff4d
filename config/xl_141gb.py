# GPT-2 XL on Tiny Shakespeare with ZeRO-2 on GPUs of ~141 GB (H200): micro-batches of 32, twice those of the 80 GB
# configuration (config/finetune_shakespeare_xl.py), for the same 128 sequences per iteration in half the
# micro-steps, so DeepSpeed's per-micro-step work (gradient hooks, bucket copies, the gradient reduction) runs half
# as often and the matmuls are twice as tall:
#   deepspeed --num_gpus=4 train_deepspeed.py config/xl_141gb.py    (or ./run_deepspeed_xl.sh config/xl_141gb.py)
#   4 GPUs: 32 x 1 x 4 x 1024 = 131,072 tokens per iteration
#   2 GPUs: 32 x 2 x 2 x 1024 = 131,072 tokens per iteration
#   1 GPU:  32 x 4 x 1 x 1024 = 131,072 tokens per iteration
# Measured on 2 x H200, bf16 (bench/results/2026-11-28-session9/micro32-h200x2/): 52,091 / 52,237 tok/s/GPU against
# 50,384 at micro-batch 16 in the same lease (+3.5%), peak 89.8 GiB per GPU (52.0 at 16); not yet measured on 1 or
# 4 GPUs or in fp16. Too large for 80 GB cards.
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
