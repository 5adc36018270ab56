"""Checkpoints of a pretend training run, and a Dask worker plugin that kills its worker once.

``save_training_run`` writes a tiny 4-layer Llama at several steps: the weights of step ``s`` are the initial
ones plus ``s / 1000`` of a fixed random drift, each saved like a real checkpoint (``config.json``, safetensors,
a tokenizer), so an analysis across them has something that moves. ``KillOnce`` makes the first worker that
starts one of the named tasks kill itself with SIGKILL (a crash, no clean-up), once per marker file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import torch
from distributed.diagnostics.plugin import WorkerPlugin

from .families import BOS, EOS, PAD, VOCAB


def save_training_run(root: Path, steps=(0, 500, 1000), *, n_layers: int = 4, seed: int = 0) -> list[Path]:
    import transformers

    from workbench.models.tiny import byte_tokenizer

    config = transformers.LlamaConfig(
        vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
        hidden_size=64, intermediate_size=128, num_hidden_layers=n_layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config).eval()
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        drift = {n: 0.05 * torch.randn_like(p) * p.std().clamp_min(0.1) for n, p in start.items()}
    tokenizer = byte_tokenizer(root / ".tokenizer")
    folders = []
    for step in steps:
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(start[name] + step / 1000 * drift[name])
        folder = root / f"step{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


class KillOnce(WorkerPlugin):
    """A Dask worker plugin: the worker that first starts executing a task whose key contains ``task`` kills
    itself, once (the marker file says it happened). Registered with ``client.register_plugin``."""

    name = "kill-once"

    def __init__(self, marker: str, task: str):
        self.marker, self.task = marker, task

    def transition(self, key, start: str, finish: str, **kwargs) -> None:
        if finish != "executing" or self.task not in str(key):
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # only the first worker here
        except FileExistsError:
            return
        Path(self.marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
