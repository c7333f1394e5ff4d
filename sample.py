"""
Generate text from a trained model.

    python sample.py --init_from=out-shakespeare-xl                      # the checkpoint `latest` names
    python sample.py --init_from=out-shakespeare-xl/best --start="ROMEO:" --num_samples=3
    python sample.py --init_from=out-shakespeare-xl/export/final-hf      # an exported Hugging Face directory
    python sample.py --init_from=model.pt                                # export.py --pt's file
    python sample.py --init_from=gpt2-xl --start=FILE:prompt.txt --device=cuda

Settings are the globals below, overridden by --key=value (as in train_deepspeed.py). Uses the KV cache.
"""
import sys

import torch

# -----------------------------------------------------------------------------
init_from = "out-shakespeare-xl"  # a run's out_dir or out_dir/<tag>, a HF GPT-2 directory, a .pt export, a GPT-2 name
start = "\n"  # the prompt, or FILE:path to read it from a file
num_samples = 3
max_new_tokens = 200
temperature = 0.8  # 0 = greedy
top_k = 200  # 0 = off
top_p = 1.0  # nucleus sampling; 1.0 = off
seed = 1337
device = "cuda" if torch.cuda.is_available() else "cpu"
dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
use_cache = True
# -----------------------------------------------------------------------------
DEFAULTS = {k: v for k, v in globals().items() if not k.startswith("_") and isinstance(v, (bool, int, float, str))}


def check_settings(C):
    """Settings outside what they can mean, and a device this machine lacks: one-line errors."""
    from settings import DTYPES, InputError, check_ranges
    if C["dtype"] not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {C['dtype']!r}")
    check_ranges(C, [("temperature", lambda v: v >= 0, ">= 0 (0 = greedy)"),
                     ("top_k", lambda v: v >= 0, ">= 0 (0 = off)"),
                     ("top_p", lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
                     ("num_samples", lambda v: v >= 1, ">= 1"),
                     ("max_new_tokens", lambda v: v >= 0, ">= 0")])
    try:
        device = torch.device(C["device"])
    except RuntimeError:
        raise InputError(f"device {C['device']!r} is not a device name; use --device=cpu or --device=cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device={C['device']} but this machine has no CUDA GPU that torch can use; "
                         "use --device=cpu")


def load(init_from):
    """A GPT model (fp32, CPU) from a checkpoint, a Hugging Face directory, export.py's .pt file or a GPT-2 name."""
    import os
    import checkpoint as ckpt
    from export import read_pt_export
    from model import GPT, GPT2_SIZES, gpt2_name
    from settings import InputError
    out_dir, tag = ckpt.split_checkpoint_path(init_from)
    if out_dir is not None:
        return ckpt.load_model(out_dir, tag)[0]
    saved = read_pt_export(init_from) if os.path.isfile(init_from) else None
    if saved is not None:
        return ckpt.model_from_state(saved["model_config"], saved["state_dict"])
    if not os.path.isdir(init_from) and gpt2_name(init_from) not in GPT2_SIZES:  # from_pretrained takes both names
        raise InputError(f"init_from {init_from!r} is not a run's out_dir (or out_dir/tag), a Hugging Face GPT-2 "
                         f"directory, export.py's .pt file or one of {', '.join(GPT2_SIZES)}; check the path")
    return GPT.from_pretrained(init_from)


def prompt_text(start):
    """--start itself, or the text of the file FILE:path names; a file that cannot be read is an InputError."""
    from settings import InputError
    if not start.startswith("FILE:"):
        return start
    path = start[5:]
    fix = "check the path, or give the prompt itself with --start=TEXT"
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"prompt file {path} not found; {fix}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"prompt file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                         f"{e.start}); save it as UTF-8") from None
    except OSError as e:  # a folder, no read permission
        raise InputError(f"prompt file {path} could not be read ({e.strerror}); {fix}") from None


def main(argv):
    from settings import EXIT_BAD_INPUT, InputError, parse_config
    from model import PretrainedNotFound
    from checkpoint import CheckpointError, safe_loading
    from tokenizer import gpt2_encoding
    try:
        C = parse_config(argv, DEFAULTS, __file__, usage="python sample.py [--key=value ...]")
        check_settings(C)
        safe_loading()  # no file it reads can run code
        text = prompt_text(C["start"])  # before the model: a wrong path costs no load
        if not text:
            raise InputError("the prompt is empty; give --start=TEXT (e.g. a newline) or FILE:path")
        model = load(C["init_from"])
        enc = gpt2_encoding()
        ids = enc.encode(text, allowed_special={"<|endoftext|>"})
    except (InputError, PretrainedNotFound, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    model.to(device=C["device"], dtype=getattr(torch, C["dtype"])).eval()
    context = model.config.block_size
    if len(ids) > context:
        print(f"note: the prompt has {len(ids):,} tokens, more than the model's context of {context}; it sees the last "
              f"{context}", file=sys.stderr)
    x = torch.tensor([ids[-context:]], dtype=torch.long, device=C["device"])
    generator = torch.Generator(device=C["device"]).manual_seed(C["seed"])
    for _ in range(C["num_samples"]):
        y = model.generate(x, C["max_new_tokens"], temperature=C["temperature"], top_k=C["top_k"] or None,
                           top_p=C["top_p"], use_cache=C["use_cache"], generator=generator)
        print(enc.decode(y[0].tolist()))
        print("---------------")


if __name__ == "__main__":
    main(sys.argv[1:])
