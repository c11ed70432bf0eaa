"""What an editor's path widgets offer, and where a name from one leads.

LoadImage's widget lists the images in the input folder. LoadModel's lists the node's own
suggestions (the builtins), every diffusers folder and .safetensors checkpoint under the models
folders (ComfyUI's `models/checkpoints` works as it is), and the diffusers models in the local
Hugging Face cache. `confine` then turns each path input of a submitted graph into a path inside
those folders, or refuses it: the server reads no file outside its folders.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from aiohttp import web

from ..errors import Problem
from ..graph import Graph, Link
from ..node import IMAGE_FILE, IMAGE_FOLDER, MODEL_PATH, Input
from .config import ServerConfig
from .files import IMAGE_SUFFIXES, annotated, inside, listing

MODEL_SEARCH_DEPTH = 4  # levels of folders searched under a models folder
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_OUTSIDE_HINT = "pick a file from the widget's list, or put the file into the server's input (or models) folder"


def offered(spec: Input, config: ServerConfig) -> list[str] | None:
    """The values a path input's widget lists; None for an input that names no file."""
    suggestions = spec.suggestions() if spec.suggestions else []
    if spec.path == IMAGE_FILE:
        return [*suggestions, *listing(config.input_dir, IMAGE_SUFFIXES)]
    if spec.path == IMAGE_FOLDER:
        return [*suggestions, ".", *listing(config.input_dir, folders=True)]
    if spec.path == MODEL_PATH:
        return list(dict.fromkeys([*suggestions, *local_models(config.models_dirs), *hub_models()]))
    return suggestions or None


def local_models(folders: tuple[Path, ...]) -> list[str]:
    """Diffusers folders (those with a model_index.json) and .safetensors files under `folders`,
    by their names relative to their folder."""
    found = []
    for root in folders:
        for folder, subfolders, files in os.walk(root):
            depth = len(Path(folder).relative_to(root).parts)
            if "model_index.json" in files and depth:
                found.append(Path(folder).relative_to(root).as_posix())
                subfolders[:] = []  # its parts are not models of their own
                continue
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < MODEL_SEARCH_DEPTH else []
            found += [(Path(folder) / f).relative_to(root).as_posix() for f in files
                      if f.endswith(".safetensors") and not f.startswith(".")]
    return sorted(found)


def hub_models() -> list[str]:
    """Diffusers models in the local Hugging Face cache, by hub id."""
    from huggingface_hub.constants import HF_HUB_CACHE

    found = []
    try:
        entries = sorted(os.listdir(HF_HUB_CACHE))
    except OSError:
        return found
    for entry in entries:
        if not entry.startswith("models--"):
            continue
        snapshots = Path(HF_HUB_CACHE, entry, "snapshots")
        if any((snapshot / "model_index.json").is_file() for snapshot in _children(snapshots)):
            found.append(entry.removeprefix("models--").replace("--", "/", 1))
    return found


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def confine(graph: Graph, registry, config: ServerConfig) -> list[Problem]:
    """Point every path input of `graph` (edited in place) at what it names inside the server's
    folders; the problems name the inputs that lead anywhere else."""
    problems = []
    for node_id in graph:
        definition = registry.get(graph.type_of(node_id))
        if definition is None:
            continue  # validation reports the unknown type
        for name, value in graph.inputs_of(node_id).items():
            spec = definition.inputs.get(name)
            if spec is None or not spec.path or type(value) is Link or not isinstance(value, str):
                continue
            resolved = _resolve(spec, value, config)
            if resolved is None:
                problems.append(Problem(node_id, name, "path.outside",
                                        f"{value[:200]!r} is not a file in the server's folders", hint=_OUTSIDE_HINT))
            elif resolved != value:
                graph.set_input(node_id, name, resolved)
    return problems


def _resolve(spec: Input, value: str, config: ServerConfig) -> str | None:
    """The value as the node should read it on this server, or None if it leads outside its folders."""
    if spec.suggestions and value in spec.suggestions():
        return value  # a builtin: no file of the user's
    name, kind = annotated(value)
    roots = [config.folder(kind)] if kind else [config.input_dir]
    if spec.path == MODEL_PATH and not kind:
        roots = list(config.models_dirs)
    for root in roots:
        try:
            path = inside(root, name)
        except web.HTTPForbidden:  # a name that leads out
            return None
        if os.path.lexists(path) or (len(roots) == 1 and spec.path != MODEL_PATH):
            return str(path)
    if spec.path == MODEL_PATH and _HUB_ID.fullmatch(name) and not os.path.lexists(name):
        return name  # a hub id, which names no local file
    return None
