"""Component sharing: one model where several nodes name the same weights, and a record of the
components that different models share.

Nodes that read the same content through different paths (a model's hub id and its local
folder, two copies of a file) have equal fingerprints but unequal keys: they become one. Two
checkpoints that ship an identical component (the SD 1.5 VAE in Comic-Diffusion and
pixel-art-style) stay two models, but the component cache holds that component once for both:
the records say which, between which nodes, so `explain` can show it.
"""

from __future__ import annotations

from ..graph import Graph, Link
from ..plan import Plan
from .merge import merge_into
from .rewrite import Rewrite


def run(graph: Graph, plan: Plan, targets: list[str]) -> tuple[Graph, list[Rewrite]]:
    twins = _same_content(graph, plan, targets)
    if twins:
        return merge_into(graph, plan, twins, "share_models", "read the same content")
    return graph, _shared_components(graph, plan)


def _same_content(graph: Graph, plan: Plan, targets: list[str]) -> dict[str, list[str]]:
    first_of: dict[tuple, str] = {}
    twins: dict[str, list[str]] = {}
    for node_id in plan.order:
        definition = plan.definitions[node_id]
        content = plan.typed.fingerprints.get(node_id)
        if content is None or definition.side_effects or node_id in targets:
            continue
        inputs = definition.inputs_as_run(graph.inputs_of(node_id), plan.seeds.get(node_id))
        if not any(definition.inputs[name].path and type(value) is str for name, value in inputs.items()):
            continue
        signature = (definition.name, definition.version, content, tuple(
            (name, (plan.keys[value.node], value.output) if type(value) is Link else
             None if definition.inputs[name].path else repr(value)) for name, value in inputs.items()))
        survivor = first_of.setdefault(signature, node_id)
        if survivor != node_id:
            twins.setdefault(survivor, []).append(node_id)
    return twins


def _shared_components(graph: Graph, plan: Plan) -> list[Rewrite]:
    holders: dict[str, dict[str, None]] = {}  # component identity -> the nodes whose resources hold it
    names: dict[str, str] = {}
    for node_id in plan.typed.resource_nodes:
        for components in (plan.resources(graph, node_id) or {}).values():
            for name, component in components.items():
                holders.setdefault(component.identity, {})[node_id] = None
                names[component.identity] = name
    shared: dict[tuple[str, ...], list[str]] = {}
    for identity, nodes in holders.items():
        if len(nodes) > 1:
            shared.setdefault(tuple(nodes), []).append(names[identity])
    return [Rewrite("share_models", nodes, f"{', '.join(sorted(set(parts)))} of {', '.join(nodes)}: identical "
                    "weights, loaded once for all of them") for nodes, parts in shared.items()]
