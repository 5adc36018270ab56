"""Exceptions the workbench raises on purpose; each message says what to do next."""


class WorkbenchError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class ModelLoadError(WorkbenchError):
    """A model source could not be resolved or loaded."""


class UnsupportedModelError(WorkbenchError):
    """The model loaded, but an analysis cannot handle its architecture."""


class InputError(WorkbenchError, ValueError):
    """Bad user input: empty or over-long prompts, unknown hook names, bad configs."""


class CacheCorruptError(WorkbenchError):
    """A cache entry exists but cannot be trusted (truncated, edited, wrong format)."""


class MissingExtraError(WorkbenchError, ImportError):
    """An optional part needs a package that is not installed; the message names the extra that brings it."""
