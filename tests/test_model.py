"""model.py against Hugging Face transformers, offline: tiny GPT-2 checkpoints made and saved here."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from model import (GPT, GPT2_SIZES, GPTConfig, PretrainedNotFound, chunked_cross_entropy, flops_per_token,
                   gpt2_param_count, peak_flops, sample_next, to_hf_tensors)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_HF = dict(vocab_size=300, n_positions=32, n_embd=48, n_layer=3, n_head=4)


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**TINY_HF, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    path = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(path)
    ours = GPT.from_pretrained(str(path)).eval()
    return hf, ours, path


def test_logits_match_transformers(hf_pair):
    hf, ours, _ = hf_pair
    assert ours.config.vocab_size == 300 and ours.config.padded_vocab_size == 320
    for T in (32, 7):  # full context and a sequence shorter than block_size
        idx = torch.randint(0, 300, (3, T), generator=torch.Generator().manual_seed(T))
        with torch.no_grad():
            expected = hf(idx).logits
            logits, loss = ours(idx)
        assert loss is None and logits.shape == expected.shape == (3, T, 300)
        assert (logits - expected).abs().max().item() <= 1e-5


def test_loss_matches_transformers(hf_pair):
    hf, ours, _ = hf_pair
    idx = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(idx, labels=idx).loss  # transformers shifts the labels itself
        _, loss = ours(idx[:, :-1], targets=idx[:, 1:])
    assert abs(loss.item() - expected.item()) <= 1e-5


def test_greedy_generation_matches_transformers(hf_pair):
    hf, ours, _ = hf_pair
    prompt = torch.tensor([[5, 17, 200, 3]])
    expected = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0,
                           attention_mask=torch.ones_like(prompt))
    got = ours.generate(prompt, max_new_tokens=20, temperature=0)
    assert got.tolist() == expected.tolist()


@pytest.mark.parametrize("sampling", [dict(temperature=0), dict(temperature=0.9, top_k=40, top_p=0.9)])
def test_kv_cache_equals_no_cache(hf_pair, sampling):
    _, ours, _ = hf_pair
    prompt = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(2))
    # 40 new tokens run past block_size (32), so the sliding window is covered too
    with_cache = ours.generate(prompt, 40, use_cache=True, generator=torch.Generator().manual_seed(3), **sampling)
    without = ours.generate(prompt, 40, use_cache=False, generator=torch.Generator().manual_seed(3), **sampling)
    assert with_cache.shape == (2, 45)
    assert with_cache.tolist() == without.tolist()


def test_hf_tensors_round_trip(hf_pair, tmp_path):
    hf, ours, _ = hf_pair
    exported = dict(to_hf_tensors(ours.state_dict(), ours.config.vocab_size))
    reference = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight" and not k.endswith(".attn.bias")}
    assert set(exported) == set(reference)
    for k, v in reference.items():
        assert torch.equal(exported[k], v), k


def test_chunked_cross_entropy_matches_plain():
    torch.manual_seed(0)
    V, Vp, d, N = 37, 64, 16, 50
    h = torch.randn(N, d, requires_grad=True)
    w = torch.randn(Vp, d) * 0.5
    w[V:] = 0  # padding rows, as the model keeps them
    w.requires_grad_(True)
    targets = torch.randint(0, V, (N,))
    targets[[3, 11]] = -1  # ignored positions
    loss = chunked_cross_entropy(h, w, targets, V, chunk=16)
    (loss * 3.0).backward()  # a non-unit upstream gradient, as fp16 loss scaling gives
    h_ref, w_ref = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    ref = F.cross_entropy((h_ref @ w_ref.t())[:, :V], targets, ignore_index=-1)
    (ref * 3.0).backward()
    assert abs(loss.item() - ref.item()) <= 1e-6
    assert torch.allclose(h.grad, h_ref.grad, atol=1e-6)
    assert torch.allclose(w.grad, w_ref.grad, atol=1e-6)
    assert w.grad[V:].abs().max().item() == 0.0  # the padding never receives gradient


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    config = GPTConfig(block_size=16, vocab_size=100, n_layer=3, n_head=2, n_embd=32)
    model = GPT(config)
    idx = torch.randint(0, 100, (2, 16))
    grads = []
    for n_ckpt in (0, -1):
        model.zero_grad()
        model.gradient_checkpointing = n_ckpt
        _, loss = model(idx, targets=idx)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_param_groups_decay_only_matrices():
    model = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=2, n_head=2, n_embd=16))
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    # every parameter exactly once (the tied head is the embedding)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_gpt2_xl_flops_and_param_count():
    config = GPTConfig(**GPT2_SIZES["gpt2-xl"])
    assert gpt2_param_count(config) == 1_555_972_800
    assert flops_per_token(config, 1024) == 6 * 1_555_972_800 + 12 * 48 * 25 * 64 * 1024
    small = GPT(GPTConfig(block_size=8, vocab_size=50, n_layer=2, n_head=2, n_embd=16, bias=False))
    assert small.get_num_params() == gpt2_param_count(small.config)


def test_peak_flops_knows_the_card():
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.4e12
    assert peak_flops("NVIDIA H100 PCIe", torch.float16) == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312e12
    assert peak_flops("Tesla V100-SXM2-32GB", torch.float16) == 125e12
    assert peak_flops("cpu", torch.float32) is None


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    drawn = {sample_next(logits, 1.0, None, 0.7, g).item() for _ in range(200)}
    assert drawn == {0, 1}  # 0.5 + 0.3 covers 0.7; the rest never appear


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(PretrainedNotFound, match="unknown model 'gpt3'"):
        GPT.from_pretrained("gpt3")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(PretrainedNotFound, match="needs config.json"):
        GPT.from_pretrained(str(tmp_path))


def test_block_size_crop(hf_pair):
    _, _, path = hf_pair
    model = GPT.from_pretrained(str(path), block_size=16)
    assert model.config.block_size == 16 and model.transformer.wpe.weight.shape == (16, 48)


HUB_CACHED_LOAD = """
import socket, sys, time, traceback
attempts = []
def refuse(*args, **kwargs):
    # huggingface_hub's best-effort fetch of its agent registry (3 s timeout, once a day) is not a model lookup
    if not any("_detect_agent" in frame.filename for frame in traceback.extract_stack()):
        attempts.append(args[:1])
    raise OSError("network blocked by the test")
socket.getaddrinfo = refuse
socket.socket.connect = lambda self, *a: refuse(*a)
import torch
from model import GPT
start = time.time()
model = GPT.from_pretrained(sys.argv[1]).eval()
logits, _ = model(torch.arange(8)[None] % 300)
print(len(attempts), round(time.time() - start, 1), model.config.n_layer, " ".join(f"{v:.6f}" for v in logits[0, -1, :4]))
"""


def test_gpt2_name_loads_from_the_hub_cache_without_network(hf_pair, tmp_path):
    """A GPT-2 name whose files are in the Hugging Face cache loads without asking the hub (offline, asking costs
    ~25 s of retries): the cache laid out as huggingface_hub lays it out, every socket refused."""
    hf, _, hf_dir = hf_pair
    with torch.no_grad():
        want = hf(torch.arange(8)[None] % 300).logits[0, -1, :4]
    # the cache under the short name or the full one (huggingface-cli download openai-community/gpt2), asked for
    # by either name
    for cached_as in ("gpt2", "openai-community--gpt2"):
        cache = tmp_path / cached_as
        snapshot = cache / f"models--{cached_as}" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (snapshot / name).write_bytes((hf_dir / name).read_bytes())
        (cache / f"models--{cached_as}" / "refs").mkdir()
        (cache / f"models--{cached_as}" / "refs" / "main").write_text("0" * 40)
        for name in ("gpt2", "openai-community/gpt2"):
            proc = subprocess.run([sys.executable, "-c", HUB_CACHED_LOAD, name], cwd=REPO, capture_output=True,
                                  text=True, timeout=120, env=dict(os.environ, HF_HUB_CACHE=str(cache), PYTHONPATH=REPO))
            assert proc.returncode == 0, (cached_as, name, proc.stderr[-2000:])
            attempts, seconds, n_layer, *got = proc.stdout.split()
            assert int(attempts) == 0 and float(seconds) < 10 and int(n_layer) == TINY_HF["n_layer"]
            assert torch.allclose(torch.tensor([float(v) for v in got]), want, atol=1e-5)


def test_a_gpt2_name_not_in_the_cache_offline_is_one_line_naming_the_fix(tmp_path):
    code = ("from model import resolve_pretrained, PretrainedNotFound\n"
            "try:\n    resolve_pretrained('gpt2-medium')\nexcept PretrainedNotFound as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HF_HUB_CACHE=str(tmp_path), HF_HUB_OFFLINE="1", PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = proc.stdout.strip()
    assert "\n" not in line and line.startswith("could not get gpt2-medium from the Hugging Face hub or its cache (")
    assert line.endswith("connect to the internet once, or give a local directory")
