"""Super-weight detection: streaming spike scan, iterative rounds, ablation effects, super activations.

Method (Yu et al. 2024, see docs/references.md, "Super weights"), as done here:

1. One forward pass over the detection prompts with streaming hooks (:mod:`.scan`).
   A layer *spikes* when the largest channel maximum of its MLP output Y is at least
   ``out_factor`` times the median channel maximum of that layer (a rule relative to
   the layer's own channels, so it transfers across models and needs no other layers);
   optionally (``in_factor`` > 1) the MLP input X (the input of ``W_out``) must spike
   likewise. On SmolLM2 the output ratio is 4-12 in ordinary layers and 38-500 in the
   spiking ones (1, 2, 8-11, 28, 29), whose inputs spike too (ratios 56-6,900), so the
   default leaves the input rule optional: a large weight fed by an ordinary input counts.
2. In a spiking layer the output spike sits at (position p, channel j); the candidate
   weight is ``W_out[k, j]`` (TransformerLens layout; HF ``down_proj.weight[j, k]``)
   with k the input channel contributing most to that spike, ``argmax_k |X[p,k] W_out[k,j]|``
   (with one dominant input spike this is the paper's "channel of the input spike").
   It must explain at least ``min_share`` of the spike.
3. Iterate: zero every candidate found so far and scan again, until a round finds
   nothing new or ``max_rounds`` scans were made. All edits are undone afterwards.
4. Each candidate is zeroed alone on the intact model and the mean next-token loss
   on the evaluation text is measured, with the mean KL divergence of the predictions
   from the intact model's, and the residual stream's
   max |value| in its output channel after every layer (the super activation).
   Random weights of the same matrices are zeroed as controls.
5. Massive activations are reported whatever the weights say: the residual stream's largest |value|
   on the evaluation text, its channel, and the layer where it builds up (first reaches half its
   peak). With no candidate at all, the best one (the layer whose output stands out most, and the
   weight contributing most there) is measured anyway, so the table says what the best single
   weight does instead of being empty. In sandwich-norm families the MLP's output norm gain of a
   spike channel is what turns it into a spike (Gemma 3): those gains are zeroed and measured too
   (table ``norm_gains``).
6. Roles: the ablation effect is the mean KL(intact || ablated) of the next-token
   predictions over the evaluation text (it is positive, and unlike the loss change it
   also shows damage in an untrained model). ``super weight`` when the effect is at
   least ``min_effect_share`` of the strongest candidate's and at least ``min_vs_random``
   times that of random weights of the same matrix; otherwise ``paired spike`` when another
   weak candidate writes the same channel within two layers (late-layer pairs that
   cancel the super activation), else ``minor``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from ..._progress import progress
from ...errors import InputError
from ...results import Result
from ...types import CandidateTraces, ResidualMax, ScanCurve
from ...engine.registry import Analysis
from ...corpus import evaluate
from .evaluate import check_prompts, eval_windows, scaled, with_prompts_and_digest
from .published import compare_published
from .scan import ScanStats, StreamingRecorder, require_mlp_hooks, spiking_layers
from ...models.contract import HookedSource

DEFAULT_PROMPTS = (
    "Apple Inc. is a worldwide tech company.",
    "Summer is hot. Winter is",
    "The quick brown fox jumps over the lazy dog.",
    "My grandmother kept bees in the garden behind her house.",
)
ROLES = ("super weight", "paired spike", "minor")


@dataclass(frozen=True)
class SuperWeightConfig:
    prompts: tuple[str, ...] = DEFAULT_PROMPTS  # detection prompts: one batched forward pass per round
    out_factor: float = 30.0  # spike: top channel max |Y| >= out_factor x the layer's median channel max
    in_factor: float = 1.0  # the same for the input X (1 = not required; 50 = the paper's two-sided rule)
    min_share: float = 0.2  # a candidate must explain >= this fraction of its layer's output spike
    max_rounds: int = 6  # iterative search: at most this many scans (zero found weights, scan again)
    eval_file: str | None = None  # text for ablation effects (None: the shipped data/eval_corpus.txt)
    eval_digest: str = ""  # content hash of that text (filled in before the cache key, so the cache follows edits)
    eval_windows: int = 6  # windows of the evaluation text used to measure loss changes
    window: int = 64  # tokens per window (BOS included)
    n_random: int = 1  # random weights zeroed (one at a time) per candidate matrix, as controls
    min_effect_share: float = 0.05  # "super weight": its ablation KL is >= this fraction of the strongest candidate's ...
    min_vs_random: float = 100.0  # ... and >= this many times the random controls' KL in its matrix
    batch_size: int = 8  # windows per forward pass
    seed: int = 0  # picks the random control weights


@dataclass(frozen=True)
class SuperWeightResult(Result):
    """Tables: ``candidates`` (one row per candidate weight, main), ``layers`` (one row per
    scan round x layer: spike statistics), ``controls`` (random weights zeroed as controls),
    ``super_activation`` (one row per candidate x layer: max |residual| in the candidate's
    row channel after that layer, intact / with it zeroed / with all super weights zeroed;
    after_layer -1 = the embeddings).

    Tensors: ``in_max`` / ``out_max`` / ``in_ratio`` / ``out_ratio`` [round, layer];
    ``resid_intact`` [layer + 1, d_model]: max |residual| per channel on the evaluation
    windows (index 0 = embeddings, i = after layer i - 1); ``resid_ablated`` [candidate,
    layer + 1]: the same in the candidate's row channel with the candidate zeroed;
    ``resid_without_super`` [layer + 1, d_model]: with every super weight zeroed.
    Coordinates: ``row`` = output channel j, ``col`` = input channel k, i.e. HF
    ``down_proj.weight[row, col]`` and TransformerLens ``W_out[layer, col, row]``.
    """

    analysis = "super_weights"
    title = "Super weights"
    config_cls = SuperWeightConfig

    # --------------------------------------------------------------- contents
    @property
    def candidates(self) -> pd.DataFrame:
        """One row per candidate weight (a copy)."""
        return self.to_frame("candidates")

    @property
    def controls(self) -> pd.DataFrame:
        """Random weights zeroed as controls (a copy)."""
        return self.to_frame("controls")

    @property
    def in_max(self) -> ScanCurve:
        """Per scan round and layer: the largest |MLP input| (the input of ``W_out``)."""
        return self.tensors["in_max"]

    @property
    def out_max(self) -> ScanCurve:
        """Per scan round and layer: the largest |MLP output|."""
        return self.tensors["out_max"]

    @property
    def resid_intact(self) -> ResidualMax:
        """Max |residual| per channel on the evaluation windows (stage 0 = embeddings, i = after layer i - 1)."""
        return self.tensors["resid_intact"]

    @property
    def resid_ablated(self) -> CandidateTraces:
        """Max |residual| in each candidate's row channel with that candidate zeroed."""
        return self.tensors["resid_ablated"]

    @property
    def resid_without_super(self) -> ResidualMax:
        """Max |residual| per channel with every super weight zeroed."""
        return self.tensors["resid_without_super"]

    @property
    def rounds(self) -> int:
        """Scan rounds made."""
        return int(self.meta["rounds"])

    @property
    def intact_loss(self) -> float:
        return float(self.meta["intact_loss"])

    @property
    def loss_without_super(self) -> float | None:
        """The loss with every super weight zeroed (None without super weights)."""
        value = self.meta.get("loss_without_super")
        return None if value is None else float(value)

    @property
    def eval_tokens(self) -> int:
        return int(self.meta["eval_tokens"])

    @property
    def massive(self) -> dict[str, Any] | None:
        """The residual stream's largest activation: value, channel, layer, ratio, builds_up_at."""
        return self.meta.get("massive")

    @property
    def published(self) -> pd.DataFrame | None:
        """This scan against the published super-weight index (None for a model not in it)."""
        rows = self.meta.get("published")
        return None if not rows else pd.DataFrame(rows)

    @property
    def super_weights(self) -> pd.DataFrame:
        """Only the candidates whose removal hurts the model."""
        table = self.candidates
        return table[table["role"] == "super weight"].reset_index(drop=True)

    @property
    def spiked(self) -> bool:
        """Whether any layer's output spiked (otherwise the table holds only the best weight, measured anyway)."""
        table = self.candidates
        return bool(len(table)) and not table.get("below_threshold", pd.Series(False, index=table.index)).all()

    def coordinates(self, role: str | None = "super weight") -> tuple[tuple[int, int, int], ...]:
        """(layer, row, col) of the candidates with ``role`` (``None``: all candidates)."""
        table = self.candidates
        if role is not None:
            table = table[table["role"] == role]
        return tuple((int(r.layer), int(r.row), int(r.col)) for r in table.itertuples())

    def trace(self, index: int) -> tuple[Tensor, Tensor]:
        """Super-activation trace of candidate ``index``: (intact, with it zeroed), each [layer + 1]."""
        row = int(self.candidates["row"].iloc[index])
        return self.resid_intact[:, row], self.resid_ablated[index]

    def _no_super_weight(self) -> str:
        """Plainly, when no single weight is load-bearing: the massive activation and the best weight's effect."""
        m = self.massive
        text = "none"
        if m:
            text += (f"; the residual stream's largest activation is {m['value']:.4g} in channel {m['channel']} "
                     f"after layer {m['layer']} ({m['ratio']:.3g}x the typical channel; it builds up at layer "
                     f"{m['builds_up_at']})")
        best = self.candidates.sort_values("kl", ascending=False).head(1)
        for r in best.itertuples():
            text += f"; the best single weight, layer {r.layer} [{r.row}, {r.col}], costs {r.delta_loss:+.3g} nats when zeroed"
        gains = self.tables.get("norm_gains")
        if gains is not None and len(gains):
            g = gains.sort_values("kl", ascending=False).iloc[0]
            text += (f"; the MLP output norm gain of layer {int(g.layer)} channel {int(g.channel)} ({g.gain:.3g}) "
                     f"costs {g.delta_loss:+.3g} nats when zeroed")
        return text

    def compare_published(self, name: str | None = None) -> pd.DataFrame | None:
        """This scan's super weights against the published index for ``name`` (default: the model's id)."""
        return compare_published(name or self.model_id, self.coordinates())

    def summary(self) -> list[tuple[str, str]]:
        sw = self.super_weights
        without = self.loss_without_super
        lines = [
            ("model", self.model_id),
            ("candidates", f"{len(self.candidates)} in {self.rounds} scan round(s); {len(sw)} super weight(s)"),
            ("super weights", ", ".join(f"layer {r.layer} [{r.row}, {r.col}] ({r.delta_loss:+.3f})" for r in sw.itertuples())
             or self._no_super_weight()),
            ("eval loss", f"{self.intact_loss:.4f} intact"
             + (f", {without:.4f} without all super weights" if without is not None else "")
             + f" ({self.eval_tokens} tokens)"),
        ]
        published = self.published
        if published is not None:
            hits = int((published["found"] & published["published"]).sum())
            lines.append(("published index", f"{hits} of {int(published['published'].sum())} published super weights found"))
        return lines


# ------------------------------------------------------------------ detection
def _candidate(stats: ScanStats, layer: int) -> dict:
    """The weight behind ``layer``'s output spike, with what the scan saw of it."""
    b, p, j = stats.out_spike[layer].tolist()
    return {"layer": layer, "row": j, "col": int(stats.top_col[layer]), "batch": b, "position": p,
            "in_value": float(stats.top_input[layer]), "in_max": float(stats.in_max[layer]),
            "in_channel": int(stats.in_spike[layer, 2]), "out_value": float(stats.out_value[layer]),
            "out_max": float(stats.out_max[layer]), "share": float(stats.share[layer])}


def _candidates_of_round(stats: ScanStats, config: SuperWeightConfig, found: set) -> list[dict]:
    spikes = spiking_layers(stats, config.in_factor, config.out_factor) & (stats.share >= config.min_share)
    new = []
    for layer in torch.nonzero(spikes).flatten().tolist():
        cand = _candidate(stats, layer)
        if (layer, cand["row"], cand["col"]) in found or stats.top_contribution[layer] == 0:  # zeroed: not again
            continue
        new.append(cand)
    return new


def _best_candidate(stats: ScanStats) -> list[dict]:
    """The weight behind the layer whose output stands out most, spike rule or not (when nothing passed it)."""
    layer = int(stats.out_ratio.argmax())
    return [] if stats.top_contribution[layer] == 0 else [_candidate(stats, layer)]


def iterative_scan(model, prompts: tuple[str, ...], config: SuperWeightConfig) -> tuple[list[dict], list[ScanStats]]:
    """Rounds of (scan, zero the new candidates) until nothing new; the model is restored afterwards."""
    ids, mask = model.to_tokens_batch(list(prompts))
    candidates: list[dict] = []
    rounds: list[ScanStats] = []
    found: set[Any] = set()
    guarded: set[Any] = set()
    with ExitStack() as stack, torch.no_grad():
        for round_ in progress(range(config.max_rounds), desc="super-weight scan rounds"):
            recorder = StreamingRecorder(model, resid=False)
            recorder.run(ids, mask)
            stats = recorder.stats()
            rounds.append(stats)
            new = _candidates_of_round(stats, config, found)
            fallback = not new and round_ == 0  # nothing passed the spike rule: measure the best weight anyway
            if fallback:
                new = [dict(c, below_threshold=True) for c in _best_candidate(stats)]
            if not new:
                break
            for cand in new:
                W_out = model.mlp_weights(cand["layer"]).W_out  # [d_mlp, d_model], a view of the parameter
                if cand["layer"] not in guarded:
                    stack.enter_context(model.restoring(W_out))
                    guarded.add(cand["layer"])
                cand["weight"] = float(W_out[cand["col"], cand["row"]])
                cand["round"] = round_
                cand["token"] = model.tokenizer.decode([int(ids[cand["batch"], cand["position"]])])
                W_out[cand["col"], cand["row"]] = 0.0
                found.add((cand["layer"], cand["row"], cand["col"]))
            candidates += new
            if fallback:
                break
    return candidates, rounds


def _weight_rank(W: Float[Tensor, "d_mlp d_model"], value: float) -> int:
    """1 = the largest |w| in its matrix."""
    return int((W.abs() > abs(value)).sum().item()) + 1


def _zeroed(model, coords, windows, config, reference, recorder=None) -> tuple[float, float]:
    """(eval loss, KL from the intact predictions) with every (layer, row, col) in ``coords`` zeroed; restored on return."""
    with scaled(model, coords, 0.0):
        loss, kl, _ = evaluate(model, windows, batch_size=config.batch_size, recorder=recorder, reference=reference)
    return loss, kl


def _random_controls(model, candidates: list[dict], config: SuperWeightConfig) -> list[tuple[int, int, int]]:
    gen = torch.Generator().manual_seed(config.seed)
    taken = {(c["layer"], c["row"], c["col"]) for c in candidates}
    d_mlp, d_model = model.facts.d_mlp, model.facts.d_model
    out = []
    for layer in sorted({c["layer"] for c in candidates}):
        picked = 0
        while picked < config.n_random:
            col, row = divmod(int(torch.randint(0, d_mlp * d_model, (1,), generator=gen)), d_model)
            if (layer, row, col) not in taken:
                out.append((layer, row, col))
                taken.add((layer, row, col))
                picked += 1
    return out


def _roles(candidates: list[dict], config: SuperWeightConfig) -> list[str]:
    if any(c.get("below_threshold") for c in candidates):  # measured, but no layer's output spiked
        return ["best candidate (no spike)"] * len(candidates)
    top = max((c["kl"] for c in candidates), default=0.0)
    strong = [c["kl"] >= config.min_effect_share * top and not c["effect_vs_random"] < config.min_vs_random  # NaN: no controls
              for c in candidates]
    roles = []
    for i, c in enumerate(candidates):
        if strong[i]:
            roles.append("super weight")
        elif any(not strong[o] and o != i and d["row"] == c["row"] and abs(d["layer"] - c["layer"]) <= 2
                 for o, d in enumerate(candidates)):
            roles.append("paired spike")
        else:
            roles.append("minor")
    return roles


def massive_activation(resid: Float[Tensor, "Lp1 d_model"]) -> dict:
    """The residual stream's largest |value| (after any layer), its channel, where it builds up (the first
    layer after which that channel reaches half its peak) and how far it stands above the typical channel."""
    after = resid[1:]  # [L, d_model]: after each layer
    layer, channel = divmod(int(after.argmax()), after.shape[1])
    peak = float(after[layer, channel])
    builds = int((after[:, channel] >= 0.5 * peak).nonzero()[0])
    typical = float(after[layer].median())
    return {"value": peak, "channel": channel, "layer": layer, "builds_up_at": builds,
            "ratio": peak / max(typical, 1e-12)}


def _norm_gain_effects(model, stats: ScanStats, config, windows, reference, intact) -> pd.DataFrame:
    """Sandwich-norm families: the MLP output norm's gain in each spiking layer's spike channel, zeroed and measured.
    That gain multiplies the channel's whole write, so it can make a spike no single weight of W_out makes."""
    columns = ["layer", "channel", "gain", "gain_rank", "delta_loss", "kl"]
    if not model.facts.post_norms:
        return pd.DataFrame(columns=columns)
    spikes = spiking_layers(stats, config.in_factor, config.out_factor)
    layers = torch.nonzero(spikes).flatten().tolist() or [int(stats.out_ratio.argmax())]
    rows = []
    for layer in layers:
        channel = int(stats.out_spike[layer, 2])
        stored = model.norm_weight(layer, "mlp", post=True)
        gain = stored + model.facts.gain_offset
        with model.restoring(stored), torch.no_grad():
            stored[channel] = -model.facts.gain_offset  # effective gain 0: the channel's write is gone
            loss, kl, _ = evaluate(model, windows, batch_size=config.batch_size, reference=reference)
        rows.append({"layer": layer, "channel": channel, "gain": float(gain[channel]),
                     "gain_rank": int((gain.abs() > gain[channel].abs()).sum()) + 1, "delta_loss": loss - intact, "kl": kl})
    return pd.DataFrame(rows, columns=columns)


def _validate(config: SuperWeightConfig) -> None:
    checks = [("max_rounds", config.max_rounds >= 1), ("eval_windows", config.eval_windows >= 1),
              ("batch_size", config.batch_size >= 1), ("n_random", config.n_random >= 0),
              ("out_factor", config.out_factor > 0), ("in_factor", config.in_factor > 0),
              ("min_share", 0 <= config.min_share <= 1), ("min_effect_share", 0 <= config.min_effect_share <= 1)]
    bad = [name for name, ok in checks if not ok]
    if bad:
        raise InputError(f"invalid super-weight option(s) {bad}: rounds, windows and batch size must be >= 1, "
                         "factors positive, shares within [0, 1] (see SuperWeightConfig)")


def compute(model: HookedSource, config: SuperWeightConfig) -> SuperWeightResult:
    _validate(config)
    prompts = check_prompts(config.prompts)
    require_mlp_hooks(model)
    model.require_finite_weights()
    fingerprint = model.fingerprint()
    candidates, rounds = iterative_scan(model, prompts, config)

    windows = eval_windows(model, config.eval_file, config.eval_windows, config.window)  # [n, window]
    intact_rec = StreamingRecorder(model, mlp=False)
    intact, _, reference = evaluate(model, windows, batch_size=config.batch_size, recorder=intact_rec, keep=True)
    resid_intact = intact_rec.stats().resid  # [L + 1, d_model]
    resid_ablated = torch.zeros(len(candidates), model.facts.n_layers + 1)
    for i, cand in enumerate(progress(candidates, desc="ablating candidates")):
        rec = StreamingRecorder(model, mlp=False)
        loss, cand["kl"] = _zeroed(model, [(cand["layer"], cand["row"], cand["col"])], windows, config, reference, rec)
        cand["delta_loss"] = loss - intact
        resid_ablated[i] = rec.stats().resid[:, cand["row"]]
        cand["weight_rank"] = _weight_rank(model.mlp_weights(cand["layer"]).W_out, cand["weight"])

    controls = []
    for layer, row, col in progress(_random_controls(model, candidates, config), desc="random controls"):
        weight = float(model.mlp_weights(layer).W_out[col, row])
        loss, kl = _zeroed(model, [(layer, row, col)], windows, config, reference)
        controls.append({"layer": layer, "row": row, "col": col, "weight": weight, "delta_loss": loss - intact, "kl": kl})
    control_max: dict[int, float] = {}
    for c in controls:
        control_max[c["layer"]] = max(control_max.get(c["layer"], 0.0), c["kl"])
    for cand in candidates:
        base = control_max.get(cand["layer"])
        cand["effect_vs_random"] = float("nan") if base is None else cand["kl"] / max(base, 1e-12)
    for cand, role in zip(candidates, _roles(candidates, config)):
        cand["role"] = role

    gains = _norm_gain_effects(model, rounds[0], config, windows, reference, intact)
    supers = [(c["layer"], c["row"], c["col"]) for c in candidates if c["role"] == "super weight"]
    resid_without = resid_intact.clone()
    loss_without = None
    if supers:
        rec = StreamingRecorder(model, mlp=False)
        loss_without, _ = _zeroed(model, supers, windows, config, reference, rec)
        resid_without = rec.stats().resid

    columns = ["layer", "row", "col", "weight", "weight_rank", "in_value", "in_max", "in_channel", "out_value", "out_max",
               "share", "batch", "position", "token", "round", "delta_loss", "kl", "effect_vs_random", "role"]
    table = pd.DataFrame([{k: c[k] for k in columns} for c in candidates], columns=columns)
    table["below_threshold"] = [bool(c.get("below_threshold", False)) for c in candidates]
    if len(table):
        table = table.astype({"layer": "int64", "row": "int64", "col": "int64", "weight_rank": "int64", "in_channel": "int64",
                              "batch": "int64", "position": "int64", "round": "int64"})
    # Per-round layer statistics, each reduced once (the ratios take a median over every channel).
    per_round: dict[str, list[Tensor]] = {"in_max": [], "in_ratio": [], "out_max": [], "out_ratio": []}
    layer_rows = []
    for r, s in enumerate(rounds):
        for key in per_round:
            per_round[key].append(getattr(s, key))
        in_max, in_ratio, out_max, out_ratio = (per_round[key][-1] for key in per_round)
        spike = spiking_layers(s, config.in_factor, config.out_factor)
        layer_rows += [
            {"round": r, "layer": l, "in_max": float(in_max[l]), "in_ratio": float(in_ratio[l]),
             "in_channel": int(s.in_spike[l, 2]), "out_max": float(out_max[l]), "out_ratio": float(out_ratio[l]),
             "out_channel": int(s.out_spike[l, 2]), "out_position": int(s.out_spike[l, 1]), "spike": bool(spike[l])}
            for l in range(model.facts.n_layers)
        ]
    layers = pd.DataFrame(layer_rows)
    del reference  # the intact log-probs: the largest thing this analysis holds
    trace = pd.DataFrame([
        {"candidate": i, "layer": c["layer"], "row": c["row"], "col": c["col"], "after_layer": a - 1,
         "intact": float(resid_intact[a, c["row"]]), "zeroed": float(resid_ablated[i, a]),
         "without_all_super": float(resid_without[a, c["row"]])}
        for i, c in enumerate(candidates) for a in range(model.facts.n_layers + 1)
    ], columns=["candidate", "layer", "row", "col", "after_layer", "intact", "zeroed", "without_all_super"])
    control_table = pd.DataFrame(controls, columns=["layer", "row", "col", "weight", "delta_loss", "kl"])
    published = compare_published(model.name, supers)
    return SuperWeightResult(
        config=config, model_id=model.name, fingerprint=fingerprint,
        tensors={
            **{key: torch.stack(values) for key, values in per_round.items()},
            "resid_intact": resid_intact, "resid_ablated": resid_ablated, "resid_without_super": resid_without,
        },
        tables={"candidates": table, "layers": layers, "controls": control_table, "super_activation": trace,
                "norm_gains": gains},
        meta={
            "massive": massive_activation(resid_intact), "rounds": len(rounds), "intact_loss": intact, "loss_without_super": loss_without,
            "eval_tokens": int(windows.shape[0] * (windows.shape[1] - 1)), "n_layers": model.facts.n_layers,
            "published": None if published is None else published.to_dict("records"),
        },
    )


ANALYSIS = Analysis(
    name="super_weights",
    description="Single MLP down-projection weights that create huge activations; found by streaming spike scans, "
                "confirmed by ablation (Yu et al. 2024)",
    config_cls=SuperWeightConfig,
    result_cls=SuperWeightResult,
    compute=compute,
    needs=("residual", "mlp_write"),
    in_report=True,
    prepare=with_prompts_and_digest,
)
