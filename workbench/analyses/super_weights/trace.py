"""Trace one super weight through the model on a prompt: what drives its super activation, and who reads it.

The link from the super-weight view to the heads and tokens around it:

- **tokens**: at which positions the weight's output channel spikes (the super activation),
  intact and with the weight zeroed;
- **drivers**: the residual stream entering the weight's MLP at the spike position, split
  into its exact parts (embeddings, every earlier attention head, every earlier MLP, biases),
  and each part's direct contribution to the gate and up pre-activations of the weight's
  input channel (through the norm, whose scale is fixed by the whole stream). The parts sum
  to the measured pre-activations; the head rows say which heads (and, through their
  attention, which tokens) feed the spike;
- **readers**: every later head's attention to the spike positions, intact and with the
  weight zeroed: super activations make attention sinks, and zeroing the weight moves them.

Coordinates as everywhere in this package: (layer, row, col) = HF ``down_proj.weight[row, col]``. In a
mixture of experts the weight sits in one expert (``expert``): its input channel's activation is that
expert's hidden activation times its routing weight (zero where the router did not pick it), and the
trace says whether, and how strongly, the expert fired at the spike.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ...errors import InputError, UnsupportedModelError
from ...models import hook_names as hn
from ...results import Result
from ...engine.registry import Analysis
from ...engine.runner import run_analysis
from . import detect, experts
from .evaluate import check_prompts
from .scan import require_mlp_hooks
from ...models.contract import HookedSource
from ...models.writes import require_additive_residual


@dataclass(frozen=True)
class TraceConfig:
    weight: tuple[int, ...] = ()  # (layer, row, col); () = the strongest super weight wb.super_weights finds
    prompt: str = "Summer is hot. Winter is"  # the text traced (BOS prepended as the model's tokenizer does)
    spike_fraction: float = 0.5  # spike positions: |super activation| >= this x its largest |value| on the prompt
    expert: int = -1  # mixtures of experts: the expert the weight sits in (-1: a dense MLP)


@dataclass(frozen=True)
class TraceResult(Result):
    """Tables: ``tokens`` (one row per position: super activation in the MLP output and in the
    residual stream, intact and with the weight zeroed), ``drivers`` (one row per part of the
    residual stream at the strongest spike position: its contribution to the gate / up
    pre-activation of the weight's input channel), ``readers`` (one row per later head: mean
    attention mass on the spike positions from the positions after them, intact and zeroed)."""

    analysis = "super_weight_trace"
    title = "Super-weight trace"
    config_cls = TraceConfig

    # --------------------------------------------------------------- contents
    @property
    def weight(self) -> tuple[int, int, int]:
        """(layer, row, col) of the traced weight."""
        layer, row, col = self.config.weight
        return int(layer), int(row), int(col)

    @property
    def expert(self) -> int:
        """The expert the weight sits in (-1: a dense MLP, or a result saved before experts were traced)."""
        return int(getattr(self.config, "expert", -1))

    @property
    def spike_token(self) -> str:
        """The token at the strongest spike position."""
        return str(self.meta["spike_token"])

    @property
    def spike_position(self) -> int:
        return int(self.meta["spike_position"])

    @property
    def input_value(self) -> float:
        """The weight's input channel activation at the spike (what the drivers add up to)."""
        return float(self.meta["input_value"])

    @property
    def tokens(self) -> pd.DataFrame:
        """One row per position: the super activation intact and with the weight zeroed (a copy)."""
        return self.to_frame("tokens")

    @property
    def readers(self) -> pd.DataFrame:
        """One row per later head: attention mass on the spike positions, intact and zeroed (a copy)."""
        return self.to_frame("readers")

    def top_drivers(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` parts with the largest |contribution| to the input channel's activation."""
        table = self.to_frame("drivers")
        return table.reindex(table["effect"].abs().sort_values(ascending=False).index).head(n).reset_index(drop=True)

    def top_readers(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` heads whose attention to the spike positions changes most when the weight is zeroed."""
        table = self.to_frame("readers")
        return table.reindex(table["change"].abs().sort_values(ascending=False).index).head(n).reset_index(drop=True)

    def summary(self) -> list[tuple[str, str]]:
        layer, row, col = self.weight
        meta = self.meta
        drivers = self.top_drivers(3)
        readers = self.top_readers(3)
        return [
            ("weight", f"layer {layer} " + (f"expert {self.config.expert} " if self.config.expert >= 0 else "")
                       + f"down_proj[{row}, {col}]" + (f" (routing weight at the spike: {meta['routing_weight']:.3g})"
                                                       if meta.get("routing_weight") is not None else "")),
            ("prompt", repr(self.config.prompt)),
            ("spike", f"{meta['spike_value']:.4g} at position {meta['spike_position']} "
                      f"({meta['spike_token']!r}); {meta['zeroed_value']:.4g} with the weight zeroed"),
            ("top drivers", ", ".join(f"{r.part} ({r.effect:+.3g})" for r in drivers.itertuples()) or "none"),
            ("top readers", ", ".join(f"L{r.layer}H{r.head} ({r.intact:.2f} → {r.zeroed:.2f})"
                                      for r in readers.itertuples()) or "none"),
            ("decomposition error", f"{meta['decomposition_error']:.2e} (parts vs measured pre-activation)"),
        ]


# ------------------------------------------------------------------ parts of the residual stream
def mlp_input_names(model, layer: int) -> list[str]:
    """The activations :func:`residual_parts` needs for ``layer``'s MLP."""
    names = [hn.resid_pre(0)]
    for l in range(layer + 1):
        if l < layer or not model.facts.parallel_blocks:
            names += [*model.head_write_names(l), hn.attn_out(l)]
        if l < layer:
            names.append(hn.mlp_out(l))
    return names


@torch.no_grad()
def residual_parts(model, cache: dict[str, Tensor], layer: int, pos: int) -> tuple[list[dict], Float[Tensor, "part d_model"]]:
    """The residual stream that ``layer``'s MLP reads at ``pos``, as a list of exact parts.

    Returns (labels, vectors): embeddings, then per earlier layer each attention head's write
    (after any output norm, ``HookedModel.head_writes``), the attention's remaining write
    (biases), and the MLP's write; then the heads of ``layer`` itself unless the block is
    parallel (its MLP reads the block's input). The parts sum to the MLP's input stream.
    """
    labels, vectors = [{"part": "embeddings", "kind": "embeddings", "layer": -1, "head": -1}], [cache[hn.resid_pre(0)][0, pos]]
    for l in range(layer + 1):
        if l == layer and model.facts.parallel_blocks:
            break
        heads, rest = model.head_writes(l, {k: v[:1, pos:pos + 1] for k, v in cache.items()})  # [1, 1, head, d]
        for h in range(heads.shape[2]):
            labels.append({"part": f"L{l}H{h}", "kind": "head", "layer": l, "head": h})
        vectors += list(heads[0, 0])
        labels.append({"part": f"L{l} attn bias", "kind": "bias", "layer": l, "head": -1})
        vectors.append(rest[0, 0])
        if l < layer:
            labels.append({"part": f"MLP{l}", "kind": "mlp", "layer": l, "head": -1})
            vectors.append(cache[hn.mlp_out(l)][0, pos])
    return labels, torch.stack([v.float() for v in vectors])


def mlp_of(model, layer: int, expert: int = -1) -> tuple[Tensor | None, Tensor, Tensor | None, Tensor]:
    """(W_gate, W_in, b_in, W_out) of the MLP a weight sits in: the layer's own, or one of its experts."""
    if expert < 0:
        m = model.mlp_weights(layer)
        return m.W_gate, m.W_in, m.b_in, m.W_out
    w = model.expert_weights(layer)
    if not w.plain:
        raise UnsupportedModelError(
            f"{model.name}'s experts have biases and a clamped SwiGLU (GPT-OSS), which the trace's per-channel "
            "split does not model; use wb.super_experts(model) for the experts and the super weights inside them instead")
    return w.W_gate[expert], w.W_in[expert], None, w.W_out[expert]


@torch.no_grad()
def channel_contributions(model, parts: Float[Tensor, "part d_model"], layer: int, col: int,
                          expert: int = -1) -> dict[str, Tensor]:
    """Each part's direct contribution to the gate / up (``in``) pre-activations of MLP input channel ``col``.

    The norm in front of the MLP (if any) is linear once its scale is fixed by the whole stream
    (the parts' sum); for a LayerNorm each part is centred first, and its bias joins the constant."""
    facts = model.facts
    normed = parts
    if facts.pre_norms:
        rms = facts.norm == "rms"
        centred = parts if rms else parts - parts.mean(-1, keepdim=True)
        whole = centred.sum(0)
        scale = torch.rsqrt(whole.pow(2).mean() + facts.norm_eps)  # 1 / (RMS or std) of the whole stream
        gain = model.norm_gain(layer, "mlp")
        normed = centred * scale * (gain.float() if gain is not None else 1.0)  # [part, d_model]
    W_gate, W_in, b_in, _ = mlp_of(model, layer, expert)
    norm_bias = model.norm_bias(layer, "mlp") if facts.pre_norms else None
    out = {}
    for key, W, b in (("gate", W_gate, None), ("up", W_in, b_in)):
        if W is None:
            continue
        w = W[:, col].float()  # [d_model]
        const = (float(b[col]) if b is not None else 0.0) + (float(norm_bias.float() @ w) if norm_bias is not None else 0.0)
        out[key] = normed @ w  # [part]
        out[f"{key}_const"] = torch.tensor(const)
    return out


# ------------------------------------------------------------------ compute
def strongest_super_weight(model) -> tuple[tuple[int, int, int], int]:
    """((layer, row, col), expert) of the super weight with the largest loss effect (cached :func:`super_weights`;
    for a mixture of experts, the weight inside the super expert whose removal costs most, from :func:`super_experts`;
    expert -1 for dense MLPs)."""
    if model.facts.mlp == "moe":
        found = run_analysis(experts.ANALYSIS, model).super_experts
        if found.empty:
            raise UnsupportedModelError(f"wb.super_experts found no super expert in {model.name}: nothing to trace by "
                                        "default; pass weight=(layer, row, col) and expert=e")
        best = found.sort_values("kl", ascending=False).iloc[0]
        return (int(best["layer"]), int(best["row"]), int(best["col"])), int(best["expert"])
    found = run_analysis(detect.ANALYSIS, model).super_weights
    if found.empty:
        raise UnsupportedModelError(f"wb.super_weights found no super weights in {model.name}: nothing to trace "
                                    "by default; pass weight=(layer, row, col)")
    best = found.sort_values("delta_loss", ascending=False).iloc[0]
    return (int(best["layer"]), int(best["row"]), int(best["col"])), -1


def prepare(model, config: TraceConfig) -> TraceConfig:
    """``Analysis.prepare``: the config with its default weight filled in (so the cache key and the result name
    the weight traced), validated."""
    if not config.weight:
        weight, expert = strongest_super_weight(model)
        return prepare(model, replace(config, weight=weight, expert=expert))
    if len(config.weight) != 3:
        raise InputError("weight must be (layer, row, col): HF down_proj.weight[row, col] of that layer")
    kind = model.facts.layers[int(config.weight[0]) % model.facts.n_layers].mlp  # layers may differ (Llama 4)
    moe = kind == "moe"
    if moe != (config.expert >= 0) or config.expert >= max(model.facts.n_experts, 1):
        raise InputError(f"{model.name} layer {config.weight[0]} has a {kind} MLP: " + (
            f"pass expert= one of 0..{model.facts.n_experts - 1} (wb.super_experts names the experts that matter)"
            if moe else "expert= is for mixtures of experts only"))
    layer, row, col = (int(v) for v in config.weight)
    n, d_model, d_mlp = model.facts.n_layers, model.facts.d_model, model.facts.d_mlp
    if not (0 <= layer < n and 0 <= row < d_model and 0 <= col < d_mlp):
        raise InputError(f"weight {config.weight} is outside {model.name}: layers 0..{n - 1}, rows (d_model) "
                         f"0..{d_model - 1}, cols (d_mlp) 0..{d_mlp - 1}")
    if not 0 < config.spike_fraction <= 1:
        raise InputError(f"spike_fraction must be in (0, 1], got {config.spike_fraction}")
    return replace(config, weight=(layer, row, col))


@contextmanager
def _zeroed(model, layer: int, row: int, col: int, expert: int):
    """The weight set to zero inside the block; restored after."""
    W_out = mlp_of(model, layer, expert)[3]
    with model.restoring(W_out), torch.no_grad():
        W_out[col, row] = 0.0
        yield


def _hidden(model, cache, layer: int, col: int, expert: int) -> tuple[Tensor, Tensor, Tensor]:
    """At every position: the weight's input (what multiplies it), the MLP's own hidden activation of channel
    ``col``, and its gate pre-activation (the input's, if not gated). For an expert, recomputed exactly from
    the measured normed input (the input includes the routing weight: zero where the expert did not fire)."""
    if expert < 0:
        hidden = cache[hn.mlp_post(layer)][0, :, col].float()
        return hidden, hidden, cache[hn.mlp_pre(layer)][0, :, col].float()
    x = cache[hn.mlp_in(layer)][0].float()  # [pos, d_model]
    W_gate, W_in, _, _ = mlp_of(model, layer, expert)
    if W_gate is None:  # a plain expert: its activation of the input's pre-activation
        pre = x @ W_in[:, col].float()
        hidden = model.mlp_activation(pre)
    else:
        pre = x @ W_gate[:, col].float()
        hidden = model.mlp_activation(pre) * (x @ W_in[:, col].float())
    return model.expert_weights(layer).routing(x)[:, expert] * hidden, hidden, pre


@torch.no_grad()
def compute(model: HookedSource, config: TraceConfig) -> TraceResult:
    (layer, row, col), expert = config.weight, config.expert  # filled in and checked by prepare
    require_additive_residual(model)
    (prompt,) = check_prompts(config.prompt)
    if expert < 0:
        require_mlp_hooks(model)
    model.require_finite_weights()
    n_layers = model.facts.n_layers
    ids = model.to_tokens(prompt)  # [1, pos]
    tokens = model.to_str_tokens(ids[0])
    later = range(layer + 1, n_layers)
    inner = [hn.mlp_pre(layer), hn.mlp_post(layer)] if expert < 0 else [hn.mlp_in(layer)]
    names = [*inner, hn.mlp_out(layer), hn.resid_post(layer), *mlp_input_names(model, layer)]
    names += [hn.attn_pattern(l) for l in range(n_layers)]
    _, cache = model.run_with_cache(ids, names=sorted(set(names)))
    with _zeroed(model, layer, row, col, expert):
        _, zeroed = model.run_with_cache(ids, names=[hn.mlp_out(layer), hn.resid_post(layer)] + [hn.attn_pattern(l) for l in later])

    # tokens: where the channel spikes
    weight_input, hidden_all, pre_all = _hidden(model, cache, layer, col, expert)
    act = cache[hn.mlp_out(layer)][0, :, row].float()  # [pos]
    spike_pos = int(act.abs().argmax())
    spikes = (act.abs() >= config.spike_fraction * act.abs().max()).nonzero().flatten().tolist()
    token_table = pd.DataFrame({
        "position": range(len(tokens)), "token": tokens,
        "input": weight_input.tolist(),  # what multiplies the weight (an expert's: times its routing weight)
        "mlp_out": act.tolist(), "mlp_out_zeroed": zeroed[hn.mlp_out(layer)][0, :, row].float().tolist(),
        "resid": cache[hn.resid_post(layer)][0, :, row].float().tolist(),
        "resid_zeroed": zeroed[hn.resid_post(layer)][0, :, row].float().tolist(),
        "spike": [p in spikes for p in range(len(tokens))],
    })

    # drivers: the parts of the stream at the strongest spike, through the norm into channel col
    labels, parts = residual_parts(model, cache, layer, spike_pos)
    contrib = channel_contributions(model, parts, layer, col, expert)
    total = {k: contrib[k].sum() + contrib[f"{k}_const"] for k in ("gate", "up") if k in contrib}  # pre-activations
    pre = pre_all[spike_pos]  # measured: the gate's (the input's if not gated)
    error = float((total.get("gate", total["up"]) - pre).abs() / pre.abs().clamp_min(1e-6))
    drivers = pd.DataFrame(labels)
    for k in ("gate", "up"):
        drivers[k] = contrib[k].tolist() if k in contrib else float("nan")
    # effect: the change of the input channel's activation if this part alone were removed (norm scale held)
    hidden = hidden_all[spike_pos]
    if "gate" in total:
        without = model.mlp_activation(total["gate"] - contrib["gate"]) * (total["up"] - contrib["up"])
    else:
        without = model.mlp_activation(total["up"] - contrib["up"])
    drivers["effect"] = (hidden - without).tolist()
    drivers["attends_to"] = _attended_tokens(cache, labels, spike_pos, tokens)

    # readers: attention mass on the spike positions from the positions after them
    after = slice(max(spikes) + 1, len(tokens)) if max(spikes) + 1 < len(tokens) else slice(0, len(tokens))
    reader_rows = []
    for l in later:
        mass = cache[hn.attn_pattern(l)][0][:, after][..., spikes].sum(-1).mean(-1).float()  # [head]
        mass_z = zeroed[hn.attn_pattern(l)][0][:, after][..., spikes].sum(-1).mean(-1).float()
        reader_rows += [{"layer": l, "head": h, "intact": float(mass[h]), "zeroed": float(mass_z[h])} for h in range(len(mass))]
    readers = pd.DataFrame(reader_rows, columns=["layer", "head", "intact", "zeroed"])
    readers["change"] = readers["zeroed"] - readers["intact"]

    return TraceResult(
        config=config, model_id=model.name, fingerprint=model.fingerprint(),
        tensors={"parts_gate": contrib.get("gate", contrib["up"]).cpu().clone(), "parts_up": contrib["up"].cpu().clone()},
        tables={"tokens": token_table, "drivers": drivers, "readers": readers},
        meta={"spike_position": spike_pos, "spike_token": tokens[spike_pos], "spike_value": float(act[spike_pos]),
              "zeroed_value": float(zeroed[hn.mlp_out(layer)][0, spike_pos, row]), "spike_positions": spikes,
              "input_value": float(hidden), "decomposition_error": error, "n_layers": n_layers,
              "routing_weight": float(weight_input[spike_pos] / hidden) if expert >= 0 and float(hidden) else None},
    )


def _attended_tokens(cache, labels: list[dict], pos: int, tokens: list[str]) -> list[str]:
    """For head parts: the token that head attends to most from ``pos``, with its attention weight
    (where the head's contribution comes from); empty for other parts."""
    out = []
    for label in labels:
        if label["kind"] != "head":
            out.append("")
            continue
        row = cache[hn.attn_pattern(label["layer"])][0, label["head"], pos]  # [key_pos]
        k = int(row.argmax())
        out.append(f"{tokens[k]!r} @{k} ({float(row[k]):.2f})")
    return out


ANALYSIS = Analysis(
    name="super_weight_trace",
    description="One super weight on one prompt: the heads and tokens that drive its super activation, and the "
                "later heads whose attention sinks on it",
    config_cls=TraceConfig,
    result_cls=TraceResult,
    compute=compute,
    needs=("residual", "head_writes", "pattern", "mlp_read", "mlp_in", "mlp_write", "experts", "uniform_attention"),
    in_report=True,  # the strongest super weight on the default prompt: under a second once detection is cached
    prepare=prepare,
)
