"""ReAGent held against Inseq 0.7.1's on the embedded model, in one run: agreement, known answers, speed.

    python benchmarks/reagent.py [--sections agreement copy speed] [--quick] [--json out.json]
                                 [--record tests/data/inseq_reagent.json]

Sections:

* ``agreement``: on a set of prompts of several kinds (workbench/analyses/attribution/prompts.py:
  factual recall, agreement, lists, copying, syntax; plus copy tasks), the greedy next token is
  attributed by Inseq twice (two seeds) and by us twice. Per prompt: Spearman correlation and top-1 /
  top-3 overlap between ours and Inseq (the two cross pairs, independent runs) next to the same
  statistics between Inseq's two runs: the noise floor of the method itself. ReAGent is random, so
  "agrees with Inseq" means: ours-vs-Inseq is indistinguishable from Inseq-vs-Inseq (the paired
  difference over prompts, with a bootstrap 95% interval, includes 0).
* ``copy``: copy tasks with random single-token words ("The password is W. Remember it well. The
  password is" -> W): how often the earlier mention of W ranks first, for our ReAGent (uniform and
  model-prediction replacers; without BOS like Inseq, and with the model's default BOS), Inseq's
  ReAGent (on the first words; it is slow) and our integrated gradients (without and with BOS).
* ``speed``: ReAGent at Inseq's defaults (16 probes, 3000 steps, top-n 5, top-k 3, ratio 0.3) on the
  README's prompts, Inseq vs ours, timed one after the other with the same torch threads.

Inseq is not a workbench dependency. Install it, outside the project's environment, into
``.bench-deps/`` (git-ignored); this script puts that folder on ``sys.path`` itself::

    .venv/bin/pip install --no-deps --target .bench-deps inseq==0.7.1 captum==0.9.0 \\
        matplotlib contourpy cycler fonttools kiwisolver pyparsing pillow treescope

How Inseq's ReAGent runs offline: Inseq 0.7.1 always builds a ``POSTagTokenSampler``, which calls
``nltk.download`` to POS-tag the vocabulary; its result is cached as a pickle under
``$INSEQ_ARTIFACTS_CACHE/pos_tag_sampler_cache/<model name>.pkl``. We pre-seed that cache, in a
temporary folder, with ONE tag that holds every non-special token id: its sampler then draws
uniformly from the vocabulary without special tokens, which is exactly our ``replacer="uniform"``.
Same everything else: the same HF weights (our converted embedded model, loaded separately for
Inseq), the same prompt ids (no BOS: SmolLM2's tokenizer adds none and Inseq feeds the tokenizer's
ids, so ours runs with ``prepend_bos=False``), the same greedy target, the same hyperparameters.
Inseq returns NaN (0/0) when none of its probes stopped; such runs are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import random
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
from workbench.analyses.attribution.agreement import agreement, ranks_first  # noqa: E402
from workbench.analyses.attribution.prompts import MIXED_PROMPTS, copy_tasks  # noqa: E402
from workbench.analyses.attribution.replacers import candidate_ids  # noqa: E402

STATS = ("spearman", "top1", "top3")


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


def load_avg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def fmt(v, spec=".3f"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def print_table(title: str, rows: list[dict], cols: list[tuple[str, str, str]]) -> None:
    print(f"\n== {title}")
    cells = [[h for _, h, _ in cols]] + [[r[k] if isinstance(r.get(k), str) else fmt(r.get(k), f) for k, _, f in cols]
                                          for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    for i, c in enumerate(cells):
        print("  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(c, widths))))
        if i == 0:
            print("-" * (sum(widths) + 2 * len(widths)))


class Runner:
    """Our ReAGent and Inseq's on the same weights and ids, one target each."""

    def __init__(self, args):
        self.inseq = import_inseq()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = wb.load_model(progress=False)
        folder = self.model.hf_model.config.name_or_path  # the converted embedded model: Inseq gets an untouched copy
        self.hf = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        self.tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        seed_uniform_sampler(self.hf, candidate_ids(self.model).tolist())
        self.args = args
        self._inseq_models: dict[tuple, object] = {}

    def params(self, steps: int | None = None) -> dict:
        a = self.args
        return dict(n_probes=a.probes, max_steps=steps or a.max_steps, keep_top_n=a.top_n, stop_top_k=a.top_k,
                    replacing_ratio=a.ratio)

    def _inseq_model(self, steps: int):
        a = self.args
        if steps not in self._inseq_models:
            self._inseq_models[steps] = self.inseq.load_model(
                self.hf, "reagent", tokenizer=self.tok, keep_top_n=a.top_n, stopping_condition_top_k=a.top_k,
                replacing_ratio=a.ratio, max_probe_steps=steps, num_probes=a.probes)
        return self._inseq_models[steps]

    def target(self, prompt: str, target: str | None) -> str:
        if target is not None:
            return target
        ids = self.model.to_tokens(prompt, prepend_bos=False)[0]
        return self.model.decode(self.model.greedy_ids(ids, 1))

    def inseq_importance(self, prompt: str, target: str, seed: int, steps: int | None = None) -> torch.Tensor:
        """Inseq's ReAGent importance over the prompt's tokens (NaN when no probe stopped)."""
        torch.manual_seed(seed)  # Inseq draws from torch's global generator
        out = self._inseq_model(steps or self.args.max_steps).attribute(
            prompt, prompt + target, show_progress=False)
        attr = out.sequence_attributions[0].target_attributions
        n = len(self.model.to_str_tokens(prompt, prepend_bos=False))
        return attr[:n, 0, 0].float() if attr.ndim == 3 else attr[:n, 0].float()

    def ours_importance(self, prompt: str, target: str, seed: int, steps: int | None = None,
                        replacer: str = "uniform", probe_dtype: str | None = None, bos: bool = False) -> torch.Tensor:
        """Our ReAGent's importance over the prompt's tokens (a BOS, when ``bos``, left out); float32 probes unless
        ``probe_dtype`` says otherwise; a fixed number of probes like Inseq's (``adaptive=False``)."""
        res = wb.reagent(self.model, prompt=prompt, target=target, cache=False, prepend_bos=bos, seed=seed,
                         probe_dtype=probe_dtype, replacer=replacer, adaptive=False, **self.params(steps))
        return res.importance(0).float()[int(bos):]


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the mean by resampling the prompts."""
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def section_agreement(r: Runner, prompts: list[tuple[str, str | None]]) -> dict:
    rows, per_token = [], []
    s0, s1 = r.args.seed, r.args.seed + 1
    for prompt, target in prompts:
        target = r.target(prompt, target)
        (ia, ib), t_inseq = timed(lambda: (r.inseq_importance(prompt, target, s0), r.inseq_importance(prompt, target, s1)))
        (oa, ob), t_ours = timed(lambda: (r.ours_importance(prompt, target, s0), r.ours_importance(prompt, target, s1)))
        floor, ours_floor = agreement(ia, ib), agreement(oa, ob)
        cross = [agreement(oa, ib), agreement(ob, ia)]
        row = {"prompt": prompt[:44], "target": repr(target), "inseq_s": t_inseq / 2, "ours_s": t_ours / 2,
               "inseq_nan": int(ia.isnan().all()) + int(ib.isnan().all())}
        for k in STATS:
            row[f"floor_{k}"] = floor[k]
            row[f"cross_{k}"] = sum(c[k] for c in cross) / 2
            row[f"ours_{k}"] = ours_floor[k]
        rows.append(row)
        tokens = r.model.to_str_tokens(prompt, prepend_bos=False)
        per_token.append({"prompt": prompt, "target": target, "tokens": tokens,
                          "inseq": [ia.tolist(), ib.tolist()], "ours": [oa.tolist(), ob.tolist()]})
        print(f"  {prompt[:50]!r} -> {target!r}: floor rho {floor['spearman']:+.2f}, cross rho "
              f"{row['cross_spearman']:+.2f} (Inseq {t_inseq / 2:.1f} s, ours {t_ours / 2:.1f} s per run)", flush=True)
    valid = [x for x in rows if x["inseq_nan"] == 0]
    summary = {"prompts": len(rows), "prompts_without_inseq_nan": len(valid)}
    for k in STATS:
        diff = [x[f"cross_{k}"] - x[f"floor_{k}"] for x in valid]
        summary[k] = {"floor": sum(x[f"floor_{k}"] for x in valid) / len(valid),
                      "cross": sum(x[f"cross_{k}"] for x in valid) / len(valid),
                      "ours_vs_ours": sum(x[f"ours_{k}"] for x in valid) / len(valid),
                      "cross_minus_floor": sum(diff) / len(diff), "ci95": bootstrap_ci(diff)}
    a = r.args
    print_table(
        f"Agreement per prompt: Inseq vs Inseq (floor, seeds {s0}/{s1}), ours vs Inseq (cross, mean of the two "
        f"independent pairs), ours vs ours; {a.probes} probes, {a.max_steps} steps, top-n {a.top_n}, top-k {a.top_k}, "
        f"ratio {a.ratio}; rho = Spearman over the prompt's tokens, top1 / top3 = overlap", rows,
        [("prompt", "prompt", ""), ("target", "target", ""), ("floor_spearman", "rho floor", "+.2f"),
         ("cross_spearman", "rho cross", "+.2f"), ("ours_spearman", "rho ours", "+.2f"), ("floor_top1", "top1 floor", ".2f"),
         ("cross_top1", "top1 cross", ".2f"), ("floor_top3", "top3 floor", ".2f"), ("cross_top3", "top3 cross", ".2f"),
         ("inseq_s", "Inseq s", ".1f"), ("ours_s", "ours s", ".1f"), ("inseq_nan", "Inseq NaN", "d")])
    print(f"\n== Agreement summary over {len(valid)} prompts where both Inseq runs stopped ({len(rows) - len(valid)} left out)")
    for k in STATS:
        s = summary[k]
        lo, hi = s["ci95"]
        print(f"  {k:8s}  Inseq vs Inseq {s['floor']:.3f}   ours vs Inseq {s['cross']:.3f}   ours vs ours "
              f"{s['ours_vs_ours']:.3f}   cross - floor {s['cross_minus_floor']:+.3f} (95% CI {lo:+.3f} .. {hi:+.3f})")
    return {"rows": rows, "summary": summary, "per_token": per_token}


def integrated_gradients(model, prompt: str, target: str, bos: bool = False) -> torch.Tensor:
    res = wb.attribute(model, prompt=prompt, method="integrated_gradients", target=target, cache=False, prepend_bos=bos)
    return res.importance(0).float()[int(bos):]


def section_copy(r: Runner, n_words: int, n_inseq: int, n_predictions: int) -> dict:
    tasks = copy_tasks(r.model, n_words, seed=r.args.copy_seed)
    hits: dict[str, list[bool]] = {"reagent": [], "reagent_bos": [], "reagent_predictions": [], "integrated_gradients": [],
                                   "integrated_gradients_bos": [], "inseq_reagent": []}
    for i, t in enumerate(tasks):
        hits["reagent"].append(ranks_first(r.ours_importance(t.prompt, t.target, r.args.seed), t.answer_position))
        hits["reagent_bos"].append(ranks_first(r.ours_importance(t.prompt, t.target, r.args.seed, bos=True),
                                               t.answer_position))
        if i < n_predictions:
            hits["reagent_predictions"].append(ranks_first(
                r.ours_importance(t.prompt, t.target, r.args.seed, replacer="predictions"), t.answer_position))
        hits["integrated_gradients"].append(ranks_first(integrated_gradients(r.model, t.prompt, t.target), t.answer_position))
        hits["integrated_gradients_bos"].append(ranks_first(integrated_gradients(r.model, t.prompt, t.target, bos=True),
                                                            t.answer_position))
        if i < n_inseq:
            hits["inseq_reagent"].append(ranks_first(r.inseq_importance(t.prompt, t.target, r.args.seed), t.answer_position))
        print(f"  {t.word!r}: " + " ".join(f"{k}={int(v[-1])}" for k, v in hits.items() if len(v) > i), flush=True)
    rows = [{"method": k, "words": len(v), "rate": sum(v) / len(v)} for k, v in hits.items() if v]
    print_table(f"Copy tasks: the earlier mention of W ranked first (random single-token words, seed {r.args.copy_seed}; "
                f"ReAGent {r.args.probes} probes, {r.args.max_steps} steps)", rows,
                [("method", "method", ""), ("words", "words", "d"), ("rate", "rate", ".2f")])
    return {"rows": rows, "words": [t.word for t in tasks]}


def section_speed(r: Runner, prompts: list[str], steps: int) -> list[dict]:
    rows = []
    for prompt in prompts:
        target = r.target(prompt, None)
        load = load_avg()
        _, t_inseq = timed(lambda: r.inseq_importance(prompt, target, r.args.seed, steps))
        _, t_ours = timed(lambda: r.ours_importance(prompt, target, r.args.seed, steps))
        _, t_auto = timed(lambda: r.ours_importance(prompt, target, r.args.seed, steps, probe_dtype="auto"))
        rows.append({"prompt": prompt[:50], "inseq_s": t_inseq, "ours_s": t_ours, "auto_s": t_auto, "load": load})
    rows.append({"prompt": "ALL", **{k: sum(x[k] for x in rows) for k in ("inseq_s", "ours_s", "auto_s")}})
    for x in rows:
        x["speedup"], x["auto_speedup"] = x["inseq_s"] / x["ours_s"], x["inseq_s"] / x["auto_s"]
    print_table(f"Speed at Inseq's defaults ({r.args.probes} probes, {steps} steps, {torch.get_num_threads()} thread(s); "
                "ours in float32 like Inseq, and at the library default probe_dtype='auto'; load = 1-min load average "
                "before the row)", rows,
                [("prompt", "prompt", ""), ("inseq_s", "Inseq s", ".1f"), ("ours_s", "ours fp32 s", ".2f"),
                 ("speedup", "speedup", ".1f"), ("auto_s", "ours auto s", ".2f"), ("auto_speedup", "speedup", ".1f"),
                 ("load", "load", "")])
    return rows


# prompts whose probes run 20-100 steps (median over 16 probes of ours, seed 0 at 16 x 300: 38 and 90 steps), so that
# a run's importance is more than its random start and Inseq's runs agree with each other
RECORDED_PROMPTS = ("On sunny days the children like to play in the", "The teacher asked the students to open their")


def record(r: Runner, path: Path, seeds: int) -> None:
    """Inseq's importances on prompts whose probes run tens of steps, for the tests' recorded reference
    (tests/analyses/attribution/test_attribution_real.py runs ours on the same prompts and settings)::

        python benchmarks/reagent.py --record tests/data/inseq_reagent.json --probes 16 --max-steps 100
    """
    out = {"inseq": "0.7.1", "params": r.params(), "prompts": []}
    for prompt in RECORDED_PROMPTS:
        target = r.target(prompt, None)
        runs = []
        for s in range(seeds):
            start = time.perf_counter()
            runs.append(r.inseq_importance(prompt, target, s).tolist())
            print(f"  {prompt!r} -> {target!r}, seed {s}: {time.perf_counter() - start:.0f} s", flush=True)
        out["prompts"].append({"prompt": prompt, "target": target, "inseq": runs})
        path.write_text(json.dumps(out, indent=1) + "\n")  # after each prompt: a run cut short keeps what it has


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", nargs="+", default=["agreement", "copy", "speed"],
                   choices=["agreement", "copy", "speed"])
    p.add_argument("--quick", action="store_true", help="4 prompts, 10 words, 300-step speed run")
    p.add_argument("--probes", type=int, default=16, help="Inseq's default 16")
    p.add_argument("--max-steps", type=int, default=300, help="agreement and copy runs (Inseq's default: 3000)")
    p.add_argument("--speed-steps", type=int, default=3000, help="the speed section's max steps (Inseq's default)")
    p.add_argument("--top-n", type=int, default=5)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--ratio", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--prompts", type=int, default=20, help="agreement prompts: the mixed set's first n - 2 and 2 copy tasks")
    p.add_argument("--copy-words", type=int, default=50)
    p.add_argument("--copy-inseq", type=int, default=10, help="copy tasks that Inseq also runs (slow)")
    p.add_argument("--copy-predictions", type=int, default=20, help="copy tasks also run with replacer='predictions'")
    p.add_argument("--copy-seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    p.add_argument("--json", default=None)
    p.add_argument("--record", default=None, help="write Inseq's importances on a few prompts (the tests' reference)")
    p.add_argument("--record-seeds", type=int, default=8)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = Runner(args)
    print(f"workbench {wb.__version__}, inseq 0.7.1, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"cpu, model {r.model.name}, load average {load_avg()}")
    if args.record:
        record(r, Path(args.record), seeds=args.record_seeds)
        return
    agreement_prompts = [(q, None) for q in MIXED_PROMPTS[: args.prompts - 2]]
    agreement_prompts += [(t.prompt, t.target) for t in copy_tasks(r.model, 2, seed=99)]
    # prompts whose probes all stop early: at 3000 steps, prompts where some probe never stops take Inseq hours here
    speed_prompts = ["The Eiffel Tower is in the city of", "Water boils at a temperature of"]
    if args.quick:
        agreement_prompts, args.copy_words, args.copy_inseq, args.copy_predictions = agreement_prompts[:4], 10, 3, 3
        args.speed_steps, speed_prompts = 300, speed_prompts[:1]
    results: dict = {"args": vars(args)}
    if "agreement" in args.sections:
        results["agreement"] = section_agreement(r, agreement_prompts)
    if "copy" in args.sections:
        results["copy"] = section_copy(r, args.copy_words, args.copy_inseq, args.copy_predictions)
    if "speed" in args.sections:
        results["speed"] = section_speed(r, speed_prompts, args.speed_steps)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
