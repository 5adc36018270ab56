"""Which OV components to rescale for the Laundry List? A first-order scan of every component of every head.

For scaling component i of head h by ``a`` (what :func:`~.laundry.rescaled_ov` does), the change of the
Laundry List margin (target logit minus logsumexp of the other items) is, to first order,
``(a - 1) * sum_t (o_t . v_i)(g_t . v_i)`` with ``o_t`` the head's output at position t and ``g_t`` the
margin's gradient with respect to the layer's attention output. One forward and one backward pass give it
for all components (attribution patching). Use a seed different from the evaluation's, then check the
candidates with :func:`workbench.laundry_list`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor

from ...engine.registry import Analysis
from ...models import hook_names as hn
from ...results import Result
from .laundry import DEFAULT_ITEMS, DEFAULT_TEMPLATES, generate_prompts, single_token_items
from .svd import check_weights, head_weights, ov_svd
from ...models.contract import HookedSource


@dataclass(frozen=True)
class LaundryScanConfig:
    n_items: int = 4  # list length N of the scan's prompts
    n_prompts: int = 8  # prompts per template
    seed: int = 1  # differs from laundry_list's default (0): candidates are checked on other prompts
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    items: tuple[str, ...] = DEFAULT_ITEMS
    item_prefix: str = " "
    fold_norm: bool = True  # component indices as in head_composition


@dataclass(frozen=True)
class LaundryScanResult(Result):
    """Table ``components``: layer, head, component, singular value, ``d_margin`` (the margin's change per
    unit of ``a - 1``, mean over prompts), best first."""

    analysis = "laundry_component_scan"
    title = "Laundry List: first-order scan of OV components"
    config_cls = LaundryScanConfig

    @property
    def components(self) -> pd.DataFrame:
        """Every OV component of every head, sorted by ``d_margin`` (rescaling up helps most first)."""
        return self.tables["components"]

    def edits(self, n: int = 5, scale: float = 0.0) -> tuple[tuple[int, int, tuple[int], float], ...]:
        """The ``n`` components whose removal the scan says helps most, as ``laundry_list`` interventions."""
        return tuple((int(r.layer), int(r.head), (int(r.component),), scale)
                     for r in self.components.tail(n).itertuples())

    def summary(self) -> list[tuple[str, str]]:
        best, worst = self.components.iloc[0], self.components.iloc[-1]
        return [("model", self.model_id), ("items", f"{int(self.meta['n_vocab'])} single-token items"),
                ("most helpful to amplify", f"L{best.layer}H{best.head} component {best.component}: {best.d_margin:+.3g}"),
                ("most helpful to remove", f"L{worst.layer}H{worst.head} component {worst.component}: {worst.d_margin:+.3g}")]


def items_margin(last: Tensor, item_ids: Tensor, target: Tensor) -> Tensor:
    """Smooth margin: target logit minus logsumexp of the other items' logits, per prompt."""
    item_logits = last.gather(1, item_ids)  # [prompt, n]
    tgt = item_logits.gather(1, target[:, None])[:, 0]
    return tgt - item_logits.scatter(1, target[:, None], float("-inf")).logsumexp(1)


def compute_laundry_scan(model: HookedSource, config: LaundryScanConfig) -> LaundryScanResult:
    check_weights(model)
    vocab = single_token_items(model.tokenizer, config.items, config.item_prefix)
    prompts = generate_prompts(vocab, config.n_items, config.n_prompts, seed=config.seed, templates=config.templates)
    n_layers = model.facts.n_layers
    svd = ov_svd(head_weights(model, fold_norm=config.fold_norm))  # Vh: [layer, head, comp, d_model]
    ids, mask = model.to_tokens_batch([p.text for p in prompts])
    outs, zs = {}, {}

    def keep_out(layer):
        def hook(t, hook):
            if t.requires_grad:
                t.retain_grad()
            else:
                t.requires_grad_(True)  # a leaf: gradients flow from here on although parameters are frozen
            outs[layer] = t
            return t
        return hook

    def keep_z(layer):
        def hook(t, hook):
            zs[layer] = t.detach()
        return hook

    hooks = [(name, fn) for l in range(n_layers) for name, fn in ((hn.attn_z(l), keep_z(l)), (hn.attn_out(l), keep_out(l)))]
    with torch.enable_grad(), model.hooks(hooks):
        logits = model(ids)
        last = logits[torch.arange(len(prompts)), mask.sum(1) - 1]
        items_t = torch.tensor([p.item_ids for p in prompts], device=last.device)
        target = torch.tensor([p.target for p in prompts], device=last.device)
        items_margin(last, items_t, target).sum().backward()
    m = mask[:, :, None].to(torch.float32)  # real positions only
    rows = []
    for layer in range(n_layers):
        W_O = model.attention_weights(layer).W_O.float()  # [head, d_head, d_model]
        v = svd.Vh[layer].to(W_O)  # [head, comp, d_model]
        coef = torch.einsum("bphd,hde,hce->bphc", zs[layer].float(), W_O, v)  # o_t . v_i: [b, pos, head, comp]
        grad = torch.einsum("bpe,hce->bphc", outs[layer].grad.float() * m, v)  # g_t . v_i
        d = (coef * grad).sum(1).mean(0)  # [head, comp]
        for head in range(d.shape[0]):
            for comp in range(d.shape[1]):
                rows.append((layer, head, comp, float(svd.S[layer, head, comp]), float(d[head, comp])))
    table = pd.DataFrame(rows, columns=["layer", "head", "component", "singular_value", "d_margin"])
    table = table.sort_values("d_margin", ascending=False, ignore_index=True)
    return LaundryScanResult(config=config, model_id=model.name, fingerprint=model.fingerprint(),
                             tables={"components": table}, meta={"n_vocab": len(vocab)})


ANALYSIS = Analysis(
    name="laundry_component_scan",
    description="first-order effect of rescaling each OV component on the Laundry List margin",
    config_cls=LaundryScanConfig,
    result_cls=LaundryScanResult,
    compute=compute_laundry_scan,
    needs=("qkv", "values_mixed", "attn_write", "head_writes", "uniform_attention"),
    in_report=False,
)
