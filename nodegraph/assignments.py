"""`NODE.INPUT=VALUE` assignments, as `nodegraph run --set` takes them: each value is parsed
with the type the input declares (`--set t2i.seed=random`, `--set i2i.strength=0.6`)."""

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
