"""A planted copy model for attribution tests: its next token is the token at one known position.

One-layer GPT-2 on the tiny byte vocabulary (d_model 160), residual dims split into:
  0..63    token identity (unit, zero-mean rows of wte)
  64..127  the copied identity (written by attention, read by the untied unembedding)
  128/129  a marker (-m, +m) in the position embedding of ``COPY_POSITION`` only
  130/131  a large constant (-B, +B) in every position embedding, so every LayerNorm divides by
           nearly the same number: the network is close to linear in each token embedding
           (input x gradient is then meaningful, not cancelled by normalisation).
Head 0 attends from every query to the marked position (constant query bias x marker key) and
copies that token's identity; the unembedding reads only the copied dims. The MLP is zero. So the
next token after any prompt is the token at ``COPY_POSITION`` (p ~ 0.8), and only it matters.
"""

from __future__ import annotations

from pathlib import Path

import torch

COPY_POSITION = 2  # BOS, then the prompt: position 2 is the prompt's second character
D_MODEL, TOK, COPY, MARK, BIAS = 160, 0, 64, 128, 130
B = 10.0  # the constant in every position embedding
LOGIT_GAIN = 8.0  # unembedding scale: sets how sure the model is of the copied token
COPY_GAIN = 4.0  # attention output gain (the unembedding divides by it): makes the copy path, not the
                 # last position's direct path to the unembedding, dominate the input gradients


def build_copy_model(folder: Path, *, seed: int = 0, position: int = COPY_POSITION, logit_gain: float = LOGIT_GAIN) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.models.tiny import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, byte_tokenizer

    config = GPT2Config(vocab_size=VOCAB_SIZE, n_embd=D_MODEL, n_layer=1, n_head=2, n_positions=64,
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=False,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gen = torch.Generator().manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        tr = model.transformer
        tok = torch.randn(VOCAB_SIZE, 64, generator=gen)
        tok = tok - tok.mean(-1, keepdim=True)
        tok = tok / tok.norm(dim=-1, keepdim=True)
        tr.wte.weight[:, TOK:TOK + 64] = tok
        tr.wpe.weight[:, BIAS], tr.wpe.weight[:, BIAS + 1] = -B, B
        tr.wpe.weight[position, MARK], tr.wpe.weight[position, MARK + 1] = -1.0, 1.0
        block = tr.h[0]
        for ln in (block.ln_1, block.ln_2, tr.ln_f):
            ln.weight.fill_(1.0)
        W, b = block.attn.c_attn.weight, block.attn.c_attn.bias  # Conv1D: [in, 3 * d_model] = q | k | v
        b[0] = 300.0  # query of head 0: a constant
        W[MARK + 1, D_MODEL] = 1.0  # key of head 0: the marker
        for i in range(64):
            W[TOK + i, 2 * D_MODEL + i] = 1.0  # value of head 0: the token identity
            block.attn.c_proj.weight[i, COPY + i] = COPY_GAIN  # head 0 output into the copy dims
        scale = (D_MODEL / 2) / B**2  # what the two LayerNorms multiply the copied identity by
        model.lm_head.weight[:, COPY:COPY + 64] = tok * logit_gain / (scale * COPY_GAIN)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    byte_tokenizer(folder / "_tok").save_pretrained(folder)
    return folder


class PlantedFunction:
    """A model whose truth is known by construction, for ReAGent's estimator: the target token's logit is a
    planted function of which context positions still hold their original token; every other logit is 0.

    * ``"graded"``: logit = sum_i w_i kept_i with distinct weights (a strict order of importance);
    * ``"tie"``: logit = a kept_i kept_j + c (positions i and j both required: a tie by symmetry);
    * ``"redundant"``: logit = a (kept_i or kept_j) + c (either suffices: leave-one-out sees neither).

    It answers what ReAGent asks of a model (``logits(input_ids=, keep=)``, ``device``, ``dtype``) and nothing more.
    """

    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, kind: str, context: list[int], *, target: int, vocab: int, weights=None, pair=(1, 2),
                 strength: float = 6.0, offset: float = -2.0):
        self.kind, self.context, self.target, self.vocab = kind, torch.tensor(context), target, vocab
        self.weights = torch.tensor(weights, dtype=torch.float32) if weights is not None else None
        self.pair, self.strength, self.offset = pair, strength, offset

    def logits(self, input_ids, keep: int = 1):
        kept = (input_ids == self.context[: input_ids.shape[1]]).float()  # [rows, pos]
        i, j = self.pair
        if self.kind == "graded":
            value = kept[:, : len(self.weights)] @ self.weights + self.offset
        elif self.kind == "tie":
            value = self.strength * kept[:, i] * kept[:, j] + self.offset
        elif self.kind == "redundant":
            value = self.strength * torch.maximum(kept[:, i], kept[:, j]) + self.offset
        else:
            raise ValueError(self.kind)
        out = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        out[:, -1, self.target] = value
        return out[:, -keep:]
