"""fused_dense.py on the CPU: its autograd function, run with the plain-PyTorch primitives, must give the MLP's
values and gradients exactly. The cuBLASLt kernels behind the same primitives are checked on a GPU by
bench/fused_check.py (results in bench/results/). fused_loss.py's Triton kernel runs here in Triton's
interpreter against its plain-PyTorch reference."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from kernels import fused_dense
from kernels import fused_loss
from kernels import fused_norm
from conftest import REPO
from model import GPT, GPT2_SIZES, GPTConfig, chunked_cross_entropy


def tiny(dropout=0.0):
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=100, dropout=dropout))


def grads(model, idx, seed=0):
    torch.manual_seed(seed)  # same dropout masks for both models
    _, loss = model(idx, targets=idx)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype,checkpointing", [(torch.float32, 0), (torch.float32, -1), (torch.bfloat16, 0)])
def test_fused_mlp_equals_plain_mlp(dtype, checkpointing):
    plain = tiny(dropout=0.1).to(dtype)
    fused = copy.deepcopy(plain)
    fused.set_fused_kernels(True)
    assert [b.mlp.fused for b in fused.transformer.h] == [True, True]
    for model in (plain, fused):
        model.gradient_checkpointing = checkpointing
    idx = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(1))
    loss_plain, grads_plain = grads(plain, idx)
    loss_fused, grads_fused = grads(fused, idx)
    assert loss_fused == loss_plain
    assert grads_fused.keys() == grads_plain.keys() and len(grads_fused) == 28
    for name, g in grads_plain.items():
        # the same primitives in a different order of calls: equal to float rounding of the sums
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        assert (grads_fused[name].float() - g.float()).abs().max().item() <= tol * max(1.0, g.abs().max().item()), name
    assert grads_fused["transformer.h.0.mlp.c_fc.bias"].abs().sum() > 0


@pytest.mark.parametrize("fused", [True, False])
def test_recompute_gelu_same_gradients_less_saved(fused):
    """recompute_gelu keeps the GELU's input for backward and not its output: the same loss and bitwise the same
    gradients (on the plain primitives the recomputed GELU is the one forward applied), and one n_tokens x 4n_embd
    tensor fewer saved per recomputing block, with or without the fused kernels turned on."""
    base = tiny(dropout=0.1)
    base.set_fused_kernels(fused)
    lean = copy.deepcopy(base)
    lean.set_recompute_gelu(1)
    assert [b.mlp.recompute_gelu for b in lean.transformer.h] == [True, False]
    idx = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(1))

    def saved_bytes(model):
        seen = {}

        def pack(t):
            seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = grads(model, idx)
        return result, sum(seen.values())

    (loss_base, grads_base), bytes_base = saved_bytes(base)
    (loss_lean, grads_lean), bytes_lean = saved_bytes(lean)
    assert loss_lean == loss_base
    assert grads_lean.keys() == grads_base.keys() and len(grads_lean) == 28
    for name, g in grads_base.items():
        assert torch.equal(grads_lean[name], g), name
    assert bytes_base - bytes_lean == 3 * 16 * 4 * 32 * 4  # block 0's GELU output, fp32
    lean.set_recompute_gelu(-1)
    assert all(b.mlp.recompute_gelu for b in lean.transformer.h)
    assert saved_bytes(lean)[1] == bytes_base - 2 * 3 * 16 * 4 * 32 * 4


def test_recompute_gelu_needs_biases():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100, bias=False))
    with pytest.raises(ValueError, match="recompute_gelu needs the MLP biases"):
        model.set_recompute_gelu(-1)
    model.set_recompute_gelu(0)


def test_fused_mlp_function_against_autograd():
    """The backward formulas alone, on a 3-D input, against autograd through the plain ops."""
    torch.manual_seed(2)
    x = torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True)
    fc_w, proj_w = torch.randn(64, 16, dtype=torch.float64), torch.randn(16, 64, dtype=torch.float64)
    fc_b, proj_b = torch.randn(64, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    params = [t.requires_grad_() for t in (fc_w, fc_b, proj_w, proj_b)]
    assert torch.autograd.gradcheck(fused_dense.FusedMLP.apply, (x, *params), atol=1e-7, rtol=1e-6)
    out = fused_dense.FusedMLP.apply(x, *params)
    want = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, fc_w, fc_b),
                                                               approximate="tanh"), proj_w, proj_b)
    assert out.shape == (2, 5, 16) and torch.allclose(out, want, atol=1e-12)


@pytest.mark.parametrize("dropout,training,checkpointing", [(0.0, True, 0), (0.0, True, -1), (0.1, True, 0),
                                                           (0.1, False, 0)])
def test_projection_biases_go_to_the_next_norm_except_under_dropout(monkeypatch, dropout, training, checkpointing):
    """Where the add + LayerNorm kernels run (here pretended: the plain add + LayerNorm adds delta_bias itself), each
    c_proj leaves its bias to the next add + LayerNorm, except in training with dropout, which the bias would
    escape. The loss and every gradient (the biases' included) are those of the model that keeps its biases."""
    import model as model_module
    with_delta_bias = []
    real = model_module.add_layer_norm

    def recording(x, delta, norm, fused, delta_bias=None):
        with_delta_bias.append(delta_bias is not None)
        return real(x, delta, norm, fused, delta_bias)

    monkeypatch.setattr(model_module, "add_layer_norm", recording)
    monkeypatch.setattr(model_module, "uses_kernels", lambda fused, x: fused)
    plain = tiny(dropout=dropout).train(training)
    routed = copy.deepcopy(plain)
    routed.set_fused_kernels(False, norm=True)
    for model in (plain, routed):
        model.gradient_checkpointing = checkpointing
    idx = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(1))
    loss_plain, grads_plain = grads(plain, idx)
    with_delta_bias.clear()
    loss_routed, grads_routed = grads(routed, idx)
    # 2 blocks: block 0's ln_2, block 1's ln_1 and ln_2, ln_f take a bias (block 0's ln_1 has no delta); a block
    # recomputed in backward calls its two again, and block 1's input is summed before it (its ln_1 has no delta)
    routing = dropout == 0 or not training
    want = {0: [False, True, True, True, True], -1: [False, True, False, True, True, False, True, False, True]}
    assert with_delta_bias == [b and routing for b in want[checkpointing]]
    assert abs(loss_routed - loss_plain) <= 1e-6
    assert grads_routed.keys() == grads_plain.keys() and len(grads_routed) == 28
    for name, g in grads_plain.items():
        assert (grads_routed[name] - g).abs().max().item() <= 1e-6 * max(1.0, g.abs().max().item()), name


def test_no_bias_model_keeps_plain_mlp():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=100, bias=False))
    model.set_fused_kernels(True)
    assert model.transformer.h[0].mlp.fused is False


def test_extension_needs_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="fused kernels need a CUDA GPU"):
        fused_dense.load_extension()
    assert not fused_dense._use_cublaslt(torch.zeros(8, 8, dtype=torch.bfloat16))


def test_start_up_self_test_catches_a_wrong_kernel():
    """load_extension runs this check on the GPU's ops; here the plain ops pass it and wrong ones do not."""
    fused_dense._self_test(fused_dense.linear_gelu_reference, fused_dense.linear_dgelu_reference, device="cpu")

    def gelu_without_bias(x, weight, bias):
        return fused_dense.linear_gelu_reference(x, weight, torch.zeros_like(bias))

    def dgelu_five_percent_high(grad_out, weight, pre_gelu):
        return fused_dense.linear_dgelu_reference(grad_out, weight, pre_gelu) * 1.05

    with pytest.raises(RuntimeError, match="start-up check failed"):
        fused_dense._self_test(gelu_without_bias, fused_dense.linear_dgelu_reference, device="cpu")
    with pytest.raises(RuntimeError, match="start-up check failed"):
        fused_dense._self_test(fused_dense.linear_gelu_reference, dgelu_five_percent_high, device="cpu")


@pytest.mark.parametrize("size", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_weights_sit_256_byte_aligned_in_deepspeeds_flat_buffer(size):
    """ZeRO-1/2 flattens each AdamW group's 16-bit parameters, in group order, into one buffer and makes the
    parameters views into it. cuBLASLt's fused GELU matmuls ran 20-45% slower on an H100 when a matrix was only
    16-byte aligned (bench/results/2026-11-28-determinism/fused_check.txt), so every 2-D weight must start at a multiple
    of 256 bytes and every bias at a multiple of 16."""
    with torch.device("meta"):
        model = GPT(GPTConfig(**GPT2_SIZES[size])).to(torch.bfloat16)
    weights, vectors = (group["params"] for group in model.param_groups(weight_decay=0.1))
    for params, alignment in ((weights, 256), (vectors, 16)):
        offset = 0
        for p in params:
            assert offset % alignment == 0, (size, tuple(p.shape), offset)
            offset += p.numel() * p.element_size()
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[0].split(".")[-1] for p in weights} >= {"c_fc", "c_proj"}


def run_interpreted(script, *args):
    """stdout of `script` (given `args` as sys.argv[1:]) run in a process of its own with Triton's interpreter (chosen
    when Triton is imported)."""
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


INTERPRETED_CROSS_ENTROPY = """
import torch
from kernels import fused_loss as fl
fl.self_test(device="cpu")  # bf16 and fp16, ignored rows, several blocks per row and a ragged last one
g = torch.Generator().manual_seed(1)
for dtype in (torch.bfloat16, torch.float16):
    logits = (torch.randn(9, 300, generator=g) * 4).to(dtype)
    targets = torch.randint(0, 257, (9,), generator=g)
    targets[3] = -1
    want_loss, want_grad = fl.softmax_xent_reference(logits.clone(), targets, 257, True)
    got_loss, got_grad = fl.softmax_xent_fused(logits.clone(), targets, 257, True, block=128)
    loss_only, no_grad = fl.softmax_xent_fused(logits_copy := logits.clone(), targets, 257, False, block=128)
    print(dtype, (got_loss - want_loss).abs().max().item(), (got_grad.float() - want_grad.float()).abs().max().item(),
          got_grad[:, 257:].abs().max().item(), got_grad[3].abs().max().item(), got_loss[3].item(),
          torch.equal(loss_only, got_loss), no_grad is None and torch.equal(logits_copy, logits))
"""


def test_fused_cross_entropy_kernel_in_the_triton_interpreter():
    stdout = run_interpreted(INTERPRETED_CROSS_ENTROPY)
    for line, dtype, grad_tolerance in zip(stdout.splitlines(), ("bfloat16", "float16"), (2 ** -8, 2 ** -11)):
        name, loss_diff, grad_diff, padding, ignored_grad, ignored_loss, same_loss, untouched = line.split()
        assert name == f"torch.{dtype}"
        assert float(loss_diff) <= 1e-5  # fp32 arithmetic from the same 16-bit logits
        assert float(grad_diff) <= grad_tolerance  # at most one rounding step of the 16-bit gradient (<= 1)
        assert float(padding) == 0.0 and float(ignored_grad) == 0.0 and float(ignored_loss) == 0.0
        assert same_loss == "True" and untouched == "True"  # without gradient the logits are left alone


def test_fused_loss_off_the_gpu_is_the_plain_loss():
    torch.manual_seed(0)
    h, w = torch.randn(40, 16, requires_grad=True), torch.randn(64, 16, requires_grad=True)
    targets = torch.randint(0, 50, (40,))
    results = []
    for fused in (False, True):
        loss = chunked_cross_entropy(h, w, targets, 50, chunk=16, fused=fused)
        gh, gw = torch.autograd.grad(loss, (h, w))
        results.append((loss, gh, gw))
    assert all(torch.equal(a, b) for a, b in zip(*results))
    model = tiny()
    model.set_fused_kernels(True)
    assert model.fused_loss and not fused_loss._ready  # enable() runs only on a GPU, after its check passed
    with pytest.raises(RuntimeError):  # no GPU here: the trainer reports it and keeps the plain loss
        fused_loss.enable(50257, 50304)
    assert not fused_loss._ready


INTERPRETED_ADD_LAYER_NORM = """
import torch
from kernels import fused_norm as fn
fn.self_test(device="cpu", n=100, rows=70)  # 3 backward programs, the last ragged; a width that is no power of 2
gen = torch.Generator().manual_seed(2)
err = lambda got, want: ((got.double() - want).norm() / want.norm()).item()
for dtype in (torch.bfloat16, torch.float16):
    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=gen) * scale).to(dtype)
    x, delta, weight, bias = randn(70, 100), randn(70, 100, scale=0.5), randn(100, scale=0.2) + 1, randn(100, scale=0.1)
    dy, ds, delta_bias = randn(70, 100, scale=0.1), randn(70, 100, scale=0.1), randn(100, scale=0.1)
    # inside a block (a residual gradient, a bias left to the kernel); ln_f (no residual gradient); no delta bias
    for residual_grad, db in ((ds, delta_bias), (None, delta_bias), (ds, None)):
        args = (x, delta, db, weight, bias, residual_grad, dy)
        exact = fn.forward_backward(fn.add_layer_norm_reference, *(t.double() if t is not None else None for t in args))
        plain = fn.forward_backward(fn.add_layer_norm_reference, *args)
        fused = fn.forward_backward(fn.AddLayerNorm.apply, *args)
        print(dtype, *(f"{err(f, e):.3e}/{err(p, e):.3e}" if e is not None else "-"
                       for f, p, e in zip(fused, plain, exact)))
# a LayerNorm without bias (GPTConfig(bias=False)): only the weight's partial sums are summed
grads = []
for fn_ in (fn.add_layer_norm_reference, fn.AddLayerNorm.apply):
    w = weight.detach().clone().requires_grad_(True)
    fn_(x, delta, None, w, None, 1e-5)[1].backward(dy)
    grads.append(w.grad.double())
print("no-bias", err(grads[1], grads[0]))
# a grid fitted to a GPU that holds 2 programs at once: 35 rows each instead of 32 (2 programs instead of 3); the
# row-wise gradients are the same bits, the summed ones as close to float64's
args = (x, delta, delta_bias, weight, bias, ds, dy)
exact = fn.forward_backward(fn.add_layer_norm_reference, *(t.double() for t in args))
fixed = fn.forward_backward(fn.AddLayerNorm.apply, *args)
fn.resident_backward_programs = lambda args, constants: 2
fitted = fn.forward_backward(fn.AddLayerNorm.apply, *args)
print("fitted", fn.backward_rows_per_program(70, 2), all(torch.equal(a, b) for a, b in zip(fitted[:4], fixed[:4])),
      *(f"{err(f, e):.3e}/{err(g, e):.3e}" for f, g, e in zip(fitted[4:], fixed[4:], exact[4:])))
# the partial sums' reduction: several blocks of rows and ragged columns, one or several arrays
parts = torch.randn(2, 70, 45, generator=gen)
exact = parts.double().sum(1)
print("partials", err(fn.sum_partials(parts, torch.float32), exact),
      err(fn.sum_partials(parts[1], torch.bfloat16), exact[1]))
"""


def test_fused_add_layer_norm_in_the_triton_interpreter():
    stdout = run_interpreted(INTERPRETED_ADD_LAYER_NORM)
    lines = stdout.splitlines()
    no_bias, fitted, partials = lines.pop(-3).split(), lines.pop(-2).split(), lines.pop(-1).split()
    assert fitted[:3] == ["fitted", "35", "True"], fitted  # s, y, dx, ddelta bitwise as with 32 rows per program
    for pair in fitted[3:]:  # ddelta_bias, dweight, dbias: errors against float64, fitted grid / 32 rows per program
        got, before = map(float, pair.split("/"))
        assert got <= max(2 * before, 1e-2), fitted
    assert no_bias[0] == "no-bias" and float(no_bias[1]) < 1e-2, no_bias  # fp16 weight gradient, rounded once
    # errors against float64: fp32 sums, and the same rounded once to bf16 (within one unit, 2 ** -7: the interpreter
    # rounds toward zero where a GPU rounds to nearest)
    assert partials[0] == "partials" and float(partials[1]) < 1e-6 and float(partials[2]) <= 2 ** -7, partials
    assert [line.split()[0] for line in lines] == ["torch.bfloat16"] * 3 + ["torch.float16"] * 3
    for line, bound, has_delta_bias in zip(lines, (5e-3,) * 3 + (5e-4,) * 3, (True, True, False) * 2):
        # s, y, dx, ddelta, ddelta_bias, dweight, dbias: error of the kernels / of the plain path against float64,
        # same inputs ("-": no delta bias)
        pairs = line.split()[1:]
        assert len(pairs) == 7 and (pairs[4] != "-") == has_delta_bias, line
        for pair in pairs:
            if pair != "-":
                fused, plain = map(float, pair.split("/"))
                assert fused <= max(2 * plain, bound), line


def test_backward_grid_fits_the_programs_a_gpu_holds():
    """The add + LayerNorm backward's grid: programs per SM from registers per thread (the H200's figures: 74
    registers at 8 warps gave 3 programs per SM, 64 gave 4) and rows per program such that one wave holds the grid,
    never under MIN_ROWS_PER_PROGRAM."""
    sm90 = type("Props", (), dict(regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048))
    assert [fused_norm.programs_per_sm(regs, warps, sm90) for regs, warps in
            ((64, 8), (74, 8), (75, 8), (128, 4), (48, 16), (32, 8), (255, 16))] == [4, 3, 3, 4, 2, 8, 1]
    assert fused_norm.MIN_ROWS_PER_PROGRAM == 32
    assert fused_norm.backward_rows_per_program(16384, 3 * 132) == 42  # 391 programs, one wave of 396
    assert fused_norm.backward_rows_per_program(16384, 4 * 132) == 32  # 512 of 528: the minimum already fits
    assert fused_norm.backward_rows_per_program(16384, 10 ** 6) == 32
    assert fused_norm.backward_rows_per_program(70, None) == 32  # off a GPU: no limit
    assert fused_norm.resident_backward_programs([torch.zeros(2, 2)], {}) is None


INTERPRETED_MODEL_WITH_FUSED_NORM = """
import copy, sys, torch
from kernels import fused_norm as fn
from model import GPT, GPTConfig
fn._ready = True
fn._can_fuse = lambda x: x.dtype == torch.float16  # the interpreter runs the kernels on CPU tensors
torch.manual_seed(0)
plain = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=48, block_size=16, vocab_size=100)).to(torch.float16)
fused = copy.deepcopy(plain)
fused.set_fused_kernels(sys.argv[1] == "mlp", loss=False, norm=True)  # the MLP's ops run their plain versions here
fused.gradient_checkpointing = int(sys.argv[2])
calls = []
apply = fn.AddLayerNorm.apply
fn.AddLayerNorm.apply = lambda *a: calls.append(a[2] is not None) or apply(*a)
idx = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(1))
results = []
for model in (copy.deepcopy(plain).double(), plain, fused):
    _, loss = model(idx, targets=idx)
    loss.backward()
    results.append((loss.item(), {n: p.grad.double() for n, p in model.named_parameters()}))
(loss_exact, exact), (loss_plain, grads_plain), (loss_fused, grads_fused) = results
err = lambda got, want: ((got - want).norm() / want.norm()).item()
# each gradient's error against float64: the kernels' over the plain path's (or over 0.01 where that is tiny)
worst = max(err(grads_fused[n], g) / max(err(grads_plain[n], g), 0.01) for n, g in exact.items())
print(len(calls), sum(calls), abs(loss_fused - loss_exact), abs(loss_plain - loss_exact), worst, len(exact))
"""


@pytest.mark.parametrize("mlp, checkpointed, kernel_calls", [("plain", 0, 6), ("mlp", 0, 6), ("plain", 2, 7)])
def test_model_with_fused_add_layer_norm_in_the_triton_interpreter(mlp, checkpointed, kernel_calls):
    """The (x, delta, delta_bias) residual stream through the kernels: every add + LayerNorm but block 0's ln_1 goes
    through them (2 per block and ln_f), each adding the bias that the projection before it left out, and the loss
    and every gradient (the projections' biases' included) are as close to float64's as the plain fp16 model's.
    With the fused MLP's autograd function; with the first two blocks recomputed in backward (block 1's input is
    summed before it, so its ln_1 is plain; blocks 0 and 1 run again in backward: 5 + 2 calls)."""
    stdout = run_interpreted(INTERPRETED_MODEL_WITH_FUSED_NORM, mlp, str(checkpointed))
    calls, with_delta_bias, loss_fused, loss_plain, worst_grad, n_grads = stdout.split()
    assert int(calls) == int(with_delta_bias) == kernel_calls and int(n_grads) == 40
    assert float(loss_fused) <= max(2 * float(loss_plain), 1e-4)  # fp16 loss of ~4.6 against float64
    assert float(worst_grad) <= 1.0, worst_grad


def test_trainer_turns_on_the_fused_kernels_that_pass_their_checks(monkeypatch, capsys):
    """kernels.enable: on this CPU every kernel's set-up fails (no GPU), so all three stay on
    the plain path and the summary says why; with set-ups that succeed (stand-ins) all three are on; one failure
    turns off only its own kernel; fused_norm=False leaves the norm plain without a warning."""
    import kernels
    from kernels import fused_norm
    model = tiny()
    note = kernels.enable(model)
    reasons = ["plain MLP, the cuBLASLt extension did not build or load: fused kernels need a CUDA GPU; ",
               "plain cross-entropy, the Triton kernel failed: ", "plain add + LayerNorm, the Triton kernels failed: "]
    assert note.startswith(reasons[0]) and 0 < note.index(reasons[1]) < note.index(reasons[2]), note
    assert capsys.readouterr().out.count("warning: plain ") == 3
    assert not (model.fused_loss or model.fused_norm or any(b.mlp.fused or b.fused_norm for b in model.transformer.h))
    with pytest.raises(RuntimeError, match="fused kernels need a CUDA GPU"):  # the benchmarks' set-up
        kernels.enable(model, strict=True)

    monkeypatch.setattr(fused_dense, "load_extension", lambda: 0.0)
    monkeypatch.setattr(fused_loss, "enable", lambda vocab, padded: None)
    monkeypatch.setattr(fused_norm, "enable", lambda: None)
    note = kernels.enable(model)
    assert [p.split(" (ready in")[0] for p in note.split("; ")] == ["cuBLASLt epilogues", "Triton cross-entropy",
                                                                     "Triton add + LayerNorm"], note
    assert model.fused_loss and model.fused_norm
    assert all(b.mlp.fused and b.fused_norm for b in model.transformer.h)

    def no_triton(vocab, padded):
        raise RuntimeError("Triton is not installed")

    monkeypatch.setattr(fused_loss, "enable", no_triton)
    note = kernels.enable(model, with_norm=False)
    assert note.split("; ")[1:] == ["plain cross-entropy, the Triton kernel failed: Triton is not installed",
                                    "plain add + LayerNorm (fused_norm=False)"], note
    assert capsys.readouterr().out.count("warning: ") == 1
    assert not model.fused_loss and not model.fused_norm
    assert all(b.mlp.fused and not b.fused_norm for b in model.transformer.h)
