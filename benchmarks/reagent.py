"""ReAGent and baseline attribution: ours vs Inseq 0.7.1 on the embedded model, in one run.

    python benchmarks/reagent.py [--quick] [--probes 16] [--max-steps 100] [--new-tokens 1]
                                 [--prompts "..." "..."] [--no-baselines] [--json out.json]

Inseq is not a workbench dependency. Install it, outside the project's environment, into
``.bench-deps/`` (git-ignored); this script puts that folder on ``sys.path`` itself::

    .venv/bin/pip install --no-deps --target .bench-deps inseq==0.7.1 captum==0.9.0 \\
        matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow treescope

(``--no-deps``: Inseq's typeguard pin conflicts with transformer-lens; the rest are the few
packages its import chain needs.)

How Inseq's ReAGent runs offline: Inseq 0.7.1 always builds a ``POSTagTokenSampler``, which calls
``nltk.download`` to POS-tag the vocabulary; its result is cached as a pickle under
``$INSEQ_ARTIFACTS_CACHE/pos_tag_sampler_cache/<model name>.pkl``. We pre-seed that cache, in a
temporary folder, with ONE tag that holds every non-special token id: its sampler then draws
uniformly from the vocabulary without special tokens, which is exactly our ``replacer="uniform"``.
No NLTK, no network.

Same everything: the same HF weights (our converted embedded model, loaded separately for Inseq),
the same prompt ids (no BOS: SmolLM2's tokenizer adds none and Inseq feeds the tokenizer's ids, so
ours runs with ``prepend_bos=False``), the same greedy targets, and the same hyperparameters
(probes, max steps, keep top-n, stopping top-k, replacing ratio). Both run with the same number of
torch threads. Faithfulness of both attributions is then scored by the same code
(``workbench.analyses.attribution.faithfulness``: Soft-NS / Soft-NC, log ratio vs random importance;
hard comprehensiveness / sufficiency AOPC).

The first table runs ours with float32 probes (``probe_dtype=None``, Inseq's precision); a second
repeats it with the library default ``probe_dtype="auto"`` (bfloat16 autocast on a CPU with AMX or a
CUDA GPU, float32 elsewhere), same hyperparameters and seed, against the same Inseq run.

Baselines (per method): ours (batched over targets) vs Inseq's saliency / input_x_gradient /
integrated_gradients / occlusion / attention on the same prompt and generated tokens.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
BENCH_DEPS = Path(__file__).resolve().parent.parent / ".bench-deps"
ARTIFACTS = Path(tempfile.mkdtemp(prefix="inseq-artifacts-"))
os.environ["INSEQ_ARTIFACTS_CACHE"] = str(ARTIFACTS)  # read by inseq at import time

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.analyses.attribution.common import prepare  # noqa: E402
from workbench.analyses.attribution.reagent import ReagentParams, probe_dtype  # noqa: E402
from workbench.analyses.attribution.faithfulness import FaithfulnessParams, faithfulness, summarise  # noqa: E402
from workbench.analyses.attribution.replacers import candidate_ids  # noqa: E402

PROMPTS = ("The Eiffel Tower is in the city of", "Water boils at a temperature of")
INSEQ_BASELINES = {  # ours -> Inseq's method of the same family
    "gradient_norm": "saliency", "input_x_gradient": "input_x_gradient",
    "integrated_gradients": "integrated_gradients", "occlusion": "occlusion", "attention_mean": "attention",
}


def import_inseq():
    if not BENCH_DEPS.is_dir():
        sys.exit(f"Inseq is not installed: see the docstring of {__file__} (pip install --target .bench-deps ...)")
    sys.path.insert(0, str(BENCH_DEPS))
    import inseq

    return inseq


def seed_uniform_sampler(hf_model, ids: list[int]) -> None:
    """Pre-seed Inseq's POS-tag cache: one tag holding every non-special id = a uniform sampler."""
    name = str(hf_model.config.name_or_path).split("/")[-1]
    folder = ARTIFACTS / "pos_tag_sampler_cache"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.pkl", "wb") as f:
        pickle.dump({"ANY": ids}, f)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def inseq_importance(out, n_prompt: int, n_targets: int) -> torch.Tensor:
    """Inseq's target attributions [pos, step, hidden] -> importance [target, pos] (NaN outside contexts)."""
    attr = out.sequence_attributions[0].target_attributions
    if attr.ndim == 3:
        attr = attr[..., 0]  # ReAGent repeats its score over the hidden dim
    W = n_prompt + n_targets - 1
    imp = torch.full((n_targets, W), float("nan"))
    for j in range(n_targets):
        imp[j, : n_prompt + j] = attr[: n_prompt + j, j].float()
    return imp


def fmt(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    print(f"\n== {title}")
    cells = [[h for _, h, _ in cols]] + [[fmt(r.get(k), f) if not isinstance(r.get(k), str) else r[k] for k, _, f in cols]
                                          for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for i, c in enumerate(cells):
        print("  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(c, widths))))
        if i == 0:
            print("-" * (sum(widths) + 2 * len(widths)))


def faith_table(model, seq, imps: dict[str, torch.Tensor], seed: int):
    """Tidy faithfulness rows (method, target_index, metric, value) for each importance, one mask seed."""
    return faithfulness(model, seq, {k: v.nan_to_num(0.0) for k, v in imps.items()},
                        FaithfulnessParams(n_mask_samples=32, faithfulness_seed=seed))


def faith_summary(tables) -> dict[str, dict[str, float]]:
    """The paper's form over every target x seed: log(sum method / sum random) for Soft-NS / Soft-NC."""
    import pandas as pd

    s = summarise(pd.concat(tables, ignore_index=True)).set_index(["method", "metric"])
    methods = sorted({m for m, _ in s.index} - {"random"})
    return {m: {"soft_ns": s.loc[(m, "soft_ns"), "log_ratio"], "soft_nc": s.loc[(m, "soft_nc"), "log_ratio"],
                "comp_aopc": s.loc[(m, "comp_aopc"), "mean"], "suff_aopc": s.loc[(m, "suff_aopc"), "mean"]}
            for m in methods}


def bench_reagent(args, model, inseq, hf, tok) -> list[dict]:
    params = dict(n_probes=args.probes, max_steps=args.max_steps, keep_top_n=args.top_n, stop_top_k=args.top_k,
                  replacing_ratio=args.ratio)
    im = inseq.load_model(hf, "reagent", tokenizer=tok, keep_top_n=args.top_n, stopping_condition_top_k=args.top_k,
                          replacing_ratio=args.ratio, max_probe_steps=args.max_steps, num_probes=args.probes)
    gen = {"max_new_tokens": args.new_tokens, "do_sample": False}
    rows, all_tables = [], []
    for prompt in args.prompts:
        seq = prepare(model, prompt, None, max_new_tokens=args.new_tokens, prepend_bos=False)
        times = {"inseq": 0.0, "ours": 0.0, "bf16": 0.0}
        tables, steps, same, nan_targets = [], [], True, 0
        for seed in range(args.seed, args.seed + args.seeds):
            torch.manual_seed(seed)  # Inseq draws from torch's global generator
            out, t = timed(lambda: im.attribute(prompt, generation_args=gen, show_progress=False))
            times["inseq"] += t
            ours, t = timed(lambda: wb.reagent(model, prompt, cache=False, max_new_tokens=args.new_tokens,
                                               prepend_bos=False, seed=seed, probe_dtype=None, **params))
            times["ours"] += t
            fast, t = timed(lambda: wb.reagent(model, prompt, cache=False, max_new_tokens=args.new_tokens,
                                               prepend_bos=False, seed=seed, probe_dtype=args.fast_dtype, **params))
            times["bf16"] += t
            same &= [t.id for t in out.sequence_attributions[0].target[seq.n_prompt:]] == seq.ids[seq.n_prompt:].tolist()
            imps = {"ours": ours.tensors["importance"], "inseq": inseq_importance(out, seq.n_prompt, seq.n_targets),
                    "bf16": fast.tensors["importance"]}
            nan_targets += int(torch.isnan(imps["inseq"][:, 0]).sum())  # Inseq: 0/0 when no probe stopped
            table = faith_table(model, seq, imps, seed)
            table["prompt"], table["seed"] = prompt, seed
            tables.append(table)
            steps.append(ours.tensors["probe_steps"].float())
        all_tables += tables
        faith = faith_summary(tables)
        steps = torch.cat(steps)
        rows.append({
            "prompt": prompt[:40], "targets": "".join(model.to_str_tokens(seq.ids[seq.n_prompt:])),
            "ours_s": times["ours"], "inseq_s": times["inseq"], "bf16_s": times["bf16"],
            "speedup": times["inseq"] / times["ours"], "bf16_speedup": times["inseq"] / times["bf16"],
            "steps_mean": float(steps.mean()), "steps_max": float(steps.max()),
            **{f"{m}_{k}": faith[m][key] for m in ("ours", "inseq", "bf16")
               for k, key in (("ns", "soft_ns"), ("nc", "soft_nc"), ("comp", "comp_aopc"))},
            "same_targets": str(same), "inseq_nan_targets": nan_targets,
        })
    faith = faith_summary(all_tables)
    total = {"prompt": "ALL", **{k: sum(r[k] for r in rows) for k in ("ours_s", "inseq_s", "bf16_s")},
             **{f"{m}_{k}": faith[m][key] for m in ("ours", "inseq", "bf16")
                for k, key in (("ns", "soft_ns"), ("nc", "soft_nc"), ("comp", "comp_aopc"))}}
    total["speedup"] = total["inseq_s"] / total["ours_s"]
    total["bf16_speedup"] = total["inseq_s"] / total["bf16_s"]
    rows.append(total)
    print_table(
        f"ReAGent, float32 probes: ours vs Inseq 0.7.1 (probes {args.probes}, max steps {args.max_steps}, top-n {args.top_n}, "
        f"top-k {args.top_k}, ratio {args.ratio}, {args.seeds} seed(s) each, times summed; speedup = Inseq s / ours s; "
        "faithfulness = log(sum / sum random) over targets x seeds, higher is better)",
        rows,
        [("prompt", "prompt", ""), ("targets", "targets", ""), ("ours_s", "ours s", ".1f"), ("inseq_s", "Inseq s", ".1f"),
         ("speedup", "speedup", ".2f"), ("steps_mean", "steps mean", ".1f"), ("steps_max", "max", ".0f"),
         ("ours_ns", "NS ours", "+.2f"), ("inseq_ns", "NS Inseq", "+.2f"), ("ours_nc", "NC ours", "+.2f"),
         ("inseq_nc", "NC Inseq", "+.2f"), ("ours_comp", "comp ours", ".3f"), ("inseq_comp", "comp Inseq", ".3f"),
         ("same_targets", "same targets", ""), ("inseq_nan_targets", "Inseq NaN", "d")],
    )
    print_table(f"ReAGent with probe_dtype={args.fast_dtype!r} (resolved here: "
                f"{probe_dtype(model, ReagentParams(probe_dtype=args.fast_dtype))}; same hyperparameters, same seeds)", rows,
                [("prompt", "prompt", ""), ("bf16_s", "ours bf16 s", ".1f"), ("inseq_s", "Inseq s", ".1f"),
                 ("bf16_speedup", "speedup", ".2f"), ("bf16_ns", "NS bf16", "+.2f"), ("inseq_ns", "NS Inseq", "+.2f"),
                 ("bf16_nc", "NC bf16", "+.2f"), ("inseq_nc", "NC Inseq", "+.2f"), ("bf16_comp", "comp bf16", ".3f"),
                 ("inseq_comp", "comp Inseq", ".3f")])
    print("steps: per probe, ours (Inseq runs every probe until the last one stops). NS/NC: Soft-NS / Soft-NC "
          "log ratio; comp: hard comprehensiveness AOPC (p drop). Inseq NaN: targets where no Inseq probe stopped "
          "(its mean over stopped probes is 0/0; scored as uniform importance).")
    return rows


def bench_baselines(args, model, inseq, hf, tok) -> list[dict]:
    from workbench.analyses.attribution import baselines

    rows = []
    prompt = args.prompts[0]
    seq = prepare(model, prompt, None, max_new_tokens=args.new_tokens, prepend_bos=False)
    gen = {"max_new_tokens": args.new_tokens, "do_sample": False}
    for ours_name in baselines.BASELINES:
        _, t_ours = timed(lambda: baselines.baseline_importance(model, seq, ours_name, baselines.BaselineParams(ig_steps=args.ig_steps)))
        row = {"method": ours_name, "ours_s": t_ours, "inseq_method": INSEQ_BASELINES.get(ours_name, "-")}
        if ours_name in INSEQ_BASELINES and not args.no_inseq_baselines:
            kwargs = {"n_steps": args.ig_steps} if ours_name == "integrated_gradients" else {}
            source = hf
            if ours_name.startswith("attention"):  # Inseq reads output.attentions: needs eager attention
                from transformers import AutoModelForCausalLM

                source = AutoModelForCausalLM.from_pretrained(hf.config.name_or_path, attn_implementation="eager",
                                                              local_files_only=True).eval()
            m = inseq.load_model(source, INSEQ_BASELINES[ours_name], tokenizer=tok)
            _, t_inseq = timed(lambda: m.attribute(prompt, generation_args=gen, show_progress=False, **kwargs))
            row.update(inseq_s=t_inseq, speedup=t_inseq / t_ours)
        rows.append(row)
    print_table(f"Baselines on {prompt[:40]!r} + {args.new_tokens} generated token(s) (speedup = Inseq s / ours s)", rows,
                [("method", "method", ""), ("ours_s", "ours s", ".2f"), ("inseq_method", "Inseq method", ""),
                 ("inseq_s", "Inseq s", ".2f"), ("speedup", "speedup", ".1f")])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one prompt, 8 probes, 30 steps, 1 token")
    p.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    p.add_argument("--new-tokens", type=int, default=2)
    p.add_argument("--probes", type=int, default=16, help="Inseq's default 16")
    p.add_argument("--max-steps", type=int, default=300, help="Inseq's default 3000 can take an hour per token here")
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, default=3, help="seeds per prompt (ReAGent is random: faithfulness over several)")
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument("--no-inseq-baselines", action="store_true", help="time our baselines only")
    p.add_argument("--fast-dtype", default="auto", help="probe_dtype of the second table (default: the library default)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.quick:
        args.prompts, args.probes, args.max_steps, args.new_tokens, args.seeds = args.prompts[:1], 8, 30, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    inseq = import_inseq()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = wb.load_model(progress=False)
    folder = model.hf_model.config.name_or_path  # the converted embedded model: Inseq gets an untouched copy
    hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    seed_uniform_sampler(hf, candidate_ids(model).tolist())
    print(f"workbench {wb.__version__}, inseq {inseq.__version__ if hasattr(inseq, '__version__') else '0.7.1'}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), device cpu, model {model.name}")
    results = {"reagent": bench_reagent(args, model, inseq, hf, tok)}
    if not args.no_baselines:
        results["baselines"] = bench_baselines(args, model, inseq, hf, tok)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=1, default=str))


if __name__ == "__main__":
    main()
