"""
GPT-2 in one file, with Hugging Face's parameter names so that loading the real weights is a short,
asserted mapping.

Reads top-down: the blocks, the config, the model, the loss head, `from_pretrained`, `generate`, and the
FLOP/MFU arithmetic used by the trainer's logs and the benchmark.
"""
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from kernels.fused_dense import FusedMLP
from kernels.fused_loss import softmax_xent
from kernels.fused_norm import add_layer_norm, residual_sum, uses_kernels

# -----------------------------------------------------------------------------
# blocks


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, kv_cache=None, layer=0, with_bias=True, attn_mask=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if kv_cache is not None:
            k, v = kv_cache.append(layer, k, v)
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is None:
            # A single new token attends to the whole cache; a prompt (an empty cache) attends causally.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=T > 1)
        else:  # packed examples: GPT.forward's additive mask, causal within each example
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        # without its bias only where the fused LayerNorm adds it (never under ZeRO-3, which gathers a weight only
        # inside its own module's forward)
        y = self.c_proj(y) if with_bias else F.linear(y, self.c_proj.weight)
        return self.resid_dropout(y)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.fused = False  # GELU inside the matmuls' epilogues (GPT.set_fused_kernels)
        self.recompute_gelu = False  # GELU output recomputed in backward, not kept (GPT.set_recompute_gelu)

    def forward(self, x, with_bias=True):
        """with_bias False: c_proj without its bias, which the fused LayerNorm after it adds."""
        if self.fused or self.recompute_gelu:
            return self.dropout(FusedMLP.apply(x, self.c_fc.weight, self.c_fc.bias, self.c_proj.weight,
                                               self.c_proj.bias if with_bias else None, self.recompute_gelu))
        h = F.gelu(self.c_fc(x), approximate="tanh")
        return self.dropout(self.c_proj(h) if with_bias else F.linear(h, self.c_proj.weight))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)
        self.fused_norm = False  # residual adds inside the LayerNorms' kernels (GPT.set_fused_kernels)

    def forward(self, x, delta, delta_bias=None, kv_cache=None, layer=0, attn_mask=None):
        """The residual stream arrives and leaves as (x, delta, delta_bias) whose sum is formed inside the next
        LayerNorm (fused_norm.py: one kernel for the add and the norm); delta None means 0, delta_bias None no
        bias. Where the kernels run, the projections into the stream leave their biases to them (delta_bias), which
        then also sum those biases' gradients; not under dropout, which the bias would then escape."""
        to_norm = uses_kernels(self.fused_norm, x) and (self.attn.resid_dropout.p == 0 or not self.training)
        x, h = add_layer_norm(x, delta, self.ln_1, self.fused_norm, delta_bias)
        attn_out = self.attn(h, kv_cache, layer, with_bias=not to_norm, attn_mask=attn_mask)
        x, h = add_layer_norm(x, attn_out, self.ln_2, self.fused_norm, self.attn.c_proj.bias if to_norm else None)
        return x, self.mlp(h, with_bias=not to_norm), self.mlp.c_proj.bias if to_norm else None


class KVCache:
    """Keys and values of every layer for generation, preallocated to the context length."""

    def __init__(self, config, batch_size, device, dtype):
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0  # positions filled, advanced by GPT.forward once all layers have appended

    def append(self, layer, k, v):
        end = self.length + k.size(2)
        assert k.size(2) == 1 or self.length == 0, "a prompt must be fed to an empty cache"
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


# -----------------------------------------------------------------------------
# config and model

GPT2_SIZES = {  # Hugging Face name -> shape; all use vocab 50257 and 1024 positions
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
}


def gpt2_name(name):
    """The short GPT-2 name for the hub's full one (openai-community/gpt2-xl -> gpt2-xl); others unchanged."""
    short = name.removeprefix("openai-community/")
    return short if short in GPT2_SIZES else name


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257  # real tokens; logits and the loss only ever cover these
    padded_vocab_size: int = 0  # embedding rows; 0 = vocab_size rounded up to a multiple of 64 (50304)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        if self.padded_vocab_size == 0:
            self.padded_vocab_size = pad_vocab(self.vocab_size)
        assert self.padded_vocab_size >= self.vocab_size


def pad_vocab(vocab_size, multiple=64):
    return (vocab_size + multiple - 1) // multiple * multiple


class GPT(nn.Module):

    def __init__(self, config, init_weights=True):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias, eps=config.layer_norm_epsilon),
        ))
        # Tied head: lm_head.weight is the token embedding, as in GPT-2.
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.gradient_checkpointing = 0  # number of blocks (from the first) recomputed in backward; -1 = all
        self.loss_chunk_size = 4096  # rows of logits alive at once in the loss
        self.fused_loss = False  # the loss head's softmax cross-entropy in fused_loss.py's kernel (GPU)
        self.fused_norm = False  # the residual add and ln_f in fused_norm.py's kernels (GPU)
        if init_weights:
            self.apply(self._init_weights)
            # GPT-2's scaled init of the residual projections
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
            with torch.no_grad():  # padding rows are never a target and never an input
                self.transformer.wte.weight[config.vocab_size:].zero_()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def set_fused_kernels(self, on, loss=None, norm=None):
        """Run each MLP through fused_dense.FusedMLP (cuBLASLt epilogues on a GPU once its extension is loaded;
        the same arithmetic in plain PyTorch otherwise; needs biases; ZeRO-3 cannot use it: it gathers a weight
        only inside its own module's forward), the loss head's softmax cross-entropy through fused_loss.py and
        each residual add with the LayerNorm after it through fused_norm.py (Triton kernels once enable() has
        checked them on this GPU; plain PyTorch otherwise). `loss` and `norm` default to `on`."""
        loss = on if loss is None else loss
        norm = on if norm is None else norm
        for block in self.transformer.h:
            block.mlp.fused = on and self.config.bias
            block.fused_norm = norm
        self.fused_loss, self.fused_norm = loss, norm

    def set_recompute_gelu(self, n_blocks):
        """The MLPs of the first n_blocks (-1: all) keep only their GELU's input for backward and recompute its
        output there: a block's largest activation (4 x n_embd values per token) for one elementwise pass, where
        gradient_checkpointing spends a block's whole forward to drop all of them."""
        if n_blocks and not self.config.bias:
            raise ValueError("recompute_gelu needs the MLP biases (bias=True), as GPT-2 has")
        n = len(self.transformer.h) if n_blocks < 0 else n_blocks
        for i, block in enumerate(self.transformer.h):
            block.mlp.recompute_gelu = i < n

    def get_num_params(self, non_embedding=True):
        """Parameters as GPT-2 counts them: real vocabulary rows only, position embedding optional."""
        n = sum(p.numel() for p in self.parameters())
        n -= (self.config.padded_vocab_size - self.config.vocab_size) * self.config.n_embd
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, kv_cache=None, last_only=False, doc_ids=None, pos_ids=None):
        """Returns (logits, loss). With targets: logits None and the mean cross-entropy over the targets that are
        not -1, computed chunk by chunk so that fp32 logits for the whole batch never exist. Without: logits
        (B, T, vocab_size) over the real vocabulary (only the last position's with last_only) and loss None.
        Windows packed from several examples (dataloader.py) come with doc_ids (B, T), which example each position
        belongs to: a position attends only to the earlier positions of its own example; and pos_ids (B, T), the
        positions within each example. Without them attention is plainly causal over the window."""
        B, T = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device) if pos_ids is None else pos_ids
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        attn_mask = None if doc_ids is None else document_mask(doc_ids, x.dtype)
        delta = delta_bias = None
        n_ckpt = len(self.transformer.h) if self.gradient_checkpointing < 0 else self.gradient_checkpointing
        for i, block in enumerate(self.transformer.h):
            if self.training and i < n_ckpt and torch.is_grad_enabled():
                if delta is not None:  # a recomputed block keeps one tensor alive, not two
                    x = residual_sum(x, delta, delta_bias)
                x, delta, delta_bias = checkpoint(block, x, None, None, None, i, attn_mask, use_reentrant=False)
            else:
                x, delta, delta_bias = block(x, delta, delta_bias, kv_cache, i, attn_mask)
        if kv_cache is not None:
            kv_cache.length += T
        _, x = add_layer_norm(x, delta, self.transformer.ln_f, self.fused_norm, delta_bias)
        if targets is None:
            if last_only:
                x = x[:, -1:, :]
            return self.lm_head(x)[..., :self.config.vocab_size], None
        loss = chunked_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1),
                                     self.config.vocab_size, self.loss_chunk_size, self.fused_loss)
        return None, loss

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. fine-tune GPT-2 at 256 tokens) by dropping position embeddings."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].detach().clone())

    def param_groups(self, weight_decay):
        """AdamW groups: decay on 2-D weights (matmuls, embeddings), none on biases and LayerNorm gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    # -------------------------------------------------------------------------
    # weights from Hugging Face

    @classmethod
    def from_pretrained(cls, name_or_dir, device="cpu", dtype=torch.float32, block_size=None, dropout=None):
        """GPT-2 weights by name (gpt2, gpt2-medium, gpt2-large, gpt2-xl; through transformers' cache) or
        from a local Hugging Face directory (config.json + model.safetensors or pytorch_model.bin).
        Tensors are read one by one straight into a model built on `device` in `dtype`."""
        hf_json, weights_path = resolve_pretrained(name_or_dir)
        config = GPTConfig(block_size=hf_json["n_positions"], vocab_size=hf_json["vocab_size"],
                           n_layer=hf_json["n_layer"],
                           n_head=hf_json["n_head"], n_embd=hf_json["n_embd"],
                           layer_norm_epsilon=hf_json.get("layer_norm_epsilon", 1e-5),
                           dropout=0.0 if dropout is None else dropout)
        with torch.device(device):
            model = cls(config, init_weights=False)
        model.to(dtype)
        load_hf_state_dict(model, iter_hf_tensors(weights_path))
        if block_size is not None and block_size < config.block_size:
            model.crop_block_size(block_size)
        return model

    # -------------------------------------------------------------------------
    # sampling

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None):
        """Continue each row of idx (B, T) by max_new_tokens. temperature 0 is greedy. With use_cache, keys
        and values are kept, so each new token costs one position; once the context is full, the window
        slides and the model recomputes it, exactly as without the cache."""
        was_training = self.training
        self.eval()
        cache = None
        for _ in range(max_new_tokens):
            if idx.size(1) >= self.config.block_size or not use_cache:
                cache = None
                logits, _ = self(idx[:, -self.config.block_size:], last_only=True)
            elif cache is None:
                dtype = next(self.parameters()).dtype
                cache = KVCache(self.config, idx.size(0), idx.device, dtype)
                logits, _ = self(idx, kv_cache=cache, last_only=True)
            else:
                logits, _ = self(idx[:, -1:], kv_cache=cache)
            next_id = sample_next(logits[:, -1, :].float(), temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_id), dim=1)
        self.train(was_training)
        return idx


def document_mask(doc_ids, dtype):
    """The attention mask of packed examples, (B, 1, T, T), to add to the attention scores: 0 where query i may
    attend to key j (j <= i, in the same example), -inf elsewhere. Made once per forward, in the activations'
    dtype, so that no layer converts a boolean mask again."""
    T = doc_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    allowed = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
    return torch.zeros(allowed.shape, dtype=dtype, device=doc_ids.device).masked_fill_(~allowed, float("-inf"))[:, None]


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row from logits (B, V): greedy at temperature 0, else top-k, then nucleus (top-p)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the ones ranked above it already cover top_p; the first always stays
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# -----------------------------------------------------------------------------
# the loss head: linear + cross-entropy in chunks


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (h @ W.T)[:, :vocab_size] against targets, never holding more than `chunk`
    rows of logits. Each chunk's softmax cross-entropy runs in fp32 from the half-precision matmul's logits,
    the padding columns masked out (fused_loss.py: one Triton kernel on a GPU, plain PyTorch otherwise). The
    gradients are computed in the same pass (softmax - one-hot is all that backward needs) and multiplied by the
    incoming gradient in backward, so fp16 loss scaling applies to them as usual."""

    @staticmethod
    def forward(ctx, h, weight, targets, vocab_size, chunk, fused):
        valid = targets != -1
        n_valid = valid.sum().clamp(min=1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        loss_sum = torch.zeros((), device=h.device, dtype=torch.float32)
        grad_h = torch.empty_like(h) if need_grad else None
        grad_w = torch.zeros(weight.shape, device=h.device, dtype=torch.float32) if need_grad else None
        for start in range(0, h.size(0), chunk):
            h_c, t_c = h[start:start + chunk], targets[start:start + chunk]
            loss_rows, probs = softmax_xent(h_c @ weight.t(), t_c, vocab_size, need_grad, fused)
            loss_sum += loss_rows.sum()
            if need_grad:
                grad_h[start:start + chunk] = probs @ weight
                if h.dtype == torch.float32:
                    grad_w.addmm_(probs.t(), h_c)
                else:
                    grad_w.add_(probs.t() @ h_c)
        if need_grad:
            ctx.save_for_backward(grad_h, grad_w, n_valid)
            ctx.weight_dtype = weight.dtype
        return loss_sum / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, n_valid = ctx.saved_tensors
        scale = grad_loss / n_valid  # fp32: loss scale / accumulation / tokens can be tiny
        grad_h, grad_w = (grad_h.float() * scale).to(grad_h.dtype), (grad_w * scale).to(ctx.weight_dtype)
        return grad_h, grad_w, None, None, None, None


def chunked_cross_entropy(h, weight, targets, vocab_size, chunk=4096, fused=False):
    return ChunkedLinearCrossEntropy.apply(h, weight, targets, vocab_size, chunk, fused)


# -----------------------------------------------------------------------------
# Hugging Face weight interop

HF_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_IGNORED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers of older transformers checkpoints


class PretrainedNotFound(RuntimeError):
    pass


def hub_file(name, filename):
    """Path of a file of a GPT-2 repository on the Hugging Face hub, from the hub's cache when it is there under
    either of its names (gpt2-xl, openai-community/gpt2-xl): the files never change, and asking the hub first
    costs ~25 s of retries on a machine without internet. huggingface_hub itself, not transformers, whose import
    took 3.1 s of a start on an H200 without a bytecode cache (bench/results/2026-12-04-cprofile)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    for repo in (name, f"openai-community/{name}"):
        path = try_to_load_from_cache(repo, filename)
        if isinstance(path, str):
            return path
    return hf_hub_download(name, filename)


def resolve_pretrained(name_or_dir, with_weights=True):
    """(config dict, weights file) for a GPT-2 name or a local Hugging Face directory. With with_weights=False a
    GPT-2 name's config alone is fetched (the weights file is None), to check the name before a long download."""
    if os.path.isdir(name_or_dir):
        config_path = os.path.join(name_or_dir, "config.json")
        weights = [os.path.join(name_or_dir, f) for f in ("model.safetensors", "pytorch_model.bin")]
        weights = [w for w in weights if os.path.isfile(w)]
        if not os.path.isfile(config_path) or not weights:
            raise PretrainedNotFound(f"{name_or_dir} is not a Hugging Face GPT-2 directory: it needs config.json "
                                     "and model.safetensors (or pytorch_model.bin); export one with export.py")
        weights_path = weights[0]
    elif gpt2_name(name_or_dir) in GPT2_SIZES:
        name_or_dir = gpt2_name(name_or_dir)
        try:
            config_path = hub_file(name_or_dir, "config.json")
            weights_path = hub_file(name_or_dir, "model.safetensors") if with_weights else None
        except OSError as e:
            message = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300]
            raise PretrainedNotFound(f"could not get {name_or_dir} from the Hugging Face hub or its cache "
                                     f"({message}); "
                                     "connect to the internet once, or give a local directory") from None
    else:
        raise PretrainedNotFound(f"unknown model {name_or_dir!r}: use one of {', '.join(GPT2_SIZES)} or a local "
                                 "Hugging Face GPT-2 directory")
    with open(config_path) as f:
        hf_json = json.load(f)
    if hf_json.get("model_type", "gpt2") != "gpt2":
        raise PretrainedNotFound(f"{name_or_dir} holds a {hf_json.get('model_type')} model, not GPT-2")
    return hf_json, weights_path


def iter_hf_tensors(weights_path):
    """(name, tensor) pairs from a safetensors file (memory-mapped, one at a time) or a torch .bin."""
    if weights_path.endswith(".safetensors"):
        from safetensors import safe_open
        with safe_open(weights_path, framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
    else:
        yield from torch.load(weights_path, map_location="cpu", weights_only=True).items()


def to_hf_tensors(state_dict, vocab_size, in_place=False):
    """(Hugging Face name, tensor) for each of our weights, in GPT2LMHeadModel's layout: Conv1D weights
    transposed, the embedding without its padding rows, the tied head left out. With in_place, the transposes
    overwrite the source tensors' memory (DeepSpeed's consolidation returns every weight as a view of one flat
    buffer, which no single copy would free), so an export holds one copy of the weights plus one tensor."""
    for name, tensor in state_dict.items():
        if name == "lm_head.weight":
            continue  # tied to wte; transformers re-ties it on load
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab_size]
        elif name.endswith(HF_CONV1D_WEIGHTS):
            transposed = tensor.t().contiguous()
            if in_place and tensor.is_contiguous():
                tensor.view(-1).copy_(transposed.view(-1))
                transposed = tensor.view(transposed.shape)
            tensor = transposed
        yield "transformer." + name.removeprefix("transformer."), tensor.contiguous()


def hf_config(c):
    """config.json of a GPT2LMHeadModel with this shape."""
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": c.vocab_size,
            "n_positions": c.block_size, "n_ctx": c.block_size, "n_embd": c.n_embd, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new",
            "layer_norm_epsilon": c.layer_norm_epsilon, "resid_pdrop": c.dropout, "embd_pdrop": c.dropout,
            "attn_pdrop": c.dropout, "initializer_range": 0.02, "bos_token_id": 50256, "eos_token_id": 50256,
            "tie_word_embeddings": True, "scale_attn_weights": True, "use_cache": True}


@torch.no_grad()
def load_hf_state_dict(model, named_tensors):
    """Copy Hugging Face GPT2LMHeadModel tensors into `model`, asserting every name and shape."""
    ours = model.state_dict()
    V = model.config.vocab_size
    missing = set(ours) - {"lm_head.weight"}  # tied to wte
    for hf_name, tensor in named_tensors:
        if hf_name.endswith(HF_IGNORED) or hf_name == "lm_head.weight":
            continue
        name = "transformer." + hf_name.removeprefix("transformer.")
        if name not in ours:
            raise ValueError(f"unexpected tensor {hf_name} in the checkpoint: not a GPT-2 parameter")
        target = ours[name]
        if name.endswith(HF_CONV1D_WEIGHTS):
            # transposed where the model is: a transposed CPU tensor is made contiguous on the CPU, in one thread,
            # before it goes to the GPU (GPT-2 XL's load 3.9 -> 1.2 s on an H200, bench/results/2026-12-04-startup)
            tensor = tensor.to(target.device).t()
        if name == "transformer.wte.weight":
            assert tensor.shape == (V, target.shape[1]), f"{hf_name}: {tuple(tensor.shape)} vs {(V, target.shape[1])}"
            target[:V].copy_(tensor)
            target[V:].zero_()
        else:
            assert tensor.shape == target.shape, f"{hf_name}: {tuple(tensor.shape)} vs {tuple(target.shape)}"
            target.copy_(tensor)
        missing.discard(name)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} GPT-2 tensors, e.g. {sorted(missing)[:3]}")


# -----------------------------------------------------------------------------
# FLOPs and MFU


def gpt2_param_count(config):
    """N as GPT-2 counts it: real vocabulary rows, no position embedding."""
    c, d = config, config.n_embd
    per_block = 12 * d * d + (13 * d if c.bias else 2 * d)  # four matmuls (+ biases), two LayerNorms
    return c.vocab_size * d + c.n_layer * per_block + (2 * d if c.bias else d)


def flops_per_token(config, seq_len=None):
    """Training FLOPs per token, 6N + 12·L·H·Q·T (PaLM appendix B). The padded vocabulary rows are
    overhead, not useful work, so N counts the real vocabulary only."""
    c = config
    T = seq_len or c.block_size
    return 6 * gpt2_param_count(c) + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T


# Dense (no sparsity) tensor-core peaks in FLOP/s, half precision (fp16/bf16) and fp32 (TF32 where the
# card has it). Matched against torch.cuda.get_device_name, most specific first.
PEAK_FLOPS = [
    ("H100 NVL", 835e12, 417e12), ("H100 PCIe", 756e12, 378e12), ("H100", 989.4e12, 494.7e12),
    ("H200", 989.4e12, 494.7e12), ("H800", 989.4e12, 494.7e12), ("GH200", 989.4e12, 494.7e12),
    ("B200", 2250e12, 1100e12), ("A100", 312e12, 156e12), ("A800", 312e12, 156e12),
    ("L40S", 362e12, 183e12), ("L40", 181e12, 90.5e12), ("L4", 121e12, 60e12), ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12), ("A6000", 154.8e12, 77.4e12), ("RTX 4090", 165.2e12, 82.6e12),
    ("RTX 3090", 71e12, 35.6e12), ("V100", 125e12, 15.7e12), ("T4", 65e12, 8.1e12),
]


def peak_flops(device_name, dtype):
    """The card's dense peak for dtype in FLOP/s, or None for an unknown card or the CPU."""
    for key, half, single in PEAK_FLOPS:
        if key in device_name:
            return single if dtype == torch.float32 else half
    return None
