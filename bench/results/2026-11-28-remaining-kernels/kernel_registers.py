"""
Registers per thread of fused_norm.py's add + LayerNorm backward kernel at GPT-2 XL width, compiled ahead of time
for an H100/H200 (sm_90) without a GPU, and what they mean for occupancy: programs per SM, and waves of the XL
backward's grid (16,384 rows) at 32 rows per program (the grid before the ninth session) and as fused_norm now
sizes it (fitted to the programs the GPU holds at once; on the GPU fused_norm reads the registers of the kernel it
runs). The pointers get the 16-byte alignment hint the JIT gives real tensors, without which Triton would not
vectorise the loads. Uses Triton's bundled cuobjdump.

    python bench/results/2026-11-28-remaining-kernels/kernel_registers.py

with Triton as installed (the GPU machine has 3.6; that output is bias-h200/kernel_registers_triton3.6.txt).
"""
import os
import re
import subprocess
import sys
import types

import triton
from triton.backends.compiler import GPUTarget

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3)))  # the repository
from kernels import fused_norm as fn  # noqa: E402

SMS, ROWS = 132, 16 * 1024  # H100 SXM / H200; one XL micro-batch
SM90 = types.SimpleNamespace(regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048)


def registers(kernel, signature, constexprs, warps):
    pointers = [i for i, kind in enumerate(signature.values()) if kind.startswith("*")]
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constexprs,
                                       attrs={(i,): [["tt.divisibility", 16]] for i in pointers})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    path = "/tmp/kernel_registers.cubin"
    with open(path, "wb") as f:
        f.write(compiled.asm["cubin"])
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"REG:(\d+)", usage)[1])


def main():
    signature = {name: "*bf16" for name in ("s_ptr", "dy_ptr", "ds_ptr", "w_ptr")}
    signature.update({"mean_ptr": "*fp32", "rstd_ptr": "*fp32", "dx_ptr": "*bf16", "dw_ptr": "*fp32",
                      "db_ptr": "*fp32", "ddelta_bias_ptr": "*fp32", "M": "i32", "ROWS": "i32"})
    signature.update({name: "constexpr" for name in ("N", "BLOCK", "HAS_DS", "HAS_BIAS", "HAS_DELTA_BIAS")})
    print(f"Triton {triton.__version__}, sm_90, add_ln_bwd_kernel at width 1600, {ROWS} rows")
    for warps in (4, 8, 16):
        for delta_bias in (False, True):
            regs = registers(fn.add_ln_bwd_kernel, signature,
                             dict(N=1600, BLOCK=2048, HAS_DS=True, HAS_BIAS=True, HAS_DELTA_BIAS=delta_bias), warps)
            per_sm = fn.programs_per_sm(regs, warps, SM90)
            fixed = triton.cdiv(ROWS, 32)
            rows = fn.backward_rows_per_program(ROWS, per_sm * SMS)
            fitted = triton.cdiv(ROWS, rows)
            print(f"  {warps:2d} warps, delta bias {str(delta_bias):5}: {regs:3d} registers, {per_sm} programs per SM; "
                  f"32 rows per program: {fixed} programs = {fixed / (per_sm * SMS):.2f} waves; fitted: {rows} rows, "
                  f"{fitted} programs = {fitted / (per_sm * SMS):.2f} waves")


if __name__ == "__main__":
    main()
