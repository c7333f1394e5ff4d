"""A checkpoint trained with 2 ranks, used elsewhere: transformers, model.py, DeepSpeed's zero_to_fp32.py,
sample.py, and continual training from it."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

import checkpoint as ckpt
import dataloader
from conftest import REPO, TINY, assert_ok, eval_losses, launch, train_env
from model import GPT, GPTConfig

pytestmark = pytest.mark.slow


def run_py(*args):
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=train_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def trained(reference_run):
    out, _ = reference_run
    model, marker = ckpt.load_model(out, "final")
    return out, model.eval(), marker


def test_export_to_transformers_gives_the_same_logits(trained, tmp_path):
    out, model, _ = trained
    hf_dir = tmp_path / "hf"
    run_py("export.py", out, "--tag", "final", "--hf", str(hf_dir))
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt"} <= set(os.listdir(hf_dir))
    umask = os.umask(0)
    os.umask(umask)
    assert (hf_dir / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # readable like config.json
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied stays tied
    idx = torch.randint(0, 50257, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (hf(idx).logits - model(idx)[0]).abs().max().item()
    assert diff <= 1e-5, diff
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert tokenizer("Hello world").input_ids == [15496, 995]


def test_export_state_dict_for_model_py(trained, tmp_path):
    out, model, marker = trained
    path = tmp_path / "model.pt"
    run_py("export.py", out, "--pt", str(path))  # `latest` is final
    saved = torch.load(path, weights_only=True)
    again = GPT(GPTConfig(**saved["model_config"]))
    again.load_state_dict(saved["state_dict"])
    assert again.lm_head.weight is again.transformer.wte.weight
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    assert saved["state_dict"]["transformer.wte.weight"].dtype == torch.float32
    assert marker["iteration"] == 12


def test_deepspeeds_own_zero_to_fp32_script(trained, tmp_path):
    out, model, _ = trained
    target = tmp_path / "consolidated"
    run_py(os.path.join(out, "zero_to_fp32.py"), out, str(target), "--tag", "final")
    files = [f for f in os.listdir(target) if f.endswith((".bin", ".safetensors"))]
    assert files, os.listdir(target)
    state = torch.load(target / files[0], weights_only=False) if files[0].endswith(".bin") else None
    if state is None:
        from safetensors.torch import load_file
        state = load_file(target / files[0])
    for name, tensor in model.state_dict().items():
        if name in state:
            assert torch.equal(state[name].float(), tensor), name
    assert "transformer.h.0.attn.c_attn.weight" in state


def test_sample_from_checkpoint_and_export_agree(trained, tmp_path):
    out, _, _ = trained
    hf_dir = tmp_path / "hf"
    run_py("export.py", out, "--hf", str(hf_dir))
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:")
    args = ["--num_samples=2", "--max_new_tokens=20", "--temperature=0.8", "--top_k=50", "--top_p=0.95", "--seed=7",
            f"--start=FILE:{prompt}", "--device=cpu", "--dtype=float32"]
    from_ckpt = run_py("sample.py", f"--init_from={out}/final", *args)
    from_hf = run_py("sample.py", f"--init_from={hf_dir}", *args)
    samples = from_ckpt.split("---------------\n")
    assert len(samples) == 3 and samples[0].startswith("ROMEO:") and samples[0] != samples[1]
    assert from_ckpt == from_hf  # same weights, same seed: same text
    no_cache = run_py("sample.py", f"--init_from={out}/final", *args, "--use_cache=False")
    assert no_cache == from_ckpt
    pt = tmp_path / "model.pt"
    run_py("export.py", out, "--pt", str(pt))
    assert run_py("sample.py", f"--init_from={pt}", *args) == from_ckpt


def test_sample_says_when_the_prompt_is_longer_than_the_context(trained, tmp_path):
    out, model, _ = trained
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Hello" + " the" * 99)  # 100 tokens, the model's context is 64
    proc = subprocess.run([sys.executable, "sample.py", f"--init_from={out}/final", f"--start=FILE:{prompt}",
                           "--num_samples=1", "--max_new_tokens=2", "--device=cpu", "--dtype=float32"],
                          cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert model.config.block_size == 64
    assert ("note: the prompt has 100 tokens, more than the model's context of 64; it sees the last 64"
            in proc.stderr.splitlines())
    assert proc.stdout.startswith(" the" * 64)  # the last 64 tokens of the prompt, then the sample


def test_continual_training_from_another_runs_checkpoint(reference_run, shakespeare, tmp_path):
    """Stage two of the guide: a new run starts from the weights of out/final with a fresh optimizer and LR."""
    ref_out, ref_log = reference_run
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={tmp_path / 'stage2'}",
                   f"--init_from={ref_out}/final", "--max_iters=4", "--eval_interval=4", "--n_layer=3"])
    assert_ok(proc)
    assert f"from weights of {ref_out}/final (fresh optimizer and schedule)" in proc.stdout
    assert proc.stdout.count("Processing zero checkpoint") == 1  # DeepSpeed's consolidation notes: rank 0's only
    assert (f"warning: ignored: n_layer=3 (the model has 2); the model shape comes from {ref_out}/final") in proc.stdout
    with open(tmp_path / "stage2" / "config.json") as f:
        assert json.load(f)["model"]["n_layer"] == 2  # the shape trained, whatever the settings said
    seed = dataloader.continual_data_seed(1337, ckpt.read_marker(os.path.join(ref_out, "final")))
    assert (f"data: a sample stream of its own (seed {seed}, from seed 1337 and {ref_out}/final), not the batches "
            "that run trained on") in proc.stdout
    evals = eval_losses(proc.stdout)
    assert evals[0][1] == pytest.approx(eval_losses(ref_log)[12][1], abs=1e-3)  # starts where stage one ended
    assert "iter 1/4" in proc.stdout and "lr 5.00e-04" in proc.stdout  # warmup starts again


def test_finetune_on_shorter_windows_keeps_the_models_context(shakespeare, tmp_path):
    """block_size below the model's context trains on shorter windows; the model, and the transformers export,
    keep every position (positions past the window get no gradient, only AdamW's decay)."""
    from transformers import GPT2Config
    source = tmp_path / "hf-src"
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=32, n_layer=2, n_head=2)).save_pretrained(source)
    out = tmp_path / "out"
    proc = launch([*TINY, f"--dataset={shakespeare}", f"--out_dir={out}", f"--init_from={source}", "--block_size=32",
                   "--max_iters=2", "--eval_interval=2", "--learning_rate=1e-3", "--warmup_iters=0"])
    assert_ok(proc)
    assert f"from pretrained {source}, trained on 32-token windows of its 128-token context" in proc.stdout
    hf_dir = tmp_path / "hf"
    run_py("export.py", str(out), "--hf", str(hf_dir))
    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    assert hf.config.n_positions == 128
    before = GPT2LMHeadModel.from_pretrained(source).transformer.wpe.weight.detach()
    after = hf.transformer.wpe.weight.detach()
    assert (after[:32] - before[:32]).abs().max() > 1e-4  # trained
    ratio = after[32:] / before[32:]  # decayed, unchanged otherwise: (1 - 1e-3 x 0.1) per step at most
    assert ratio.min() >= (1 - 1e-4) ** 2 - 1e-6 and ratio.max() <= 1 + 1e-6
    with torch.no_grad():
        logits = hf(torch.randint(0, 50257, (1, 128))).logits
    assert logits.shape == (1, 128, 50257) and torch.isfinite(logits).all()
