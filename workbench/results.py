"""The Result protocol every analysis returns, and its safetensors + JSON file format.

A result is a frozen dataclass: the config that produced it, the model's id and
fingerprint, named tensors, named tables and small JSON-able extras (``meta``), all
given at construction and never changed after. Subclasses add typed accessors over
those contents (jaxtyping shapes from :mod:`workbench.types`).

A result knows nothing about how it is shown, and this module imports nothing that shows
it: ``figure()``, ``widget()`` and ``_repr_html_`` go through :data:`DISPLAY`, a slot that
:mod:`workbench.render` and :mod:`workbench.widgets` fill when they are imported (``import
workbench`` imports both; neither loads plotly or ipywidgets until something is shown). Those
hooks find the view by the result's type, the same dispatch the HTML report uses.

Subclasses with an ``analysis`` name register themselves here (``__init_subclass__``),
so :meth:`Result.load` finds the class and its config class without the analysis registry.

File format: one ``.safetensors`` file. Tensors are stored as ``tensor/<name>``;
numeric and boolean table columns as ``table/<name>/<column>``; everything else
(config, meta, text columns, column order) as JSON in the header metadata, with a
SHA-256 over all of it so a truncated or edited file is detected, never trusted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ._tempnames import unique_suffix
from ._version import __version__
from .errors import CacheCorruptError, InputError, WorkbenchError

FORMAT = "workbench-result/1"

# analysis name -> the Result class that holds its output (filled as the classes are defined)
_RESULT_TYPES: dict[str, type[Result]] = {}


class Tables(Mapping[str, pd.DataFrame]):
    """A result's tables, read-only: each lookup hands out a new DataFrame over the stored one. pandas' copy-on-write
    (the only mode since pandas 3) makes it a lazy copy: it costs no data copy (~0.1 ms however large), and a change
    made to it (a column set, a value written) copies first, so it never reaches the result. Its NumPy arrays are
    read-only views."""

    def __init__(self, tables: Mapping[str, pd.DataFrame]):
        self._tables = dict(tables)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self._tables[name].copy(deep=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __repr__(self) -> str:
        return f"Tables({', '.join(self._tables)})"


@dataclass
class Display:
    """How results are shown, installed from outside (:func:`install_display`): ``figures(result)`` and
    ``html(result)`` by :mod:`workbench.render`, ``widget(result, model, **options)`` by :mod:`workbench.widgets`."""

    figures: Callable[[Result], dict[str, Any]] | None = None
    html: Callable[[Result], str] | None = None
    widget: Callable[..., Any] | None = None


DISPLAY = Display()


def install_display(*, figures: Callable[[Result], dict[str, Any]] | None = None,
                    html: Callable[[Result], str] | None = None, widget: Callable[..., Any] | None = None) -> None:
    """Fill the display slot (each hook given replaces the one there)."""
    if figures is not None:
        DISPLAY.figures = figures
    if html is not None:
        DISPLAY.html = html
    if widget is not None:
        DISPLAY.widget = widget


def _hook(name: str) -> Callable[..., Any]:
    hook = getattr(DISPLAY, name)
    if hook is None:  # nothing installed yet (``import workbench`` loads its API on first use): the package's own
        # display, imported by name as its message below says (this module never imports what shows it)
        importlib.import_module(f"{__name__.rpartition('.')[0]}.{'widgets' if name == 'widget' else 'render'}")
        hook = getattr(DISPLAY, name)
    if hook is None:
        package = "workbench.widgets" if name == "widget" else "workbench.render"
        raise WorkbenchError(f"no display is installed for results ({name}); import {package} first")
    return hook


@dataclass(frozen=True)
class Result:
    """Base class of analysis results. Subclasses set ``analysis``, ``title`` and ``config_cls``."""

    analysis: ClassVar[str] = ""
    title: ClassVar[str] = "Result"
    config_cls: ClassVar[type | None] = None  # the frozen dataclass ``config`` is an instance of

    config: Any
    model_id: str
    fingerprint: str
    tensors: dict[str, Tensor] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)  # read back as :class:`Tables`
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Results hold CPU tensors only: an analysis computes on the model's device, but what it returns is
        # rendered (``.numpy()``), cached and compared, none of which may depend on where it was computed. This is
        # the one place that enforces it, for every analysis, whatever its compute left on the device.
        moved = {name: _on_cpu(name, t) for name, t in self.tensors.items()}
        if any(moved[name] is not t for name, t in self.tensors.items()):
            object.__setattr__(self, "tensors", moved)
        if not isinstance(self.tables, Tables):  # accessors and callers get lazy copies, never the stored frames
            object.__setattr__(self, "tables", Tables(self.tables))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("analysis"):  # a subclass that only inherits a name does not claim it
            register_result_type(cls)

    # ------------------------------------------------------------ tables
    def to_frame(self, name: str | None = None) -> pd.DataFrame:
        """Table ``name`` (default: the first, the result's main table), as a copy of its own."""
        if not self.tables:
            raise InputError(f"{self.title} has no tables")
        key = name or next(iter(self.tables))
        if key not in self.tables:
            raise InputError(f"no table {key!r}; this result has {sorted(self.tables)}")
        return self.tables[key].copy()

    def summary(self) -> list[tuple[str, str]]:
        """Short key/value lines describing the result (shown in reprs, reports and on the terminal)."""
        return [("model", self.model_id), ("fingerprint", self.fingerprint)]

    # ------------------------------------------------------- presentation (found by type)
    def figures(self) -> dict[str, Any]:
        """Named plotly figures of this result, from the view registered for its type."""
        return _hook("figures")(self)

    def figure(self, name: str | None = None) -> Any:
        """One plotly figure (default: the first of :meth:`figures`)."""
        figures = self.figures()
        if not figures:
            raise InputError(f"{self.title} has no figures")
        key = name or next(iter(figures))
        if key not in figures:
            raise InputError(f"no figure {key!r}; this result has {sorted(figures)}")
        return figures[key]

    def widget(self, model: Any = None, **options: Any) -> Any:
        """An interactive explorer of this result; ``model`` lets it compute more (cached), ``options`` go
        to the explorer registered for its type (e.g. ``scale=`` for super weights)."""
        return _hook("widget")(self, model, **options)

    def _repr_html_(self) -> str:
        return _hook("html")(self)

    # ------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, cache_key: str | None = None) -> Path:
        """Write the result to ``path`` (``.safetensors``), atomically; ``cache_key``: the cache entry it is
        written for, recorded so that the cache can tell it from a result filed under the wrong key."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{unique_suffix()}.tmp")  # unique across hosts sharing the cache
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


def _on_cpu(name: str, tensor: Tensor) -> Tensor:
    """``tensor`` itself when it is a CPU tensor, else a detached CPU copy; a tensor without data is refused."""
    if not isinstance(tensor, Tensor):
        raise InputError(f"result tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    if tensor.device.type == "cpu":
        return tensor
    if tensor.device.type == "meta":
        raise InputError(f"result tensor {name!r} is on the meta device (no data): compute it on a real device")
    return tensor.detach().to("cpu")


def register_result_type(cls: type[Result]) -> type[Result]:
    """File ``cls`` under its ``analysis`` name, for :meth:`Result.load`. A second class claiming a name is an
    error; the same class defined again (a reloaded module, a re-run notebook cell) replaces the first."""
    known = _RESULT_TYPES.get(cls.analysis)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"{cls.__qualname__} and {known.__qualname__} both hold results of {cls.analysis!r}")
    _RESULT_TYPES[cls.analysis] = cls
    return cls


def result_type(analysis: str) -> type[Result]:
    """The Result class registered for ``analysis``."""
    if analysis not in _RESULT_TYPES:
        raise InputError(f"no result type for analysis {analysis!r}; known: {', '.join(sorted(_RESULT_TYPES))}")
    return _RESULT_TYPES[analysis]


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
        cls = result_type(doc["analysis"]) if doc["analysis"] else expected
        config = cls.config_cls(**_tuples(doc["config"])) if cls.config_cls is not None else None
        return cls(
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
