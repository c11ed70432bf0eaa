"""Graph files: JSON in, Graph out, and back; ComfyUI API prompts and PNGs too.

    {"nodegraph": 1,
     "nodes": {"load": {"type": "LoadModel", "inputs": {"model": "builtin:tiny-sd"}},
               "t2i":  {"type": "Text2Img",
                        "inputs": {"model": {"from": "load", "output": "model"}, "seed": 0}}},
     "ui": {...}}

msgspec decodes the structure; a link is exactly `{"from": id, "output": name}` and
every other value is a literal. Whatever the bytes, loading raises only
GraphFileError, with line and column for malformed JSON.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec

from .atomic import write_file
from .errors import GraphFileError, Problem
from .graph import Graph, Link, gc_paused

FORMAT_VERSION = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_GRAPH_KEY = "nodegraph"  # PNG text chunk holding the graph file, written by Save
PNG_COMFY_KEY = "prompt"  # ComfyUI's chunk: an API-format prompt


class LinkJSON(msgspec.Struct, forbid_unknown_fields=True, rename={"source": "from"}):
    """A link to another node's output."""

    source: str
    output: str


class NodeJSON(msgspec.Struct, forbid_unknown_fields=True):
    """One node: its type and its inputs (literals or links)."""

    type: str
    inputs: dict[str, Any] = {}


class GraphJSON(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A graph file. `ui` holds editor state (positions); the engine ignores it."""

    nodegraph: Literal[1]
    nodes: dict[str, NodeJSON]
    ui: dict[str, Any] | None = None


_decoder = msgspec.json.Decoder(GraphJSON)
_encoder = msgspec.json.Encoder()
_link_decoder = msgspec.json.Decoder(LinkJSON)


# ---- reading ----------------------------------------------------------------------


def load(path: str | os.PathLike) -> Graph:
    """Read a graph file, a ComfyUI API prompt, or a PNG that Save wrote."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise GraphFileError([Problem(None, None, "file.unreadable", f"cannot read {path}: {error.strerror}")])
    return loads(data)


def loads(data: bytes | str) -> Graph:
    """Parse graph-file bytes (or text); raises only GraphFileError."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if data.startswith(PNG_SIGNATURE):
        return _loads_png(data)
    try:
        with gc_paused():
            return _to_graph(_decoder.decode(data))
    except msgspec.ValidationError as error:
        return _loads_other_format(data, error)
    except msgspec.DecodeError as error:
        raise GraphFileError([_malformed(data, error)]) from None


def _loads_other_format(data: bytes, error: msgspec.ValidationError) -> Graph:
    """Not our format: a ComfyUI API prompt, or format errors to report (per node where possible)."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as malformed:  # the typed decoder stopped at a type error first
        raise GraphFileError([_malformed(data, malformed)]) from None
    if isinstance(raw, dict) and "nodegraph" not in raw:
        prompt = raw.get("prompt") if isinstance(raw.get("prompt"), dict) else raw
        if prompt and all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
            return from_comfy(prompt)
    problems = []
    if isinstance(raw, dict) and isinstance(raw.get("nodes"), dict):
        for node_id, node in raw["nodes"].items():
            try:
                msgspec.convert(node, NodeJSON)
            except msgspec.ValidationError as node_error:
                problems.append(_format_problem(node_error, node_id))
    raise GraphFileError(problems or [_format_problem(error)]) from None


def _to_graph(document: GraphJSON) -> Graph:
    nodes, problems = {}, []
    for node_id, spec in document.nodes.items():
        inputs = spec.inputs
        for name, value in inputs.items():
            if type(value) is dict and "from" in value:
                link = _as_link(value)
                if link is None:
                    problems.append(_bad_link(node_id, name, value))
                inputs[name] = link
        nodes[node_id] = (spec.type, inputs)
    if problems:
        raise GraphFileError(problems)
    return Graph.from_nodes(nodes, ui=document.ui)


def _as_link(value: dict) -> Link | None:
    if len(value) == 2 and type(value.get("from")) is str and type(value.get("output")) is str:
        return Link(value["from"], value["output"])
    return None


def _bad_link(node_id: str, name: str, value: dict) -> Problem:
    return Problem(
        node_id, name, "link.malformed",
        f"a link is exactly {{\"from\": <node id>, \"output\": <output name>}}, got {_short(value)}",
        hint='write e.g. {"from": "load", "output": "model"}',
    )


def _malformed(data: bytes, error: msgspec.DecodeError) -> Problem:
    message = str(error)
    match = re.search(r"\(byte (\d+)\)", message)
    offset = int(match.group(1)) if match else len(data)  # no position: the data ended early
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    message = f"{message[: match.start()] if match else message}".strip() + f" at line {line}, column {column}"
    return Problem(None, None, "json.malformed", message, hint="fix the JSON syntax at that position")


def _format_problem(error: msgspec.ValidationError, node: str | None = None) -> Problem:
    message = str(error)
    match = re.search(r" - at `\$(.*)`$", message)
    input_name = None
    if match:
        message = f"{message[: match.start()]} at {'nodes.' + node if node else ''}{match.group(1)}"
        inputs = re.match(r"\.inputs\.([^.\[]+)", match.group(1))
        input_name = inputs.group(1) if inputs else None
    return Problem(
        node, input_name, "format.invalid", message,
        hint='a graph file is {"nodegraph": 1, "nodes": {id: {"type": ..., "inputs": {...}}}, "ui": {...}}',
    )


def _loads_png(data: bytes) -> Graph:
    from PIL import Image  # only PNG provenance needs pillow

    try:
        with Image.open(io.BytesIO(data)) as image:
            text = dict(getattr(image, "text", {}))
    except Exception as error:
        raise GraphFileError([Problem(None, None, "png.unreadable", f"not a readable PNG: {error}")]) from None
    if PNG_GRAPH_KEY in text:
        return loads(text[PNG_GRAPH_KEY])
    if PNG_COMFY_KEY in text:
        return loads(text[PNG_COMFY_KEY])
    raise GraphFileError([Problem(
        None, None, "png.no_graph", "this PNG carries no graph",
        hint="only images written by a Save node (or ComfyUI) embed the graph that made them",
    )])


def _short(value: Any, limit: int = 80) -> str:
    text = msgspec.json.encode(value).decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- ComfyUI API prompts --------------------------------------------------------------


def from_comfy(prompt: dict[str, Any], registry=None) -> Graph:
    """Import a ComfyUI API-format prompt: `{id: {"class_type", "inputs"}}`, links as `[id, index]`."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    graph = Graph()
    for node_id, spec in prompt.items():
        inputs = {}
        for name, value in (spec.get("inputs") or {}).items():
            if _is_comfy_link(value):
                value = Link(str(value[0]), _output_name(prompt, registry, str(value[0]), value[1]))
            inputs[name] = value
        graph.add(str(spec["class_type"]), id=str(node_id), **inputs)
    return graph


def _is_comfy_link(value: Any) -> bool:
    return (type(value) is list and len(value) == 2 and type(value[0]) in (str, int)
            and type(value[1]) is int and not isinstance(value[1], bool))


def _output_name(prompt: dict, registry, producer: str, index: int) -> str:
    """ComfyUI links name outputs by position; ours by name (unknown stays the index, for validation)."""
    spec = prompt.get(producer)
    definition = registry.get(str(spec.get("class_type"))) if isinstance(spec, dict) else None
    if definition is not None and 0 <= index < len(definition.outputs):
        return list(definition.outputs)[index]
    return str(index)


def to_comfy(graph: Graph, registry=None) -> dict[str, Any]:
    """The graph as a ComfyUI API prompt (Save embeds it under ComfyUI's `prompt` key)."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    prompt = {}
    for node_id in graph:
        inputs = {}
        for name, value in graph.inputs_of(node_id).items():
            if type(value) is Link:
                definition = registry.get(graph.type_of(value.node)) if value.node in graph else None
                outputs = list(definition.outputs) if definition else []
                value = [value.node, outputs.index(value.output) if value.output in outputs else 0]
            inputs[name] = value
        prompt[node_id] = {"class_type": graph.type_of(node_id), "inputs": inputs}
    return prompt


# ---- writing ---------------------------------------------------------------------------


def to_document(graph: Graph) -> GraphJSON:
    nodes = {}
    for node_id in graph:
        inputs = {
            name: LinkJSON(value.node, value.output) if type(value) is Link else value
            for name, value in graph.inputs_of(node_id).items()
        }
        nodes[node_id] = NodeJSON(graph.type_of(node_id), inputs)
    return GraphJSON(FORMAT_VERSION, nodes, graph.ui)


def dumps(graph: Graph) -> str:
    """The graph as graph-file JSON, indented."""
    return msgspec.json.format(_encoder.encode(to_document(graph)), indent=2).decode() + "\n"


def save(graph: Graph, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write atomically; an existing file is replaced only with `overwrite=True`."""
    path = Path(path)
    write_file(dumps(graph).encode(), [path], overwrite=overwrite)
    return path


def json_schema(registry=None) -> dict[str, Any]:
    """JSON Schema of graph files: msgspec's schema of the file structure, with each node's
    `inputs` specialised per node type from the registry's declarations."""
    from . import types as T
    from .registry import registry as default_registry

    registry = registry or default_registry
    _, components = msgspec.json.schema_components([GraphJSON, LinkJSON], ref_template="#/$defs/{name}")
    link = {"$ref": "#/$defs/LinkJSON"}

    def input_schema(spec) -> dict:
        literal = _literal_schema(spec.type, T)
        schema = {"anyOf": [link, literal]} if literal else link
        return {**schema, "description": spec.description}

    node_types = []
    for definition in registry:
        inputs = {name: input_schema(spec) for name, spec in definition.inputs.items()}
        node_types.append({
            "type": "object",
            "title": definition.name,
            "description": definition.description.split("\n\n")[0],
            "properties": {
                "type": {"const": definition.name},
                "inputs": {
                    "type": "object",
                    "properties": inputs,
                    "required": [name for name, spec in definition.inputs.items() if spec.required],
                    "additionalProperties": False,
                },
            },
            "required": ["type"],
            "additionalProperties": False,
        })
    components["NodeJSON"] = {"oneOf": node_types} if node_types else components["NodeJSON"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "nodegraph graph file",
            **components.pop("GraphJSON"), "$defs": components}


def _literal_schema(t, T) -> dict | None:
    if t == T.INT or t == T.SEED:
        schema: dict = {"type": "integer"}
        return {"anyOf": [schema, {"const": T.RANDOM}]} if t == T.SEED else schema
    if t == T.FLOAT:
        return {"type": "number"}
    if t == T.STRING:
        return {"type": "string"}
    if t == T.BOOL:
        return {"type": "boolean"}
    if isinstance(t, T.Choice):
        return {"enum": list(t.options)}
    if isinstance(t, T.OneOf):
        options = [s for s in (_literal_schema(o, T) for o in t.options) if s]
        return {"anyOf": options} if options else None
    return None
