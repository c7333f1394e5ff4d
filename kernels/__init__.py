"""
The fused GPU kernels, switched on in one place: `enable(model)`.

    fused_dense.py   MLP matmuls with the GELU (and its backward) in cuBLASLt epilogues (csrc/fused_dense.cpp)
    fused_loss.py    the loss head's softmax cross-entropy in one Triton kernel
    fused_norm.py    each residual add with the LayerNorm after it in one Triton kernel

Each computes what the plain PyTorch ops compute, only faster; a kernel that does not build or fails its check on
this GPU stays off and the model runs the plain op instead.
"""
import time


def enable(model, with_norm=True, strict=False, warn=print):
    """Build and check each fused kernel on this GPU and turn on those that pass (with strict, a failure raises
    instead: the benchmarks). Returns the start-up summary's words for them; `warn` gets one line per kernel left
    off."""
    from kernels import fused_dense, fused_loss, fused_norm
    notes = []

    def attempt(setup, name, fallback):
        start = time.time()
        try:
            setup()
        except Exception as e:
            if strict:
                raise
            why = f"{fallback}: {str(e).splitlines()[0][:200]}"
            notes.append(why)
            warn(f"warning: {why}")
            return False
        notes.append(f"{name} (ready in {time.time() - start:.1f}s)")
        return True

    mlp = attempt(fused_dense.load_extension, "cuBLASLt epilogues",
                  "plain MLP, the cuBLASLt extension did not build or load")
    loss = attempt(lambda: fused_loss.enable(model.config.vocab_size, model.config.padded_vocab_size),
                   "Triton cross-entropy", "plain cross-entropy, the Triton kernel failed")
    if with_norm:
        norm = attempt(fused_norm.enable, "Triton add + LayerNorm", "plain add + LayerNorm, the Triton kernels failed")
    else:
        norm = False
        notes.append("plain add + LayerNorm (fused_norm=False)")
    model.set_fused_kernels(mlp, loss=loss, norm=norm)
    return "; ".join(notes)
