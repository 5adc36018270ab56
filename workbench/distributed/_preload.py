"""Imported once by the server that forks a local cluster's workers: what a worker's first model load would
import (transformers' auto classes, the TransformerLens bridge and what it pulls in, accelerate, torch's
compiler stack, scipy, sympy; ~1,700 modules, 5-15 s), so each worker starts with them. Imports only: nothing
computes here, so no thread pool exists to be forked."""

from __future__ import annotations

import importlib

MODULES = ("transformers", "transformers.generation", "accelerate", "torch._dynamo", "scipy.optimize", "sympy", "workbench.models", "workbench.analyses",
           "workbench.distributed.tasks", "workbench.distributed.worker")

for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # an optional module missing or broken here fails where it is used, with its own error
        pass

try:
    from workbench.models.loading import import_bridge

    import_bridge()  # the bridge and what it pulls in, named where the workbench keeps its architecture knowledge
except Exception:
    pass
