"""Test helper: write a tiny HF ``LlamaForCausalLM`` as an F32 GGUF file, the way llama.cpp would.

``write_tiny_gguf(hf_model, path)`` stores the weights under llama.cpp's tensor names, with
llama.cpp's Q/K row permutation (which transformers' GGUF loader reverses), the ``llama.*``
hyper-parameters, and the tiny models' byte-level tokenizer as a ``gpt2`` (byte-level BPE)
vocabulary with no merges. transformers can then load it back with
``from_pretrained(folder, gguf_file=name)`` both as a model and as a tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from workbench.models import tiny


class _Writer(gguf.GGUFWriter):
    """gguf-py refuses empty arrays, which the format allows; the byte tokenizer has no merges."""

    def _pack_val(self, val, vtype, add_vtype, sub_type=None):
        if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute``: rotary halves interleaved as pairs, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(hf_model, path: str | Path) -> Path:
    """Write ``hf_model`` (a tiny ``LlamaForCausalLM``) to ``path`` as a GGUF with F32 tensors."""
    cfg = hf_model.config
    if cfg.model_type != "llama":
        raise ValueError(f"only llama models are supported, not {cfg.model_type!r}")
    path = Path(path)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))

    writer = _Writer(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = sorted(tiny.byte_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(cfg.vocab_size)), "vocab ids must be 0..n-1"
    writer.add_tokenizer_model("gpt2")  # byte-level BPE
    writer.add_tokenizer_pre("default")
    writer.add_token_list([tok for tok, _ in vocab])
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i >= 256 else gguf.TokenType.NORMAL for _, i in vocab]
    )
    writer.add_key_value(gguf.Keys.Tokenizer.MERGES, [], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING)
    writer.add_bos_token_id(tiny.BOS_ID)
    writer.add_eos_token_id(tiny.EOS_ID)
    writer.add_pad_token_id(tiny.PAD_ID)
    writer.add_add_bos_token(False)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in hf_model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        name = names.get_name(base)
        if name is None:
            raise ValueError(f"no GGUF name for {hf_name}")
        data = tensor.detach().to("cpu").float().numpy().copy()
        if name.endswith(".attn_q"):
            data = _permute(data, n_head)
        elif name.endswith(".attn_k"):
            data = _permute(data, n_kv)
        writer.add_tensor(f"{name}.{suffix}", np.ascontiguousarray(data, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
