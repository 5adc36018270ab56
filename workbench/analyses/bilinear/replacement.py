"""``bilinear_replacement``: the supported route from a pretrained LM's gated MLP to bilinear eigen-analysis.

Gated MLPs (SwiGLU: W_out (silu(W_gate x) * (W_in x))) are not bilinear, so their interaction matrices
do not exist. We fit a bilinear layer  y ~ P ((W x) * (V x))  to one layer's MLP on the model's own
activations (``mlp_in`` -> ``mlp_out`` hooks over the evaluation corpus), then analyse that replacement.

Fit (closed form, seconds): W = W_gate^T, V = W_in^T (silu(z) * u ~ a z * u); per hidden unit the
least-squares scale a_o of z_o u_o onto silu(z_o) u_o gives P0 = W_out^T diag(a); then P is refit by
ridge regression on the hidden activations, shrunk towards P0, with the ridge picked on a validation
slice of the training tokens. Optional Adam steps then tune W, V and P together.

Fidelity, always on held-out windows: explained variance of the MLP output (next to a linear
regression baseline), and the model's next-token loss with the replacement spliced in, next to
the original loss and the MLP mean-ablated. The BOS position keeps its original MLP output
(its activations are outliers by orders of magnitude and would dominate any fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from ..._progress import progress
from ...corpus import mean_loss, token_windows
from ...errors import InputError, UnsupportedModelError
from ...models import hook_names as hn
from ..registry import Analysis
from .layers import BilinearMLP, BilinearWeights
from .spectrum import BilinearSpectrumResult, LayerView, SpectrumConfig, _homogeneous, analyse_layer


@dataclass(frozen=True)
class ReplacementConfig:
    layer: int | None = None  # the block whose MLP is replaced (None: a fifth of the way in, layer 6 of 30)
    window: int = 128  # tokens per evaluation window (BOS included)
    max_windows: int = 32  # windows of the evaluation corpus, evenly spread (None: all)
    holdout: float = 0.25  # share of windows held out for every fidelity number
    ridges: tuple[float, ...] = (1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # candidates, relative to the mean hidden energy
    fit_steps: int = 0  # Adam steps on W, V, P after the closed-form fit (0: closed form only)
    lr: float = 1e-4
    batch_windows: int = 8  # windows per forward pass
    directions: str = "auto"  # "pca" (principal directions of the MLP's real output), "svd", "tokens", "vectors"
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
    """A bilinear replacement of one gated MLP, its fidelity, and the eigen-analysis of the replacement.

    On top of :class:`BilinearSpectrumResult`: table ``fidelity`` (one row per measure), table ``fit``
    (per candidate ridge: the share of what the rescaled SwiGLU weights miss that the refit explains on a
    validation slice of the training tokens), tensors ``W``, ``V`` [d_mlp, d_model], ``P`` [d_model, d_mlp] of the
    replacement (:meth:`replacement` rebuilds it), and per-direction ``replacement_ev`` in ``directions``.
    """

    analysis = "bilinear_replacement"
    title = "Bilinear replacement of a gated MLP: eigenvectors"

    def approximation_note(self) -> str:
        a = self.meta["approximation"]
        return (f"bilinear replacement of layer {self.meta['layer']}: explains {a['explained_variance']:.1%} of the MLP output "
                f"variance; loss {a['loss_original']:.3f} → {a['loss_replaced']:.3f} (mean-ablated {a['loss_mean_ablated']:.3f})")

    def summary(self) -> list[tuple[str, str]]:
        a = self.meta["approximation"]
        lines = [
            ("approximation", self.approximation_note()),
            ("fidelity", f"held-out EV {a['explained_variance']:.3f} (linear regression {a['linear_ev']:.3f}, "
                         f"rescaled SwiGLU weights alone {a['init_ev']:.3f}); loss recovered " + (
                             f"{a['loss_recovered']:.1%}" if a["loss_recovered"] == a["loss_recovered"]
                             else "n/a (mean-ablating this MLP barely changes the loss)")),
        ]
        return lines + super().summary()

    def replacement(self) -> BilinearMLP:
        """The fitted replacement as a :class:`BilinearMLP` (d_model -> d_mlp -> d_model)."""
        return BilinearMLP.from_weights(self.tensors["W"], self.tensors["V"], self.tensors["P"],
                                        name=f"{self.model_id} layer {self.meta['layer']} replacement")


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

    with model.hooks([(hn.mlp_in(layer), grab_in), (hn.mlp_out(layer), grab_out)]):
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


def ridge_select(G: Tensor, R: Tensor, ridges: tuple[float, ...]) -> tuple[Tensor, pd.DataFrame]:
    """Ridge solution of R ~ G D with the ridge picked on the last fifth of the rows, then refit on all rows."""
    n_val = max(1, len(G) // 5)
    fits = _ridge(G[:-n_val], R[:-n_val], list(ridges))
    val = [_ev(R[-n_val:], G[-n_val:] @ D, center=False) for D in fits]
    best = ridges[max(range(len(ridges)), key=val.__getitem__)]
    table = pd.DataFrame({"ridge": ridges, "validation_ev": val, "chosen": [r == best for r in ridges]})
    return _ridge(G, R, [best])[0], table


def _refine(W, V, P, x, y, config: ReplacementConfig):
    params = [t.clone().requires_grad_(True) for t in (W, V, P)]
    opt = torch.optim.Adam(params, lr=config.lr)
    g = torch.Generator().manual_seed(0)
    for _ in progress(range(config.fit_steps), desc="refining the replacement"):
        idx = torch.randint(0, len(x), (min(2048, len(x)),), generator=g).to(x.device)
        loss = ((_hidden(params[0], params[1], x[idx]) @ params[2].mT - y[idx]).square().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


def _losses(model, tokens: Tensor, layer: int, batch: int, replace) -> float:
    """Mean next-token cross-entropy over ``tokens`` with ``replace(x_in, y_out)`` (or None) splicing the MLP output."""
    state: dict[str, Tensor] = {}

    def keep_in(act, hook):
        state["x"] = act

    def swap_out(act, hook):
        new = replace(state["x"], act).to(act.dtype).clone()
        new[:, 0] = act[:, 0]  # BOS keeps its original output
        return new

    hooks = [(hn.mlp_in(layer), keep_in), (hn.mlp_out(layer), swap_out)] if replace else []
    with model.hooks(hooks):
        return mean_loss(model, tokens, batch_size=batch)


def _vocab(model) -> list[str]:
    """Every token as text. Byte-level BPE tokens are mapped back to their bytes and decoded (a split
    multi-byte character shows as U+FFFD); one call per vocabulary, not one decode per token."""
    from ...models.tiny import _byte_to_unicode

    to_byte = {ch: b for b, ch in _byte_to_unicode().items()}
    out = []
    for tok in model.tokenizer.convert_ids_to_tokens(list(range(model.info.d_vocab))):
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
def compute_replacement(model, config: ReplacementConfig) -> BilinearReplacementResult:
    model.require_finite_weights()
    if not model.info.gated_mlp:
        raise UnsupportedModelError(
            f"{model.name} has plain (non-gated) MLPs; bilinear_replacement starts from a gated MLP's gate and up "
            "projections (SwiGLU / GeGLU). For bilinear analysis train a bilinear model: wb.train_digits(), wb.train_bilinear_lm()"
        )
    if not 0 < config.holdout < 1:
        raise InputError(f"holdout must lie in (0, 1), got {config.holdout}")
    chosen = model.info.n_layers // 5 if config.layer is None else config.layer
    mlp = model.mlp_weights(chosen)  # validates the layer
    layer = chosen % model.info.n_layers
    tokens = token_windows(model, window=config.window, max_windows=config.max_windows)  # [w, pos]
    n_hold = max(1, round(len(tokens) * config.holdout))
    if len(tokens) - n_hold < 1:
        raise InputError(f"the evaluation text gives only {len(tokens)} window(s) of {config.window} tokens; "
                         "use a longer text or a smaller window")
    x, y = _collect(model, tokens, layer, config.batch_windows)  # [w, pos, d]
    first = 1 if model.default_prepend_bos else 0  # BOS activations are outliers: left out of every fit
    x_tr, y_tr = x[:-n_hold, first:].flatten(0, 1), y[:-n_hold, first:].flatten(0, 1)
    x_te, y_te = x[-n_hold:, first:].flatten(0, 1), y[-n_hold:, first:].flatten(0, 1)

    W, V, P, P0, fit_table = fit_replacement(x_tr, y_tr, mlp.W_gate, mlp.W_in, mlp.W_out, config)
    init_ev = _ev(y_te, _hidden(W, V, x_te) @ P0.mT)  # the rescaled SwiGLU weights, before any refinement
    if config.fit_steps:
        with torch.enable_grad():
            W, V, P = _refine(W, V, P, x_tr, y_tr, config)
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
    special = sorted(set(model.tokenizer.all_special_ids) | set(getattr(model.tokenizer, "added_tokens_decoder", {})))
    special = torch.tensor([i for i in special if i < model.info.d_vocab], dtype=torch.long, device=unembed.device)
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
        principal=principal, principal_names=names, extra_meta={"layer": layer, "approximation": approximation},
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
        {"measure": "explained variance, rescaled SwiGLU weights only", "value": init_ev},
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
    title=BilinearReplacementResult.title,
    description="fit a bilinear replacement of one gated MLP on the model's own activations; its fidelity and eigenvectors",
    config_cls=ReplacementConfig,
    result_cls=BilinearReplacementResult,
    compute=compute_replacement,
)
