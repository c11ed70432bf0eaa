"""Merging: nodes with equal keys compute equal results, so one of them does it for all.

Nodes with side effects are never merged (their keys include their ids, so none are equal)."""

from __future__ import annotations

from ..graph import Graph, Link
from ..plan import Plan
from .rewrite import Rewrite


def run(graph: Graph, plan: Plan, targets: list[str]) -> tuple[Graph, list[Rewrite]]:
    first_of: dict[bytes, str] = {}
    twins: dict[str, list[str]] = {}
    for node_id in plan.order:
        survivor = first_of.setdefault(plan.keys[node_id], node_id)
        if survivor != node_id and node_id not in targets:
            twins.setdefault(survivor, []).append(node_id)
    if not twins:
        return graph, []
    return merge_into(graph, plan, twins, "merge", "compute the same result")


def merge_into(graph: Graph, plan: Plan, twins: dict[str, list[str]], pass_name: str,
               why: str) -> tuple[Graph, list[Rewrite]]:
    """Point every consumer of each twin's outputs at its survivor's, and drop the twins."""
    merged, rewrites = graph.copy(), []
    for survivor, others in twins.items():
        for other in others:
            for output in plan.definitions[other].outputs:
                merged.redirect(Link(other, output), Link(survivor, output))
            merged.remove(other)
        rewrites.append(Rewrite(pass_name, (survivor, *others), f"{', '.join(others)} and {survivor} {why}: "
                                f"{survivor} runs for all", into=survivor))
    return merged, rewrites

