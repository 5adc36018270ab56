"""``bilinear_replacement``: the supported route from a pretrained LM's MLP to bilinear eigen-analysis.

Neither gated MLPs (SwiGLU: W_out (silu(W_gate x) * (W_in x))) nor plain ones (W_out act(W_in x + b))
are bilinear, so their interaction matrices do not exist. We fit a bilinear layer  y ~ P ((W x) * (V x))
to one layer's MLP on the model's own activations (``mlp_in`` -> ``mlp_out`` hooks over the evaluation
corpus), then analyse that replacement. How the fit starts depends on the MLP:

- gated, from the gate/up weights (closed form, seconds): W = W_gate^T, V = W_in^T (silu(z) * u ~ a z * u);
  per hidden unit the least-squares scale a_o of z_o u_o onto silu(z_o) u_o gives P0 = W_out^T diag(a);
  then P is refit by ridge regression on the hidden activations, shrunk towards P0, with the ridge picked
  on a validation slice of the training tokens. Optional Adam steps then tune W, V and P together.
- plain (and mixtures of experts, replaced as a whole, with the width of the experts a token uses),
  fitted from activations: a plain MLP has one input projection and no second factor to start from,
  so W, V [d_mlp, d_model] are drawn at random (seeded), P is the ridge least-squares readout of those
  random bilinear features (a warm start: training then moves W, V from a fitted layer, not from
  noise), and the same Adam loop trains W, V, P. It runs on inputs and outputs scaled to unit rms, so
  one learning rate suits every model's activation scale.

The fit's target and the splice point are the MLP's own output (``HookedModel.own_output_name``): before
the output norm of sandwich-norm families (Gemma 2/3, OLMo 2) and a residual multiplier (Granite), which
then act on the replacement as they act on the MLP; elsewhere ``hook_mlp_out`` (``blocks.L.mlp.hook_out``
is not the output everywhere: BLOOM's MLP adds the residual inside it).

Fidelity, always on held-out windows: explained variance of the MLP output (next to a linear
regression baseline), and the model's next-token loss with the replacement spliced in, next to
the original loss and the MLP mean-ablated. The BOS position keeps its original MLP output
(its activations are outliers by orders of magnitude and would dominate any fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..._progress import progress
from ...corpus import mean_loss, token_windows
from ...errors import InputError
from ...models import hook_names as hn
from ...engine.registry import Analysis
from .layers import BilinearMLP, BilinearWeights
from .spectrum import (BilinearSpectrumResult, LayerView, SpectrumConfig, _homogeneous, analyse_layer,
                       with_direction_vectors)
from ...models.contract import HookedSource


@dataclass(frozen=True)
class ReplacementConfig:
    layer: int | None = None  # the block whose MLP is replaced (None: a fifth of the way in, layer 6 of 30)
    window: int = 128  # tokens per evaluation window (BOS included)
    max_windows: int = 32  # windows of the evaluation corpus, evenly spread (None: all)
    holdout: float = 0.25  # share of windows held out for every fidelity number
    ridges: tuple[float, ...] = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # candidates, relative to the mean hidden energy
    fit_steps: int | None = None  # Adam steps on W, V, P after the initial fit (None: 0 for gated MLPs, whose
    #                               closed form starts close; 1000 for plain ones, whose start is random features)
    lr: float | None = None  # Adam rate (None: 1e-4 gated, in the model's units; 1e-3 plain, in unit-rms units)
    d_hidden: int | None = None  # plain MLPs: hidden width of the fitted layer (None: the MLP's d_mlp)
    seed: int = 0  # plain MLPs: the random initialisation
    batch_windows: int = 8  # windows per forward pass
    directions: Any = "auto"  # "pca" (principal directions of the MLP's real output), "svd", "tokens", "vectors"
    tokens: tuple[str, ...] = ()  # token-logit directions through the unembedding
    vectors: tuple[tuple[float, ...], ...] = ()  # arbitrary d_model directions
    n_directions: int = 8
    n_top: int = 6  # top +/- eigenvectors kept per direction
    n_inputs: int = 48  # held-out token positions whose contributions are stored
    n_eval_inputs: int = 1024  # held-out token positions for the truncation curve
    method: str = "auto"  # eigendecomposition path
    float64: bool = True


@dataclass(frozen=True)
class BilinearReplacementResult(BilinearSpectrumResult):
    """A bilinear replacement of one MLP (gated or plain), its fidelity, and the eigen-analysis of the replacement.

    On top of :class:`BilinearSpectrumResult`: table ``fidelity`` (one row per measure), table ``fit``
    (per candidate ridge, on a validation slice of the training tokens: gated, the share of what the rescaled
    SwiGLU weights miss that the refit explains; plain, the share of the output the random features' readout
    explains), tensors ``W``, ``V`` [d_hidden, d_model], ``P`` [d_model, d_hidden] of the replacement
    (:meth:`replacement` rebuilds it), per-direction ``replacement_ev`` in ``directions``, and ``meta["init"]``:
    how the fit started ("from gate/up weights" or "fitted from activations, random init").
    """

    analysis = "bilinear_replacement"
    title = "Bilinear replacement of an MLP: eigenvectors"
    config_cls = ReplacementConfig

    @property
    def layer(self) -> int:
        """The replaced MLP's layer."""
        return int(self.meta["layer"])

    @property
    def approximation(self) -> dict[str, float]:
        """Fidelity: explained_variance, linear_ev, init_ev, loss_original / replaced / mean_ablated, loss_recovered."""
        return dict(self.meta["approximation"])

    @property
    def init(self) -> str:
        """How the fit started: "from gate/up weights" or "fitted from activations, random init" (results
        saved before plain MLPs were supported have no ``init`` and are all gated)."""
        return self.meta.get("init", GATED_INIT)

    def approximation_note(self) -> str:
        a = self.approximation
        return (f"bilinear replacement of layer {self.layer}: explains {a['explained_variance']:.1%} of the MLP output "
                f"variance; loss {a['loss_original']:.3f} → {a['loss_replaced']:.3f} (mean-ablated {a['loss_mean_ablated']:.3f})")

    def summary(self) -> list[tuple[str, str]]:
        a = self.approximation
        lines = [
            ("approximation", self.approximation_note()),
            ("fidelity", f"held-out EV {a['explained_variance']:.3f} (linear regression {a['linear_ev']:.3f}, "
                         f"{_START[self.init]} {a['init_ev']:.3f}); loss recovered " + (
                             f"{a['loss_recovered']:.1%}" if a["loss_recovered"] == a["loss_recovered"]
                             else "n/a (mean-ablating this MLP barely changes the loss)")),
        ]
        return lines + super().summary()

    def replacement(self) -> BilinearMLP:
        """The fitted replacement as a :class:`BilinearMLP` (d_model -> d_mlp -> d_model)."""
        return BilinearMLP.from_weights(self.tensors["W"], self.tensors["V"], self.tensors["P"],
                                        name=f"{self.model_id} layer {self.layer} replacement")


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the needed layer ran."""


def _collect(model, tokens: Tensor, layer: int, batch: int) -> tuple[Tensor, Tensor]:
    """mlp_in and mlp_out of ``layer`` for every window: [w, pos, d_model] each, stopping after the layer."""
    ins, outs = [], []

    def grab_in(act, hook):
        ins.append(act.detach())

    def grab_out(act, hook):
        outs.append(act.detach())
        raise _Stop

    with model.hooks([(hn.mlp_in(layer), grab_in), (model.own_output_name(layer, "mlp"), grab_out)]):
        for start in progress(range(0, len(tokens), batch), desc=f"layer {layer} MLP activations"):
            try:
                model(tokens[start:start + batch])
            except _Stop:
                pass
    return torch.cat(ins).float(), torch.cat(outs).float()


def _hidden(W: Tensor, V: Tensor, x: Tensor) -> Tensor:
    return (x @ W.mT) * (x @ V.mT)  # [n, h]


def _ev(y: Tensor, y_hat: Tensor, *, center: bool = True) -> float:
    """Explained variance: 1 - sum ||y - y_hat||^2 / sum ||y - mean y||^2 (mean 0 with ``center=False``)."""
    ref = y - y.mean(0) if center else y
    return float(1 - (y - y_hat).square().sum() / ref.square().sum().clamp_min(1e-30))


def _ridge(G: Tensor, R: Tensor, alphas: list[float]) -> list[Tensor]:
    """argmin_D ||R - G D||^2 + alpha ||D||^2 for each alpha (float64 Cholesky): D [h, d]."""
    G64 = G.double()
    gram = G64.mT @ G64  # [h, h]
    rhs = G64.mT @ R.double()  # [h, d]
    scale = gram.diagonal().mean()
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return [torch.cholesky_solve(rhs, torch.linalg.cholesky(gram + a * scale * eye)).float() for a in alphas]


GATED_INIT, PLAIN_INIT = "from gate/up weights", "fitted from activations, random init"
_START = {GATED_INIT: "rescaled SwiGLU weights only", PLAIN_INIT: "untrained start (random W, V; least-squares P)"}  # init_ev's layer
Layer = tuple[Tensor, Tensor, Tensor]  # W, V [h, d], P [d, h]


def fit_replacement(x_tr: Tensor, y_tr: Tensor, W_gate: Tensor, W_up: Tensor, W_out: Tensor,
                    config: ReplacementConfig) -> tuple[Tensor, Tensor, Tensor, Tensor, pd.DataFrame]:
    """Closed-form bilinear fit (see the module docstring): W, V [h, d], P and the unrefit P0 [d, h], the ridge table."""
    W, V = W_gate.mT.float(), W_up.mT.float()  # [h, d]
    z, u = x_tr @ W.mT, x_tr @ V.mT  # [n, h]
    target = torch.nn.functional.silu(z) * u
    G = z * u  # [n, h] the bilinear hidden activations
    P0 = W_out.mT.float() * (target * G).sum(0) / G.square().sum(0).clamp_min(1e-30)  # [d, h]
    D, table = ridge_select(G, y_tr - G @ P0.mT, config.ridges)  # fit what the rescaled SwiGLU weights miss
    return W, V, P0 + D.mT, P0, table


def fit_gated(x_tr: Tensor, y_tr: Tensor, mlp, config: ReplacementConfig) -> tuple[Layer, Layer, pd.DataFrame]:
    """A gated MLP's replacement: the closed form from its weights, then ``fit_steps`` (default 0) Adam steps.
    Returns the fitted layer, the starting layer whose fidelity is reported beside it (the rescaled SwiGLU
    weights, before the ridge refit), and the ridge table."""
    W, V, P, P0, table = fit_replacement(x_tr, y_tr, mlp.W_gate, mlp.W_in, mlp.W_out, config)
    fitted = _refine(W, V, P, x_tr, y_tr, config.fit_steps or 0, 1e-4 if config.lr is None else config.lr)
    return fitted, (W, V, P0), table


def fit_from_activations(x_tr: Tensor, y_tr: Tensor, d_hidden: int,
                         config: ReplacementConfig) -> tuple[Layer, Layer, pd.DataFrame]:
    """A bilinear layer of width ``d_hidden`` fitted to map ``x_tr`` to ``y_tr`` with no weights to start from
    (plain MLPs, or any planted map). Returns the fitted layer, its random start (least-squares P), the ridge table.

    Training runs on x and y scaled to unit rms per coordinate: W, V ~ N(0, 1/d) then give O(1) hidden
    activations whatever the model's activation scale, and one Adam rate moves every tensor by a similar
    relative step. The scales are folded back into W, V, P afterwards.
    """
    sx, sy = (t.square().mean().clamp_min(1e-30).rsqrt() for t in (x_tr, y_tr))
    x, y = x_tr * sx, y_tr * sy
    d = x.shape[1]
    g = torch.Generator().manual_seed(config.seed)
    W, V = (torch.randn(2, d_hidden, d, generator=g) / d ** 0.5).to(x.device)
    D, table = ridge_select(_hidden(W, V, x), y, config.ridges)  # the least-squares warm start
    steps = 1000 if config.fit_steps is None else config.fit_steps
    fitted = _refine(W, V, D.mT, x, y, steps, 1e-3 if config.lr is None else config.lr)
    unscale = lambda W, V, P: (W * sx, V * sx, P / sy)  # noqa: E731  (W sx) x = W (sx x); P / sy undoes y sy
    return unscale(*fitted), unscale(W, V, D.mT), table


def ridge_select(G: Tensor, R: Tensor, ridges: tuple[float, ...]) -> tuple[Tensor, pd.DataFrame]:
    """Ridge solution of R ~ G D with the ridge picked on the last fifth of the rows, then refit on all rows."""
    n_val = max(1, len(G) // 5)
    fits = _ridge(G[:-n_val], R[:-n_val], list(ridges))
    val = [_ev(R[-n_val:], G[-n_val:] @ D, center=False) for D in fits]
    best = ridges[max(range(len(ridges)), key=val.__getitem__)]
    table = pd.DataFrame({"ridge": ridges, "validation_ev": val, "chosen": [r == best for r in ridges]})
    return _ridge(G, R, [best])[0], table


def _refine(W, V, P, x, y, steps: int, lr: float) -> Layer:
    """``steps`` Adam steps on W, V, P together (mean squared error on minibatches of 2048 rows); the one
    training loop of both starts. With 0 steps the tensors come back as given."""
    if not steps:
        return W, V, P
    params = [t.clone().requires_grad_(True) for t in (W, V, P)]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    with torch.enable_grad():
        for _ in progress(range(steps), desc="fitting the replacement"):
            idx = torch.randint(0, len(x), (min(2048, len(x)),), generator=g).to(x.device)
            loss = ((_hidden(params[0], params[1], x[idx]) @ params[2].mT - y[idx]).square().mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tuple(p.detach() for p in params)


def _losses(model, tokens: Tensor, layer: int, batch: int, replace) -> float:
    """Mean next-token cross-entropy over ``tokens`` with ``replace(x_in, y_out)`` (or None) splicing the MLP output."""
    state: dict[str, Tensor] = {}

    def keep_in(act, hook):
        state["x"] = act

    def swap_out(act, hook):
        new = replace(state["x"], act).to(act.dtype).clone()
        new[:, 0] = act[:, 0]  # BOS keeps its original output
        return new

    hooks = [(hn.mlp_in(layer), keep_in), (model.own_output_name(layer, "mlp"), swap_out)] if replace else []
    with model.hooks(hooks):
        return mean_loss(model, tokens, batch_size=batch)


def _vocab(model) -> list[str]:
    """Every token as text. Byte-level BPE tokens are mapped back to their bytes and decoded (a split
    multi-byte character shows as U+FFFD); one call per vocabulary, not one decode per token."""
    from ...models.tiny import _byte_to_unicode

    to_byte = {ch: b for b, ch in _byte_to_unicode().items()}
    out = []
    for tok in model.tokenizer.convert_ids_to_tokens(list(range(model.facts.d_vocab))):
        tok = tok or ""
        if tok and all(ch in to_byte for ch in tok):
            out.append(bytes(to_byte[ch] for ch in tok).decode("utf-8", errors="replace"))
        else:
            out.append(tok.replace("▁", " "))  # sentencepiece-style, or a special token
    return out


def _principal(y: Tensor, unembed: Tensor, vocab: list[str], n: int) -> tuple[Tensor, list[str]]:
    """Top-n principal directions of the MLP's output [n, d], each signed so the token it promotes most wins."""
    yc = (y - y.mean(0)).double()
    evals, evecs = torch.linalg.eigh(yc.mT @ yc)  # ascending
    evals, evecs = evals.flip(0)[:n], evecs.flip(1)[:, :n]  # [n], [d, n]
    share = evals / (yc.square().sum())
    logits = evecs.mT.float() @ unembed  # [n, vocab]
    flip = logits.max(-1).values < -logits.min(-1).values
    evecs = evecs * torch.where(flip, -1.0, 1.0).to(evecs.dtype)
    logits = torch.where(flip[:, None], -logits, logits)
    names = [f"PC{i + 1} ({share[i]:.0%} of var, ↑{vocab[j]!r})" for i, j in enumerate(logits.argmax(-1).tolist())]
    return evecs.mT.float(), names


@torch.no_grad()
def compute_replacement(model: HookedSource, config: ReplacementConfig) -> BilinearReplacementResult:
    model.require_finite_weights()
    if not 0 < config.holdout < 1:
        raise InputError(f"holdout must lie in (0, 1), got {config.holdout}")
    gated = model.facts.mlp == "gated"  # mixtures of experts are fitted from activations, like plain MLPs
    if config.d_hidden is not None and (gated or config.d_hidden < 1):
        raise InputError(f"d_hidden must be a positive width, for plain MLPs only (a gated MLP's replacement keeps "
                         f"its d_mlp); got {config.d_hidden} for {'a gated' if gated else 'a plain'} MLP")
    chosen = model.facts.n_layers // 5 if config.layer is None else config.layer
    if not -model.facts.n_layers <= chosen < model.facts.n_layers:
        raise InputError(f"layer {chosen} out of range: {model.name} has {model.facts.n_layers} layers")
    layer = chosen % model.facts.n_layers
    mlp = model.mlp_weights(layer) if model.facts.mlp != "moe" else None
    tokens = token_windows(model, window=config.window, max_windows=config.max_windows)  # [w, pos]
    n_hold = max(1, round(len(tokens) * config.holdout))
    if len(tokens) - n_hold < 1:
        raise InputError(f"the evaluation text gives only {len(tokens)} window(s) of {config.window} tokens; "
                         "use a longer text or a smaller window")
    x, y = _collect(model, tokens, layer, config.batch_windows)  # [w, pos, d]
    first = 1 if model.default_prepend_bos else 0  # BOS activations are outliers: left out of every fit
    x_tr, y_tr = x[:-n_hold, first:].flatten(0, 1), y[:-n_hold, first:].flatten(0, 1)
    x_te, y_te = x[-n_hold:, first:].flatten(0, 1), y[-n_hold:, first:].flatten(0, 1)

    if gated:
        (W, V, P), start, fit_table = fit_gated(x_tr, y_tr, mlp, config)
    else:
        width = mlp.W_in.shape[1] if mlp is not None else model.facts.d_mlp * max(1, model.facts.experts_per_token)
        (W, V, P), start, fit_table = fit_from_activations(x_tr, y_tr, config.d_hidden or width, config)
    init = GATED_INIT if gated else PLAIN_INIT
    init_ev = _ev(y_te, _hidden(start[0], start[1], x_te) @ start[2].mT)  # where the fit started, before any training
    predict = lambda inp: _hidden(W, V, inp) @ P.mT  # noqa: E731
    y_hat = predict(x_te)
    lin, _ = ridge_select(_homogeneous(x_tr, True), y_tr, config.ridges)  # linear baseline with bias: [d + 1, d]
    mean_out = y_tr.mean(0)
    hold = tokens[-n_hold:]
    loss_orig = _losses(model, hold, layer, config.batch_windows, None)
    loss_rep = _losses(model, hold, layer, config.batch_windows, lambda xi, yo: predict(xi.float().flatten(0, 1)).reshape(yo.shape))
    loss_abl = _losses(model, hold, layer, config.batch_windows, lambda xi, yo: mean_out.expand(yo.shape))
    approximation = {
        "explained_variance": _ev(y_te, y_hat), "init_ev": init_ev, "linear_ev": _ev(y_te, _homogeneous(x_te, True) @ lin),
        "loss_original": loss_orig, "loss_replaced": loss_rep, "loss_mean_ablated": loss_abl,
        # undefined when mean-ablating the MLP hardly changes the loss (e.g. random tiny models)
        "loss_recovered": (loss_abl - loss_rep) / (loss_abl - loss_orig) if abs(loss_abl - loss_orig) > 1e-3 else float("nan"),
        "train_tokens": len(x_tr), "heldout_tokens": len(x_te),
    }

    vocab = _vocab(model)
    final_gain, mlp_gain = model.norm_gain(None), model.norm_gain(layer, "mlp")
    unembed = model.W_U.float() * (final_gain.float()[:, None] if final_gain is not None else 1)  # [d, vocab]
    embed = model.W_E.float() * (mlp_gain.float() if mlp_gain is not None else 1)  # [vocab, d]
    special_ids = sorted(set(model.tokenizer.all_special_ids) | set(getattr(model.tokenizer, "added_tokens_decoder", {})))
    special = torch.tensor([i for i in special_ids if i < model.facts.d_vocab], dtype=torch.long, device=unembed.device)
    unembed, embed = unembed.index_fill(1, special, 0.0), embed.index_fill(0, special, 0.0)  # readouts: text tokens only
    principal, names = _principal(y_tr, unembed, vocab, config.n_directions)
    pick = torch.linspace(0, len(x_te) - 1, min(config.n_eval_inputs, len(x_te))).round().long()
    flat_ids = tokens[-n_hold:, first:].flatten()
    pos_in_window = torch.arange(first, tokens.shape[1]).repeat(n_hold)
    labels = []
    for i in pick.tolist():  # the text up to and including the token, within its window
        start = i - min(int(pos_in_window[i]) - first, 8)
        labels.append(repr(model.decode(flat_ids[start:i + 1])))
    view = LayerView(
        "bilinear replacement", BilinearWeights(W, V, P, None, False), [f"d{i}" for i in range(W.shape[1])],
        x_te[pick.to(x_te.device)], labels, unembed=unembed, embed=embed, vocab=vocab,
        principal=principal, principal_names=names, extra_meta={"layer": layer, "approximation": approximation, "init": init},
    )
    spec = SpectrumConfig(**{f: getattr(config, f) for f in ("directions", "tokens", "vectors", "n_directions", "n_top",
                                                             "n_inputs", "method", "float64")})
    tensors, tables, meta = analyse_layer(view, spec)
    u = tensors["directions"].to(y_te.device)  # [k, d]
    err, tot = (y_te - y_hat) @ u.mT, (y_te - y_te.mean(0)) @ u.mT  # [n, k]
    tables["directions"]["replacement_ev"] = (1 - err.square().sum(0) / tot.square().sum(0)).cpu().numpy()
    fidelity = pd.DataFrame([
        {"measure": "explained variance (held out)", "value": approximation["explained_variance"]},
        {"measure": "explained variance, linear regression", "value": approximation["linear_ev"]},
        {"measure": f"explained variance, {_START[init]}", "value": init_ev},
        {"measure": "loss, original model", "value": loss_orig},
        {"measure": "loss, replacement spliced in", "value": loss_rep},
        {"measure": "loss, MLP mean-ablated", "value": loss_abl},
        {"measure": "loss recovered", "value": approximation["loss_recovered"]},
    ])
    tables = {"fidelity": fidelity, **tables, "fit": fit_table}
    tensors.update({"W": W.cpu(), "V": V.cpu(), "P": P.cpu()})
    return BilinearReplacementResult(config=config, model_id=model.name, fingerprint=model.fingerprint(),
                                     tensors=tensors, tables=tables, meta=meta)


ANALYSIS = Analysis(
    name="bilinear_replacement",
    description="fit a bilinear replacement of one MLP on the model's own activations; its fidelity and eigenvectors",
    config_cls=ReplacementConfig,
    result_cls=BilinearReplacementResult,
    compute=compute_replacement,
    needs=("residual", "mlp_read", "mlp_in", "mlp_write"),
    prepare=with_direction_vectors,
)
