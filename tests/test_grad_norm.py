"""The gradient norm that clips every step: train_deepspeed's one multi-tensor pass against DeepSpeed's own."""
import json
import math
import re
import subprocess
import sys

import pytest
import torch

import ds_patches
from conftest import REPO, free_port, train_env


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_squared_norm_matches_fp64(dtype):
    torch.manual_seed(0)
    tensors = [torch.randn(n, dtype=dtype) * s for n, s in ((1, 3.0), (1000, 0.01), (4097, 1.0), (70_000, 2e-4))]
    expected = sum(t.double().square().sum() for t in tensors).item()
    got = ds_patches.squared_norm(tensors)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected, rel=1e-6)
    assert ds_patches.squared_norm([]).item() == 0.0


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_squared_norm_is_not_finite_when_an_element_is_not(bad):
    tensors = [torch.ones(10), torch.ones(100, dtype=torch.bfloat16)]
    tensors[1][57] = bad
    assert not math.isfinite(ds_patches.squared_norm(tensors).item())


def test_zero2_grad_norm_equals_deepspeeds():
    """On 2 ranks of a real ZeRO-2 engine (small buckets, so each rank's partition holds parts of tensors): the
    same global norm as DeepSpeed's per-tensor fp64 one, on every rank and parameter group, and the -1 that marks
    a non-finite norm when one rank's partition holds an inf."""
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus=2", f"--master_port={free_port()}",
           "tests/grad_norm_ranks.py", "bfloat16", "float32"]
    proc = subprocess.run(cmd, cwd=REPO, env=train_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads(r) for r in re.findall(r'\{"rank"[^{}]*\}', proc.stdout)]  # the ranks' lines may interleave
    assert sorted((r["dtype"], r["rank"]) for r in ranks) == [("torch.bfloat16", 0), ("torch.bfloat16", 1),
                                                                ("torch.float32", 0), ("torch.float32", 1)]
    for r in ranks:
        peer = next(p for p in ranks if p["dtype"] == r["dtype"] and p["rank"] != r["rank"])
        assert r["installed"] and r["method"].startswith("use_foreach_grad_norm.")
        assert all(n > 1 for n in r["tensors"])
        assert all(d > 0 for d in r["deepspeed"])
        assert r["foreach"] == pytest.approx(r["deepspeed"], rel=1e-6)
        assert r["foreach"] == pytest.approx(peer["foreach"], rel=1e-6)
        assert r["foreach_inf"][0] == -1.0 and r["foreach_inf"][1] == pytest.approx(r["deepspeed"][1], rel=1e-6)
