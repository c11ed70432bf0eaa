"""Model lifetimes: an order that keeps the work on each model together, and when each model loads
and is released under the model-memory budget.

Among the valid topological orders, the greedy choice runs next a node whose models are already
loaded (or that needs none), before one that would load another: in image→image→image over three
checkpoints, the second model loads only after the first stage is done. Each resource (a node's
resource output: a model, a VAE) loads just before its first reader and is released right after
its last; components that a later resource also holds stay (they are counted once). When memory is
short, the loaded resource whose next use is furthest away goes first (Belady's rule): the plan
knows every future use, where a cache can only guess from the past.

The executor follows the same rules while running, with the sizes the loaded modules really have;
the schedule here is what `nodegraph explain` shows, from the sizes estimated before loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..graph import Graph, Link
from ..plan import Plan
from ..resources import Component, available_memory, unique_bytes


@dataclass
class Step:
    node: str
    loads: list[str] = field(default_factory=list)  # resources made resident before the node runs
    releases: list[str] = field(default_factory=list)  # after it ran (or, evicted, before)
    resident_bytes: int = 0  # while it runs


@dataclass
class Schedule:
    steps: list[Step]
    resources: dict[str, dict[str, Component]]  # "node.output" -> its components (empty where not known)
    peak_bytes: int  # the most model memory resident at once, following this schedule
    all_loaded_bytes: int  # with every model loaded at once, as nothing here were planned
    budget_bytes: int

    def to_json(self) -> dict:
        return {"order": [step.node for step in self.steps],
                "steps": [vars(step) for step in self.steps if step.loads or step.releases],
                "resources": {label: {name: vars(c) for name, c in parts.items()}
                              for label, parts in self.resources.items()},
                "peak_bytes": self.peak_bytes, "all_loaded_bytes": self.all_loaded_bytes,
                "budget_bytes": self.budget_bytes}


def resource_uses(graph: Graph, plan: Plan) -> dict[str, list[str]]:
    """node -> the resources ("producer.output") it reads."""
    uses: dict[str, list[str]] = {}
    for node_id in plan.order:
        uses[node_id] = sorted({f"{v.node}.{v.output}" for v in graph.inputs_of(node_id).values()
                                if type(v) is Link and plan.definitions[v.node].outputs[v.output].resource})
    return uses


def schedule(graph: Graph, plan: Plan, budget_bytes: int | None, regroup: bool = True) -> Schedule:
    """Plan the model memory; with `regroup`, first reorder `plan` (its index) to keep each model's
    work together."""
    uses = resource_uses(graph, plan)
    order = _grouped_order(graph, plan, uses) if regroup and plan.typed.resource_nodes \
        else sorted(plan.order, key=plan.index.__getitem__)
    plan.index.clear()
    plan.index.update({node_id: position for position, node_id in enumerate(order)})
    resources = {label: _components(graph, plan, label) for node_uses in uses.values() for label in node_uses}
    budget = budget_bytes if budget_bytes is not None else available_memory()
    steps, peak = _simulate(order, uses, resources, budget)
    return Schedule(steps, resources, peak, _bytes(resources.values()), budget)


def _components(graph: Graph, plan: Plan, label: str) -> dict[str, Component]:
    node_id, output = label.rsplit(".", 1)
    return (plan.resources(graph, node_id) or {}).get(output) or {}


def _grouped_order(graph: Graph, plan: Plan, uses: dict[str, list[str]]) -> list[str]:
    waiting = {node_id: graph.nx.in_degree(node_id) for node_id in plan.order}
    ready = [node_id for node_id, count in waiting.items() if count == 0]
    order: list[str] = []
    opened: set[str] = set()  # resources some scheduled node used
    while ready:
        ready.sort(key=lambda n: (not set(uses[n]) <= opened, plan.index[n]))
        node_id = ready.pop(0)
        order.append(node_id)
        opened.update(uses[node_id])
        for consumer in graph.nx.successors(node_id):
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                ready.append(consumer)
    return order


def _simulate(order: list[str], uses: dict[str, list[str]], resources: dict[str, dict[str, Component]],
              budget: int) -> tuple[list[Step], int]:
    readers: dict[str, list[int]] = {}
    for position, node_id in enumerate(order):
        for label in uses[node_id]:
            readers.setdefault(label, []).append(position)

    def next_use(label: str, after: int) -> float:
        return next((p for p in readers[label] if p > after), float("inf"))

    def ahead(position: int) -> set[str]:
        """Identities held by resources read after `position`."""
        return {c.identity for label, at in readers.items() if at[-1] > position for c in resources[label].values()}

    resident: list[str] = []
    kept: dict[str, Component] = {}  # components of released resources that a resource still to come holds
    steps, peak = [], 0
    for position, node_id in enumerate(order):
        step = Step(node_id)
        for label in uses[node_id]:
            if label in resident:
                continue
            while _bytes([*(resources[r] for r in [*resident, label]), kept]) > budget and (kept or resident):
                others = [r for r in resident if r not in uses[node_id]]
                if kept:
                    kept.clear()  # short of memory: what waits loads again when its turn comes
                elif others:
                    furthest = max(others, key=lambda r: next_use(r, position))
                    resident.remove(furthest)
                    step.releases.append(furthest)
                else:
                    break
            resident.append(label)
            step.loads.append(label)
        step.resident_bytes = _bytes([*(resources[r] for r in resident), kept])
        peak = max(peak, step.resident_bytes)
        finished = [r for r in resident if next_use(r, position) == float("inf")]
        for label in finished:
            resident.remove(label)
        still_needed = ahead(position)
        kept.update({c.identity: c for label in finished for c in resources[label].values()
                     if c.identity in still_needed})
        kept = {identity: c for identity, c in kept.items() if identity in still_needed}
        step.releases += finished
        steps.append(step)
    return steps, peak


def _bytes(groups) -> int:
    """Bytes of several resources' components, each identity counted once."""
    return unique_bytes(c for components in groups for c in components.values())

