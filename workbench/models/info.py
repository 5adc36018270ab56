"""Architecture facts of a loaded model, as one frozen record."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelInfo:
    """What an analysis needs to know about a model's shape, read from the bridge config."""

    name: str
    source: str  # embedded, tiny, folder, gguf or hub
    architecture: str  # HF class, e.g. LlamaForCausalLM
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int  # == n_heads unless grouped-query attention
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    act_fn: str
    gated_mlp: bool
    normalization: str  # RMS or LN
    positional_embedding: str  # rotary, standard, ...
    tied_embeddings: bool
    n_params: int
    dtype: str
    bos_token: str | None
    eos_token: str | None

    @property
    def grouped_query(self) -> bool:
        """True when several query heads share one key/value head."""
        return self.n_kv_heads != self.n_heads

    @property
    def heads_per_kv(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    def to_dict(self) -> dict:
        return asdict(self)


def info_from_bridge(bridge, hf_model, tokenizer, name: str, source: str) -> ModelInfo:
    cfg = bridge.cfg
    n_heads = int(cfg.n_heads)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    return ModelInfo(
        name=name,
        source=source,
        architecture=str(cfg.architecture or type(hf_model).__name__),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_head=int(cfg.d_head),
        d_mlp=_d_mlp(bridge),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
        act_fn=str(cfg.act_fn),
        gated_mlp=bool(cfg.gated_mlp),
        normalization=str(cfg.normalization_type),
        positional_embedding=str(cfg.positional_embedding_type),
        tied_embeddings=bool(getattr(hf_model.config, "tie_word_embeddings", False)),
        n_params=sum(p.numel() for p in hf_model.parameters()),
        dtype=str(next(hf_model.parameters()).dtype).removeprefix("torch."),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
    )


def _d_mlp(bridge) -> int:
    """The MLP's hidden width as stored (the bridge's config can disagree, e.g. OPT's ``ffn_dim``)."""
    try:
        return int(bridge.blocks[0].mlp.W_out.shape[0])
    except (AttributeError, ValueError, RuntimeError):  # mixtures of experts: no single W_out
        return int(bridge.cfg.d_mlp)
