"""Scale benchmark: a 1B- and a 7B-shaped Llama checkpoint on this machine, time and peak memory.

    python benchmarks/scale.py [--quick] [--shapes 1b 7b] [--cap 2GiB] [--no-baseline] [--tmp DIR] [--json out.json]

Each shape's checkpoint is written with random bfloat16 weights (random values are honest for time and
memory) and one planted super weight, shard by shard into a temporary folder that is deleted at the end
(7B: ~13.5 GB on disk; the folder sits under ``--tmp``, default the system's temporary folder). Then, each
row in a fresh Python process, its peak resident memory read from ``/proc/self/status`` (VmHWM: mapped file
pages count too):

(o) the overview (every matrix's spectrum and statistics): ``wb.model_overview(wb.load_weights(folder))``,
    one layer's matrices at a time;
(a) head composition of every head pair (Q, K, V; whole heads and per component), ``cache=False``:
    - ``from shards``: ``wb.head_composition(wb.load_weights(folder))``, one layer's weights at a time;
    - ``load model first``: ``wb.head_composition(wb.load_model(folder))`` (transformers + the bridge);
    - ``matmul floor``: the FLOPs of the products the analysis cannot do without, divided by the float32 matmul
      rate this run measures on products of the same shape. The analysis never forms a d_model x d_model
      circuit: every writer component meets every later reader through the d_head-rank factors
      (``analyses/composition.py``), one [heads * d_head, d_model] @ [d_model, heads * d_head] product per
      writer layer x later reader layer and kind, plus the same product between the 128 x 128 heads of each
      of the two nulls (Gaussian and rotated) per kind: 2 x rows x d_model x columns each, summed. Everything
      else (reading shards, the per-head QR/SVDs, tables) is what the ratio charges against the floor.
      Time is process CPU time (all threads) for both the run and the rate, so a machine shared with other
      jobs slows both alike; wall time is reported beside it, and the load average.
(b) the super-weight scan of three short prompts (``wb.super_weights``, two scan rounds, one 16-token
    evaluation window) on ``wb.load_model(folder, device_map="auto", max_memory={"cpu": cap})``: every
    layer that does not fit under the cap is read from the checkpoint's own shards during each forward.
    ``found``: the planted weight is among the candidates.

``--quick`` runs the 1B shape only (a few minutes on 2 cores). ``--threads N`` fixes the threads of the rows
(``WORKBENCH_THREADS``) and of the rate; without it the workbench sizes its threads to the cores free when the
row starts, which on a busy machine is fewer than the rate used: compare CPU times then, as the ratio does.
``--no-baseline`` / ``--no-scan`` / ``--no-composition`` skip rows. Nothing asserts on time: read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout this script is in, not an installed copy
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")

import torch  # noqa: E402


@dataclass(frozen=True)
class Shape:
    """A Llama-family shape (the real model it copies in ``name``)."""

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_mlp: int
    vocab: int = 32000

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_params(self) -> int:
        kv = self.n_kv_heads * self.d_head
        per_layer = 2 * self.d_model * self.d_model + 2 * self.d_model * kv + 3 * self.d_model * self.d_mlp + 2 * self.d_model
        return self.n_layers * per_layer + 2 * self.vocab * self.d_model + self.d_model


SHAPES = {
    "1b": Shape("TinyLlama-1.1B", 22, 2048, 32, 4, 5632),
    "7b": Shape("Llama-2-7B", 32, 4096, 32, 32, 11008),
}
PLANTED = (1, 2533, 7890)  # (layer, row = residual channel, col = hidden channel): Llama-2-7B's own, folded into shape
PROMPTS = ("Apple Inc. is a worldwide tech company.", "Summer is hot. Winter is", "The quick brown fox jumps.")


def planted(shape: Shape) -> tuple[int, int, int]:
    layer, row, col = PLANTED
    return layer, row % shape.d_model, col % shape.d_mlp


# ------------------------------------------------------------------ the checkpoint
def write_checkpoint(shape: Shape, folder: Path, seed: int = 0) -> None:
    """config.json, a byte tokenizer and one bfloat16 safetensors shard per layer (+ embeddings), never more
    than one layer in memory. The planted super weight: hidden channel ``col`` of ``layer`` is made massive
    (its gate and up rows scaled) and written into residual channel ``row`` by one large down_proj weight."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from workbench.models.tiny import byte_tokenizer

    folder.mkdir(parents=True)
    LlamaConfig(vocab_size=shape.vocab, hidden_size=shape.d_model, intermediate_size=shape.d_mlp,
                num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                num_key_value_heads=shape.n_kv_heads, max_position_embeddings=4096, tie_word_embeddings=False,
                bos_token_id=256, eos_token_id=257, pad_token_id=258, dtype="bfloat16").save_pretrained(folder)
    byte_tokenizer(folder / ".tokenizer").save_pretrained(folder)
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *size: (torch.randn(*size, generator=gen) * 0.02).to(torch.bfloat16)  # noqa: E731
    gain = lambda: (1 + 0.1 * torch.randn(shape.d_model, generator=gen)).to(torch.bfloat16)  # noqa: E731
    kv = shape.n_kv_heads * shape.d_head
    weight_map = {}

    def shard(name: str, tensors: dict) -> None:
        save_file(tensors, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in tensors})

    p_layer, p_row, p_col = planted(shape)
    for layer in range(shape.n_layers):
        pre = f"model.layers.{layer}."
        t = {pre + "self_attn.q_proj.weight": rand(shape.d_model, shape.d_model),
             pre + "self_attn.k_proj.weight": rand(kv, shape.d_model), pre + "self_attn.v_proj.weight": rand(kv, shape.d_model),
             pre + "self_attn.o_proj.weight": rand(shape.d_model, shape.d_model),
             pre + "mlp.gate_proj.weight": rand(shape.d_mlp, shape.d_model), pre + "mlp.up_proj.weight": rand(shape.d_mlp, shape.d_model),
             pre + "mlp.down_proj.weight": rand(shape.d_model, shape.d_mlp),
             pre + "input_layernorm.weight": gain(), pre + "post_attention_layernorm.weight": gain()}
        if layer == p_layer:
            for proj in ("gate_proj", "up_proj"):
                t[pre + f"mlp.{proj}.weight"][p_col] *= 40
            t[pre + "mlp.down_proj.weight"][p_row, p_col] = 25.0
        shard(f"model-layer-{layer:03d}.safetensors", t)
        del t
    shard("model-embeddings.safetensors", {"model.embed_tokens.weight": rand(shape.vocab, shape.d_model),
                                           "lm_head.weight": rand(shape.vocab, shape.d_model),
                                           "model.norm.weight": gain()})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


# ------------------------------------------------------------------ the matmul floor
NULL_SAMPLES = 128  # head_composition's default null_samples: n x n random pairs per null and kind


def composition_flops(shape: Shape) -> dict[str, float]:
    """FLOPs of the products head composition needs (module docstring): ``pairs``, per writer layer x later
    reader layer and kind one [heads * d_head, d_model] @ [d_model, heads * d_head] product; ``nulls``, per null
    and kind one [n * d_head, d_model] @ [d_model, n * d_head] product."""
    n = shape.n_heads * shape.d_head
    pairs = shape.n_layers * (shape.n_layers - 1) // 2
    m = NULL_SAMPLES * shape.d_head
    return {"pairs": 3 * pairs * 2.0 * n * shape.d_model * n, "nulls": 2 * 3 * 2.0 * m * shape.d_model * m}


def matmul_rate(shape: Shape, seconds: float = 3.0) -> dict[str, float]:
    """float32 FLOP/s on products of the composition's shape, per second of process CPU time and of wall time
    (median over repeats for ``seconds``)."""
    n = shape.n_heads * shape.d_head
    a, b = torch.randn(n, shape.d_model), torch.randn(shape.d_model, n)
    a @ b  # warm-up
    cpu, wall, start = [], [], time.perf_counter()
    while time.perf_counter() - start < seconds or len(cpu) < 3:
        t, w = time.process_time(), time.perf_counter()
        a @ b
        cpu.append(time.process_time() - t)
        wall.append(time.perf_counter() - w)
    flops = 2.0 * n * shape.d_model * n
    return {"cpu": flops / sorted(cpu)[len(cpu) // 2], "wall": flops / sorted(wall)[len(wall) // 2]}


# ------------------------------------------------------------------ the rows (each in a child process)
def _peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(task: str, folder: str, cap: str, offload: str) -> dict:
    import workbench as wb


    out: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    if task == "overview_shards":
        result = wb.model_overview(wb.load_weights(folder), cache=False)
    elif task == "composition_shards":
        result = wb.head_composition(wb.load_weights(folder), cache=False)
    elif task == "composition_loaded":
        model = wb.load_model(folder, progress=False)
        out["load_s"] = time.perf_counter() - start
        result = wb.head_composition(model, cache=False)
    elif task == "scan_offloaded":
        model = wb.load_model(folder, progress=False, device_map="auto", max_memory={"cpu": cap}, offload_folder=offload)
        out["load_s"] = time.perf_counter() - start
        out["on_disk"] = sum(v == "disk" for v in model.hf_model.hf_device_map.values())
        result = wb.super_weights(model, prompts=PROMPTS, max_rounds=2, eval_windows=1, window=16, n_random=1, cache=False)
        out["candidates"] = [list(c) for c in result.coordinates(role=None)]
    else:
        raise SystemExit(f"unknown task {task}")
    out["seconds"] = time.perf_counter() - start
    out["cpu_seconds"] = time.process_time() - cpu
    out["peak_rss_mb"] = _peak_rss_mb()
    out["workbench_from"] = str(Path(wb.__file__).parent)
    out["pairs"] = int(len(result.tables[next(iter(result.tables))]))
    return out


def run_child(task: str, folder: Path, cap: str, offload: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", task, str(folder), cap, str(offload)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ main
def measure(shape: Shape, root: Path, cap: str, baseline: bool, scan: bool, composition: bool = True) -> dict:
    folder = root / shape.name
    t = time.perf_counter()
    write_checkpoint(shape, folder)
    row: dict = {"shape": asdict(shape), "params": shape.n_params, "write_s": time.perf_counter() - t}
    flops = composition_flops(shape)
    row["load_before"] = os.getloadavg()[0]
    row["overview"] = run_child("overview_shards", folder, cap, root / "offload")  # weight-only, streamed
    if composition:
        rate = matmul_rate(shape)  # measured next to the row it is the floor of, under the same load
        row["matmul_gflops"] = rate["cpu"] / 1e9  # per CPU-second: the floor's unit
        row["matmul_gflops_wall"] = rate["wall"] / 1e9
        row["flops"] = flops
        row["floor_s"] = sum(flops.values()) / rate["cpu"]  # CPU seconds
        row["floor_pairs_only_s"] = flops["pairs"] / rate["cpu"]
        row["shards"] = run_child("composition_shards", folder, cap, root / "offload")
    row["load_after"] = os.getloadavg()[0]
    if baseline:
        row["loaded"] = run_child("composition_loaded", folder, cap, root / "offload")
    if scan:
        row["scan"] = run_child("scan_offloaded", folder, cap, root / "offload")
        row["scan"]["found"] = list(planted(shape)) in row["scan"].get("candidates", [])
    shutil.rmtree(folder)
    return row


def table(rows: list[dict]) -> str:
    def run(entry: dict) -> str:
        if "error" in entry:
            return "failed: " + entry["error"][:60]
        return f"{entry['seconds']:.0f} / {entry['peak_rss_mb']:.0f}" if entry else "-"

    lines = ["| shape | params | overview from shards: wall s / CPU s / peak MB "
             "| (a) composition from shards: wall s / CPU s / peak MB | matmul floor: CPU s (GFLOP per CPU-s) "
             "| shards / floor (CPU) | load avg | (a) load model first: s / peak MB | (b) offloaded scan: s / peak MB "
             "| planted weight found |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def walls(s: dict) -> str:
        if not s:
            return "-"
        return run(s) if "error" in s else f"{s['seconds']:.0f} / {s['cpu_seconds']:.0f} / {s['peak_rss_mb']:.0f}"

    for r in rows:
        s = r.get("shards", {})
        ratio = f"{s['cpu_seconds'] / r['floor_s']:.2f}x" if "cpu_seconds" in s else "-"
        floor = f"{r['floor_s']:.0f} ({r['matmul_gflops']:.0f})" if "floor_s" in r else "-"
        lines.append(f"| {r['shape']['name']} | {r['params'] / 1e9:.2f}B | {walls(r['overview'])} | {walls(s)} | {floor} "
                     f"| {ratio} | {r['load_before']:.1f} / {r['load_after']:.1f} "
                     f"| {run(r.get('loaded', {}))} | {run(r.get('scan', {}))} | {r.get('scan', {}).get('found', '-')} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:6])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 1B shape only")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["1b", "7b"])
    parser.add_argument("--cap", default="2GiB", help="accelerate's CPU memory cap for (b)")
    parser.add_argument("--no-baseline", action="store_true", help="skip loading the model with transformers first")
    parser.add_argument("--no-scan", action="store_true", help="skip (b), the offloaded super-weight scan")
    parser.add_argument("--no-composition", action="store_true", help="skip (a) from shards (7B: an hour on 2 cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the rows and the matmul rate")
    parser.add_argument("--tmp", default=None, help="where the temporary checkpoints go (7B: ~13.5 GB)")
    parser.add_argument("--layers", type=int, default=None,
                        help="write only this many layers of each shape (its widths kept): a streamed row's peak is one "
                             "layer's work plus what it keeps, at a fraction of the time")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shapes = ["1b"] if args.quick else args.shapes
    if args.threads:  # the rows' processes: the workbench's own thread sizing (workbench/_threads.py) obeys it
        os.environ["WORKBENCH_THREADS"] = str(args.threads)
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="workbench-scale-", dir=args.tmp) as tmp:
        for name in shapes:
            shape = SHAPES[name]
            if args.layers:
                shape = replace(shape, name=f"{shape.name} ({args.layers} of {shape.n_layers} layers)", n_layers=args.layers)
            print(f"{shape.name}: writing the checkpoint and measuring ...", flush=True)
            rows.append(measure(shape, Path(tmp), args.cap, not args.no_baseline, not args.no_scan,
                                not args.no_composition))
            print(table(rows[-1:]), flush=True)
    print(f"\ntorch {torch.__version__}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads; floor = FLOPs of "
          "the all-pairs and the two nulls' products / float32 matmul FLOP per CPU-second (module docstring)\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
