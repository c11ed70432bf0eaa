"""Which resources are loaded while a run goes on: each just before the first node that reads it,
and until its last reader has run (see nodegraph.resources and nodegraph.optimize.lifetimes).

The executor runs nodes in batches: the nodes outside streams, then each item of a stream. For
the batch running now, the next use of a resource is the position of its next reader; a resource
that a later batch still needs (the next stream item's model) is kept; one that nothing needs any
more is released. When memory is short, the one used furthest in the future goes first.

Resources are also shared by value: two nodes that make a resource from the same inputs (the same
model picked for two images of a batch) get the same one, so it loads once; with models kept
warm between runs, two runs too.
"""

from __future__ import annotations

from contextlib import contextmanager
from hashlib import blake2b
from typing import Any, Callable, Iterator

import msgspec

from .graph import Graph, Link
from .plan import Plan
from .resources import ModelMemory, is_resource

_PRIMITIVES = (str, int, float, bool, type(None))


class Residency:
    def __init__(self, graph: Graph, plan: Plan, budget_bytes: int | None, memory: ModelMemory | None = None):
        """`memory`: model memory kept from earlier runs (see ModelMemory.keep_warm); default a new one."""
        if memory is not None:
            memory.start_run(budget_bytes)
        self.memory = memory if memory is not None else ModelMemory(budget_bytes)
        self.loads_before = self.memory.loads
        self._graph, self._plan = graph, plan
        self._producer: dict[int, str] = {}  # id(resource) -> "node.output" that made it
        self._batch: list[str] = []
        self._position = 0
        self._needed_later: Callable[[Any], bool] = lambda resource: False

    @contextmanager
    def batch(self, order: list[str], needed_later: Callable[[Any], bool]) -> Iterator[None]:
        """Run `order` as the current batch; `needed_later(resource)` says if a later batch reads it."""
        self._batch, self._needed_later = order, needed_later
        try:
            yield
        finally:
            self._batch = []

    def before(self, node_id: str, inputs: dict[str, Any]) -> None:
        """Ready the resources among the node's resolved inputs."""
        self._position = self._batch.index(node_id) if node_id in self._batch else 0
        resources = self._resources_read(node_id, inputs)
        self.memory.use(resources, self.next_use, self._needed_ahead())

    def after(self, node_id: str, inputs: dict[str, Any]) -> None:
        self.memory.done(self._resources_read(node_id, inputs), self.next_use, self._needed_ahead())

    def finish_batch(self) -> None:
        """Release what nothing needs any more once the batch has run."""
        self._position = len(self._batch)
        self.memory.done(self.memory.resident(), self.next_use)

    def _needed_ahead(self) -> frozenset[str]:
        """Identities of the components that resources read later in this batch hold (as planned)."""
        needed = set()
        for node_id in self._batch[self._position + 1:]:
            for label in self._labels_read(node_id):
                producer, output = label.rsplit(".", 1)
                held = (self._plan.resources(self._graph, producer) or {}).get(output) or {}
                needed.update(component.identity for component in held.values())
        return frozenset(needed)

    def next_use(self, resource: Any) -> int | None:
        """How many nodes away the resource's next reader is; None if nothing will read it."""
        label = self._producer.get(id(resource))
        for distance, node_id in enumerate(self._batch[self._position + 1:], 1):
            if label in self._labels_read(node_id):
                return distance
        return len(self._batch) + 1 if self._needed_later(resource) else None

    # ---- sharing resources by value -----------------------------------------------------------

    def value_key(self, node_id: str, inputs: dict[str, Any]) -> bytes | None:
        """For a node that makes resources: a key of its resolved inputs (what its fingerprint says
        of the files it reads, and its other values), or None if an input is not a plain value."""
        definition = self._plan.definitions[node_id]
        if node_id not in self._plan.typed.resource_nodes or not all(isinstance(v, _PRIMITIVES) for v in inputs.values()):
            return None
        content = definition.fingerprint(inputs) if definition.fingerprint else None
        values = [(n, None if definition.inputs[n].path else v) for n, v in inputs.items()]
        options = [(n, str(getattr(self._plan.options, n))) for n in definition.reads_options]
        return blake2b(msgspec.msgpack.encode((definition.name, definition.version, content, values, options)),
                       digest_size=16).digest()

    def made_before(self, key: bytes | None) -> Any:
        return self.memory.made.get(key) if key is not None else None

    def made(self, key: bytes | None, outputs: Any) -> None:
        if key is not None:
            self.memory.made[key] = outputs
            for value in outputs.values():
                self.memory.made_with[id(value)] = key

    def made_with(self, resource: Any) -> bytes | None:
        """The value key a resource was made with (see value_key)."""
        return self.memory.made_with.get(id(resource))

    def label(self, resource: Any) -> str | None:
        """The "node.output" that made a resource a node has read."""
        return self._producer.get(id(resource))

    # ---- internals ------------------------------------------------------------------------------

    def _labels_read(self, node_id: str) -> set[str]:
        return {f"{v.node}.{v.output}" for v in self._graph.inputs_of(node_id).values()
                if type(v) is Link and self._plan.definitions[v.node].outputs[v.output].resource}

    def _resources_read(self, node_id: str, inputs: dict[str, Any]) -> list[Any]:
        found = []
        for name, link in self._graph.inputs_of(node_id).items():
            value = inputs.get(name)
            if type(link) is Link and is_resource(value):
                self._producer.setdefault(id(value), f"{link.node}.{link.output}")
                found.append(value)
        return found
