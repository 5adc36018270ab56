"""Baseline attributions checked per token against Captum / Inseq / a from-scratch computation,
and copy-task rates per baseline, on the embedded model.

    python benchmarks/attribution_baselines.py [--quick] [--no-inseq] [--words 50] [--json out.json]

Captum 0.9.0 and Inseq 0.7.1 are not workbench dependencies: install them into ``.bench-deps/``
as ``benchmarks/reagent.py`` says; this script puts that folder on ``sys.path``. Everything runs on
the CPU, one torch thread.

1. Agreement, per prompt and method (first target only), over the attributable context tokens:
   * **Captum, same definition** (the exact check of our code): the same objective (log p(target) for
     the gradient methods, p(target) for occlusion), the same zero-embedding baseline, IG with
     ``method="riemann_middle"`` and the same steps, the same aggregation over the hidden dimension
     (L2 for gradient norm, sum for the others). Expect max |diff| at float32 round-off, Spearman 1.
   * **Inseq's method of the same name, its defaults** (what a user of Inseq would see): Inseq
     attributes p(target) (not log p), aggregates the hidden dimension by its L2 norm ("vnorm", so
     its input x gradient and IG are unsigned), uses the UNK-token embedding as the baseline for IG
     and occlusion, and IG's Gauss-Legendre rule with 50 steps. Only the rank correlation is comparable.
   * **from scratch** for attention: HF's eager ``output_attentions`` of an untouched copy, and
     Abnar & Zuidema's rollout computed here independently.
2. Copy tasks (``prompts.copy_tasks``): the rate at which each baseline ranks the earlier mention of
   the word first (by |importance|, as the library's tables rank), without BOS and with the model's
   default (BOS), and the rate by signed importance for the signed methods.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
BENCH_DEPS = Path(__file__).resolve().parent.parent / ".bench-deps"

import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.analyses.attribution import baselines  # noqa: E402
from workbench.analyses.attribution.common import prepare  # noqa: E402
from workbench.analyses.attribution.prompts import copy_tasks  # noqa: E402

PROMPTS = (  # (prompt, target, prepend_bos)
    ("The password is falcon. Remember it well. The password is", " falcon", False),
    ("The Eiffel Tower is located in the city of", " Paris", False),
    ("The Eiffel Tower is located in the city of", " Paris", None),
)
INSEQ_NAMES = {"gradient_norm": "saliency", "input_x_gradient": "input_x_gradient",
               "integrated_gradients": "integrated_gradients", "occlusion": "occlusion", "attention_mean": "attention"}
SIGNED = ("input_x_gradient", "integrated_gradients", "occlusion")


def import_bench_deps():
    if not BENCH_DEPS.is_dir():
        sys.exit(f"Captum / Inseq are not installed: see the docstring of {__file__}")
    sys.path.insert(0, str(BENCH_DEPS))
    import captum.attr
    import inseq

    return captum.attr, inseq


# ------------------------------------------------------------------ reference computations
def target_fn(hf, y: int, log: bool):
    """Captum forward: input embeddings [b, W, d] -> log p(y) (or p(y)) at the last position, [b]."""
    def f(x):
        logits = hf(inputs_embeds=x).logits[:, -1].float()
        return (torch.log_softmax if log else torch.softmax)(logits, -1)[:, y]
    return f


def captum_reference(ca, hf, ids: torch.Tensor, y: int, ig_steps: int, attributable: torch.Tensor,
                     ig_base: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our definitions computed by Captum: one value per context position (first target).

    Special tokens (BOS) keep their embedding in the baselines, as ours do: they are context, not features.
    ``ig_base`` [d]: IG's baseline token embedding (occlusion's is always zero)."""
    E = hf.get_input_embeddings()(ids)[None].detach()  # [1, W, d]
    logp, prob = target_fn(hf, y, log=True), target_fn(hf, y, log=False)
    special = ~attributable[None, :, None]
    zero = torch.where(special, E, 0.0)
    base = torch.where(special, E, ig_base.expand_as(E))
    out = {"gradient_norm": ca.Saliency(logp).attribute(E, abs=False)[0].norm(dim=-1),
           "input_x_gradient": ca.InputXGradient(logp).attribute(E)[0].sum(-1),
           "integrated_gradients": ca.IntegratedGradients(logp).attribute(
               E, baselines=base, n_steps=ig_steps, method="riemann_middle", internal_batch_size=ig_steps)[0].sum(-1)}
    mask = torch.arange(E.shape[1])[None, :, None].expand_as(E)  # one feature per token, all its dims
    with torch.no_grad():
        out["occlusion"] = ca.FeatureAblation(prob).attribute(E, baselines=zero, feature_mask=mask)[0, :, 0]
    return {k: v.detach().float() for k, v in out.items()}


def rollout_from_scratch(attentions) -> torch.Tensor:
    """Abnar & Zuidema 2020: heads averaged, R = prod_l norm_rows(0.5 I + 0.5 A_l), later layers on the left."""
    W = attentions[0].shape[-1]
    R = torch.eye(W, dtype=torch.float64)
    for A in attentions:
        M = 0.5 * A[0].double().mean(0) + 0.5 * torch.eye(W, dtype=torch.float64)
        R = (M / M.sum(-1, keepdim=True)) @ R
    return R


def attention_reference(hf, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        att = hf(ids[None], output_attentions=True).attentions  # per layer [1, heads, W, W]
    last = len(ids) - 1
    return {"attention_last": att[-1][0].mean(0)[last].float(),
            "attention_mean": torch.stack([a[0].mean(0)[last] for a in att]).mean(0).float(),
            "attention_rollout": rollout_from_scratch(att)[last].float()}


def inseq_reference(inseq, hf, tok, prompt: str, target: str, n_prompt: int, bos: bool) -> dict[str, torch.Tensor]:
    """Inseq's method of the same name, its defaults; hidden / layer / head dims aggregated its way."""
    out = {}
    for ours, name in INSEQ_NAMES.items():
        model = inseq.load_model(hf, name, tokenizer=tok)
        res = model.attribute(prompt, generated_texts=prompt + target, show_progress=False, skip_special_tokens=False)
        attr = res.sequence_attributions[0].target_attributions.float()  # [pos, step, ...]
        col = attr[:n_prompt, 0]
        if col.ndim == 2 and name != "attention":
            col = col.norm(dim=-1)  # Inseq's "vnorm" for granular (per hidden dim) attributions
        elif col.ndim > 1:
            col = col.flatten(1).mean(-1)  # attention: mean over layers and heads
        out[ours] = col[-n_prompt:] if not bos else col
    return out


# ------------------------------------------------------------------ agreement tables
def agreement(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    a, b = ours[mask].double(), ref[mask].double()
    rho = spearmanr(a.numpy(), b.numpy()).statistic if len(a) > 2 else float("nan")
    return {"max_abs_diff": float((a - b).abs().max()), "max_abs_ours": float(a.abs().max()), "spearman": float(rho),
            "top1_same": bool(a.abs().argmax() == b.abs().argmax())}


def compare_prompt(model, hf, ca, inseq, tok, prompt: str, target: str, bos, params: baselines.BaselineParams) -> list[dict]:
    seq = prepare(model, prompt, target, prepend_bos=bos)
    ids = seq.ids[: seq.n_prompt]
    y = seq.target_id(0)
    mask = seq.attributable[: seq.n_prompt].cpu()
    ours = {m: baselines.baseline_importance(model, seq, m, params)[0, : seq.n_prompt] for m in baselines.BASELINES}
    ig_base = baselines.baseline_embedding(model, params.ig_baseline).float().cpu()
    refs = {"captum": captum_reference(ca, hf, ids, y, params.ig_steps, mask, ig_base), "scratch": attention_reference(hf, ids)}
    if inseq is not None and bos is False:  # Inseq feeds the tokenizer's ids: no BOS for SmolLM2
        refs["inseq"] = inseq_reference(inseq, hf, tok, prompt, target, seq.n_prompt, False)
    tokens = model.to_str_tokens(ids)
    rows = []
    print(f"\n== {prompt!r} -> {target!r}, prepend_bos={bos}: per token (ours | reference)")
    for m in baselines.BASELINES:
        for source, ref in refs.items():
            if m not in ref:
                continue
            row = {"prompt": prompt[:24], "bos": str(bos), "method": m, "reference": source,
                   **agreement(ours[m], ref[m], mask)}
            rows.append(row)
            cells = " ".join(f"{t!r}:{o:.3g}|{r:.3g}" for t, o, r, k in zip(tokens, ours[m], ref[m], mask) if k)
            print(f"{m:21s} {source:7s} {cells}")
    return rows


# ------------------------------------------------------------------ copy tasks
def copy_rates(model, n_words: int, bos, methods=baselines.BASELINES, **params) -> dict[str, dict[str, float]]:
    """Per baseline: fraction of copy tasks whose earlier mention of W ranks first (|importance|; signed too)."""
    hits = {m: [0, 0] for m in methods}
    tasks = copy_tasks(model, n=n_words, seed=0)
    for task in tasks:
        seq = prepare(model, task.prompt, task.target, prepend_bos=bos)
        answer = task.answer_position + (seq.n_prompt - len(model.to_tokens(task.prompt, prepend_bos=False)[0]))
        for m in methods:
            imp = baselines.baseline_importance(model, seq, m, baselines.BaselineParams(**params))[0]
            hits[m][0] += int(imp.abs().nan_to_num(-1.0).argmax()) == answer
            hits[m][1] += int(imp.nan_to_num(-float("inf")).argmax()) == answer
    return {m: {"abs": h[0] / len(tasks), "signed": h[1] / len(tasks)} for m, h in hits.items()}


def print_rows(title: str, rows: list[dict], keys: list[str]) -> None:
    print(f"\n== {title}")
    print("  ".join(keys))
    for r in rows:
        print("  ".join(f"{r[k]:.3g}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one prompt, 10 copy words")
    p.add_argument("--words", type=int, default=50)
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--no-inseq", action="store_true")
    p.add_argument("--no-copy", action="store_true")
    p.add_argument("--no-agreement", action="store_true")
    p.add_argument("--methods", nargs="+", default=list(baselines.BASELINES), help="baselines in the copy-task rates")
    p.add_argument("--ig-baseline", default=baselines.BaselineParams().ig_baseline, choices=baselines.IG_BASELINES)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    prompts = PROMPTS[:1] if args.quick else PROMPTS
    words = 10 if args.quick else args.words
    ca, inseq = import_bench_deps()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = wb.load_model(progress=False)
    folder = model.hf_model.config.name_or_path  # an untouched HF copy of the same converted weights
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    rows = []
    for prompt, target, bos in [] if args.no_agreement else prompts:
        rows += compare_prompt(model, hf, ca, None if args.no_inseq else inseq, tok, prompt, target, bos,
                               baselines.BaselineParams(ig_steps=args.ig_steps, ig_baseline=args.ig_baseline))
    print_rows("agreement per method (first target; attributable tokens)", rows,
               ["prompt", "bos", "method", "reference", "max_abs_diff", "max_abs_ours", "spearman", "top1_same"])
    results: dict = {"agreement": rows}
    if not args.no_copy:
        for bos in (False, None):
            rates = copy_rates(model, words, bos, args.methods, ig_steps=args.ig_steps, ig_baseline=args.ig_baseline)
            results[f"copy_rates_bos_{bos}"] = rates
            print_rows(f"copy tasks, {words} words, prepend_bos={bos}: earlier mention of W ranked first",
                       [{"method": m, "abs": r["abs"], "signed": r["signed"] if m in SIGNED else "-"}
                        for m, r in rates.items()], ["method", "abs", "signed"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
