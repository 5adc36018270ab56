"""The Result protocol every analysis returns, and its safetensors + JSON file format.

A result is a frozen dataclass: the config that produced it, the model's id and
fingerprint, named tensors, named tables and small JSON-able extras (``meta``).
It knows nothing about plotting: ``figure()`` and ``widget()`` import the render and
widget modules only when called.

File format: one ``.safetensors`` file. Tensors are stored as ``tensor/<name>``;
numeric and boolean table columns as ``table/<name>/<column>``; everything else
(config, meta, text columns, column order) as JSON in the header metadata, with a
SHA-256 over all of it so a truncated or edited file is detected, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ._version import __version__
from .errors import CacheCorruptError, InputError, WorkbenchError

FORMAT = "workbench-result/1"


@dataclass(frozen=True)
class Result:
    """Base class of analysis results. Subclasses set ``analysis`` and ``title``."""

    analysis: ClassVar[str] = ""
    title: ClassVar[str] = "Result"

    config: Any
    model_id: str
    fingerprint: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------ tables
    def to_frame(self, name: str | None = None) -> pd.DataFrame:
        """A copy of table ``name`` (default: the first, the result's main table)."""
        if not self.tables:
            raise InputError(f"{self.title} has no tables")
        key = name or next(iter(self.tables))
        if key not in self.tables:
            raise InputError(f"no table {key!r}; this result has {sorted(self.tables)}")
        return self.tables[key].copy()

    # ------------------------------------------------------- presentation
    def figures(self) -> dict[str, Any]:
        """Named plotly figures for this result (subclasses provide them)."""
        return {}

    def figure(self, name: str | None = None):
        """One plotly figure (default: the first of :meth:`figures`)."""
        figures = self.figures()
        if not figures:
            raise InputError(f"{self.title} has no figures")
        key = name or next(iter(figures))
        if key not in figures:
            raise InputError(f"no figure {key!r}; this result has {sorted(figures)}")
        return figures[key]

    def widget(self):
        """An interactive ipywidgets view (subclasses provide it)."""
        raise NotImplementedError(f"{type(self).__name__} has no widget")

    def summary(self) -> list[tuple[str, str]]:
        """Short key/value lines describing the result (shown in reprs and reports)."""
        return [("model", self.model_id), ("fingerprint", self.fingerprint)]

    def report_html(self) -> str:
        """Extra escaped HTML for this result's report section, above its figures."""
        return ""

    def summary_html(self) -> str:
        """:meth:`summary` as an escaped HTML table."""
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in self.summary())
        return f'<table class="wb-summary">{rows}</table>'


    def _repr_html_(self) -> str:
        tables = "".join(
            f"<p><b>{html.escape(name)}</b> ({len(df)} rows)</p>{df.head(8).to_html(escape=True, index=False)}"
            for name, df in self.tables.items()
        )
        hint = "<p><code>.figure()</code>, <code>.widget()</code>, <code>.to_frame()</code></p>"
        return f"<div><h4>{html.escape(self.title)}</h4>{self.summary_html()}{tables}{hint}</div>"

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, cache_key: str | None = None) -> Path:
        """Write the result to ``path`` (``.safetensors``), atomically; ``cache_key``: the cache entry it is
        written for, recorded so that the cache can tell it from a result filed under the wrong key."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{id(self):x}.tmp")
        try:
            _write(self, tmp, cache_key)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Result:
        """Read a saved result; raises :class:`CacheCorruptError` if the file is damaged."""
        return _read(Path(path), cls)


# ---------------------------------------------------------------- format
def config_to_json(config: Any) -> dict:
    if config is None:
        return {}
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"configs must be dataclasses, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _tuples(value):
    """JSON turns tuples into lists; configs use tuples so they stay hashable."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _is_tensor_column(col: pd.Series) -> bool:
    return col.dtype.kind in "biuf"  # plain numpy bool / int / uint / float


def _digest(tensors: dict[str, Tensor], header: str) -> str:
    h = hashlib.sha256(header.encode())
    for name in sorted(tensors):
        h.update(name.encode())
        tensor = tensors[name]
        if tensor.numel():
            h.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _write(result: Result, path: Path, cache_key: str | None = None) -> None:
    from safetensors.torch import save_file

    tensors = {f"tensor/{k}": v.detach().cpu().contiguous() for k, v in result.tensors.items()}
    tables = []  # a list of tables: their order is the result's (the first is the main one)
    for name, df in result.tables.items():
        columns = []
        for col in df.columns:
            series = df[col]
            if _is_tensor_column(series):
                tensors[f"table/{name}/{col}"] = torch.from_numpy(np.array(series.to_numpy(), copy=True))
                columns.append({"name": str(col), "dtype": str(series.dtype), "stored": "tensor"})
            else:
                columns.append({"name": str(col), "dtype": str(series.dtype), "stored": "json", "values": series.tolist()})
        tables.append({"name": name, "rows": len(df), "columns": columns})
    header = json.dumps(
        {
            "format": FORMAT,
            "analysis": result.analysis,
            "workbench": __version__,
            "model_id": result.model_id,
            "fingerprint": result.fingerprint,
            "config": config_to_json(result.config),
            "meta": result.meta,
            "tables": tables,
        },
        default=str,  # keys keep their order: summaries list meta in it, so a reloaded result reads back the same
    )
    metadata = {"workbench": header, "sha256": _digest(tensors, header)}
    if cache_key is not None:
        metadata["cache_key"] = cache_key
    save_file(tensors, str(path), metadata=metadata)


def recorded_cache_key(path: str | os.PathLike) -> str | None:
    """The cache key a result file was written for (None for files saved outside the cache, or before keys
    were recorded), read from its header alone."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("cache_key")


def _read(path: Path, expected: type[Result]) -> Result:
    from safetensors import safe_open

    from .analyses.registry import get_analysis

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        header = metadata["workbench"]
        if _digest(tensors, header) != metadata["sha256"]:
            raise CacheCorruptError(f"{path}: checksum mismatch")
        doc = json.loads(header)
        if doc.get("format") != FORMAT:
            raise CacheCorruptError(f"{path}: unknown format {doc.get('format')!r}")
        spec = get_analysis(doc["analysis"]) if doc["analysis"] else None
        config = spec.config_cls(**_tuples(doc["config"])) if spec else None
        return (spec.result_cls if spec else expected)(
            config=config,
            model_id=doc["model_id"],
            fingerprint=doc["fingerprint"],
            tensors={k.removeprefix("tensor/"): v for k, v in tensors.items() if k.startswith("tensor/")},
            tables={table["name"]: _table(table, tensors) for table in doc["tables"]},
            meta=doc["meta"],
        )
    except (WorkbenchError, FileNotFoundError):  # already says what is wrong
        raise
    except Exception as exc:  # safetensors, json and a stale layout raise many kinds: one answer
        raise CacheCorruptError(f"{path} is not a readable workbench result: {exc!r}") from exc


def _table(table: dict, tensors: dict[str, Tensor]) -> pd.DataFrame:
    data = {}
    for col in table["columns"]:
        if col["stored"] == "tensor":
            data[col["name"]] = tensors[f"table/{table['name']}/{col['name']}"].numpy()
        else:
            data[col["name"]] = pd.Series(col["values"], dtype=None if col["dtype"] == "object" else col["dtype"])
    return pd.DataFrame(data, index=pd.RangeIndex(table["rows"]))
