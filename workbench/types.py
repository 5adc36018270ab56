"""Shapes of what results hold, as jaxtyping aliases: one place to read what every tensor is.

Result classes annotate their accessors with these (``def importances(self) -> Importances``); the
tests run jaxtyping's import hook with beartype over the package, so an accessor that returns the
wrong shape or dtype fails there, not in a figure three calls later. Dimension names are shared on
purpose: ``layer`` is always a model layer, ``stage`` is ``layer + 1`` (the embeddings, then after
each layer), ``pos`` a token position.

One-word shapes start with a space (``" target"``): jaxtyping reads a lone word as a name, and the
space keeps ruff from unquoting it.
"""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

# ------------------------------------------------------------------ attribution
Importances = Float[Tensor, "target pos"]  # NaN outside a target's context and at special tokens
ContextImportance = Float[Tensor, " pos"]  # one target's row, up to the target
ProbeImportance = Float[Tensor, "target probe pos"]
ProbeSteps = Int[Tensor, "target probe"]
ProbeStopped = Bool[Tensor, "target probe"]
TargetProbability = Float[Tensor, " target"]

# ------------------------------------------------------------------ attention heads
HeadScores = Float[Tensor, "w_layer w_head r_layer r_head"]  # whole-head composition scores
ComponentScores = Float[Tensor, "w_layer w_head comp r_layer r_head"]  # per writer OV component
HeadSpectra = Float[Tensor, "layer head d_head"]  # singular values of every head's OV or QK
NullScores = Float[Tensor, " sample"]  # whole-head scores of random pairs

# ------------------------------------------------------------------ super weights
ScanCurve = Float[Tensor, "round layer"]  # per scan round and layer: a spike statistic
ResidualMax = Float[Tensor, "stage d_model"]  # max |residual| per channel after each stage
CandidateTraces = Float[Tensor, "candidate stage"]  # max |residual| in each candidate's channel, it zeroed
StageCurve = Float[Tensor, " stage"]

# ------------------------------------------------------------------ model overview
LayerSpectra = Float[Tensor, "layer rank"]  # singular values, descending
Spectrum = Float[Tensor, " rank"]
EmbeddingNorms = Float[Tensor, " vocab"]

# ------------------------------------------------------------------ bilinear layers
OutputDirections = Float[Tensor, "k d_out"]
Eigenvalues = Float[Tensor, "k rank"]  # descending, per output direction
TopValues = Float[Tensor, "k top"]  # n_top most positive, then n_top most negative
TopVectors = Float[Tensor, "k top d_in"]
LayerInputs = Float[Tensor, "n d_in"]
Contributions = Float[Tensor, "n k part"]  # lambda_i (v_i . x)^2 of the kept eigenvectors, then the rest
LayerOutputs = Float[Tensor, "n k"]  # x^T Q_u x
