# Fine-tune GPT-2 XL (1.5B) on Tiny Shakespeare with ZeRO-2 on 80 GB GPUs.
# target_batch_size keeps the guide's 128 sequences per iteration on any GPU count:
#   4 GPUs: 16 x 2 x 4 x 1024 = 131,072 tokens per iteration
#   1 GPU:  16 x 8 x 1 x 1024 = 131,072 tokens per iteration
out_dir = "out-shakespeare-xl"
init_from = "gpt2-xl"
dataset = "shakespeare"
block_size = 1024
batch_size = 16
target_batch_size = 128
learning_rate = 3e-5
max_iters = 20
eval_interval = 5
eval_iters = -1  # the whole val split: 36 windows of 1024 tokens
dtype = "float16"
