"""
Export a training checkpoint for use outside DeepSpeed.

    python export.py out-shakespeare-xl     # the tag `latest` names -> out-shakespeare-xl/export/<tag>-hf
    python export.py out-shakespeare-xl/best --hf my-model    # a Hugging Face GPT-2 directory
    python export.py out-shakespeare-xl --tag iter_100 --pt model.pt   # a plain fp32 state dict for model.py

An earlier export at the destination is replaced; anything else there is refused unless --force.

The Hugging Face directory (config.json, model.safetensors, vocab.json/merges.txt where available) loads with
transformers.GPT2LMHeadModel.from_pretrained and gives the trained model's logits. The .pt file holds
{"model_config": ..., "state_dict": ...}: GPT(GPTConfig(**model_config)).load_state_dict(state_dict).
Weights come from DeepSpeed's zero_to_fp32 (the fp32 master copy), shards memory-mapped, so memory stays near
one fp32 copy of the model (GPT-2 XL: ~6.2 GB).
"""
import argparse
import json
import os
import sys

import torch

import checkpoint as ckpt
from model import GPTConfig, hf_config, to_hf_tensors
from settings import EXIT_BAD_INPUT

HF_FILES = {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"}


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def is_hf_export(path):
    """True for a folder holding only the files export_hf writes, its config.json a GPT-2 one."""
    names = set(os.listdir(path))
    if "config.json" not in names or not names <= HF_FILES:
        return False
    if not all(os.path.isfile(os.path.join(path, name)) for name in names):
        return False
    try:
        with open(os.path.join(path, "config.json")) as f:
            return json.load(f).get("model_type") == "gpt2"
    except (OSError, ValueError, AttributeError):
        return False


def read_pt_export(path):
    """What export_pt wrote, memory-mapped (tensors are read when used), or None for any other file."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a torch file at all, or one weights_only refuses
        return None
    return saved if isinstance(saved, dict) and set(saved) == {"model_config", "state_dict"} else None


def check_destinations(hf, pt, force):
    """Refuse, before the long load, to write where the user's own files would be overwritten or mixed in."""
    if hf is not None and os.path.exists(hf):
        if not os.path.isdir(hf):
            fail(f"--hf {hf} is a file, not a folder; give a folder for the Hugging Face export")
        if os.listdir(hf) and not force and not is_hf_export(hf):
            fail(f"--hf folder {hf} is not empty and holds more than an earlier export; give a new or empty folder, "
                 "or add --force to write the export's files into it (other files there stay)")
    if pt is not None and os.path.exists(pt):
        if os.path.isdir(pt):
            fail(f"--pt {pt} is a folder; give a file name, e.g. {os.path.join(pt, 'model.pt')}")
        if not force and read_pt_export(pt) is None:
            fail(f"--pt file {pt} exists and is not an earlier export; give another file name, or add --force to "
                 "overwrite it")


def export_hf(state_dict, config, out_dir):
    """A Hugging Face GPT-2 directory from our fp32 state dict, converted in place (the dict is spent)."""
    from safetensors.torch import save_file
    from tokenizer import save_hf_tokenizer_files
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config(config), f, indent=2)
    tensors = dict(to_hf_tensors(state_dict, config.vocab_size, in_place=True))
    weights = os.path.join(out_dir, "model.safetensors")
    save_file(tensors, weights, metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(weights, 0o666 & ~umask)  # safetensors 0.8 creates the file with mode 0600, whatever the umask
    if save_hf_tokenizer_files(out_dir):
        with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": config.block_size,
                       "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, f)
        return True
    return False


def export_pt(state_dict, config, path):
    torch.save({"model_config": vars(config).copy(), "state_dict": state_dict}, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a run's out_dir (uses `latest`) or out_dir/<tag>")
    parser.add_argument("--tag", help="tag inside out_dir (iter_N, best, final); default: `latest`")
    parser.add_argument("--hf", help="write a Hugging Face GPT-2 directory here")
    parser.add_argument("--pt", help="write a plain fp32 state dict file for model.py here")
    parser.add_argument("--force", action="store_true",
                        help="write even where files other than an earlier export are (those of the same name are "
                             "overwritten)")
    args = parser.parse_args(argv)
    out_dir, tag = ckpt.split_checkpoint_path(args.checkpoint)
    if out_dir is None:
        fail(f"{args.checkpoint} is not a checkpoint (no `latest` file and no {ckpt.COMPLETE}); give a run's out_dir "
             "or out_dir/<tag>")
    named_tag = None if os.path.normpath(args.checkpoint) == os.path.normpath(out_dir) else tag  # out_dir/<tag>
    if args.tag and named_tag and args.tag != named_tag:
        fail(f"{args.checkpoint} is tag {named_tag} but --tag says {args.tag}; give one of them: "
             f"{os.path.join(out_dir, args.tag)}, or {args.checkpoint} without --tag")
    tag = args.tag or tag
    if not args.hf and not args.pt:
        args.hf = os.path.join(out_dir, "export", f"{tag}-hf")
    check_destinations(args.hf, args.pt, args.force)
    ckpt.safe_loading()  # no file it reads can run code
    try:
        marker = ckpt.verify(os.path.join(out_dir, tag))
        state = ckpt.fp32_state_dict(out_dir, tag)
    except ckpt.CheckpointError as e:
        fail(e)
    config = GPTConfig(**marker["model_config"])
    if args.pt:  # before the Hugging Face export, which rewrites the state dict in place
        if os.path.dirname(args.pt):
            os.makedirs(os.path.dirname(args.pt), exist_ok=True)
        export_pt(state, config, args.pt)
        print(f"wrote {args.pt} (fp32 state dict, iteration {marker['iteration']})")
    if args.hf:
        tokenizer = export_hf(state, config, args.hf)
        print(f"wrote {args.hf} (Hugging Face GPT-2, iteration {marker['iteration']}"
              f"{', with tokenizer files' if tokenizer else '; tokenizer files unavailable offline'})")


if __name__ == "__main__":
    main()
