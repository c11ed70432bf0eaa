"""ComfyUI's shapes of nodegraph's things: node definitions (/object_info) and socket types,
validation errors, and a run's events as the editor's websocket messages.

Socket types keep their latent space: LATENT[sd], VAE[sdxl], MODEL[sd]. The editor joins two
sockets when their type names match exactly (ignoring case), where a name may be a union "A,B".
A socket that takes any latent (Decode's, before its VAE is known) is therefore the union of
every latent type the registry knows, "LATENT,LATENT[sd],LATENT[sdxl],..."; once models are
connected, the editor extension (web/nodegraph.js) asks /nodegraph/types for the types validation
infers, and the unions narrow to one space. The editor then refuses, in the browser, a link that
`nodegraph validate` would refuse.
"""

from __future__ import annotations

import io
import json
import struct
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import networkx as nx

from .. import fileformat
from .. import types as T
from ..errors import Problem
from ..events import Event, NodeCached, NodeDone, NodeFailed, NodeStart, Progress, RunStart
from ..graph import Graph
from ..node import IMAGE_FILE, REQUIRED, Input, NodeDef
from ..validation import TypedGraph, expected_types, validate
from .files import relative_name

SAFE_INTEGER = 2**53 - 1  # the editor's numbers are doubles: larger integers would not survive it
PREVIEW_INTERVAL = 0.25  # seconds between step previews of one run
PREVIEW_SIDE = 512  # pixels, the longest side of a step preview
_WIDGET_TYPES = {T.INT: "INT", T.FLOAT: "FLOAT", T.STRING: "STRING", T.BOOL: "BOOLEAN", T.SEED: "INT"}
# our problem codes -> the error types the editor knows (it clears these itself once fixed)
_ERROR_TYPES = {"input.missing": "required_input_missing", "value.not_a_choice": "value_not_in_list",
                "type.mismatch": "return_type_mismatch", "node.unknown_type": "missing_node_type"}


# ---- socket types -------------------------------------------------------------------------------


def known_types(registry, typed: TypedGraph | None = None) -> list[T.Type]:
    """The concrete types a generic socket's union lists: what the registry's packs declare, and
    what validation found in the graph at hand (a model's own latent space)."""
    found = list(registry.value_types)
    for outputs in (typed.output_types.values() if typed else ()):
        for t in outputs.values():
            found += [o for o in (t.options if isinstance(t, T.OneOf) else (t,)) if not _generic(o)]
    return list(dict.fromkeys(found))


def socket_type(t: T.Type, universe: Iterable[T.Type]) -> str:
    """The editor's name of a socket type (see the module docstring)."""
    if isinstance(t, T.OneOf):
        return ",".join(dict.fromkeys(n for o in t.options for n in socket_type(o, universe).split(",")))
    if t in _WIDGET_TYPES:
        return _WIDGET_TYPES[t]
    if isinstance(t, T.Choice):
        return "COMBO"
    if _generic(t):
        return ",".join(dict.fromkeys([t.name, *(u.name for u in universe if u != t and T.accepts(t, u))]))
    return t.name


def _generic(t: T.Type) -> bool:
    """A type that stands for several concrete ones: a latent of any space, a model that can do X."""
    return (isinstance(t, (T.Latent, T.Vae)) and t.space is None) or (isinstance(t, T.Model) and t.family is None)


def _is_literal(t: T.Type) -> bool:
    return isinstance(t, (T.Primitive, T.Choice))


def typed_sockets(graph: Graph, registry) -> dict[str, dict]:
    """node id -> {"inputs": {name: type}, "outputs": [type, ...]}: the types of the (non-widget)
    sockets of a graph being edited, as validation infers them from what is connected so far."""
    typed = validate(graph, registry)
    universe = known_types(registry, typed)
    sockets = {}
    for node_id, definition in typed.definitions.items():
        expected = expected_types(graph, typed, node_id)
        produced = typed.output_types.get(node_id, {})
        sockets[node_id] = {
            "inputs": {name: socket_type(t, universe) for name, t in expected.items()
                       if not _is_literal(definition.inputs[name].type)},
            "outputs": [socket_type(produced.get(name, output.type), universe)
                        for name, output in definition.outputs.items()],
        }
    return sockets


# ---- node definitions ----------------------------------------------------------------------------


def object_info(registry, offered: Callable[[Input], list[str] | None]) -> dict[str, dict]:
    """Every node type as the editor's /object_info lists it; `offered(spec)` gives the values of
    a path input's list widget."""
    universe = known_types(registry)
    return {definition.name: node_info(definition, universe, offered) for definition in registry}


def node_info(definition: NodeDef, universe: list[T.Type], offered: Callable[[Input], list[str] | None]) -> dict:
    required: dict[str, list] = {}
    optional: dict[str, list] = {}
    for name, spec in definition.inputs.items():
        (optional if spec.optional else required)[name] = input_spec(name, spec, offered(spec), universe)
    outputs = definition.outputs.values()
    return {
        "name": definition.name,
        "display_name": definition.name,
        "description": definition.description,
        "category": f"nodegraph/{definition.category}" if definition.category else "nodegraph",
        "python_module": definition.function.__module__,  # the editor needs it, to show the node's pack
        "output_node": definition.output_node,
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [socket_type(o.type, universe) for o in outputs],
        "output_name": list(definition.outputs),
        "output_is_list": [o.stream for o in outputs],  # a stream: what follows runs per item, as in ComfyUI
        "output_tooltips": [o.description for o in outputs],
        "deprecated": False,
        "experimental": False,
    }


def input_spec(name: str, spec: Input, offered: list[str] | None, universe: list[T.Type]) -> list:
    """One input as the editor's widget spec: ["INT", {default, min, max, ...}], a list widget
    [[values], {...}], or a socket ["LATENT[sd]", {...}]."""
    info: dict[str, Any] = {"tooltip": spec.description} if spec.description else {}
    t, default = spec.type, spec.default
    has_default = default is not REQUIRED and default is not None
    if has_default:
        info["default"] = default
    if offered is not None:
        return [offered, {**info, **({"image_upload": True} if spec.path == IMAGE_FILE else {})}]
    if not _is_literal(t) or isinstance(t, T.Choice) and spec.optional and not has_default:
        return [socket_type(t, universe), info]
    unset = unset_value(spec)
    if unset is not None:  # an input left unset by default: its widget's zero means "unset"
        info["default"] = unset
        info["tooltip"] = f"{spec.description} ({unset!r}: unset, the node's own default)".lstrip()
    if isinstance(t, T.Choice):
        return [list(t.options), {"default": t.options[0], **info}]
    if t == T.BOOL:
        return ["BOOLEAN", {"default": False, **info}]
    if t == T.STRING:
        return ["STRING", {"default": "", **info, "multiline": name.endswith("prompt") or name == "options"}]
    low = spec.min if spec.min is not None else (0 if t == T.SEED else -SAFE_INTEGER)
    low = min(low, unset) if unset is not None else low
    high = min(spec.max, SAFE_INTEGER) if spec.max is not None else SAFE_INTEGER
    if t == T.SEED:
        seed = default if type(default) is int and default <= SAFE_INTEGER else 0
        return ["INT", {**info, "default": seed, "min": low, "max": high, "control_after_generate": True}]
    if t == T.INT:
        return ["INT", {"default": max(low, 0), **info, "min": low, "max": high, "step": 1}]
    return ["FLOAT", {"default": max(low, 0.0), **info, "min": low, "max": high, "step": 0.01, "round": 0.001}]


def unset_value(spec: Input) -> Any:
    """The widget value that stands for "unset" for an optional input without a default (the
    editor's widgets always hold a value): 0 for a number (a guidance of 0 acts as 1: none),
    "" for text; None for every other input."""
    if not spec.optional or spec.default not in (REQUIRED, None):
        return None
    return {T.INT: 0, T.FLOAT: 0.0, T.STRING: "", T.SEED: 0}.get(spec.type)


def graph_of(prompt: dict, registry) -> Graph:
    """The graph of an API-format prompt from the editor, its "unset" widget values left out;
    raises GraphFileError where the prompt is not of that shape."""
    graph = fileformat.from_comfy(prompt, registry)
    _drop_unset(graph, registry)
    return graph


def _drop_unset(graph: Graph, registry) -> None:
    """Remove the inputs an editor's prompt gives as "unset" (see unset_value), in place."""
    for node_id in graph:
        definition = registry.get(graph.type_of(node_id))
        for name, value in list(graph.inputs_of(node_id).items()):
            spec = definition.inputs.get(name) if definition else None
            unset = unset_value(spec) if spec else None
            if unset is not None and type(value) in (int, float, str) and value == unset:
                graph.remove_input(node_id, name)


# ---- validation errors ---------------------------------------------------------------------------


def validation_reply(problems: list[Problem], graph: Graph | None, registry) -> dict:
    """ComfyUI's 400 reply to a prompt that failed validation: the errors per node and input, so
    that the editor outlines the node and the socket; our hint is each error's `details`."""
    node_errors: dict[str, dict] = {}
    general = []
    for problem in problems:
        if graph is None or problem.node is None or problem.node not in graph:
            general.append(problem)
            continue
        entry = node_errors.setdefault(problem.node, {
            "errors": [], "class_type": graph.type_of(problem.node),
            "dependent_outputs": _dependent_outputs(graph, problem.node, registry)})
        entry["errors"].append({
            "type": _error_type(problem, graph, registry), "message": problem.message, "details": problem.hint or "",
            "extra_info": {"input_name": problem.input} if problem.input else {}})
    if any(p.code == "node.unknown_type" for p in problems):
        kind = "missing_node_type"
    elif any(p.code == "graph.no_outputs" for p in problems):
        kind = "prompt_no_outputs"
    elif general and not node_errors:
        kind = "invalid_prompt"
    else:
        kind = "prompt_outputs_failed_validation"
    message = str(general[0]) if general else f"{len(problems)} problem(s) in the graph"
    details = "\n".join(str(p) for p in (general or problems))
    return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}},
            "node_errors": node_errors}


def _dependent_outputs(graph: Graph, node_id: str, registry) -> list[str]:
    def is_output(n: str) -> bool:
        definition = registry.get(graph.type_of(n))
        return definition is not None and definition.output_node

    return sorted(n for n in {node_id} | nx.descendants(graph.nx, node_id) if is_output(n))


def _error_type(problem: Problem, graph: Graph, registry) -> str:
    if problem.code != "value.out_of_range":
        return _ERROR_TYPES.get(problem.code, problem.code)
    definition = registry.get(graph.type_of(problem.node))
    spec = definition.inputs.get(problem.input) if definition else None
    value = graph.inputs_of(problem.node).get(problem.input)
    above = spec is not None and spec.max is not None and isinstance(value, (int, float)) and value > spec.max
    return "value_bigger_than_max" if above else "value_smaller_than_min"


# ---- a run's events as websocket messages --------------------------------------------------------


class RunRelay:
    """Turns one run's events into the editor's messages, in ComfyUI's order and shapes.

    `send(type, data)` delivers a JSON message, `send_preview(bytes)` a binary one; both to the
    client that submitted the run. Cached nodes are reported together, as ComfyUI does, before
    the next node runs. The outputs an output node reports (Save's files) are collected, as
    ComfyUI's history shows them.
    """

    def __init__(self, prompt_id: str, graph: Graph, output_dir: Path, send: Callable[[str, dict], None],
                 send_preview: Callable[[bytes], None] | None):
        self.prompt_id, self.graph, self.output_dir = prompt_id, graph, output_dir
        self.send, self.send_preview = send, send_preview
        self.outputs: dict[str, dict] = {}  # node -> {"images": [...]}
        self.executed: list[str] = []
        self._states: dict[str, dict] = {}
        self._cached: list[str] = []
        self._last_preview = 0.0

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeCached):
            self._cached.append(event.node)
            return
        self.flush_cached()
        node = event.node
        if isinstance(event, RunStart):
            self.send("execution_start", self._stamped({}))
        elif isinstance(event, NodeStart):
            self.send("executing", {"node": node, "display_node": node, "prompt_id": self.prompt_id})
            self._state(node, "running", 0, 1)
        elif isinstance(event, Progress):
            self.send("progress", {"value": event.value, "max": event.max, "prompt_id": self.prompt_id, "node": node})
            self._state(node, "running", event.value, event.max)
            if event.preview is not None:
                self._preview(node, event.preview)
        elif isinstance(event, NodeDone):
            self.executed.append(node)
            state = self._states.get(node, {})
            self._state(node, "finished", state.get("max", 1), state.get("max", 1))
            if event.result is not None:
                self.report_output(node, event.result)
        elif isinstance(event, NodeFailed):
            self._state(node, "error", 0, 1)

    def flush_cached(self) -> None:
        if self._cached:
            self.send("execution_cached", self._stamped({"nodes": list(dict.fromkeys(self._cached))}))
            self._cached = []

    def report_output(self, node: str, result: Any) -> None:
        """Send `executed` for an output node's result (Save's files), once per node and item."""
        images = []
        for summary in result if isinstance(result, list) else [result]:
            for file in (summary or {}).get("files", []) if isinstance(summary, dict) else []:
                where = relative_name(self.output_dir, Path(file))
                if where is not None:
                    images.append({"filename": where[1], "subfolder": where[0], "type": "output"})
        if not images:
            return
        self.outputs.setdefault(node, {"images": []})["images"] += images
        self.send("executed", {"node": node, "display_node": node, "prompt_id": self.prompt_id,
                               "output": {"images": images}})

    def failure(self, node: str | None, node_type: str, message: str, kind: str) -> dict:
        """ComfyUI's execution_error data (sent by the caller, after the history is written)."""
        return self._stamped({"node_id": node, "node_type": node_type, "executed": self.executed,
                              "exception_message": message, "exception_type": kind, "traceback": [],
                              "current_inputs": {}, "current_outputs": {}})

    def success(self) -> dict:
        return self._stamped({})

    def interruption(self, node: str | None, node_type: str) -> dict:
        return self._stamped({"node_id": node, "node_type": node_type, "executed": self.executed})

    def _stamped(self, data: dict) -> dict:
        return {**data, "prompt_id": self.prompt_id, "timestamp": int(time.time() * 1000)}

    def _state(self, node: str, state: str, value: int, maximum: int) -> None:
        self._states[node] = {"value": value, "max": maximum, "state": state, "node_id": node,
                              "prompt_id": self.prompt_id, "display_node_id": node, "parent_node_id": None,
                              "real_node_id": node}
        self.send("progress_state", {"prompt_id": self.prompt_id, "nodes": dict(self._states)})

    def _preview(self, node: str, preview: Callable[[], Any]) -> None:
        """A binary preview frame (ComfyUI's type 4: metadata, then a JPEG), a few a second at most."""
        now = time.monotonic()
        if self.send_preview is None or now - self._last_preview < PREVIEW_INTERVAL:
            return
        self._last_preview = now
        picture = preview()
        scale = max(1, PREVIEW_SIDE // max(picture.size))
        picture = picture.resize((picture.width * scale, picture.height * scale))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        metadata = json.dumps({"node_id": node, "display_node_id": node, "parent_node_id": None, "real_node_id": node,
                               "prompt_id": self.prompt_id, "image_type": "image/jpeg"}).encode()
        self.send_preview(struct.pack(">II", 4, len(metadata)) + metadata + buffer.getvalue())
