"""Bilinear benchmark: interaction-matrix eigendecomposition, ours vs named baselines, in one run.

    python benchmarks/bilinear.py [--quick] [--repeat N] [--device cpu|cuda] [--json out.json]

(1) batched over directions: ``workbench.analyses.bilinear.interaction.eigendecompose`` (one batched
    build of Q_u and one batched ``eigh`` for all output directions) vs the per-direction loop of the
    paper's research code: for each direction, Q = einsum('o,oi,oj->ij', c, W, V), symmetrize, eigh.
(2) factored vs dense, for layers whose rank bound 2 d_hidden is below d_in: one thin QR of [W; V]^T
    shared by all directions plus a small (2h x 2h) eigh per direction, vs the dense d_in x d_in eigh
    (both batched). Agreement of the nonzero eigenvalues is checked in the same run.

All float64 (the analysis' default). Layers are random with the named shapes; timings do not depend
on the values. Medians of --repeat round-robin runs after warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from run import machine_facts, median_times, print_table, row  # noqa: E402  (shared helpers; sets offline env)

import torch  # noqa: E402

# (name, d_in, d_hidden, directions)
BATCH_CASES = (
    ("digits classifier: 64 -> 64, 10 classes", 64, 64, 10),
    ("bilinear LM layer: 128 -> 512, all 128 outputs", 128, 512, 128),
    ("d_model 576 -> 1536 (replacement), 16 directions", 576, 1536, 16),
)
FACTOR_CASES = (
    ("d_in 576, d_hidden 64, 32 directions", 576, 64, 32),
    ("d_in 1024, d_hidden 128, 32 directions", 1024, 128, 32),
    ("d_in 2048, d_hidden 64, 4 directions", 2048, 64, 4),
)


def per_direction_loop(W, V, c):
    """The baseline: one einsum-built interaction matrix and one eigh per direction."""
    out = []
    for ck in c:
        q = torch.einsum("o,oi,oj->ij", ck, W, V)
        out.append(torch.linalg.eigh((q + q.T) / 2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repeat, smaller cases only")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    from workbench.analyses.bilinear.interaction import eigendecompose

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    facts = machine_facts(args.device)
    print(json.dumps(facts))
    g = torch.Generator().manual_seed(0)
    make = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    report = {"facts": facts, "batched": [], "factored": []}

    batch_cases = BATCH_CASES[:2] if args.quick else BATCH_CASES
    for name, d, h, k in batch_cases:
        W, V, c = make(h, d), make(h, d), make(k, h)
        t = median_times({
            "loop": lambda: per_direction_loop(W, V, c),
            "ours": lambda: eigendecompose(W, V, c, method="dense"),
        }, repeat, warmup=1, sync=sync)
        rows = [row("per-direction einsum + eigh loop (paper code)", t["loop"] * 1e3, t["loop"] * 1e3, "ms"),
                row("batched over directions (ours, dense)", t["ours"] * 1e3, t["loop"] * 1e3, "ms")]
        print_table(f"eigendecomposition, {name}", "per-direction loop", rows, [("name", "method", "s"), ("ms", "ms", ".1f"), ("ratio", "ratio", ".2f")])
        report["batched"].append({"case": name, "rows": rows})

    factor_cases = FACTOR_CASES[:1] if args.quick else FACTOR_CASES
    for name, d, h, k in factor_cases:
        W, V, c = make(h, d), make(h, d), make(k, h)
        t = median_times({
            "dense": lambda: eigendecompose(W, V, c, method="dense"),
            "factored": lambda: eigendecompose(W, V, c, method="factored"),
        }, repeat, warmup=1, sync=sync)
        dv, _ = eigendecompose(W, V, c, method="dense")
        fv, _ = eigendecompose(W, V, c, method="factored")
        nz = lambda v: torch.cat([v[:, :h], v[:, -h:]], 1)  # noqa: E731  rank <= 2h: h positive, h negative
        err = (nz(dv) - nz(fv)).abs().max().item() / dv.abs().max().item()
        rows = [row("dense: eigh of d_in x d_in per direction", t["dense"] * 1e3, t["dense"] * 1e3, "ms"),
                row("factored: shared QR + 2h x 2h eigh (ours)", t["factored"] * 1e3, t["dense"] * 1e3, "ms",
                    notes=f"max rel. eigenvalue difference {err:.1e}")]
        print_table(f"factored vs dense, {name}", "dense", rows, [("name", "method", "s"), ("ms", "ms", ".1f"), ("ratio", "ratio", ".3f")])
        report["factored"].append({"case": name, "rows": rows})

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
