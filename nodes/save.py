"""Save: write images as PNG files that carry the graph which made them.

File names describe the image, e.g.
`batch_cat_stable_diffusion_v1_5_van_gogh_style_str0.7_guide18.0_steps40_seed7.png`:
the prefix, the stream item's label, then the model, prompt and settings of the
sampler that made the image, read from the graph as it ran. An existing file is
never replaced: a counter is added instead (`-1`, `-2`, ...).

Each PNG embeds, as text chunks, and nothing else:
- `nodegraph`: the graph file as it ran (random seeds resolved), so that
  `nodegraph run image.png` makes the image again; path inputs that lead outside the
  working directory are recorded by their last part only, unless `record_paths` is set;
- `prompt`: the same graph as a ComfyUI API prompt (ComfyUI's convention);
- `nodegraph-identities`: per node upstream that read from outside the graph, the identity
  of what it read as the run computed it (a digest of file contents and weights, a hub id
  and commit): no path, no file's contents;
- `nodegraph-versions`: the versions of Python, nodegraph, torch, diffusers and transformers;
- `workflow`, for a graph made in ComfyUI's editor: the editor's workflow (ComfyUI's convention),
  so that the PNG dropped on the editor opens the graph as it was laid out.
"""

from __future__ import annotations

import json
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import networkx as nx

from nodegraph import fileformat
from nodegraph import types as T
from nodegraph.atomic import counted_names, write_file
from nodegraph.errors import InputError
from nodegraph.graph import Graph, Link
from nodegraph.node import Input
from nodegraph.registry import node, registry


VERSIONED_PACKAGES = ("nodegraph", "torch", "diffusers", "transformers")
# sampler input -> how the file name shows it, in file-name order
NAMED_SETTINGS = {"strength": "str", "guidance_scale": "guide", "num_inference_steps": "steps",
                  "noise_level": "noise", "seed": "seed"}
PROMPT_SLUG_LENGTH = 40
LABEL_LENGTH = 60
MODEL_SLUG_LENGTH = 40
STEM_LENGTH = 180  # file names stay well under the usual 255-byte limit, counter and suffix included
LARGE_CHUNK = 1 << 20  # characters; text chunks larger than this are stored compressed


def _files_still_there(result: dict) -> bool:
    """The files as written: there, and as large (a file emptied or cut short is written again)."""
    return all(os.path.isfile(file) and os.path.getsize(file) == size
               for file, size in zip(result["files"], result["bytes"]))


@node(
    "Save",
    category="image",
    output_node=True,
    side_effects=True,
    effect_present=_files_still_there,  # a deleted file is written again; otherwise a re-run writes nothing
    reads_options=("output_dir",),
    inputs={
        "image": Input(T.IMAGE, "The images to save, one PNG each"),
        "prefix": Input(T.STRING, "Start of the file names", default="nodegraph"),
        "record_paths": Input(T.BOOL, "Record, in the embedded graph, local paths that lead outside the working "
                              "directory; off: only their file or folder name is recorded", default=False),
    },
)
def save(image, prefix, record_paths, ctx):
    """Save images as PNGs in the output folder, named after their settings and
    carrying the graph that made them; never overwrites a file."""
    from .images import image_to_pils

    embedded = fileformat.loads(ctx.workflow)
    label = ctx.item.label if ctx.item is not None else None
    stem = file_stem(prefix, label, describe_source(embedded, ctx.node_id, ctx.input_value))
    if not record_paths:
        withhold_outside_paths(embedded)
    metadata_chunks = png_text(embedded, _upstream_identities(embedded, ctx))
    folder = Path(ctx.options.output_dir)
    pictures = image_to_pils(image)
    files, sizes = [], []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for index, picture in enumerate(pictures):
            name = stem if len(pictures) == 1 else f"{stem}_{index}"
            data = png_bytes(picture, metadata_chunks)
            files.append(write_new_file(folder, name, ".png", data))
            sizes.append(len(data))
    except OSError as error:
        raise InputError(None, f"cannot write into the output folder {folder}: {error.strerror or error}",
                         code="output.unwritable", hint="free some space, or choose another output folder (--out)")
    return {"files": [str(path) for path in files], "bytes": sizes}


# ---- what made the image ---------------------------------------------------------------------


def describe_source(graph: Graph, node_id: str, value_of: Callable[[str, str], Any]) -> list[str]:
    """File-name parts for the sampler(s) nearest upstream of `node_id`: the model, the prompt,
    then the settings, as `value_of(node, input)` says the run had them. Where several samplers
    are equally near (a grid), only the parts they agree on are kept."""
    samplers = nearest_samplers(graph, node_id)
    if not samplers:
        return []
    descriptions = [_sampler_parts(graph, sampler, value_of) for sampler in samplers]
    return [part for part in descriptions[0] if all(part in other for other in descriptions[1:])]


def nearest_samplers(graph: Graph, node_id: str) -> list[str]:
    """Samplers (nodes with `model` and `prompt` inputs) at the smallest distance upstream."""
    level, seen = [node_id], {node_id}
    while level:
        level = sorted({p for n in level for p in graph.nx.predecessors(n)} - seen)
        seen.update(level)
        found = [n for n in level if _is_sampler(graph.type_of(n))]
        if found:
            return found
    return []


def _is_sampler(node_type: str) -> bool:
    definition = registry.get(node_type)
    return definition is not None and {"model", "prompt"} <= set(definition.inputs)


def _sampler_parts(graph: Graph, sampler: str, value_of: Callable[[str, str], Any]) -> list[str]:
    parts = []
    model_link = graph.inputs_of(sampler).get("model")
    if type(model_link) is Link and model_link.node in graph:
        model = value_of(model_link.node, "model")
        if isinstance(model, str):
            parts.append(model_slug(model))
    prompt = value_of(sampler, "prompt")
    if isinstance(prompt, str) and prompt:
        parts.append(slug(prompt, PROMPT_SLUG_LENGTH))
    for name, short in NAMED_SETTINGS.items():
        value = value_of(sampler, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            parts.append(f"{short}{value}")
    return parts


# ---- file names ----------------------------------------------------------------------------


def file_stem(prefix: str, label: str | None, source: list[str]) -> str:
    parts = [safe_name(prefix), slug(label or "", LABEL_LENGTH), *source]
    stem = "_".join(part for part in parts if part)[:STEM_LENGTH] or "image"
    # Windows refuses these device names, whatever the extension: NUL.txt.png too
    return f"_{stem}" if _WINDOWS_DEVICES.fullmatch(stem.split(".")[0]) else stem


_WINDOWS_DEVICES = re.compile(r"con|prn|aux|nul|com[0-9]|lpt[0-9]", re.IGNORECASE)


def slug(text: str, limit: int) -> str:
    """Lower-case words joined by underscores, cut at a word boundary within `limit`."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = ""
    for word in words:
        candidate = f"{out}_{word}" if out else word
        if len(candidate) > limit:
            break
        out = candidate
    return out or "_".join(words)[:limit]


def model_slug(model: str) -> str:
    """"runwayml/stable-diffusion-v1-5" -> "stable_diffusion_v1_5"; "builtin:tiny-sd" -> "tiny_sd"."""
    name = re.split(r"[/\\:]", model.rstrip("/\\"))[-1]
    name = re.sub(r"\.(safetensors|ckpt|pt|bin)$", "", name, flags=re.IGNORECASE)
    return slug(name, MODEL_SLUG_LENGTH)


def safe_name(prefix: str) -> str:
    """The prefix's words: nothing that could leave the output folder or hide the file."""
    return "_".join(re.findall(r"[A-Za-z0-9][A-Za-z0-9.-]*", prefix))[:LABEL_LENGTH]


# ---- PNG contents --------------------------------------------------------------------------------


def png_text(graph: Graph, identities: dict[str, str]) -> dict[str, str]:
    """The text chunks every saved PNG carries (see the module docstring), and the editor's
    workflow where the graph came from ComfyUI's editor."""
    chunks = {
        fileformat.PNG_GRAPH_KEY: fileformat.dumps(graph),
        fileformat.PNG_COMFY_KEY: json.dumps(fileformat.to_comfy(graph), sort_keys=True),
        "nodegraph-identities": json.dumps(identities, sort_keys=True),
        "nodegraph-versions": json.dumps(library_versions(), sort_keys=True),
    }
    workflow = graph.ui.get(fileformat.WORKFLOW_KEY) if isinstance(graph.ui, dict) else None
    if isinstance(workflow, dict):
        chunks[fileformat.WORKFLOW_KEY] = json.dumps(workflow)
    return chunks


def _upstream_identities(graph: Graph, ctx) -> dict[str, str]:
    """node id -> identity of what it read from outside the graph (weight hashes, file hashes),
    for the nodes this Save's image came from, as the run computed them."""
    upstream = nx.ancestors(graph.nx, ctx.node_id)
    return {node_id: identity for node_id, identity in ctx.identities.items()
            if node_id in upstream and identity is not None}


def withhold_outside_paths(graph: Graph) -> None:
    """Replace every path input (see `Input.path`) that leads outside the working directory by
    its last part, and make absolute paths inside it relative: a shared PNG tells no one where
    the files that made it live. Lines of other text, and of the `ui` block, that are paths to
    files or folders that exist (a PickString's list of models) are treated the same."""
    for node_id in graph:
        definition = registry.get(graph.type_of(node_id))
        for name, value in list(graph.inputs_of(node_id).items()):
            if not isinstance(value, str):
                continue
            spec = definition.inputs.get(name) if definition else None
            shown = shareable_path(value) if spec is not None and spec.path else _shareable_lines(value)
            if shown != value:
                graph.set_input(node_id, name, shown)
    graph.ui = _shareable_strings(graph.ui)


def _shareable_lines(text: str) -> str:
    """Text whose lines that are absolute paths to what exists are made shareable."""
    return "\n".join(shareable_path(line) if _existing_absolute(line) else line for line in text.split("\n"))


def _existing_absolute(line: str) -> bool:
    try:
        return os.path.isabs(os.path.expanduser(line.strip())) and os.path.lexists(os.path.expanduser(line.strip()))
    except (ValueError, RuntimeError, OSError):
        return False


def _shareable_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _shareable_lines(value)
    if isinstance(value, list):
        return [_shareable_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _shareable_strings(v) for k, v in value.items()}
    return value


def shareable_path(text: str) -> str:
    """`text` if it is a path within the working directory (or no path at all, such as a hub id);
    relative to it if it is an absolute path inside it; else only its last part."""
    path = Path(text)
    if not path.is_absolute() and not text.startswith("~") and ".." not in path.parts:
        return text
    absolute = Path(os.path.abspath(path.expanduser()))
    cwd = Path.cwd()
    if absolute.is_relative_to(cwd):
        return absolute.relative_to(cwd).as_posix()
    return absolute.name


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def png_bytes(picture, text: dict[str, str]) -> bytes:
    """The PNG file's bytes; the same picture and text always give the same bytes."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value, zip=len(value) > LARGE_CHUNK)  # large graphs are compressed
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info, compress_level=6)
    return buffer.getvalue()


# ---- writing without overwriting -----------------------------------------------------------------


def write_new_file(folder: Path, stem: str, suffix: str, data: bytes) -> Path:
    """Write `data` to `folder/stem.suffix`, or `stem-1.suffix`, `stem-2.suffix`, ... if taken;
    atomically, and never over an existing file."""
    return write_file(data, counted_names(folder, stem, suffix))
