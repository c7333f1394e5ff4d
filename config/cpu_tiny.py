# A tiny GPT-2 (2 layers, width 64) trained from scratch on the CPU through DeepSpeed's CPU accelerator: the whole
# loop (train, eval, checkpoints, loss.png) in a few minutes. Needs data/shakespeare:
#   python data/shakespeare/prepare.py
#   deepspeed --num_gpus=2 train_deepspeed.py config/cpu_tiny.py    (2 CPU processes)
# micro x accumulation x processes x block_size:
#   4 x 2 x 2 x 64 = 1,024 tokens per iteration
out_dir = "out-cpu-tiny"
init_from = "scratch"
n_layer = 2
n_head = 2
n_embd = 64
block_size = 64
batch_size = 4
dtype = "float32"  # fp16 needs a GPU; bfloat16 also works on the CPU
learning_rate = 3e-3
lr_schedule = "cosine"
warmup_iters = 5
min_lr = 3e-4
max_iters = 40
eval_interval = 20
eval_iters = 16
always_save_checkpoint = True
