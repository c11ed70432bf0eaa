"""Model weights on disk and in memory: their identity, their size, and the process-wide cache
of loaded modules.

Components with weights (UNet, VAE, text encoders, ...) come from one process-wide
cache keyed by weight identity, so two checkpoints that ship an identical VAE or text
encoder hold one module between them; a module stays loaded while some handle holds
it. Loading itself is nodes.parts'.

Nothing here imports torch or diffusers: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import weakref
from pathlib import Path
from typing import Any, Callable

from nodegraph.errors import InputError


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
        if is_component_spec(spec) and str(spec[1]).endswith("Pipeline"):
            raise InputError("model", f"{folder}/model_index.json names a whole pipeline ({spec[1]}) as its "
                             f"component {name}", code="model.unsafe_component",
                             hint="a component is a model, tokenizer, scheduler or processor; fix its model_index.json")
        if is_component_spec(spec) and spec[0] is not None and spec[0] not in COMPONENT_LIBRARIES:
            raise InputError("model", f"{folder}/model_index.json names {name} from the library {spec[0]!r}; "
                             f"components load only from {', '.join(sorted(COMPONENT_LIBRARIES))}",
                             code="model.unsafe_component",
                             hint="a model folder must not make nodegraph import other modules; fix its model_index.json")
    return index


def is_component_spec(value: Any) -> bool:
    """model_index.json names each component as [library, class] (both null when it is absent)."""
    return isinstance(value, list) and len(value) == 2 and all(v is None or isinstance(v, str) for v in value)


def component_folders(folder: Path) -> list[Path]:
    """The component subfolders a diffusers folder's model_index.json lists (nothing else is looked at)."""
    return [folder / name for name, spec in read_model_index(folder).items()
            if is_component_spec(spec) and spec[0] is not None and (folder / name).is_dir()]


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))


_ELEMENT_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
                  "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


def tensor_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {"shape", "dtype"}, from a .safetensors file's JSON header alone (its first bytes)."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > 100_000_000:  # real headers are a few MB at most
                raise ValueError(f"header length {length} is implausible")
            header = json.loads(file.read(length))
        if not isinstance(header, dict):
            raise ValueError("its header is not a JSON object")
        tensors = {name: entry for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}
        if not all(isinstance(entry.get("shape"), list) and all(type(n) is int for n in entry["shape"])
                   for entry in tensors.values()):
            raise ValueError("a tensor's shape in its header is not a list of integers")
        return tensors
    except (OSError, ValueError, RecursionError, struct.error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise InputError("model", f"{path.name} is not a readable .safetensors file: {reason}",
                         code="model.unreadable", hint="re-download the checkpoint; a .safetensors file starts "
                         "with an 8-byte header length and a JSON header") from None


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a .safetensors file's header."""
    return {name: entry["shape"] for name, entry in tensor_header(path).items()}


def loaded_bytes(path: Path, element_bytes: int | None) -> int:
    """What a weight file's tensors take in memory once loaded as `element_bytes`-byte numbers
    (None: as stored). Pickle files are counted by their size on disk."""
    if not path.name.endswith(".safetensors"):
        return path.stat().st_size
    total = 0
    for entry in tensor_header(path).values():
        count = 1
        for side in entry["shape"]:
            count *= side
        total += count * (element_bytes or _ELEMENT_BYTES.get(entry.get("dtype"), 4))
    return total


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


def cache_root() -> Path:
    """Where nodegraph keeps what it builds and hashes: $NODEGRAPH_CACHE, by default ~/.cache/nodegraph."""
    return Path(os.environ.get("NODEGRAPH_CACHE") or Path.home() / ".cache" / "nodegraph")


def _hash_index_path() -> Path:
    return cache_root() / "weight-sha256.json"


def _hash_index() -> dict[str, str]:
    global _hash_cache
    if _hash_cache is None:
        try:
            found = json.loads(_hash_index_path().read_bytes())
        except (OSError, ValueError):
            found = None
        # a damaged index is only a lost cache: the hashes are made again
        _hash_cache = {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}
    return _hash_cache


def _save_hash_index(known: dict[str, str]) -> None:
    """Keep the index on disk, where the cache folder allows: without it, hashes are only made again."""
    path = _hash_index_path()
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(json.dumps(known))
        os.replace(staging, path)  # atomic: a concurrent reader sees the old or the new index
    except OSError:
        with contextlib.suppress(OSError):
            staging.unlink()


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


