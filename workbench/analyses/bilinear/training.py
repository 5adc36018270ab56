"""Offline, seeded training of small bilinear models; trained weights live in the result cache.

Three tasks:

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images) with the paper's recipe:
  AdamW, cosine learning-rate schedule, Gaussian input noise, weight decay;
* ``toy``: regress planted quadratic forms y_k = x^T A_k x (A_k with known eigenpairs), the
  ground truth the interaction-matrix eigendecomposition has to recover;
* ``lm``: a small bilinear transformer over the characters of the shipped evaluation text.

Each trainer is a registered analysis (not in the report) run on a "training source" whose
fingerprint is the data's identity, so ``run_analysis`` caches the trained state dict keyed by the
training config; notebooks and tests get the same weights back without retraining.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from ..._progress import progress
from ...errors import InputError
from ...results import Result
from ...engine.registry import Analysis
from .layers import BilinearClassifier, BilinearLM, BilinearMLP

BUILDERS = {cls.kind: cls for cls in (BilinearClassifier, BilinearLM, BilinearMLP)}


@dataclass(frozen=True)
class DigitsConfig:
    d_hidden: int = 64  # bilinear hidden width
    bias: bool = False  # the paper's classifier has none
    input_noise: float = 0.4  # std of Gaussian noise added to the [0, 1] pixels in training (paper: 0.4)
    weight_decay: float = 0.5  # AdamW's decoupled decay (paper: 0.5); lowers the eigen-spectrum's effective rank
    lr: float = 1e-2
    epochs: int = 150
    batch_size: int = 256
    test_fraction: float = 0.2  # stratified held-out split
    seed: int = 0


@dataclass(frozen=True)
class ToyConfig:
    d_in: int = 16
    n_outputs: int = 4
    eigenvalues: tuple[float, ...] = (3.0, -2.0, 1.0)  # planted eigenvalues of every A_k (orthonormal eigenvectors)
    d_hidden: int = 16
    steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-2
    weight_decay: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class LMConfig:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_hidden: int = 128
    n_ctx: int = 64
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.1
    val_fraction: float = 0.1  # the text's tail, held out
    seed: int = 0


@dataclass(frozen=True)
class TrainedBilinear(Result):
    """A trained bilinear model: its state dict (tensors ``state/<name>``), the training curve
    (table ``history``) and final metrics (``meta['metrics']``). :meth:`model` rebuilds the module."""

    title = "Trained bilinear model"

    @property
    def name(self) -> str:
        """The trained model's name."""
        return str(self.meta["name"])

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics, e.g. train_accuracy, test_accuracy."""
        return dict(self.meta["metrics"])

    @property
    def history(self) -> pd.DataFrame:
        """The training curve: one row per epoch (or step)."""
        return self.tables["history"]

    def model(self):
        arch = dict(self.meta["arch"])
        kind = arch.pop("kind")
        if "image_shape" in arch:
            arch["image_shape"] = tuple(arch["image_shape"])
        if arch.get("classes"):
            arch["classes"] = tuple(arch["classes"])
        module = BUILDERS[kind](**arch, name=self.name)
        state = {k.removeprefix("state/"): v for k, v in self.tensors.items() if k.startswith("state/")}
        module.load_state_dict(state)
        return module.eval()

    def summary(self) -> list[tuple[str, str]]:
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in self.metrics.items())
        return [("model", self.name), ("task", self.meta["task"]), ("metrics", metrics)]


@dataclass(frozen=True)
class DigitsTraining(TrainedBilinear):
    analysis = "bilinear_train_digits"
    title = "Bilinear digits classifier (training)"
    config_cls = DigitsConfig


@dataclass(frozen=True)
class ToyTraining(TrainedBilinear):
    analysis = "bilinear_train_toy"
    title = "Bilinear toy model: planted quadratic forms (training)"
    config_cls = ToyConfig


@dataclass(frozen=True)
class LMTraining(TrainedBilinear):
    analysis = "bilinear_train_lm"
    title = "Bilinear character language model (training)"
    config_cls = LMConfig



class TrainingSource:
    """What ``run_analysis`` needs from a 'model': a name and a fingerprint, here the training data's identity."""

    def __init__(self, name: str, data_id: str):
        self.name = name
        self._fp = hashlib.sha256(data_id.encode()).hexdigest()[:32]

    def fingerprint(self) -> str:
        return self._fp


# ------------------------------------------------------------------ data
def digits_split(seed: int = 0, test_fraction: float = 0.2) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's digits as float pixels in [0, 1]: X_train [n, 64], y_train, X_test, y_test (stratified, seeded)."""
    _sklearn()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    X_tr, X_te, y_tr, y_te = train_test_split(
        data.data / 16.0, data.target, test_size=test_fraction, random_state=seed, stratify=data.target
    )
    f = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return f(X_tr), torch.tensor(y_tr), f(X_te), torch.tensor(y_te)


def digits_data_id() -> str:
    return f"sklearn-digits:{_sklearn().__version__}"


def _sklearn():
    # scikit-learn is the `demos` extra: only the digits demo reads it
    from ..._extras import require

    return require("sklearn", "the bilinear digits demo (scikit-learn's 8x8 digits)")


def planted_forms(config: ToyConfig) -> tuple[Tensor, Tensor]:
    """Eigenvalues [n_out, m] and orthonormal eigenvectors [n_out, m, d_in] of the toy targets A_k."""
    m = len(config.eigenvalues)
    if config.n_outputs * m > config.d_in:
        raise InputError(f"toy task needs n_outputs x len(eigenvalues) <= d_in, got {config.n_outputs} x {m} > {config.d_in}")
    g = torch.Generator().manual_seed(config.seed)
    basis, _ = torch.linalg.qr(torch.randn(config.d_in, config.d_in, generator=g, dtype=torch.float64))
    vectors = basis.mT[: config.n_outputs * m].reshape(config.n_outputs, m, config.d_in)  # disjoint, orthonormal
    values = torch.tensor(config.eigenvalues, dtype=torch.float64).expand(config.n_outputs, m).clone()
    return values, vectors


def lm_text_split(text: str, val_fraction: float) -> tuple[str, str, str]:
    vocab = "".join(sorted(set(text)))
    cut = int(len(text) * (1 - val_fraction))
    return vocab, text[:cut], text[cut:]


# -------------------------------------------------------------- training
def _optimizer(model: nn.Module, lr: float, weight_decay: float, steps: int):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    return opt, sched


def _seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {f"state/{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _arch(model) -> dict:
    return {"kind": model.kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in model.arch.items()}}


def train_digits_model(source, config: DigitsConfig) -> DigitsTraining:
    X_tr, y_tr, X_te, y_te = digits_split(config.seed, config.test_fraction)
    model = _seeded(config.seed, lambda: BilinearClassifier(
        (8, 8), config.d_hidden, 10, bias=config.bias, dataset=f"digits:{config.seed}:{config.test_fraction}",
        name=f"bilinear-digits-h{config.d_hidden}"))
    g = torch.Generator().manual_seed(config.seed + 1)
    n = len(X_tr)
    per_epoch = math.ceil(n / config.batch_size)
    opt, sched = _optimizer(model, config.lr, config.weight_decay, config.epochs * per_epoch)
    rows = []
    bar = progress(range(config.epochs), desc="training digits classifier")
    for epoch in bar:
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            idx = perm[i * config.batch_size:(i + 1) * config.batch_size]
            x = X_tr[idx] + config.input_noise * torch.randn(len(idx), X_tr.shape[1], generator=g)  # [b, 64]
            loss = nn.functional.cross_entropy(model(x), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 10 == 9 or epoch == config.epochs - 1:
            with torch.no_grad():
                model.eval()
                rows.append({"epoch": epoch + 1, "loss": loss.item(),
                             "train_accuracy": (model(X_tr).argmax(-1) == y_tr).float().mean().item(),
                             "test_accuracy": (model(X_te).argmax(-1) == y_te).float().mean().item()})
            bar.set_postfix(loss=f"{loss.item():.3f}", test=f"{rows[-1]['test_accuracy']:.3f}")
    history = pd.DataFrame(rows)
    metrics = {"train_accuracy": rows[-1]["train_accuracy"], "test_accuracy": rows[-1]["test_accuracy"]}
    return DigitsTraining(config=config, model_id=model.name, fingerprint=model.fingerprint(), tensors=_state(model),
                          tables={"history": history},
                          meta={"name": model.name, "task": "digits", "arch": _arch(model), "metrics": metrics})


def train_toy_model(source, config: ToyConfig) -> ToyTraining:
    values, vectors = planted_forms(config)  # [o, m], [o, m, d]
    A = torch.einsum("om,omd,ome->ode", values, vectors, vectors).float()  # [o, d, d]
    model = _seeded(config.seed, lambda: BilinearMLP(config.d_in, config.d_hidden, config.n_outputs, name=f"bilinear-toy-d{config.d_in}"))
    g = torch.Generator().manual_seed(config.seed + 1)
    opt, sched = _optimizer(model, config.lr, config.weight_decay, config.steps)
    rows = []
    for step in progress(range(config.steps), desc="training toy bilinear layer"):
        x = torch.randn(config.batch_size, config.d_in, generator=g)  # [b, d]
        target = torch.einsum("bd,ode,be->bo", x, A, x)
        loss = nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 49 or step == config.steps - 1:
            rows.append({"step": step + 1, "loss": loss.item()})
    var = torch.einsum("ode,ode->", A, A).item() * 2 / config.n_outputs  # E[(x^T A x)^2] - (tr A)^2 = 2 ||A||_F^2
    metrics = {"mse": rows[-1]["loss"], "relative_mse": rows[-1]["loss"] / var}
    tensors = {**_state(model), "planted_values": values, "planted_vectors": vectors}
    return ToyTraining(config=config, model_id=model.name, fingerprint=model.fingerprint(), tensors=tensors,
                       tables={"history": pd.DataFrame(rows)},
                       meta={"name": model.name, "task": "toy", "arch": _arch(model), "metrics": metrics})


def lm_batches(ids: Tensor, n_ctx: int, batch: int, g: torch.Generator) -> Tensor:
    starts = torch.randint(0, len(ids) - n_ctx - 1, (batch,), generator=g)
    return torch.stack([ids[s:s + n_ctx + 1] for s in starts.tolist()])  # [batch, n_ctx + 1]


def lm_loss(model: BilinearLM, ids: Tensor) -> float:
    """Mean next-character cross-entropy (nats) over non-overlapping windows of ``ids``."""
    n_ctx = model.arch["n_ctx"]
    n = (len(ids) - 1) // n_ctx
    if n == 0:
        raise InputError("the validation text is shorter than one context window")
    x = ids[: n * n_ctx + 1]
    inp, tgt = x[:-1].reshape(n, n_ctx), x[1:].reshape(n, n_ctx)
    with torch.no_grad():
        return nn.functional.cross_entropy(model(inp).flatten(0, 1), tgt.flatten()).item()


def train_lm_model(source, config: LMConfig) -> LMTraining:
    vocab, train_text, val_text = lm_text_split(source.text, config.val_fraction)
    model = _seeded(config.seed, lambda: BilinearLM(vocab, config.d_model, config.n_layers, config.n_heads,
                                                      config.d_hidden, config.n_ctx, name=f"bilinear-lm-{config.n_layers}L"))
    train_ids, val_ids = model.encode(train_text), model.encode(val_text)
    if len(train_ids) < 4 * config.n_ctx:
        raise InputError(f"the training text has {len(train_ids)} characters; give at least {4 * config.n_ctx}")
    g = torch.Generator().manual_seed(config.seed + 1)
    opt, sched = _optimizer(model, config.lr, config.weight_decay, config.steps)
    rows = []
    bar = progress(range(config.steps), desc="training bilinear LM")
    for step in bar:
        model.train()
        batch = lm_batches(train_ids, config.n_ctx, config.batch_size, g)
        logits = model(batch[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 49 or step == config.steps - 1:
            model.eval()
            rows.append({"step": step + 1, "loss": loss.item(), "val_loss": lm_loss(model, val_ids)})
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{rows[-1]['val_loss']:.3f}")
    counts = torch.bincount(train_ids, minlength=len(vocab)).double() + 1
    p = counts / counts.sum()
    unigram = -(p[val_ids].log()).mean().item()  # cross-entropy of the train unigram on the validation text
    metrics = {"val_loss": rows[-1]["val_loss"], "unigram_val_loss": unigram, "train_loss": rows[-1]["loss"]}
    return LMTraining(config=config, model_id=model.name, fingerprint=model.fingerprint(), tensors=_state(model),
                      tables={"history": pd.DataFrame(rows)},
                      meta={"name": model.name, "task": "lm", "arch": _arch(model), "metrics": metrics})


class TextSource(TrainingSource):
    def __init__(self, text: str):
        super().__init__("text", "text:" + text)
        self.text = text


DIGITS = Analysis("bilinear_train_digits", "train a one-layer bilinear classifier on the bundled 8x8 digits",
                  DigitsConfig, DigitsTraining, train_digits_model, in_report=False)
TOY = Analysis("bilinear_train_toy", "train a bilinear layer on planted quadratic forms (known eigenpairs)",
               ToyConfig, ToyTraining, train_toy_model, in_report=False)
LM = Analysis("bilinear_train_lm", "train a small bilinear transformer on characters of a text",
              LMConfig, LMTraining, train_lm_model, in_report=False)
ANALYSES = (DIGITS, TOY, LM)
