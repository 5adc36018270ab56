"""Super experts: the few experts of a mixture-of-experts model whose removal destroys it, the super
weights inside them, and what the router does (Su et al. 2025, "Super Experts", arXiv 2507.23279).

In a mixture of experts no single ``W_out`` exists: each layer's write is a routed sum over experts.
``HookedModel.expert_writes`` splits it exactly (the parts sum to the measured write), so:

1. One forward pass over the detection prompts: for every (layer, expert), the largest |write| it
   makes into one residual channel (position, channel), its share of the layer's write there, and
   router statistics (fraction of tokens routed to it, mean routing weight).
2. An expert *spikes* when its largest write is at least ``out_factor`` times the median expert's of
   its layer (the super-weight spike rule, applied across experts). Inside a spiking expert, the
   super-weight candidate is ``W_out[e, k, j]`` with k the hidden channel contributing most to the
   spike, as in the dense scan.
3. The ``n_ablate`` experts with the largest writes (spiking ones first) are removed one at a time
   (their ``W_out`` zeroed, so the router still picks them but they write nothing) and the KL of the
   next-token predictions on the evaluation text is measured, with the residual stream's largest
   |value| in the spike channel. ``super expert``: a spiking expert whose removal costs at least
   ``min_effect_share`` of the strongest removal's KL; the others are ``ordinary``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from ..._progress import progress
from ...corpus import evaluate
from ...errors import UnsupportedModelError
from ...models import hook_names as hn
from ...results import Result
from ...engine.registry import Analysis
from .detect import DEFAULT_PROMPTS
from .evaluate import check_prompts, eval_windows, with_prompts_and_digest
from .scan import StreamingRecorder
from ...models.contract import HookedSource


@dataclass(frozen=True)
class SuperExpertConfig:
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # detection prompts (one batched forward pass)
    out_factor: float = 10.0  # spike: an expert's largest |write| >= out_factor x its layer's median expert's
    n_ablate: int = 16  # experts removed one at a time (largest writes first) to measure their effect
    min_effect_share: float = 0.05  # "super expert": removal KL >= this share of the strongest removal's
    eval_file: str | None = None  # text for ablation effects (None: the shipped evaluation corpus)
    eval_digest: str = ""  # content hash of that text (filled in before the cache key, so the cache follows edits)
    eval_windows: int = 6
    window: int = 64
    batch_size: int = 8


@dataclass(frozen=True)
class SuperExpertResult(Result):
    """Tables: ``experts`` (one row per layer x expert: largest write, its channel and position, share,
    router load and mean weight, spike, removal effect, role, the top weight inside it), ``layers``
    (per layer: largest residual |value| intact)."""

    analysis = "super_experts"
    title = "Super experts"
    config_cls = SuperExpertConfig

    @property
    def experts(self) -> pd.DataFrame:
        return self.to_frame("experts")

    @property
    def super_experts(self) -> pd.DataFrame:
        table = self.experts
        return table[table["role"] == "super expert"].reset_index(drop=True)

    def summary(self) -> list[tuple[str, str]]:
        se = self.super_experts
        meta = self.meta
        return [
            ("model", self.model_id),
            ("experts", f"{meta['n_experts']} per layer, top-{meta['top_k']}, {meta['n_layers']} layers"),
            ("super experts", ", ".join(f"L{r.layer}E{r.expert} (KL {r.kl:.3g}; weight [{r.row}, {r.col}])"
                                        for r in se.itertuples()) or "none"),
            ("largest residual activation", f"{meta['resid_max']:.4g} in channel {meta['resid_channel']} "
                                            f"after layer {meta['resid_layer']}"),
            ("decomposition error", f"{meta['decomposition_error']:.2e} (experts' writes vs measured MoE write)"),
        ]


def _expert_stats(model, ids, mask) -> tuple[list[dict], float]:
    """One pass: per (layer, expert) largest write and router statistics; the decomposition error."""
    moe_layers = model.facts.moe_layers  # dense layers between them (Llama 4, Qwen3-MoE's mlp_only_layers) have no experts
    names = [n for l in moe_layers for n in (hn.mlp_in(l), hn.mlp_out(l))]
    _, acts = model.run_with_cache(ids, names=names)
    real = mask.bool()
    rows, errors = [], []
    for layer in moe_layers:
        x, measured = acts[hn.mlp_in(layer)][real], acts[hn.mlp_out(layer)][real].float()  # [token, d]
        per_expert, shared, routing, hidden = model.expert_writes(layer, x)
        errors.append(float((per_expert.sum(1) + shared - measured).norm() / measured.norm().clamp_min(1e-30)))
        W_out = model.expert_weights(layer).W_out
        positions = real.nonzero()  # [token, 2] (batch, pos) of each real token
        for e in range(per_expert.shape[1]):
            a = per_expert[:, e].abs()  # [token, d_model]
            value, flat = a.flatten().max(0)
            t, j = divmod(int(flat), a.shape[1])
            contrib = routing[t, e] * hidden[t, e] * W_out[e, :, j].float()  # [d_ff]: each hidden channel's part
            k = int(contrib.abs().argmax())
            rows.append({
                "layer": layer, "expert": e, "max_write": float(value), "row": j, "col": k,
                "weight": float(W_out[e, k, j]), "weight_share": float(contrib[k].abs() / value.clamp_min(1e-30)),
                "write_share": float(value / measured[t, j].abs().clamp_min(1e-30)),
                "batch": int(positions[t, 0]), "position": int(positions[t, 1]),
                "load": float((routing[:, e] > 0).float().mean()), "mean_weight": float(routing[:, e].mean()),
            })
    return rows, max(errors)


def compute(model: HookedSource, config: SuperExpertConfig) -> SuperExpertResult:
    if model.facts.mlp != "moe":
        raise UnsupportedModelError(f"{model.name} has {model.facts.mlp} MLPs, not a mixture of experts; "
                                    "use wb.super_weights(model) instead")
    prompts = check_prompts(config.prompts)
    model.require_finite_weights()
    fingerprint = model.fingerprint()
    ids, mask = model.to_tokens_batch(list(prompts))
    with torch.no_grad():
        rows, error = _expert_stats(model, ids, mask)
    table = pd.DataFrame(rows)
    median = table.groupby("layer")["max_write"].transform("median")
    table["ratio"] = table["max_write"] / median.clip(lower=1e-12)
    table["spike"] = table["ratio"] >= config.out_factor

    windows = eval_windows(model, config.eval_file, config.eval_windows, config.window)
    intact_rec = StreamingRecorder(model, mlp=False)
    with torch.no_grad():
        intact, _, reference = evaluate(model, windows, batch_size=config.batch_size, recorder=intact_rec, keep=True)
    resid = intact_rec.stats().resid  # [L + 1, d_model]
    order = table.sort_values(["spike", "max_write"], ascending=False).index[: config.n_ablate]
    table["kl"], table["delta_loss"], table["resid_without"] = float("nan"), float("nan"), float("nan")
    for i in progress(order, desc="removing experts"):
        layer, expert, row = (int(table.at[i, c]) for c in ("layer", "expert", "row"))
        w = model.expert_weights(layer)
        removed = [w.W_out] + ([w.b_out] if w.b_out is not None else [])  # an expert's bias is its write too
        rec = StreamingRecorder(model, mlp=False)
        with model.restoring(*removed), torch.no_grad():
            for t in removed:
                t[expert] = 0.0
            loss, kl, _ = evaluate(model, windows, batch_size=config.batch_size, recorder=rec, reference=reference)
        table.at[i, "kl"], table.at[i, "delta_loss"] = kl, loss - intact
        table.at[i, "resid_without"] = float(rec.stats().resid[1:, row].max())
    table["resid_intact"] = [float(resid[1:, r].max()) for r in table["row"]]
    top = table["kl"].max(skipna=True) if table["kl"].notna().any() else 0.0
    strong = table["spike"] & (table["kl"] >= config.min_effect_share * top)
    table["role"] = ["super expert" if s else "ordinary" for s in strong]
    layer, channel = divmod(int(resid[1:].argmax()), resid.shape[1])
    return SuperExpertResult(
        config=config, model_id=model.name, fingerprint=fingerprint,
        tensors={"resid_intact": resid},
        tables={"experts": table, "layers": pd.DataFrame({"layer": range(model.facts.n_layers),
                                                          "resid_max": resid[1:].amax(-1).tolist()})},
        meta={"n_experts": model.facts.n_experts, "top_k": model.facts.experts_per_token,
              "n_layers": model.facts.n_layers, "intact_loss": intact, "decomposition_error": error,
              "resid_max": float(resid[1:].max()), "resid_layer": layer, "resid_channel": channel},
    )


ANALYSIS = Analysis(
    name="super_experts",
    description="Mixture-of-experts models: the experts whose removal destroys the model, the super weights "
                "inside them, and router statistics (Su et al. 2025)",
    config_cls=SuperExpertConfig,
    result_cls=SuperExpertResult,
    compute=compute,
    needs=("residual", "mlp_read", "experts"),
    in_report=False,
    prepare=with_prompts_and_digest,
)
