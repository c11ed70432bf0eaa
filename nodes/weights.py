"""Model components: their weight identity, the process-wide cache of them, and loading them.

Components with weights (UNet, VAE, text encoders, ...) come from one process-wide
cache keyed by weight identity, so two checkpoints that ship an identical VAE or text
encoder hold one module between them; a module stays loaded while some handle holds
it. Components load from diffusers folders (local, or in the Hugging Face cache) or
from single-file checkpoints.

torch and diffusers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import re
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nodegraph.errors import InputError

from .tiny_models import cache_root

# the NSFW checker and its image preprocessor: never loaded (see nodes.handles)
_NOT_LOADED = ("safety_checker", "feature_extractor")
# model_index.json names each component's module; only these may be imported (a node pack may add its own)
COMPONENT_LIBRARIES = {"diffusers", "transformers"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


# ---- weight identity -----------------------------------------------------------------------

_HF_BLOB = re.compile(r"[0-9a-f]{64}")
_BOOKKEEPING_KEYS = ("transformers_version", "torch_dtype", "dtype")  # differ between saves of equal weights


def file_sha256(path: Path) -> str:
    """SHA-256 of a weight file's content, computed once per (path, size, mtime) and kept on disk."""
    real = Path(os.path.realpath(path))
    if real.parent.name == "blobs" and _HF_BLOB.fullmatch(real.name):
        return real.name  # the Hugging Face cache names each large file by its SHA-256
    stat = real.stat()
    key = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    known = _hash_index()
    if key not in known:
        digest = hashlib.sha256()
        with open(real, "rb") as file:
            while chunk := file.read(1 << 24):
                digest.update(chunk)
        known[key] = digest.hexdigest()
        _save_hash_index(known)
    return known[key]


def component_identity(folder: Path) -> str:
    """Identity of one component's weights: its config (less bookkeeping) and its weight files' contents."""
    digest = hashlib.sha256()
    for config_file in sorted(folder.glob("*.json")):
        digest.update(f"{config_file.name}={_settings_text(read_json(config_file))}\n".encode())
    for weights in weight_files(folder):
        digest.update(f"{weights.name}={file_sha256(weights)}\n".encode())
    return digest.hexdigest()


def folder_identity(folder: Path) -> str:
    """Identity of a diffusers folder: its model_index.json settings and each component's identity.
    A digest: it names no path and holds no file's contents."""
    index = read_model_index(folder)
    parts = {"model_index.json": _settings_text(index)}
    for name, spec in index.items():
        if is_component_spec(spec) and spec[0] is not None and (folder / name).is_dir():
            parts[name] = component_identity(folder / name)
    return combined_identity(parts)


def _settings_text(config: Any) -> str:
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if not k.startswith("_") and k not in _BOOKKEEPING_KEYS}
    return json.dumps(config, sort_keys=True)


def read_json(path: Path) -> Any:
    """A config file's contents; None if there is no such file; InputError if it is not UTF-8 JSON."""
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise InputError("model", f"cannot read {path.name} in {path.parent}: {error}", code="model.unreadable",
                         hint="the model's config files must be UTF-8 JSON; re-download or re-save the model") from None


def read_model_index(folder: Path) -> dict[str, Any]:
    """A diffusers folder's model_index.json, checked to be an object whose components come from
    libraries that may be imported."""
    index = read_json(folder / "model_index.json")
    if index is None:
        raise InputError("model", f"{folder} is not a diffusers model folder: it has no model_index.json",
                         code="model.unrecognized", hint="give a diffusers folder, a .safetensors checkpoint, a hub "
                         "id (owner/name) or builtin:NAME")
    if not isinstance(index, dict):
        raise InputError("model", f"{folder}/model_index.json is not a JSON object of components",
                         code="model.unreadable", hint="re-download or re-save the model")
    for name, spec in index.items():
        if is_component_spec(spec) and spec[0] is not None and spec[0] not in COMPONENT_LIBRARIES:
            raise InputError("model", f"{folder}/model_index.json names {name} from the library {spec[0]!r}; "
                             f"components load only from {', '.join(sorted(COMPONENT_LIBRARIES))}",
                             code="model.unsafe_component",
                             hint="a model folder must not make nodegraph import other modules; fix its model_index.json")
    return index


def component_folders(folder: Path) -> list[Path]:
    """The component subfolders a diffusers folder's model_index.json lists (nothing else is looked at)."""
    return [folder / name for name, spec in read_model_index(folder).items()
            if is_component_spec(spec) and spec[0] is not None and (folder / name).is_dir()]


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))


def refuse_pickle_only(folder: Path, allow_pickle: bool) -> None:
    """Refuse a component whose weights come only as pickle (.bin) files, unless pickle is allowed."""
    names = [p.name for p in weight_files(folder)]
    if allow_pickle or not names or any(name.endswith(".safetensors") for name in names):
        return
    raise InputError("model", f"the weights in {folder} are pickle files (.bin), and unpickling can run any code",
                     code="model.pickle_refused", hint="set allow_pickle to true if you trust where they come from")


def combined_identity(identities: dict[str, str]) -> str:
    """One identity for several named ones (a model's parts, a part's components)."""
    text = "".join(f"{name}={identity}\n" for name, identity in sorted(identities.items()))
    return hashlib.sha256(text.encode()).hexdigest()


_hash_cache: dict[str, str] | None = None


def _hash_index_path() -> Path:
    return cache_root() / "weight-sha256.json"


def _hash_index() -> dict[str, str]:
    global _hash_cache
    if _hash_cache is None:
        try:
            _hash_cache = json.loads(_hash_index_path().read_text())
        except (OSError, ValueError):
            _hash_cache = {}
    return _hash_cache


def _save_hash_index(known: dict[str, str]) -> None:
    path = _hash_index_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(known))
    os.replace(staging, path)  # atomic: a concurrent reader sees the old or the new index


# ---- the component cache -------------------------------------------------------------------


class ComponentCache:
    """Loaded modules by (weight identity, dtype, placement).

    Values are weak: a module stays here while a handle or pipeline holds it, and is
    freed with the last of them, so the cache itself never pins memory.
    """

    def __init__(self) -> None:
        self._modules: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def get(self, key: tuple) -> Any:
        return self._modules.get(key)

    def get_or_load(self, key: tuple, load: Callable[[], Any]) -> Any:
        module = self._modules.get(key)
        if module is None:
            module = load()
            self._modules[key] = module
        return module

    def put(self, key: tuple, module: Any) -> None:
        self._modules[key] = module


COMPONENTS = ComponentCache()


# ---- loading -------------------------------------------------------------------------------


@dataclass
class Part:
    """The loaded components of one diffusers folder (or single-file checkpoint)."""

    components: dict[str, Any]  # name -> module, tokenizer, scheduler or processor; None if absent
    config: dict[str, Any]  # the pipeline's settings from model_index.json, e.g. requires_aesthetics_score
    identities: dict[str, str] = field(default_factory=dict)  # name -> weight identity, for modules

    @property
    def identity(self) -> str:
        return combined_identity(self.identities)


def local_folder(source: str, allow_pickle: bool) -> Path:
    """A local path as it is; a hub id as its folder in the Hugging Face cache, downloaded if need be."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    from diffusers import DiffusionPipeline

    try:
        return Path(DiffusionPipeline.download(source, use_safetensors=None if allow_pickle else True))
    except (OSError, ValueError) as error:
        raise InputError("model", f"could not get {source!r} from the Hugging Face Hub or its local cache: {error}",
                         code="model.not_found",
                         hint="check the id, or download it with network access "
                              f"(huggingface-cli download {source}), or run with --tiny") from error


def load_folder(folder: Path, dtype, placement: str, allow_pickle: bool) -> Part:
    """The components of a diffusers folder, as its model_index.json lists them; modules via the cache."""
    index = read_model_index(folder)
    part = Part(components={}, config={})
    for name, spec in index.items():
        if name.startswith("_"):
            continue
        if not is_component_spec(spec):
            part.config[name] = spec
        elif spec[0] is None or name in _NOT_LOADED:
            part.components[name] = None
        else:
            component_class = getattr(importlib.import_module(spec[0]), str(spec[1]), None)
            if not (isinstance(component_class, type) and hasattr(component_class, "from_pretrained")):
                raise InputError("model", f"{folder}/model_index.json names {spec[0]}.{spec[1]} for {name}, which "
                                 f"is not a component class {spec[0]} has", code="model.unrecognized",
                                 hint="the folder may need a newer diffusers or transformers, or is damaged")
            if _has_weights(component_class):
                refuse_pickle_only(folder / name, allow_pickle)
                part.identities[name] = f"{spec[1]}:{component_identity(folder / name)}"
                part.components[name] = _load_module(component_class, folder / name, part.identities[name], dtype,
                                                     placement, allow_pickle)
            else:  # tokenizers, schedulers, image processors
                part.components[name] = component_class.from_pretrained(folder / name)
    return part


def is_component_spec(value: Any) -> bool:
    """model_index.json names each component as [library, class] (both null when it is absent)."""
    return isinstance(value, list) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value)


def _has_weights(component_class) -> bool:
    import torch

    return issubclass(component_class, torch.nn.Module)


def _load_module(component_class, folder: Path, identity: str, dtype, placement: str, allow_pickle: bool):
    """The component's module from the component cache, loaded into it if it is not there yet."""
    return COMPONENTS.get_or_load(
        (identity, str(dtype), placement),
        lambda: _place(component_class.from_pretrained(folder, dtype=dtype, variant=_variant(folder),
                                                       use_safetensors=None if allow_pickle else True), placement),
    )


def _variant(folder: Path) -> str | None:
    """The variant to load (e.g. "fp16") when a component ships only variant weight files."""
    names = [p.name for p in weight_files(folder)]
    plain = re.compile(r"(diffusion_pytorch_model|model)(-\d+-of-\d+)?\.(safetensors|bin)")
    if not names or any(plain.fullmatch(n) for n in names):
        return None
    return names[0].rsplit(".", 2)[-2]  # name.VARIANT.safetensors


def _place(module, placement: str):
    """Move a freshly loaded module where it runs; offloaded modules wait on the CPU."""
    if not placement.startswith("offload:"):
        module.to(placement)
    return module


def load_single_file(path: Path, family: str, pipeline_name: str, dtype, placement: str) -> Part:
    """A single-file checkpoint, as diffusers' `from_single_file` of pipeline `pipeline_name` splits it
    into components."""
    import diffusers
    import torch

    pipeline_class = getattr(diffusers, pipeline_name)
    file_identity = file_sha256(path)

    def key(name: str) -> tuple:
        return (f"{name}@{file_identity}", str(dtype), placement)

    names = [n for n, p in inspect.signature(pipeline_class.__init__).parameters.items() if n != "self"]
    cached = {name: module for name in names if (module := COMPONENTS.get(key(name))) is not None}
    try:
        pipeline = pipeline_class.from_single_file(str(path), dtype=dtype, **cached)
    except (OSError, ValueError) as error:
        raise InputError("model", f"diffusers could not load {path.name} as a {family} checkpoint: {error}",
                         code="model.load_failed",
                         hint="diffusers reads a single file's configuration from the original model on the "
                              "Hugging Face Hub (or its local cache): run once with network access, or use the "
                              "model's diffusers folder") from error
    part = Part(components=pipeline.components, config={})
    for name, component in part.components.items():
        if isinstance(component, torch.nn.Module):
            if name not in cached:
                COMPONENTS.put(key(name), _place(component, placement))
            part.identities[name] = f"{name}@{file_identity}"
    part.config = {k: v for k, v in pipeline.config.items() if not k.startswith("_") and k not in part.components}
    return part
