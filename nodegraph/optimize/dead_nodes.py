"""Dead-node elimination: drop what no requested output needs."""

from __future__ import annotations

import networkx as nx

from ..graph import Graph
from ..plan import Plan
from .rewrite import Rewrite


def run(graph: Graph, plan: Plan, targets: list[str]) -> tuple[Graph, list[Rewrite]]:
    live = set(targets).union(*(nx.ancestors(graph.nx, target) for target in targets))
    dead = [node_id for node_id in plan.order if node_id not in live]
    if not dead:
        return graph, []
    pruned = graph.copy()
    for node_id in dead:
        pruned.remove(node_id)
    return pruned, [Rewrite("dead_nodes", tuple(dead), f"dropped {', '.join(dead)}: no requested output needs them")]
