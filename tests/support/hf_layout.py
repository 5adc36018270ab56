"""Test helper: a Llama-layout HF decoder layer and the workbench's raw weights must be the same numbers."""

from __future__ import annotations

import torch


def assert_llama_layer_matches(weights_attn, weights_mlp, hf_layer, n_heads: int, n_kv: int, d_head: int, d_model: int):
    """W_Q / W_K / W_V / W_O / W_in / W_gate / W_out equal the HF projections, reshaped to TransformerLens layout."""
    attn = hf_layer.self_attn
    assert torch.equal(weights_attn.W_Q, attn.q_proj.weight.view(n_heads, d_head, d_model).transpose(1, 2))
    assert torch.equal(weights_attn.W_K, attn.k_proj.weight.view(n_kv, d_head, d_model).transpose(1, 2))
    assert torch.equal(weights_attn.W_V, attn.v_proj.weight.view(n_kv, d_head, d_model).transpose(1, 2))
    assert torch.equal(weights_attn.W_O, attn.o_proj.weight.T.reshape(n_heads, d_head, d_model))
    assert torch.equal(weights_mlp.W_in, hf_layer.mlp.up_proj.weight.T)
    assert torch.equal(weights_mlp.W_gate, hf_layer.mlp.gate_proj.weight.T)
    assert torch.equal(weights_mlp.W_out, hf_layer.mlp.down_proj.weight.T)
