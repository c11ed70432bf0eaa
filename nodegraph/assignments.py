"""Preparing a graph to run as the command line and the server do: `NODE.INPUT=VALUE` assignments
(`--set`), each value parsed with the type the input declares (`--set t2i.seed=random`,
`--set i2i.strength=0.6`), then named rewrites (`--tiny`)."""

from __future__ import annotations

from . import types as T
from .errors import UsageError
from .graph import Graph


def apply_assignment(graph: Graph, assignment: str, registry=None) -> None:
    """Set the literal input that `assignment` names; raises UsageError saying what is wrong.
    The value is then checked like any literal when the graph is validated."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    target, equals, text = assignment.partition("=")
    node_id, dot, name = target.rpartition(".")
    if not equals or not dot:
        raise UsageError(f"--set {assignment!r}: expected NODE.INPUT=VALUE")
    if node_id not in graph:
        raise UsageError(f"--set {assignment!r}: there is no node {node_id!r} (nodes: {', '.join(graph)})")
    definition = registry.get(graph.type_of(node_id))
    spec = definition.inputs.get(name) if definition else None
    if spec is None:
        known = ", ".join(definition.inputs) if definition else "unknown node type"
        raise UsageError(f"--set {assignment!r}: {node_id} has no input {name!r} (inputs: {known})")
    try:
        value = T.parse_literal(spec.type, text)
    except ValueError as error:
        raise UsageError(f"--set {assignment!r}: {node_id}.{name} takes {spec.type}: {error}") from None
    graph.set_input(node_id, name, value)


def prepare(graph: Graph, assignments=(), rewrites=(), registry=None) -> tuple[Graph, list]:
    """The graph with `assignments` applied, then the named `rewrites`, and what those rewrote;
    `graph` itself is left as it was. Raises UsageError for a bad assignment or rewrite name."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    graph, done = graph.copy(), []
    for assignment in assignments:
        apply_assignment(graph, assignment, registry)
    for name in rewrites:
        if name not in registry.rewrites:
            raise UsageError(f"there is no rewrite {name!r}; rewrites: {', '.join(registry.rewrites)}")
        graph, records = registry.apply_rewrite(name, graph)
        done += records
    return graph, done
