"""
GPT-2's MLP with its GELU folded into cuBLASLt matmul epilogues: c_fc's bias + GELU in c_fc's matmul (which
also keeps the GELU's input for backward), and GELU's backward in the matmul that takes the gradient through
c_proj. Otherwise each is a memory-bound pass over a 4 x n_embd activation of its own (bench/NOTES.md).

The cuBLASLt calls live in csrc/fused_dense.cpp, built on first use with the host compiler (no nvcc: it is
host code) and cached by torch.utils.cpp_extension. Where they cannot run (CPU, fp32, an odd shape, no build)
the same autograd function uses plain PyTorch for each primitive, so the CPU tests check the function's wiring
and the GPU check (bench/fused_check.py) checks the kernels against these references.
"""
import glob
import os
import sys
import time

import torch
import torch.nn.functional as F

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "fused_dense.cpp")
_loaded = False


def _cublaslt_paths():
    """(include dir, library file) of the cuBLASLt that torch itself loaded, else of the CUDA toolkit."""
    lib = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "libcublasLt.so" in line:
                lib = line.split()[-1]
                break
    roots = [os.path.dirname(os.path.dirname(lib))] if lib else []
    from torch.utils.cpp_extension import CUDA_HOME
    roots += [os.path.join(p, "nvidia", sub) for p in sys.path for sub in ("cu13", "cu12", "cublas")]
    roots += [CUDA_HOME] if CUDA_HOME else []
    headers = [os.path.join(r, "include") for r in roots if os.path.isfile(os.path.join(r, "include", "cublasLt.h"))]
    include = headers[0] if headers else None
    if lib is None:
        found = [f for r in roots for f in sorted(glob.glob(os.path.join(r, "lib*", "libcublasLt.so*")))]
        lib = found[0] if found else None
    if include is None or lib is None:
        raise RuntimeError(f"cuBLASLt not found (header: {include}, library: {lib})")
    return include, lib


def load_extension(verbose=False):
    """Build (the first time, ~11 s on the H100 host; then cached) and load the cuBLASLt ops. Returns the seconds
    taken; raises on failure."""
    global _loaded
    if _loaded:
        return 0.0
    if not torch.cuda.is_available():
        raise RuntimeError("fused kernels need a CUDA GPU")
    from torch.utils.cpp_extension import load
    start = time.time()
    torch.cuda.init()
    include, lib = _cublaslt_paths()
    load(name="gpt2_fused_dense", sources=[_SOURCE], extra_include_paths=[include],
         extra_cflags=["-O2"], extra_ldflags=[lib, f"-Wl,-rpath,{os.path.dirname(lib)}"], with_cuda=True,
         is_python_module=False, verbose=verbose)
    _register_fakes()
    _self_test(torch.ops.gpt2_fused.linear_gelu, torch.ops.gpt2_fused.linear_dgelu)
    _loaded = True
    return time.time() - start


def _self_test(linear_gelu_op, linear_dgelu_op, device="cuda"):
    """Both ops against the plain path on small inputs in both 16-bit types, so that a broken build or an
    unsupported GPU falls back to the plain ops at start-up instead of training wrongly."""
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in (torch.bfloat16, torch.float16):
        def randn(*shape):
            return torch.randn(shape, device=device, generator=gen).to(dtype)

        x, w, b = randn(48, 64), randn(128, 64), randn(128)
        g, w2, pre = randn(48, 32), randn(32, 128), randn(48, 128)
        pairs = list(zip(linear_gelu_op(x, w, b), linear_gelu_reference(x, w, b)))
        pairs.append((linear_dgelu_op(g, w2, pre), linear_dgelu_reference(g, w2, pre)))
        for got, want in pairs:
            err = relative_error(got, want)
            if not err < 2e-2:
                raise RuntimeError(f"the fused kernels' start-up check failed ({dtype}: relative error {err:.2e})")


def relative_error(got, want):
    """||got - want|| / ||want||, computed in fp32."""
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def _register_fakes():
    """Shapes of each op's outputs, so that torch.compile can trace through them."""

    @torch.library.register_fake("gpt2_fused::linear_gelu")
    def _(x, weight, bias):
        out = x.new_empty(x.size(0), weight.size(0))
        return out, torch.empty_like(out)

    @torch.library.register_fake("gpt2_fused::linear_dgelu")
    def _(grad_out, weight, pre_gelu):
        return torch.empty_like(pre_gelu)


def _use_cublaslt(*tensors):
    return _loaded and all(t.is_cuda and t.dtype in (torch.float16, torch.bfloat16) and t.size(-1) % 8 == 0
                           for t in tensors)


# -----------------------------------------------------------------------------
# the two primitives: cuBLASLt where it can run, plain PyTorch otherwise


def linear_gelu(x, weight, bias):
    """(gelu_tanh(x W^T + b), x W^T + b) for 2-D x."""
    if _use_cublaslt(x, weight) and weight.size(0) % 8 == 0:
        return torch.ops.gpt2_fused.linear_gelu(x, weight, bias)
    return linear_gelu_reference(x, weight, bias)


def linear_dgelu(grad_out, weight, pre_gelu):
    """Gradient at the GELU's input, given the gradient at the output of the linear (weight) after it."""
    if _use_cublaslt(grad_out, weight, pre_gelu):
        return torch.ops.gpt2_fused.linear_dgelu(grad_out, weight, pre_gelu)
    return linear_dgelu_reference(grad_out, weight, pre_gelu)


def linear_gelu_reference(x, weight, bias):
    pre_gelu = F.linear(x, weight, bias)
    return F.gelu(pre_gelu, approximate="tanh"), pre_gelu


def linear_dgelu_reference(grad_out, weight, pre_gelu):
    return torch.ops.aten.gelu_backward(grad_out @ weight, pre_gelu, approximate="tanh")


# -----------------------------------------------------------------------------
# the MLP's autograd function, used by model.py


def _rows(t):
    return t.reshape(-1, t.size(-1)).contiguous()


class FusedMLP(torch.autograd.Function):
    """proj(gelu_tanh(fc(x))) for GPT-2's MLP (fc with its bias; proj_bias may be None, where the model adds it
    later). recompute_hidden: keep only the GELU's input for backward and apply the GELU to it again there, which
    saves the largest activation of a block (4 x n_embd per token; 20 GB for GPT-2 XL at micro-batch 32) for one
    elementwise pass."""

    @staticmethod
    def forward(ctx, x, fc_weight, fc_bias, proj_weight, proj_bias, recompute_hidden=False):
        x2 = _rows(x)
        hidden, pre_gelu = linear_gelu(x2, fc_weight, fc_bias)
        out = F.linear(hidden, proj_weight, proj_bias)
        ctx.save_for_backward(x2, fc_weight, proj_weight, pre_gelu, None if recompute_hidden else hidden)
        return out.view(*x.shape[:-1], out.size(-1))

    @staticmethod
    def backward(ctx, grad_out):
        x2, fc_weight, proj_weight, pre_gelu, hidden = ctx.saved_tensors
        if hidden is None:
            hidden = F.gelu(pre_gelu, approximate="tanh")
        g = _rows(grad_out)
        grad_proj_weight = g.t() @ hidden
        del hidden
        grad_proj_bias = g.sum(0) if ctx.needs_input_grad[4] else None
        grad_pre = linear_dgelu(g, proj_weight, pre_gelu)
        grad_fc_weight, grad_fc_bias = grad_pre.t() @ x2, grad_pre.sum(0)
        grad_x = (grad_pre @ fc_weight).view(*grad_out.shape[:-1], x2.size(-1))
        return grad_x, grad_fc_weight, grad_fc_bias, grad_proj_weight, grad_proj_bias, None
