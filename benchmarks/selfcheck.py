"""What the load-time self-check costs, next to the forward pass it is measured against.

    python benchmarks/selfcheck.py              # the embedded model and a 7B-shaped slice (~2 min, 2 CPU cores)
    python benchmarks/selfcheck.py --no-7b      # the embedded model only

Rows, each the median of ``--repeat`` runs in one process:
- ``plain forward``: the model's own forward pass on the check's prompt (the floor the goal names);
- ``self-check``: the whole check (one hooked forward, one plain forward of two rows, the identities);
- ``read back``: a later load of the same weights reads the stored check (``self_check`` with the cache warm);
- ``fingerprint``: what finding the stored check costs (the content hash of every weight).

The 7B shape is Llama-2-7B's widths (d_model 4096, 32 heads, d_mlp 11008, vocabulary 32000) with 2 layers of
random bfloat16 weights; the check's per-layer work is linear in the number of layers, so a 32-layer figure is
the 2-layer one with the layer part scaled (stated in the output). The header says how busy the machine was.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("WORKBENCH_CACHE", tempfile.mkdtemp(prefix="workbench-selfcheck-"))

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, repeat: int) -> dict[str, float]:
    from workbench.models.selfcheck import PROBE, run_self_check, self_check

    ids = model.to_tokens(PROBE)
    with torch.no_grad():
        plain = _median(lambda: model.logits(input_ids=ids), repeat)
    return {
        "plain forward": plain,
        "self-check": _median(lambda: run_self_check(model), repeat),
        "read back": _median(lambda: self_check(model), repeat),
        "fingerprint": _median(lambda: model.fingerprint(verify=True), repeat),
    }


def seven_b_slice(folder: Path, layers: int = 2):
    import transformers

    from workbench.models.tiny import byte_tokenizer

    config = transformers.LlamaConfig(hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
                                      num_key_value_heads=32, num_hidden_layers=layers, vocab_size=32000,
                                      max_position_embeddings=4096, torch_dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    byte_tokenizer(folder.parent / ".tokenizer").save_pretrained(folder)
    return folder


def main() -> None:
    import workbench as wb
    from workbench._threads import cores, free_cores

    def busy_cores() -> float:
        return cores() - free_cores(0.5)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-7b", action="store_true")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}, busy with other programs at start: {busy_cores():.1f}, torch {torch.__version__}")

    rows = {"embedded SmolLM2-135M (30 layers, float32)": measure(wb.load_model(progress=False), args.repeat)}
    if not args.no_7b:
        with tempfile.TemporaryDirectory() as tmp:
            model = wb.load_model(seven_b_slice(Path(tmp) / "llama7b-2"), progress=False)
            rows["7B shape, 2 layers (bfloat16)"] = measure(model, args.repeat)
    for name, row in rows.items():
        print(f"\n{name}")
        for what, seconds in row.items():
            print(f"  {what:14s} {seconds:8.3f} s   {seconds / row['plain forward']:6.2f}x the plain forward")
    if not args.no_7b:
        row = rows["7B shape, 2 layers (bfloat16)"]
        print("\n7B shape, 32 layers: the per-layer work scales with layers; embedding and unembedding do not,"
              " so the ratio to the plain forward stays about what the 2-layer slice shows:"
              f" {row['self-check'] / row['plain forward']:.2f}x")
    print(f"\nbusy with other programs at the end: {busy_cores():.1f}")


if __name__ == "__main__":
    main()
