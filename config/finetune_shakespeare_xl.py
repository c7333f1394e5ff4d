# Fine-tune GPT-2 XL (1.5B) on Tiny Shakespeare with ZeRO-2 on 80 GB GPUs (also the choice for 8 GPUs).
#   ./run_deepspeed_xl.sh    (or: deepspeed --num_gpus=4 train_deepspeed.py config/finetune_shakespeare_xl.py)
# Everything else is train_deepspeed.py's default: init_from gpt2-xl, dataset shakespeare, out_dir out-shakespeare-xl,
# micro-batch 16, block_size 1024, fp16, learning rate 3e-5 constant, 20 iterations.
# target_batch_size keeps 128 sequences per iteration on any GPU count (micro x accumulation x GPUs x block_size):
#   1 GPU:  16 x 8 x 1 x 1024 = 131,072 tokens per iteration
#   2 GPUs: 16 x 4 x 2 x 1024 = 131,072 tokens per iteration
#   4 GPUs: 16 x 2 x 4 x 1024 = 131,072 tokens per iteration
#   8 GPUs: 16 x 1 x 8 x 1024 = 131,072 tokens per iteration
target_batch_size = 128
eval_interval = 5  # eval and checkpoint every 5 iterations (the whole val split: 36 windows of 1024 tokens)
