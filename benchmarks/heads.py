"""Talking-heads benchmark: all-pairs Q/K/V composition on the embedded model, ours vs baselines.

    python benchmarks/heads.py [--quick] [--repeat N] [--pairs N] [--json out.json]

(a) a straightforward dense loop: for each (writer, later reader) pair build OV_A and R_B as
    d_model x d_model matrices, multiply, take norms; per-component scores from a dense SVD of
    each writer's OV (done once per writer, not per pair). Only ``--pairs`` pairs per kind (and 6
    writer SVDs) are timed; the full cost is extrapolated to all pairs and writers.
(b) TransformerLens's ``TransformerBridge.all_composition_scores(kind)`` (whole heads only), run in a
    fresh process per kind: it materialises [L, H, L, H, d_head, d_model] tensors and peaks at ~15 GB RSS
    (measured: 21.9 GB) on the embedded model, so only Q is timed by default (``--tl-kinds Q K V`` for all).

Ours computes per-component *and* whole-head scores for all pairs in one call
(``workbench.analyses.heads.scores.all_compositions``). Weights are the raw ones
(``fold_norm=False``), as TransformerLens uses them. Agreement is checked in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_facts, median_times, print_table, row  # noqa: E402  (shared helpers; sets offline env)

import torch  # noqa: E402

KINDS = ("Q", "K", "V")


def dense_pair(w, a, b, kind):
    """Whole-head score of one pair from explicit d_model x d_model products (float32, as a user would)."""
    from workbench.analyses.heads.scores import dense_circuits, right_matrix

    left = dense_circuits(w, *a)["OV"].float()
    right = right_matrix(dense_circuits(w, *b), kind).float()
    return (left @ right).norm() / (left.norm() * right.norm()), left, right


def tl_child(kind: str, out: str) -> None:
    """In a fresh process: TransformerLens's all-pairs whole-head scores of one kind; time, peak RSS."""
    import workbench as wb

    wb.set_progress(False)
    model = wb.load_model()
    start = time.perf_counter()
    scores = model.bridge.all_composition_scores(kind).scores
    seconds = time.perf_counter() - start
    torch.save(scores.detach().cpu(), out)
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    if sys.argv[1:2] == ["--tl-child"]:
        return tl_child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, 10 dense pairs per kind")
    parser.add_argument("--tl-kinds", nargs="+", default=["Q"], choices=KINDS,
                        help="TransformerLens kinds to time (default Q: each needs ~22 GB RAM and ~35 s)")
    parser.add_argument("--skip-tl", action="store_true", help="skip TransformerLens (when ~22 GB of RAM are not free)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=40, help="dense pairs timed per kind (extrapolated)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    repeat, n_pairs = (1, 10) if args.quick else (args.repeat, args.pairs)
    tl_kinds = () if args.skip_tl else tuple(args.tl_kinds)

    import workbench as wb
    from workbench.analyses.heads.scores import all_compositions, dense_circuits, dense_score, right_matrix
    from workbench.analyses.heads.svd import head_weights

    wb.set_progress(False)
    # --- (b) TransformerLens, first, before this process holds a model: it peaks at ~20 GB RSS
    tl_times, tl_scores, tl_rss = {}, {}, 0.0
    for kind in tl_kinds:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "scores.pt"
            done = subprocess.run([sys.executable, __file__, "--tl-child", kind, str(out)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"TransformerLens child failed ({done.returncode}; -9 = out of memory): {done.stderr[-2000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            tl_scores[kind] = torch.load(out).float()
        tl_times[kind], tl_rss = info["seconds"], max(tl_rss, info["peak_rss_mb"])

    model = wb.load_model()
    facts = machine_facts(str(model.device))
    print(json.dumps(facts))
    w = head_weights(model, fold_norm=False)
    L, H = w.W_Q.shape[:2]
    all_pairs = [((la, ha), (lb, hb)) for la in range(L) for ha in range(H) for lb in range(la + 1, L) for hb in range(H)]

    # --- ours: every pair, every kind, per component + whole head
    ours = {}
    times = median_times({"ours": lambda: ours.update(all_compositions(w, w, KINDS, show_progress=False))}, repeat, warmup=1)
    t_ours = times["ours"]

    # --- (a) dense per-pair loop on a sample of pairs, extrapolated
    rng = random.Random(0)
    sample = {k: rng.sample(all_pairs, n_pairs) for k in KINDS}
    max_rel = {"head": 0.0, "component": 0.0}
    start = time.perf_counter()
    dense_svd = {}
    for a in [p[0] for p in sample["Q"][:6]]:  # dense SVD of a writer's OV: timed on 6 writers
        dense_svd[a] = torch.linalg.svd(dense_pair(w, a, (L - 1, 0), "Q")[1])
    t_svd = (time.perf_counter() - start) / 6
    start = time.perf_counter()
    for kind in KINDS:
        for a, b in sample[kind]:
            dense_pair(w, a, b, kind)
    t_pair = (time.perf_counter() - start) / (n_pairs * len(KINDS))
    for kind in KINDS:  # agreement against float64 dense products (not timed)
        for a, b in sample[kind]:
            score = float(dense_score(dense_circuits(w, *a)["OV"], right_matrix(dense_circuits(w, *b), kind)))
            ours_s = float(ours[kind].head[a[0], a[1], b[0], b[1]])
            max_rel["head"] = max(max_rel["head"], abs(ours_s - score) / score)
    start = time.perf_counter()
    for kind in KINDS:
        for a, b in sample["Q"][:6]:  # the writers whose dense SVD we have, each with its sampled reader
            u, s, vh = torch.linalg.svd(dense_circuits(w, *a)["OV"])  # float64 reference
            right = right_matrix(dense_circuits(w, *b), kind)
            comp = (vh[:w.W_Q.shape[-1]] @ right).norm(dim=-1) / right.norm()  # ||v_i^T R|| / ||R||: per-component score
            ours_c = ours[kind].component[a[0], a[1], :, b[0], b[1]].double()
            max_rel["component"] = max(max_rel["component"], float(((ours_c - comp.double()).abs() / comp.double()).max()))
    # per-component extra cost per pair: one [d_head, d_model] @ [d_model, d_model] product and norms
    probe = torch.randn(64, w.W_Q.shape[2]), torch.randn(w.W_Q.shape[2], w.W_Q.shape[2])
    start = time.perf_counter()
    for _ in range(20):
        (probe[0] @ probe[1]).norm(dim=-1)
    t_comp = (time.perf_counter() - start) / 20
    n_total = len(all_pairs) * len(KINDS)
    t_dense = n_total * (t_pair + t_comp) + L * H * t_svd
    # whole-head only, dense: no SVDs, no per-component products
    t_dense_head = n_total * t_pair

    rows_a = [
        row("dense loop, per-component + whole (extrapolated)", t_dense, t_dense, "seconds",
            f"{n_total} pair-kinds x ({t_pair * 1e3:.1f} + {t_comp * 1e3:.1f}) ms + {L * H} SVDs x {t_svd * 1e3:.0f} ms"),
        row("dense loop, whole-head only (extrapolated)", t_dense_head, t_dense, "seconds", f"timed on {n_pairs} pairs per kind"),
        row("ours: factored + batched, per-component + whole", t_ours, t_dense, "seconds",
            f"max rel. diff vs dense: whole {max_rel['head']:.1e}, component {max_rel['component']:.1e}"),
    ]
    print_table(f"all-pairs Q/K/V composition, {model.name} ({L * H} heads, {len(all_pairs)} pairs per kind)",
                "dense per-component loop", rows_a, [("name", "row", ""), ("seconds", "seconds", ".3g"), ("ratio", "ratio", ".3g")])

    tl_rel = 0.0
    mask = (torch.arange(L)[:, None, None, None] < torch.arange(L)[None, None, :, None]).expand(L, H, L, H)
    for kind, theirs in tl_scores.items():
        ref, mine = theirs[mask], ours[kind].head[mask]
        tl_rel = max(tl_rel, float(((mine - ref).abs() / ref.abs().clamp_min(1e-12)).max()))
    if not tl_kinds:
        return _finish(args, facts, rows_a, [], max_rel, float("nan"))
    t_tl = sum(tl_times.values())
    ours_kinds = {}
    times = median_times({"k": lambda: ours_kinds.update(all_compositions(w, w, tl_kinds, show_progress=False))}, repeat, warmup=0)
    rows_b = [
        row(f"TransformerLens all_composition_scores ({'+'.join(tl_kinds)})", t_tl, t_tl, "seconds",
            ", ".join(f"{k} {v:.1f} s" for k, v in tl_times.items()) + f" (whole heads only; one run each; peak RSS {tl_rss / 1024:.1f} GB)"),
        row(f"ours ({'+'.join(tl_kinds)}), per-component + whole", times["k"], t_tl, "seconds",
            f"max rel. diff vs TransformerLens {tl_rel:.1e}"),
    ]
    print_table("whole-head composition vs TransformerLens 4.3", "TransformerLens", rows_b,
                [("name", "row", ""), ("seconds", "seconds", ".3g"), ("ratio", "ratio", ".3g")])
    _finish(args, facts, rows_a, rows_b, max_rel, tl_rel)


def _finish(args, facts, rows_a, rows_b, max_rel, tl_rel) -> None:
    ok = max_rel["head"] < 1e-4 and max_rel["component"] < 1e-4 and not tl_rel >= 1e-4
    print(f"\nagreement to 1e-4 relative: {'yes' if ok else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"facts": facts, "dense": rows_a, "transformer_lens": rows_b,
                                               "max_rel": {**max_rel, "transformer_lens": tl_rel}}, indent=2))


if __name__ == "__main__":
    main()
