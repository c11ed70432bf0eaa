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
import json
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec

from . import pngtext
from .atomic import write_file
from .errors import GraphFileError, Problem, UsageError
from .graph import Graph, Link, gc_paused

FORMAT_VERSION = 1
PNG_SIGNATURE = pngtext.SIGNATURE
MAX_GRAPH_BYTES = 64 << 20
MAX_NESTING = 64  # levels of lists and objects in a literal input, or in the ui block
PNG_GRAPH_KEY = "nodegraph"  # PNG text chunk holding the graph file, written by Save
PNG_COMFY_KEY = "prompt"  # ComfyUI's chunk: an API-format prompt
# ComfyUI's chunk holding the editor's workflow (its layout). A graph made in the editor keeps that
# workflow in its ui block under the same key, and Save embeds it, so the editor reloads the PNG.
WORKFLOW_KEY = "workflow"


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
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise UsageError(f"load() takes the path of a graph file, got {path!r}; for text or bytes use loads()")
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, /dev/zero never end
            raise _unreadable(path, "it is not a regular file")
        with open(path, "rb") as file:
            if file.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE:
                file.seek(0)
                return _graph_from_png(file)
            file.seek(0)
            data = file.read(MAX_GRAPH_BYTES + 1)
    except OSError as error:
        raise _unreadable(path, error.strerror or str(error)) from None
    except ValueError:  # os.stat refuses a NUL character in the path
        raise _unreadable(path, "the path holds a NUL character") from None
    if len(data) > MAX_GRAPH_BYTES:
        raise _unreadable(path, f"it is larger than {MAX_GRAPH_BYTES >> 20} MB, the most a graph file may be")
    return loads(data)


def _unreadable(path, reason: str) -> GraphFileError:
    return GraphFileError([Problem(None, None, "file.unreadable", f"cannot read {os.fsdecode(path)!r}: {reason}",
                                   hint="give a graph file (.json) or a PNG written by a Save node")])


def loads(data: bytes | str) -> Graph:
    """Parse graph-file bytes (or text); raises only GraphFileError."""
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise UsageError(f"loads() takes the text or bytes of a graph file, got {type(data).__name__}; "
                         "to build a graph from Python values use nodegraph.Graph")
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as error:
            raise GraphFileError([Problem(None, None, "file.not_utf8", f"character {error.start} of the text is a lone "
                                          f"surrogate ({error.object[error.start]!r}), which is not Unicode text",
                                          hint="read graph files as UTF-8 (or pass their bytes)")]) from None
    if data.startswith(PNG_SIGNATURE):
        return _graph_from_png(io.BytesIO(data))
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some editors write
    try:
        with gc_paused():
            return _decode(data)
    except UnicodeDecodeError:
        raise GraphFileError([_not_utf8(data)]) from None
    except RecursionError:
        raise GraphFileError([_too_deep()]) from None


def _decode(data: bytes) -> Graph:
    try:
        document = _decoder.decode(data)
    except msgspec.ValidationError as error:
        return _loads_other_format(data, error)
    except msgspec.DecodeError as error:
        raise GraphFileError([_malformed(data, error)]) from None
    _reject_duplicate_keys(data, document)
    return _to_graph(document)


def _loads_other_format(data: bytes, error: msgspec.ValidationError) -> Graph:
    """Not our format: a ComfyUI API prompt, or format errors to report (per node where possible)."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as malformed:  # the typed decoder stopped at a type error first
        raise GraphFileError([_malformed(data, malformed)]) from None
    if isinstance(raw, dict) and "nodegraph" not in raw:
        prompt = raw.get("prompt") if isinstance(raw.get("prompt"), dict) else raw
        if prompt and all(isinstance(n, dict) and "class_type" in n for n in prompt.values()):
            _reject_duplicate_keys(data, None)
            return from_comfy(prompt)
    if isinstance(raw, dict) and "nodegraph" in raw and raw["nodegraph"] != FORMAT_VERSION:
        raise GraphFileError([Problem(None, None, "format.version",
                                      f"this is a graph file of format version {_short(raw['nodegraph'])}; this "
                                      f"nodegraph reads version {FORMAT_VERSION}",
                                      hint="use the nodegraph that wrote it, or a newer one")]) from None
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
    return _graph(nodes, document.ui, problems)


def _graph(nodes: dict[str, tuple[str, dict[str, Any]]], ui: Any, problems: list[Problem]) -> Graph:
    """The graph of decoded nodes, unless a problem was found or a literal is nested too deeply."""
    for node_id, (_, inputs) in nodes.items():
        problems.extend(_too_deep(node_id, name) for name, value in inputs.items()
                        if type(value) in (list, dict) and _nested_deeper(value, MAX_NESTING))
    if ui is not None and _nested_deeper(ui, MAX_NESTING):
        problems.append(_too_deep())
    if problems:
        raise GraphFileError(problems)
    return Graph.from_nodes(nodes, ui=ui)


def _nested_deeper(value: Any, limit: int) -> bool:
    """True if lists and objects nest more than `limit` levels in `value` (without recursing)."""
    level = [value]
    for _ in range(limit):
        level = [child for v in level if type(v) in (list, dict) for child in (v.values() if type(v) is dict else v)]
        if not level:
            return False
    return any(type(v) in (list, dict) for v in level)


def _too_deep(node: str | None = None, name: str | None = None) -> Problem:
    return Problem(node, name, "json.too_deep", f"lists and objects are nested more than {MAX_NESTING} levels deep",
                   hint="a literal input is a number, a string, or a shallow list or object")


class _DuplicateKey(Exception):
    pass


def _reject_duplicate_keys(data: bytes, document: GraphJSON | None) -> None:
    """JSON decoders keep the last of repeated keys: a repeated node id would silently drop a node."""

    def check(pairs: list) -> None:
        if len(pairs) != len({key for key, _ in pairs}):
            seen: set = set()
            raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))

    try:
        json.loads(data, object_pairs_hook=check)
    except _DuplicateKey as duplicate:
        key = duplicate.args[0]
        nodes = document.nodes if document is not None else {}
        node = key if key in nodes else next((n for n, spec in nodes.items() if key in spec.inputs), None)
        what = f"node id {key!r}" if key in nodes else f"the key {key!r}"
        raise GraphFileError([Problem(node, None if key in nodes else key, "json.duplicate_key",
                                      f"{what} appears twice in one JSON object",
                                      hint="give every node (and every input of a node) a name of its own")]) from None


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
    if message.startswith("Number out of range"):
        return Problem(None, None, "json.number_too_large", "a number in the file is too large to read",
                       hint="numbers in graph files are at most 64-bit integers or doubles")
    match = re.search(r"\(byte (\d+)\)", message)
    offset = int(match.group(1)) if match else len(data)  # no position: the data ended early
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    message = f"{message[: match.start()] if match else message}".strip() + f" at line {line}, column {column}"
    return Problem(None, None, "json.malformed", message, hint="fix the JSON syntax at that position")


def _not_utf8(data: bytes) -> Problem:
    try:
        data.decode("utf-8")
        offset = 0  # msgspec saw bad UTF-8 that a full decode does not: report the file as a whole
    except UnicodeDecodeError as error:  # msgspec's own error counts from the string it was reading
        offset = error.start
    line = data.count(b"\n", 0, offset) + 1
    column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
    return Problem(None, None, "file.not_utf8",
                   f"byte 0x{data[offset]:02x} at line {line}, column {column} is not UTF-8 text",
                   hint="graph files are UTF-8: save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


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


def _graph_from_png(stream: BinaryIO) -> Graph:
    try:
        text = pngtext.read_text(stream)
    except ValueError as error:
        raise GraphFileError([Problem(None, None, "png.unreadable", f"not a readable PNG: {error}")]) from None
    if PNG_GRAPH_KEY in text:
        return loads(text[PNG_GRAPH_KEY])
    if PNG_COMFY_KEY in text:
        graph = loads(text[PNG_COMFY_KEY])
        workflow = _json_object(text.get(WORKFLOW_KEY))
        if workflow is not None:
            graph.ui = {WORKFLOW_KEY: workflow}
        return graph
    raise GraphFileError([Problem(
        None, None, "png.no_graph", "this PNG carries no graph",
        hint="only images written by a Save node (or ComfyUI) embed the graph that made them",
    )])


def _json_object(text: str | None) -> dict | None:
    """`text` decoded as a JSON object (not nested too deeply); None if it is not one."""
    try:
        value = msgspec.json.decode(text) if text is not None else None
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) and not _nested_deeper(value, MAX_NESTING) else None


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = msgspec.json.encode(value).decode(errors="replace")
    except (TypeError, UnicodeEncodeError, RecursionError):  # from_comfy takes any Python values
        text = reprlib.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- ComfyUI API prompts --------------------------------------------------------------


def from_comfy(prompt: dict[str, Any], registry=None) -> Graph:
    """Import a ComfyUI API-format prompt: `{id: {"class_type", "inputs"}}`, links as `[id, index]`.
    Raises GraphFileError, per node, where the prompt is not of that shape."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    nodes, problems = {}, []
    for node_id, spec in prompt.items():
        node_id = str(node_id)
        inputs = spec.get("inputs", {}) if isinstance(spec, dict) else None
        if inputs is None:
            inputs = {}
        if not isinstance(spec, dict) or type(spec.get("class_type")) is not str or not isinstance(inputs, dict):
            problems.append(Problem(node_id, None, "format.invalid",
                                    f"a ComfyUI node is {{\"class_type\": <name>, \"inputs\": {{...}}}}, got {_short(spec)}",
                                    hint="export the workflow with ComfyUI's \"Save (API)\""))
            continue
        nodes[node_id] = (spec["class_type"], {
            name: Link(str(value[0]), _output_name(prompt, registry, str(value[0]), value[1]))
            if _is_comfy_link(value) else value
            for name, value in inputs.items()})
    return _graph(nodes, None, problems)


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
    if not isinstance(graph, Graph) or not isinstance(path, (str, os.PathLike)):
        raise UsageError(f"save() takes a nodegraph.Graph and a path, got {type(graph).__name__} and {path!r}")
    path = Path(path)
    try:
        write_file(dumps(graph).encode(), [path], overwrite=overwrite)
    except FileExistsError:
        raise GraphFileError([Problem(None, None, "file.exists", f"{str(path)!r} already exists",
                                      hint="choose another name, or pass overwrite=True")]) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise GraphFileError([Problem(None, None, "file.unwritable", f"cannot write {str(path)!r}: {reason}",
                                      hint="save into a folder that exists and that you may write to")]) from None
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
