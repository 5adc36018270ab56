"""Loading models and the hooked wrapper; the only package that touches transformer_lens."""

from . import hook_names
from .catalog import available_models
from .checkpoint import CheckpointWeights, load_weights
from .facts import ModelFacts
from .hooked import HookedModel
from .loading import default_device, load_model
from .tiny import TINY_MODELS
from .weights import AttentionWeights, MLPWeights, expand_kv, kv_head_of

__all__ = [
    "AttentionWeights", "CheckpointWeights", "HookedModel", "MLPWeights", "ModelFacts", "TINY_MODELS", "available_models",
    "default_device", "expand_kv", "hook_names", "kv_head_of", "load_model", "load_weights",
]
