"""The Result shared by every attribution method: importance [target, context position] + tables."""

from __future__ import annotations

import math
from typing import TypeVar

import pandas as pd
import torch
from torch import Tensor

from ...results import Result
from ...types import ContextImportance, Importances


class AttributionResult(Result):
    """Attribution of each target token to the tokens before it.

    Tensors: ``importance`` [target, pos] (NaN outside the target's context and at special
    tokens). Tables: ``attribution`` (one row per target x context token, ``rank`` 1 = most
    important) and ``targets`` (one row per target). ``meta``: ``tokens`` (every token of the
    sequence as text), ``ids``, ``n_prompt``, ``method``, ``prompt`` (for a chat, as the template rendered it; the
    messages are in the config), ``generated``.
    """

    analysis = ""
    title = "Attribution"

    # --------------------------------------------------------------- contents
    @property
    def tokens(self) -> list[str]:
        """Every token of the sequence (prompt, then targets) as text."""
        return list(self.meta["tokens"])

    @property
    def ids(self) -> list[int]:
        return list(self.meta["ids"])

    @property
    def n_prompt(self) -> int:
        """Tokens before the first target."""
        return int(self.meta["n_prompt"])

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    @property
    def prompt(self) -> str:
        return str(self.meta["prompt"])

    @property
    def messages(self) -> list[dict[str, str]] | None:
        """The chat messages attributed (``messages=``), or None for a plain prompt."""
        pairs = getattr(self.config, "messages", None)
        return [{"role": role, "content": content} for role, content in pairs] if pairs else None

    @property
    def generated(self) -> bool:
        """Whether the targets were generated (greedily) rather than given."""
        return bool(self.meta["generated"])

    @property
    def importances(self) -> Importances:
        """Importance of every position for every target (NaN where not attributed)."""
        return self.tensors["importance"]

    @property
    def n_targets(self) -> int:
        return int(self.importances.shape[0])

    @property
    def attributions(self) -> pd.DataFrame:
        """One row per target x context token (``rank`` 1 = most important)."""
        return self.tables["attribution"]

    @property
    def targets(self) -> pd.DataFrame:
        """One row per target: its probability and most important context token."""
        return self.tables["targets"]

    def importance(self, target: int = 0) -> ContextImportance:
        """Importance of each context token for target ``target`` (NaN where not attributed)."""
        return self.importances[target, : self.n_prompt + target]

    def top_tokens(self, target: int = 0, n: int = 5) -> pd.DataFrame:
        table = self.attributions
        return table[table["target_index"] == target].nsmallest(n, "rank").reset_index(drop=True)

    def summary(self) -> list[tuple[str, str]]:
        targets = self.targets
        shown = ", ".join(f"{t!r} <- {c!r}" for t, c in zip(targets["target"], targets["top_context_token"]))
        return [
            ("model", self.model_id),
            ("method", self.method),
            *([("messages", "; ".join(f"{m['role']}: {m['content']!r}" for m in self.messages))] if self.messages else []),
            ("prompt", self.prompt),
            ("targets", f"{len(targets)} ({'generated' if self.generated else 'given'})"),
            ("most important token per target", shown),
        ]


UNCERTAINTY = ("importance_low", "importance_high", "p_first", "tied_first")


def attribution_tables(tokens: list[str], ids: list[int], n_prompt: int, importance: Tensor,
                       probability: Tensor | None = None, uncertainty: dict[str, Tensor] | None = None
                       ) -> dict[str, pd.DataFrame]:
    """Long ``attribution`` table and per-target ``targets`` table from importance [target, pos]; with
    ``uncertainty`` (the :data:`UNCERTAINTY` tensors [target, pos]) the attribution rows get the 95% interval
    (``low`` / ``high``), ``p_first`` and ``tied_first``, and the targets table the tokens tied for first."""
    rows, target_rows = [], []
    for j in range(importance.shape[0]):
        pos_t = n_prompt + j
        imp = importance[j, :pos_t]
        valid = [(p, float(v)) for p, v in enumerate(imp.tolist()) if not math.isnan(v)]
        order = sorted(valid, key=lambda pv: -abs(pv[1]))
        rank = {p: r + 1 for r, (p, _) in enumerate(order)}
        total = sum(abs(v) for _, v in valid) or 1.0
        for p, v in valid:
            rows.append({"target_index": j, "target_position": pos_t, "target": tokens[pos_t],
                         "context_position": p, "context_token": tokens[p], "context_id": ids[p],
                         "importance": v, "share": abs(v) / total, "rank": rank[p]})
            if uncertainty is not None:
                rows[-1].update({"low": float(uncertainty["importance_low"][j, p]),
                                 "high": float(uncertainty["importance_high"][j, p]),
                                 "p_first": float(uncertainty["p_first"][j, p]),
                                 "tied_first": bool(uncertainty["tied_first"][j, p])})
        best = order[0][0] if order else -1
        target_rows.append({
            "target_index": j, "position": pos_t, "target": tokens[pos_t], "id": ids[pos_t],
            "probability": float(probability[j]) if probability is not None else float("nan"),
            "top_context_position": best, "top_context_token": tokens[best] if best >= 0 else "",
            "top_importance": order[0][1] if order else float("nan"),
        })
        if uncertainty is not None:
            tied = [p for p, _ in order if bool(uncertainty["tied_first"][j, p])]
            target_rows[-1]["tied_first_tokens"] = [tokens[p] for p in tied]
            target_rows[-1]["top_p_first"] = float(uncertainty["p_first"][j, best]) if best >= 0 else float("nan")
    return {"attribution": pd.DataFrame(rows), "targets": pd.DataFrame(target_rows)}


AttributionT = TypeVar("AttributionT", bound=AttributionResult)


def attribution_result(cls: type[AttributionT], model, config, seq, method: str, tensors: dict[str, Tensor],
                       extra_meta: dict | None = None) -> AttributionT:
    """A ``cls`` result with its tables built from ``tensors``; ``extra_meta`` joins the common meta (results
    are never changed after construction)."""
    ids = seq.ids.tolist()
    tokens = model.to_str_tokens(ids)
    uncertainty = {k: tensors[k] for k in UNCERTAINTY} if all(k in tensors for k in UNCERTAINTY) else None
    tables = attribution_tables(tokens, ids, seq.n_prompt, tensors["importance"], tensors.get("target_probability"),
                                uncertainty)
    if "probe_steps" in tensors:
        targets = tables["targets"]
        steps = tensors["probe_steps"]
        count = tensors.get("probe_count", torch.full((steps.shape[0],), steps.shape[1]))
        targets["probes"] = count.numpy()
        targets["steps_mean"] = (steps.float().sum(1) / count.clamp_min(1)).numpy()
        targets["probes_stopped"] = tensors["probe_stopped"].sum(1).numpy()
    meta = {"tokens": tokens, "ids": ids, "n_prompt": seq.n_prompt, "method": method,
            "prompt": config.prompt if seq.text is None else seq.text, "generated": seq.generated, **(extra_meta or {})}
    return cls(config=config, model_id=model.name, fingerprint=model.fingerprint(),
               tensors={k: v.cpu() for k, v in tensors.items()}, tables=tables, meta=meta)


def target_probabilities(model, seq) -> Tensor:
    """p(target_j | context_j) for every target, from one forward over the sequence."""
    with torch.no_grad():
        logits = model.logits(input_ids=seq.ids[None, :-1])[0, seq.n_prompt - 1:]
    probs = torch.softmax(logits.float(), -1)
    return probs[torch.arange(seq.n_targets), seq.ids[seq.n_prompt:].to(probs.device)].cpu()
