"""Named tiny random models: seeded, offline, a few hundred kB, for tests and demos.

They share one byte-level tokenizer (256 byte tokens + 3 specials) built here, so
any text round-trips and no vocabulary file has to be downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelLoadError
from ._atomic import atomic_folder

SPECIAL_TOKENS = ("<bos>", "<eos>", "<pad>")
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
VOCAB_SIZE = 259


def _byte_to_unicode() -> dict[int, str]:
    """Byte-level BPE's printable stand-ins for the 256 byte values (GPT-2's scheme)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_vocab() -> dict[str, int]:
    """Token string -> id for the tiny models' byte-level tokenizer."""
    vocab = {char: byte for byte, char in _byte_to_unicode().items()}
    for i, tok in enumerate(SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    return vocab


def _write_byte_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab=byte_vocab(), merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", model_max_length=10**6
    )
    fast.save_pretrained(folder)


def byte_tokenizer(root: Path):
    """Load (writing it once) the byte-level tokenizer under ``root``.

    It is loaded from disk rather than built in memory because the hooked bridge
    re-opens tokenizers by their folder to switch BOS handling.
    """
    from transformers import AutoTokenizer

    folder = atomic_folder(root / "models" / "byte-tokenizer-v1", _write_byte_tokenizer)
    return AutoTokenizer.from_pretrained(folder)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    # 2 layers, 4 query heads sharing 2 key/value heads: grouped-query like the embedded model.
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )
    return LlamaForCausalLM(config)


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB_SIZE, n_embd=64, n_layer=2, n_head=4, n_positions=256,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )
    return GPT2LMHeadModel(config)


TINY_MODELS = {
    "tiny-llama": (_tiny_llama, "2-layer Llama (RMSNorm, RoPE, SwiGLU, 4 query / 2 key-value heads), d_model 64"),
    "tiny-gpt2": (_tiny_gpt2, "2-layer GPT-2 (LayerNorm, learned positions, GELU MLP, 4 heads), d_model 64"),
}


def tiny_model(name: str, seed: int = 0):
    """Build the named tiny model with weights drawn from ``seed`` (same seed, same weights)."""
    if name not in TINY_MODELS:
        raise ModelLoadError(f"unknown tiny model {name!r}; choose one of {sorted(TINY_MODELS)}")
    build, _ = TINY_MODELS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    return model.eval()
