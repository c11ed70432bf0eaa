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
from .node import REQUIRED, Input, NodeDef


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
class Checked:
    """What validation learns about a graph besides its problems."""

    problems: list[Problem] = field(default_factory=list)
    definitions: dict[str, NodeDef] = field(default_factory=dict)
    output_types: dict[str, dict[str, T.Type]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # topological; empty if the graph has a cycle


def validate(graph: Graph, registry=None) -> Checked:
    """Check the graph; `Checked.problems` lists everything wrong with it."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    checked = Checked()
    cyclic = _cycle_problems(graph, checked.problems)
    order = _order(graph, cyclic)
    if not cyclic:
        checked.order = order
    for node_id in order:
        check_node(graph, node_id, registry, checked)
    for node_id in sorted(cyclic):  # still report their other problems
        check_node(graph, node_id, registry, checked)
    if not any(d.output_node for d in checked.definitions.values()) and not checked.problems:
        checked.problems.append(Problem(
            None, None, "graph.no_outputs", "nothing to run: the graph has no output node",
            hint="add a Save node (or another output node) that consumes a result",
        ))
    return checked


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


def check_node(graph: Graph, node_id: str, registry, checked: Checked) -> None:
    """Check one node against its declaration, given its producers' output types in `checked`."""
    node_type = graph.type_of(node_id)
    definition = registry.get(node_type)
    problems = checked.problems
    if definition is None:
        problems.append(Problem(node_id, None, "node.unknown_type", f"unknown node type {node_type!r}",
                                hint=_did_you_mean(registry.closest(node_type))))
        return
    checked.definitions[node_id] = definition
    inputs = graph.inputs_of(node_id)
    before = len(problems)
    types: dict[str, T.Type | None] = {}
    values: dict[str, Any] = {}
    for name, value in inputs.items():
        spec = definition.inputs.get(name)
        if spec is None:
            problems.append(Problem(
                node_id, name, "input.unknown", f"{node_type} has no input {name!r}",
                hint=_did_you_mean(difflib.get_close_matches(name, definition.inputs, n=3))
                or "inputs: " + ", ".join(definition.inputs),
            ))
        elif type(value) is Link:
            types[name] = _link_type(graph, node_id, name, value, checked)
        else:
            types[name], values[name] = spec.type, value
    for name, spec in definition.inputs.items():
        if name in inputs:
            continue
        if spec.required:
            problems.append(Problem(node_id, name, "input.missing", f"required input {name!r} is missing",
                                    hint=_describe(spec)))
        elif spec.default is not REQUIRED:
            types[name], values[name] = spec.type, spec.default
    view = InputView(types, values)
    for name, value in inputs.items():
        spec = definition.inputs.get(name)
        if spec is not None:
            _check_input(node_id, name, spec, value, types[name], view, problems)
    outputs = {name: output.type for name, output in definition.outputs.items()}
    if definition.infer is not None and len(problems) == before:
        outputs.update(_run_hook(definition.infer, view, node_id, None, problems) or {})
    checked.output_types[node_id] = outputs


def _link_type(graph: Graph, node_id: str, name: str, link: Link, checked: Checked) -> T.Type | None:
    """The type a link carries, or None (after reporting why) if it cannot be known."""
    if link.node not in graph:
        checked.problems.append(Problem(
            node_id, name, "link.missing_node", f"links to node {link.node!r}, which is not in the graph",
            hint=_did_you_mean(difflib.get_close_matches(link.node, list(graph), n=3)),
        ))
        return None
    produced = checked.output_types.get(link.node)
    if produced is None:  # the producer is itself broken; its own problem says why
        return None
    if link.output not in produced:
        outputs = ", ".join(produced) or "none"
        checked.problems.append(Problem(
            node_id, name, "link.missing_output",
            f"node {link.node!r} ({graph.type_of(link.node)}) has no output {link.output!r}",
            hint=f"its outputs: {outputs}",
        ))
        return None
    return produced[link.output]


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
