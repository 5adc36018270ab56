"""``load_model``: any supported source -> HookedModel, offline where the source allows."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

import torch

from .._paths import cache_root
from .._progress import progress as progress_bar
from ..errors import ModelLoadError, UnsupportedModelError
from .architecture import facts_of, refusal
from .hooked import HookedModel
from .no_installs import no_installs, refused
from .offload import Offload
from .placement import check_device_map, check_placement
from .sources import load_hf, resolve_source

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def default_device() -> str:
    """CUDA when present, else CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(device: str | torch.device | None) -> torch.device:
    """``device`` (default: :func:`default_device`) as a device this machine has, or one clear error."""
    try:
        chosen = torch.device(device or default_device())
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but this machine (torch {torch.__version__}) has no CUDA "
                             "GPU; use --device cpu")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ModelLoadError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if chosen.type == "mps" and not _mps_available():
        raise ModelLoadError(f"device {device!r} asked for, but torch {torch.__version__} has no usable Apple MPS "
                             "backend here (it needs Apple silicon and macOS 12.3+); use --device cpu")
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise ModelLoadError(f"device {device!r} is not supported; use cpu, cuda, cuda:N or mps")
    return chosen


@contextlib.contextmanager
def _transformers_progress(enabled: bool):
    """Let transformers draw its own loading bars only when we draw ours."""
    from transformers.utils import logging as hf_logging

    restore = hf_logging.is_progress_bar_enabled() and not enabled
    if restore:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if restore:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _quiet_bridge():
    """The bridge logs and prints set-up chatter on every boot; keep notebooks readable."""
    logger = logging.getLogger("transformer_lens")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def load_model(
    source: str | os.PathLike | Any = None,
    *,
    tokenizer: Any = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> HookedModel:
    """Load a language model as a :class:`HookedModel`.

    Args:
        source: ``None`` for the embedded SmolLM2-135M-Instruct (offline); a tiny
            random model name (``"tiny-llama"``, ``"tiny-gpt2"``); a local HF folder;
            a ``.gguf`` file; a Hugging Face hub id (needs the network unless cached); or a
            causal LM already in memory (a ``transformers`` ``PreTrainedModel``, e.g. a merged PEFT
            fine-tune), wrapped as it is: same fingerprint and results as the same weights saved and
            loaded from a folder. It is put in eval mode and its parameters are frozen.
        tokenizer: the tokenizer of an in-memory model (required with one; names, folders and files
            bring their own).
        revision: for a hub id or folder, the branch, tag or commit to load (``from_pretrained``'s).
        trust_remote_code: for a hub id or folder, let ``from_pretrained`` run the model's own code
            (off by default: only turn it on for a repository you trust).
        device: where to put the model: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"`` (default: CUDA if
            available, else CPU; an in-memory model stays where it is). Ignored when ``device_map`` places the model.
        dtype: ``"float32"``, ``"bfloat16"``, ... (default: as stored, float32 for GGUF).
        device_map: passed to ``from_pretrained`` (needs ``accelerate``): ``"auto"`` shards a
            large model over the devices ``max_memory`` names (default: all GPUs, then CPU memory, then disk).
            GPUs only, or CPU memory and disk only; a map that mixes a GPU with CPU or disk is refused
            (:class:`UnsupportedModelError`, saying what to do instead; ``models/placement.py``).
        max_memory: with ``device_map``, the most each device may hold, e.g. ``{0: "70GiB", 1: "70GiB"}`` or
            ``{"cpu": "8GiB"}``;
            what does not fit goes to ``offload_folder`` (weights a safetensors checkpoint already holds are read
            from its own shards, nothing is copied). Forward passes then load one module's weights at a time.
        offload_folder: where weights offloaded to disk are written when the checkpoint is not safetensors
            (default: a folder under the cache).
        seed: weights of the tiny random models.
        cache_dir: where converted models live (default ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``).
        progress: show a progress bar while loading.

    The first load of a GGUF (the embedded model included) dequantizes it and keeps the
    result on disk; later loads read that copy in about a second.
    """
    if isinstance(source, torch.nn.Module):
        loading_only = {"revision": revision, "trust_remote_code": trust_remote_code or None, "device_map": device_map,
                        "max_memory": max_memory, "offload_folder": offload_folder}
        unused = [name for name, value in loading_only.items() if value is not None]
        if unused:
            raise ModelLoadError(f"{', '.join(unused)} apply while loading a name, folder or file; this model is "
                                 "already in memory (place it with device=, or with accelerate before wrapping it)")
        return _in_memory(source, tokenizer, device=device, dtype=_dtype(dtype))
    if tokenizer is not None:
        raise ModelLoadError("tokenizer= goes with a model object in memory; a name, folder or file brings its own")
    src = resolve_source(source)
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise ModelLoadError("max_memory and offload_folder place a model with accelerate: pass device_map='auto' too")
    check_device_map(device_map)  # a GPU mixed with CPU / disk is refused before anything loads (models/placement.py)
    placement = check_device(device) if device_map is None or src.kind == "tiny" else None  # before any loading
    root = cache_root(cache_dir)
    steps = progress_bar(total=3, desc=f"loading {src.label}", enabled=progress)
    try:
        steps.set_postfix_str("weights")
        with _transformers_progress(not steps.disable), no_installs():  # nothing installs (models/no_installs.py)
            placement_options = {"max_memory": max_memory, "offload_folder": str(offload_folder or root / "offload")} \
                if device_map is not None else {}
            hf_model, tokenizer = load_hf(src, root, dtype=_dtype(dtype), device_map=device_map, seed=seed,
                                          revision=revision, trust_remote_code=trust_remote_code, **placement_options)
        steps.update()
        if device_map is None or src.kind == "tiny":  # otherwise from_pretrained placed it
            hf_model = hf_model.to(placement)
        steps.set_postfix_str("hooks")
        model = from_hf(hf_model, tokenizer, src.label, source=src.kind)
        steps.update(2)
    finally:
        steps.close()
    return model


def _in_memory(hf_model, tokenizer, *, device, dtype: torch.dtype | None) -> HookedModel:
    """An in-memory HF causal LM as a :class:`HookedModel`: moved only when ``device``/``dtype`` is given."""
    from transformers import PreTrainedModel

    if not isinstance(hf_model, PreTrainedModel):
        raise ModelLoadError(f"wb.load_model takes a transformers PreTrainedModel, not a {type(hf_model).__name__}; "
                             "merge adapters first (peft: model.merge_and_unload())")
    if tokenizer is None:
        raise ModelLoadError(f"a {type(hf_model).__name__} in memory has no tokenizer of its own: pass tokenizer=, "
                             "e.g. wb.load_model(model, tokenizer=AutoTokenizer.from_pretrained(...))")
    placed: Any = hf_model  # transformers types .to() through a decorator mypy cannot call
    if device is not None:
        placed = placed.to(check_device(device))
    if dtype is not None:
        placed = placed.to(dtype)
    hf_model = placed
    name = str(getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__)
    if os.path.isdir(name):  # a model read from a folder is named by the folder, as wb.load_model(folder) names it
        name = os.path.basename(os.path.normpath(name))
    return from_hf(hf_model.eval(), tokenizer, name, source="memory")


def from_hf(hf_model, tokenizer, name: str, *, source: str = "memory") -> HookedModel:
    """Wrap a Hugging Face causal LM already in memory (and placed: one device, or dispatched by accelerate)
    as a :class:`HookedModel`; ``name`` labels its results. Parameters are frozen."""
    from transformer_lens.model_bridge import TransformerBridge

    why = refusal(hf_model.config)
    if why is not None:
        raise UnsupportedModelError(why)
    check_placement(hf_model)  # what accelerate placed ("auto" spills to CPU / disk when the GPUs are full)
    # Name the device unless accelerate spread the model: left out, the bridge assumes CUDA when present.
    dispatched = bool(getattr(hf_model, "hf_device_map", None))
    placed = None if dispatched else str(hf_model.get_input_embeddings().weight.device)
    hf_model.requires_grad_(False)
    try:  # the bridge may try to install packages (models/no_installs.py): it is refused
        with _quiet_bridge(), _text_only(), no_installs():
            bridge = TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device=placed)
    except Exception as exc:
        needs = f" (it tried to install {refused[0]}, which the workbench never does)" if refused else ""
        raise ModelLoadError(
            f"{name} ({type(hf_model).__name__}) loaded, but TransformerLens cannot hook this architecture{needs}: {exc}"
        ) from exc
    _smoke_forward(bridge, hf_model, name)
    try:
        return HookedModel(bridge, hf_model, tokenizer, facts_of(bridge, hf_model, tokenizer, name, source))
    except (AttributeError, KeyError, IndexError, RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UnsupportedModelError(
            f"{name} ({type(hf_model).__name__}) runs in TransformerLens, but the workbench cannot read its structure "
            f"({type(exc).__name__}: {first[:160]}); use the model with transformers directly") from exc


@contextlib.contextmanager
def _text_only():
    """Boot without the bridge's image / audio processor: the workbench reads the language model only, and
    loading a processor would reach the hub by the model's label and may try to pip-install torchvision."""
    from transformer_lens.model_bridge.sources.transformers import source

    loader = source.load_modality_processor
    source.load_modality_processor = lambda *args, **kwargs: None
    try:
        yield
    finally:
        source.load_modality_processor = loader


def _smoke_forward(bridge, hf_model, label: str) -> None:
    """One token through the hooked model: a variant the bridge boots but cannot run fails here, at load, with
    one clear line, rather than inside the first analysis."""
    device = Offload(hf_model).execution_device()
    try:
        with torch.no_grad(), _quiet_bridge():
            bridge(torch.zeros((1, 1), dtype=torch.long, device=device))
    except Exception as exc:
        raise ModelLoadError(
            f"{label} ({type(hf_model).__name__}) loaded, but TransformerLens cannot run this variant of it: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; use the model with transformers directly"
        ) from exc


def load_masked_lm(folder, device: str | torch.device | None = None):
    """A saved HF masked language model and its tokenizer, offline (ReAGent's masked-LM replacer)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return (model if device is None else model.to(device)), tokenizer


def import_bridge() -> None:
    """Import TransformerLens's bridge now, not at the first load: a local cluster's fork server calls this so that
    its workers start with it (workbench/distributed/_preload.py)."""
    import transformer_lens.model_bridge  # noqa: F401
