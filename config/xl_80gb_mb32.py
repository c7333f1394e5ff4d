# GPT-2 XL on 2 or 4 GPUs of 80 GB (H100, A100 80GB) at micro-batch 32, twice the default's, with every MLP's GELU
# output recomputed in backward so that it fits; the same 128 sequences per iteration in half the micro-steps.
#   ./run_deepspeed_xl.sh config/xl_80gb_mb32.py  (or: deepspeed --num_gpus=4 train_deepspeed.py config/xl_80gb_mb32.py)
# micro x accumulation x GPUs x block_size:
#   2 GPUs: 32 x 2 x 2 x 1024 = 131,072 tokens per iteration
#   4 GPUs: 32 x 1 x 4 x 1024 = 131,072 tokens per iteration
# Measured on 2 H200s capped at 77 GiB each (an 80 GB card's room beside the CUDA context and NCCL's buffers), side
# by side with the default micro-batch 16 (bench/results/2026-11-29-recompute-gelu/): bf16 52,118 against 51,347
# tok/s/GPU (+1.5%), fp16 51,154 against 50,255 (+1.8%); peak 71.1 GiB per GPU (52.0 at 16). The recompute costs
# 2.0% (53,194 at 32 without it, 89.8 GiB) and the larger micro-batch gains 3.6%. On 4 GPUs the peak should be lower
# (84.0 GiB without the recompute, which saved 18.7 GiB on 2): not measured, nor is any of this on an H100.
# Not for 1 GPU (out of memory under the 77 GiB cap: one GPU holds all of the optimizer state) nor for 8 (128
# sequences are 16 per GPU): there, and on cards of ~141 GB (config/xl_141gb.py), use the default.
batch_size = 32
target_batch_size = 128
recompute_gelu = -1
eval_interval = 5
