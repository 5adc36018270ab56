"""Super-weight benchmarks: streaming detection vs a naive cached scan, batched vs per-tile quantization.

    python benchmarks/super_weights.py [--quick] [--repeat N] [--device cpu|cuda] [--json out.json]

Two tables, each measured side by side in one run (cases interleaved round-robin):

detect     one scan of the embedded model over ``batch`` x ``window`` tokens of the evaluation
           corpus. Baseline: ``run_with_cache`` keeping every layer's MLP input and output, then
           the same per-layer maxima / argmax / top contribution from the cache. Ours: the
           streaming hooks of ``workbench.analyses.super_weights.scan``. Floor: a plain forward.
           Time = median wall seconds; peak = the largest memory increase during the call
           (CPU: resident set sampled every millisecond, after returning freed heap pages to the
           OS with malloc_trim; CUDA: max_memory_allocated).
quantize   4-bit block-wise RTN of every W_out / W_in / W_gate matrix (128 x 128 tiles). Baseline:
           a Python loop over matrices and tiles. Ours: ``blockwise_rtn`` on the stacked layers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WORKBENCH_PROGRESS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

import workbench as wb  # noqa: E402
from workbench.analyses.super_weights.quantize import blockwise_rtn  # noqa: E402
from workbench.analyses.super_weights.scan import StreamingRecorder  # noqa: E402
from workbench.corpus import token_windows  # noqa: E402
from workbench.models import hook_names as hn  # noqa: E402


# ------------------------------------------------------------------ measuring
def _trim() -> None:
    """Give freed heap pages back to the OS, so the next call's resident-set growth is its own (glibc)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Largest memory increase inside the block: CUDA allocator peak, or sampled resident set on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.peak = 0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import gc

            gc.collect()
            _trim()
            self.base, self.high, self.running = _rss(), _rss(), True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.high = max(self.high, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.high, _rss()) - self.base


def measure(cases: dict, repeat: int, warmup: int, device) -> dict[str, tuple[float, float]]:
    """Median seconds and median peak bytes of each case, interleaved round-robin."""
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in cases}
    peaks = {k: [] for k in cases}
    for _ in range(repeat):
        for name, fn in cases.items():
            with PeakMemory(device) as mem:
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
            peaks[name].append(mem.peak)
    return {k: (statistics.median(times[k]), statistics.median(peaks[k])) for k in cases}


def print_table(title: str, baseline: str, rows: list[dict]) -> None:
    print(f"\n== {title}   (ratio = row / {baseline})")
    header = f"{'case':<44} {'seconds':>9} {'ratio':>7} {'peak MB':>9} {'ratio':>7}"
    print(header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['name']:<44} {r['seconds']:>9.3f} {r['time_ratio']:>7.2f} {r['peak_mb']:>9.1f} {r['mem_ratio']:>7.2f}")


def rows_of(results: dict, baseline: str) -> list[dict]:
    base_t, base_m = results[baseline]
    return [{"name": k, "seconds": t, "time_ratio": t / base_t, "peak_mb": m / 1e6, "mem_ratio": m / base_m if base_m else float("nan")}
            for k, (t, m) in results.items()]


# ------------------------------------------------------------------ detect
def naive_scan(model, tokens) -> list[tuple]:
    """The baseline: cache every MLP input and output, then reduce (what a script without streaming does)."""
    L = model.facts.n_layers
    names = [hn.mlp_post(l) for l in range(L)] + [hn.mlp_out(l) for l in range(L)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names=names)
    out = []
    for l in range(L):
        x, y = cache[names[l]], cache[names[L + l]]
        x_chan, y_chan = x.abs().amax((0, 1)), y.abs().amax((0, 1))
        flat = y.abs().flatten().argmax()
        b, p, j = torch.unravel_index(flat, y.shape)
        contrib = x[b, p] * model.mlp_weights(l).W_out[:, j]
        out.append((x_chan.max().item(), y_chan.max().item(), int(j), int(contrib.abs().argmax())))
    return out


def bench_detect(model, args) -> list[dict]:
    tokens = token_windows(model, window=args.window, max_windows=args.batch)  # [batch, window]

    def streaming():
        StreamingRecorder(model, resid=False).run(tokens)

    def plain():
        with torch.no_grad():
            model(tokens)

    # Same answer first (the benchmark compares equal work).
    rec = StreamingRecorder(model, resid=False)
    rec.run(tokens)
    naive = naive_scan(model, tokens)
    stats = rec.stats()
    assert [n[2] for n in naive] == stats.out_spike[:, 2].tolist() and [n[3] for n in naive] == stats.top_col.tolist()
    results = measure({"naive: run_with_cache + reduce (baseline)": lambda: naive_scan(model, tokens),
                       "ours: streaming hooks": streaming,
                       "plain forward (floor)": plain}, args.repeat, args.warmup, model.device)
    return rows_of(results, "naive: run_with_cache + reduce (baseline)")


# ------------------------------------------------------------------ quantize
def naive_rtn(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """Per-tile Python loop (the baseline): same maths as blockwise_rtn."""
    out = torch.empty_like(w)
    levels = 2**bits - 1
    R, C = w.shape
    for r in range(0, R, block):
        for c in range(0, C, block):
            tile = w[r : r + block, c : c + block]
            lo, hi = tile.min(), tile.max()
            step = (hi - lo).clamp_min(torch.finfo(torch.float32).tiny) / levels
            out[r : r + block, c : c + block] = ((tile - lo) / step).round().clamp(0, levels) * step + lo
    return out


def bench_quantize(model, args) -> list[dict]:
    names = [n for n in ("W_in", "W_gate", "W_out") if n != "W_gate" or model.facts.mlp == "gated"]
    stacks = {n: getattr(model, n).contiguous() for n in names}  # [layer, rows, cols] copies

    def ours():
        return {n: blockwise_rtn(s, 4, args.block) for n, s in stacks.items()}

    def naive():
        return {n: torch.stack([naive_rtn(m, 4, args.block) for m in s]) for n, s in stacks.items()}

    a, b = ours(), naive()
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in names)
    results = measure({"naive: loop over matrices and tiles (baseline)": naive, "ours: batched blockwise_rtn": ours},
                      args.repeat, args.warmup, model.device)
    return rows_of(results, "naive: loop over matrices and tiles (baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one timed run")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    args.batch, args.window = (4, 128) if args.quick else (8, 256)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.warmup = 1
    args.block = 128
    torch.set_grad_enabled(False)
    model = wb.load_model(device=args.device)
    print(f"model {model.name} on {model.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"detect on {args.batch} x {args.window} tokens; median of {args.repeat}")
    detect = bench_detect(model, args)
    print_table(f"super-weight scan, {args.batch} x {args.window} tokens", "naive", detect)
    quant = bench_quantize(model, args)
    print_table(f"4-bit block-wise RTN of all MLP matrices, {args.block} x {args.block} tiles", "naive", quant)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"detect": detect, "quantize": quant, "device": str(model.device)}, f, indent=2)


if __name__ == "__main__":
    main()
