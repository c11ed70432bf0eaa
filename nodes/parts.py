"""The parts of a model on disk, and loading them one component at a time.

A part is one diffusers folder (local, or in the Hugging Face cache) or one single-file
checkpoint. `describe` says what a part holds without loading anything: its components,
the identity of each one's weights and the memory each takes once loaded, so a plan can
share, load and release weights before any of them is read. `load_component` then loads
one component, through the process-wide component cache (nodes.weights.COMPONENTS).

torch and diffusers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodegraph.errors import InputError

from . import weights

# the NSFW checker and its image preprocessor: never loaded (see nodes.handles)
_NOT_LOADED = ("safety_checker", "feature_extractor")

# A single-file checkpoint's tensors, by the module diffusers splits them into.
_CHECKPOINT_PREFIXES = {"model.diffusion_model.": "unet", "first_stage_model.": "vae",
                        "cond_stage_model.": "text_encoder", "conditioner.embedders.0.": "text_encoder",
                        "conditioner.embedders.1.": "text_encoder_2"}


@dataclass
class PartSpec:
    """What a part holds, known without loading it."""

    source: Path
    config: dict[str, Any] = field(default_factory=dict)  # pipeline settings, e.g. requires_aesthetics_score
    classes: dict[str, tuple[str, str] | None] = field(default_factory=dict)  # component -> (library, class)
    identities: dict[str, str] = field(default_factory=dict)  # component with weights -> weight identity
    nbytes: dict[str, int] = field(default_factory=dict)  # component with weights -> bytes once loaded

    @property
    def single_file(self) -> bool:
        return self.source.is_file()


def describe(source: Path, element_bytes: int | None, allow_pickle: bool) -> PartSpec:
    """The part at `source`; `element_bytes` is the size its weights load as (None: as stored)."""
    return _describe_checkpoint(source, element_bytes) if source.is_file() else \
        _describe_folder(source, element_bytes, allow_pickle)


def _describe_folder(folder: Path, element_bytes: int | None, allow_pickle: bool) -> PartSpec:
    spec = PartSpec(folder)
    for name, entry in weights.read_model_index(folder).items():
        if name.startswith("_"):
            continue
        if not weights.is_component_spec(entry):
            spec.config[name] = entry
        elif entry[0] is None or name in _NOT_LOADED:
            spec.classes[name] = None
        else:
            spec.classes[name] = (entry[0], entry[1])
            files = weights.weight_files(folder / name) if (folder / name).is_dir() else []
            if files:  # tokenizers, schedulers and image processors have none
                weights.refuse_pickle_only(folder / name, allow_pickle)
                spec.identities[name] = f"{entry[1]}:{weights.component_identity(folder / name)}"
                spec.nbytes[name] = sum(weights.loaded_bytes(f, element_bytes) for f in _files_to_load(folder / name))
    return spec


def _describe_checkpoint(path: Path, element_bytes: int | None) -> PartSpec:
    """A single file holds every module; diffusers splits it when it loads (all at once)."""
    spec = PartSpec(path, nbytes={"unet": 0, "vae": 0})  # every checkpoint has these two
    file_identity = weights.file_sha256(path)
    if path.name.endswith(".safetensors"):
        for tensor, entry in weights.tensor_header(path).items():
            name = next((module for prefix, module in _CHECKPOINT_PREFIXES.items() if tensor.startswith(prefix)), None)
            if name is not None:
                count = 1
                for side in entry["shape"]:
                    count *= side
                spec.nbytes[name] = spec.nbytes.get(name, 0) + count * (element_bytes or 2)
    else:  # a pickle: its file size is the best estimate there is
        spec.nbytes["unet"] = path.stat().st_size
    spec.identities = {name: f"{name}@{file_identity}" for name in spec.nbytes}
    return spec


def _files_to_load(folder: Path) -> list[Path]:
    """The weight files loading reads: the variant's, or the plain ones; safetensors where there are."""
    variant = _variant(folder)
    files = [f for f in weights.weight_files(folder) if (f".{variant}." in f.name if variant else f.name.count(".") == 1)]
    safe = [f for f in files if f.name.endswith(".safetensors")]
    return safe or files


@contextlib.contextmanager
def quiet_progress_bars():
    """Silence transformers' progress bars (one per weight file read or written): nodegraph reports progress itself."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def load_component(spec: PartSpec, name: str, dtype, placement: str, allow_pickle: bool) -> Any:
    """Component `name` of a folder part: a module from the component cache (loaded into it if it is
    not there), or a tokenizer, scheduler or processor; None where the part has none."""
    if spec.classes.get(name) is None:
        return None
    library, class_name = spec.classes[name]
    component_class = getattr(importlib.import_module(library), str(class_name), None)
    if not (isinstance(component_class, type) and hasattr(component_class, "from_pretrained")):
        raise InputError("model", f"{spec.source}/model_index.json names {library}.{class_name} for {name}, which "
                         f"is not a component class {library} has", code="model.unrecognized",
                         hint="the folder may need a newer diffusers or transformers, or is damaged")
    folder = spec.source / name
    if name not in spec.identities:  # tokenizers, schedulers, image processors
        return component_class.from_pretrained(folder)
    module = weights.COMPONENTS.get_or_load(
        (spec.identities[name], str(dtype), placement),
        lambda: component_class.from_pretrained(folder, dtype=dtype, variant=_variant(folder),
                                                use_safetensors=None if allow_pickle else True),
    )
    return _place(module, placement)  # another model may have moved it to the host's memory


def _variant(folder: Path) -> str | None:
    """The variant to load (e.g. "fp16") when a component ships only variant weight files."""
    names = [p.name for p in weights.weight_files(folder)]
    plain = re.compile(r"(diffusion_pytorch_model|model)(-\d+-of-\d+)?\.(safetensors|bin)")
    if not names or any(plain.fullmatch(n) for n in names):
        return None
    return names[0].rsplit(".", 2)[-2]  # name.VARIANT.safetensors


def _place(module, placement: str):
    """Move a freshly loaded module where it runs; offloaded modules wait on the CPU."""
    if not placement.startswith("offload:"):
        module.to(placement)
    return module


def load_single_file(spec: PartSpec, family: str, pipeline_name: str, dtype, placement: str) -> dict[str, Any]:
    """Every component of a single-file checkpoint, as diffusers' `from_single_file` of pipeline
    `pipeline_name` splits it; modules already in the component cache are reused."""
    import diffusers
    import torch

    pipeline_class = getattr(diffusers, pipeline_name)
    file_identity = weights.file_sha256(spec.source)

    def key(name: str) -> tuple:
        return (f"{name}@{file_identity}", str(dtype), placement)

    names = [n for n, p in inspect.signature(pipeline_class.__init__).parameters.items() if n != "self"]
    cached = {name: module for name in names if (module := weights.COMPONENTS.get(key(name))) is not None}
    try:
        pipeline = pipeline_class.from_single_file(str(spec.source), dtype=dtype, **cached)
    except (OSError, ValueError) as error:
        raise InputError("model", f"diffusers could not load {spec.source.name} as a {family} checkpoint: {error}",
                         code="model.load_failed",
                         hint="diffusers reads a single file's configuration from the original model on the "
                              "Hugging Face Hub (or its local cache): run once with network access, or use the "
                              "model's diffusers folder") from error
    for name, component in pipeline.components.items():
        if isinstance(component, torch.nn.Module):
            if name not in cached:
                weights.COMPONENTS.put(key(name), _place(component, placement))
            spec.identities[name] = f"{name}@{file_identity}"
    spec.config = {k: v for k, v in pipeline.config.items() if not k.startswith("_") and k not in pipeline.components}
    return dict(pipeline.components)


# Hub repositories taken down, and the copies of the same weights that replaced them.
REMOVED_HUB_MODELS = {"runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
                      "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting"}


def local_folder(source: str, allow_pickle: bool) -> Path:
    """A local path as it is; a hub id as its folder in the Hugging Face cache, downloaded if need be."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(source, use_safetensors=None if allow_pickle else True))
    except (OSError, ValueError) as error:
        # diffusers points at a stack trace that nodegraph does not print
        reason = str(error).replace(" Please check out the root cause in the stacktrace above.", "")
        replacement = REMOVED_HUB_MODELS.get(source.lower())
        hint = (f"RunwayML took {source} off the Hub in 2024; the same weights are at {replacement}: use that id"
                if replacement else f"check the id, or download it with network access (hf download {source})")
        raise InputError("model", f"could not get {source!r} from the Hugging Face Hub or its local cache: {reason}",
                         code="model.not_found", hint=f"{hint}, or run with --tiny") from error
