"""Validation: type-check a whole graph before anything runs, collecting every problem.

Each problem names its node and input, has a stable code, and a hint where one helps.
Node hooks (`expect`, `infer`) run here, on types and literals only, so a latent
from the wrong model family is caught without loading a single weight.
"""

from __future__ import annotations

import difflib
import reprlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx

from . import types as T
from .errors import InputError, Problem
from .graph import Graph, Link
from .node import Input, NodeDef
from .registry import registry as default_registry


class InputView:
    """What `expect` and `infer` hooks see of a node's inputs: types, and literal values."""

    __slots__ = ("_types", "_values")

    def __init__(self, types: dict[str, T.Type | None], values: dict[str, Any]):
        self._types, self._values = types, values

    def type(self, name: str) -> T.Type | None:
        """The input's type: its producer's output type for a link, else its declared type."""
        return self._types.get(name)

    def value(self, name: str) -> Any:
        """The literal value (or default); None for a link or a missing input."""
        return self._values.get(name)


@dataclass
class TypedGraph:
    """What validation learns about a graph: its problems, and for each node its declaration, the
    types its inputs carry and its outputs have, and the identity of what it reads from outside.
    Keys, execution, Save and the optimiser read the graph through this."""

    problems: list[Problem] = field(default_factory=list)
    definitions: dict[str, NodeDef] = field(default_factory=dict)
    input_types: dict[str, dict[str, T.Type | None]] = field(default_factory=dict)  # None: not known
    output_types: dict[str, dict[str, T.Type]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # topological; empty if the graph has a cycle
    stream_of: dict[str, str] = field(default_factory=dict)  # node run per item -> its stream node
    # node -> its fingerprint: identity of what it reads from outside the graph; None where that
    # is known only when it runs (see NodeDef.fingerprint)
    fingerprints: dict[str, str | None] = field(default_factory=dict)
    output_nodes: list[str] = field(default_factory=list)  # in order: what a run without named outputs runs
    resource_nodes: list[str] = field(default_factory=list)  # nodes with resource outputs, in order


def validate(graph: Graph, registry=None, outputs: list[str] | None = None) -> TypedGraph:
    """Check the graph (to run `outputs`, default: its output nodes); `.problems` lists everything wrong.
    This is every rule there is: a graph that validates, plans and runs."""
    registry = registry or default_registry
    typed = TypedGraph()
    cyclic = _cycle_problems(graph, typed.problems)
    order = _order(graph, cyclic)
    if not cyclic:
        typed.order = order
    for node_id in order:
        check_node(graph, node_id, registry, typed)
    for node_id in sorted(cyclic):  # still report their other problems
        check_node(graph, node_id, registry, typed)
    typed.stream_of = stream_regions(graph, typed)
    typed.output_nodes = [n for n in typed.order if n in typed.definitions and typed.definitions[n].output_node]
    typed.resource_nodes = [n for n in typed.order if n in typed.definitions
                            and any(o.resource for o in typed.definitions[n].outputs.values())]
    typed.problems += target_problems(typed, outputs)
    return typed


def target_problems(typed: TypedGraph, outputs: list[str] | None) -> list[Problem]:
    """What is wrong with running `outputs` (None: every output node) of a graph typed as `typed`."""
    if outputs is not None:
        return [Problem(t, None, "run.unknown_output", f"there is no node {t!r} to run",
                        hint="name a node of the graph, usually a Save") for t in outputs if t not in typed.definitions]
    if typed.problems or typed.output_nodes or any(d.output_node for d in typed.definitions.values()):
        return []
    return [Problem(None, None, "graph.no_outputs", "nothing to run: the graph has no output node",
                    hint="add a Save node (or another output node) that consumes a result")]


def _order(graph: Graph, cyclic: set[str]) -> list[str]:
    """Topological order of the nodes outside cycles, ties broken by node id: it depends only on the graph."""
    acyclic = graph.nx.subgraph(set(graph.nx) - cyclic) if cyclic else graph.nx
    return list(nx.lexicographical_topological_sort(acyclic))


def _cycle_problems(graph: Graph, problems: list[Problem]) -> set[str]:
    if nx.is_directed_acyclic_graph(graph.nx):
        return set()
    cyclic: set[str] = set()
    for component in nx.strongly_connected_components(graph.nx):
        first = min(component)
        if len(component) == 1 and not graph.nx.has_edge(first, first):
            continue
        cycle = [u for u, _ in nx.find_cycle(graph.nx.subgraph(component), first)]
        problems.append(Problem(
            first, None, "graph.cycle", "nodes " + " -> ".join(cycle + [cycle[0]]) + " form a cycle",
            hint="a graph must not feed a node's output back into itself; remove one of these links",
        ))
        cyclic |= component
    # Nodes downstream of a cycle cannot be typed either.
    for node_id in list(cyclic):
        cyclic |= nx.descendants(graph.nx, node_id)
    return cyclic


def check_node(graph: Graph, node_id: str, registry, typed: TypedGraph) -> None:
    """Check one node against its declaration, given its producers' output types in `typed`;
    then type its outputs and fingerprint what it reads from outside."""
    node_type = graph.type_of(node_id)
    definition = registry.get(node_type)
    problems = typed.problems
    if definition is None:
        problems.append(Problem(node_id, None, "node.unknown_type", f"unknown node type {node_type!r}",
                                hint=_did_you_mean(registry.closest(node_type))))
        return
    typed.definitions[node_id] = definition
    given = graph.inputs_of(node_id)
    before = len(problems)
    for name in given:
        if name not in definition.inputs:
            problems.append(Problem(
                node_id, name, "input.unknown", f"{node_type} has no input {name!r}",
                hint=_did_you_mean(difflib.get_close_matches(name, definition.inputs, n=3))
                or "inputs: " + ", ".join(definition.inputs),
            ))
    types: dict[str, T.Type | None] = {}
    values: dict[str, Any] = {}  # the literals, defaults included
    inputs = definition.inputs_as_run(given)
    for name, spec in definition.inputs.items():
        if name not in inputs:
            problems.append(Problem(node_id, name, "input.missing", f"required input {name!r} is missing",
                                    hint=_describe(spec)))
        elif type(inputs[name]) is Link:
            types[name] = _link_type(graph, node_id, name, inputs[name], typed)
        else:
            types[name], values[name] = spec.type, inputs[name]
    view = InputView(types, values)
    for name, value in given.items():
        spec = definition.inputs.get(name)
        if spec is not None:
            _check_input(node_id, name, spec, value, types[name], view, problems)
    typed.input_types[node_id] = types
    outputs = {name: output.type for name, output in definition.outputs.items()}
    if definition.infer is not None and len(problems) == before:
        outputs.update(_run_hook(definition.infer, view, node_id, None, problems) or {})
    typed.output_types[node_id] = outputs
    if definition.fingerprint is not None and len(problems) == before:
        fingerprint_node(graph, node_id, typed)


def fingerprint_node(graph: Graph, node_id: str, typed: TypedGraph) -> None:
    """(Re)compute a checked node's fingerprint into `typed`; a file it cannot read is a problem of the node."""
    definition = typed.definitions[node_id]
    literals = {name: value for name, value in definition.inputs_as_run(graph.inputs_of(node_id)).items()
                if type(value) is not Link}
    typed.fingerprints[node_id] = _run_hook(lambda _: definition.fingerprint(literals), None, node_id, None,
                                            typed.problems)


def _link_type(graph: Graph, node_id: str, name: str, link: Link, typed: TypedGraph) -> T.Type | None:
    """The type a link carries, or None (after reporting why) if it cannot be known."""
    if link.node not in graph:
        typed.problems.append(Problem(
            node_id, name, "link.missing_node", f"links to node {link.node!r}, which is not in the graph",
            hint=_did_you_mean(difflib.get_close_matches(link.node, list(graph), n=3)),
        ))
        return None
    produced = typed.output_types.get(link.node)
    if produced is None:  # the producer is itself broken; its own problem says why
        return None
    if link.output not in produced:
        outputs = ", ".join(produced) or "none"
        typed.problems.append(Problem(
            node_id, name, "link.missing_output",
            f"node {link.node!r} ({graph.type_of(link.node)}) has no output {link.output!r}",
            hint=f"its outputs: {outputs}",
        ))
        return None
    return produced[link.output]


def link_accepted(graph: Graph, typed: TypedGraph, node_id: str, name: str, link: Link) -> bool:
    """Whether input `name` of a checked node would accept `link` instead of what it has now."""
    definition = typed.definitions[node_id]
    types = {**typed.input_types[node_id], name: typed.output_types[link.node][link.output]}
    literals = {n: v for n, v in definition.inputs_as_run(graph.inputs_of(node_id)).items() if type(v) is not Link}
    problems: list[Problem] = []
    _check_input(node_id, name, definition.inputs[name], link, types[name], InputView(types, literals), problems)
    return not problems


def expected_types(graph: Graph, typed: TypedGraph, node_id: str) -> dict[str, T.Type]:
    """What each input of a checked node takes, given what its other inputs are now: the
    declared type, refined by the input's `expect` hook (a Decode's latent: its VAE's space).
    An editor types its sockets from this; a hook that fails leaves the declared type."""
    definition = typed.definitions[node_id]
    literals = {n: v for n, v in definition.inputs_as_run(graph.inputs_of(node_id)).items() if type(v) is not Link}
    view = InputView(typed.input_types.get(node_id, {}), literals)
    expected = {}
    for name, spec in definition.inputs.items():
        refined = _run_hook(spec.expect, view, node_id, name, []) if spec.expect else None
        expected[name] = refined if refined is not None else spec.type
    return expected


def _check_input(node_id: str, name: str, spec: Input, value: Any, got: T.Type | None,
                 view: InputView, problems: list[Problem]) -> None:
    if type(value) is Link:
        expected = _run_hook(spec.expect, view, node_id, name, problems) if spec.expect else spec.type
        if got is None or expected is None or T.accepts(expected, got):
            return
        problems.append(Problem(
            node_id, name, "type.mismatch",
            f"expected {expected}, got {got} from {value.node}.{value.output}",
            hint=T.mismatch_hint(expected, got),
        ))
        return
    if spec.optional and value is None:
        return
    problem = T.literal_problem(spec.type, value)
    if problem:
        code = "value.not_a_choice" if isinstance(spec.type, T.Choice) else "value.wrong_type"
        problems.append(Problem(node_id, name, code, f"expected {problem}, got {_show(value)}",
                                hint=_describe(spec)))
        return
    low, high = spec.min, spec.max
    if isinstance(value, (int, float)) and ((low is not None and value < low) or (high is not None and value > high)):
        problems.append(Problem(
            node_id, name, "value.out_of_range", f"{value} is out of range {_range(spec)}",
            hint=f"use a value in {_range(spec)}",
        ))


def _run_hook(hook, view: InputView, node_id: str, name: str | None, problems: list[Problem]) -> Any:
    """Run a node's `expect`/`infer` hook; whatever it raises becomes a problem, never a crash."""
    try:
        return hook(view)
    except InputError as error:
        problems.append(Problem(node_id, error.input or name, error.code, str(error), hint=error.hint))
    except OSError as error:  # the node read a file it was pointed at: the user's file, not the node's bug
        what = f"{error.filename}: " if error.filename else ""
        problems.append(Problem(node_id, name, "file.unreadable",
                                f"could not read {what}{error.strerror or error}",
                                hint="check the paths this node is given, and that you may read them"))
    except Exception as error:  # a buggy node pack must not take validation down
        problems.append(Problem(node_id, name, "node.check_failed",
                                f"the node's type check failed: {type(error).__name__}: {error}",
                                hint="this is a bug in the node's declaration; report it to its author"))
    return None


def _describe(spec: Input) -> str:
    parts = [f"type {spec.type}"]
    if isinstance(spec.type, T.Choice):
        parts = ["one of " + ", ".join(spec.type.options)]
    if spec.min is not None or spec.max is not None:
        parts.append(f"range {_range(spec)}")
    if spec.description:
        parts.append(spec.description)
    return "; ".join(parts)


def _range(spec: Input) -> str:
    low = "-inf" if spec.min is None else f"{spec.min:g}"
    high = "inf" if spec.max is None else f"{spec.max:g}"
    return f"[{low}, {high}]"


def _did_you_mean(names: Iterable[str]) -> str | None:
    names = list(names)
    return "did you mean " + " or ".join(map(repr, names)) + "?" if names else None


_REPR = reprlib.Repr()  # bounded, however deeply a value nests
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60


def _show(value: Any, limit: int = 60) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stream_regions(graph: Graph, typed: TypedGraph) -> dict[str, str]:
    """Map each node that runs once per stream item to its stream node; a node may follow one stream."""
    stream_of: dict[str, str] = {}
    for producer in typed.order:
        definition = typed.definitions.get(producer)  # None: an unknown type, reported as such
        streams = {n for n, o in definition.outputs.items() if o.stream} if definition else set()
        if not streams:
            continue
        for consumer in graph.nx.successors(producer):
            if not any(graph.inputs_of(consumer)[i].output in streams for i in graph.nx.edges[producer, consumer]["inputs"]):
                continue
            for node_id in {consumer} | nx.descendants(graph.nx, consumer):
                other = stream_of.setdefault(node_id, producer)
                if other != producer:
                    typed.problems.append(Problem(
                        node_id, None, "stream.multiple",
                        f"runs per item of two streams ({other!r} and {producer!r})",
                        hint="a node can follow one stream; run the streams in separate graphs",
                    ))
    return stream_of
