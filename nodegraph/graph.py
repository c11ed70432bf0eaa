"""The graph: a networkx DiGraph of nodes, and a Python builder API over it.

    g = Graph()
    load = g.add("LoadModel", model="builtin:tiny-sd")
    t2i = g.add("Text2Img", model=load.model, prompt="Astronaut in a jungle", seed=0)
    g.add("Save", image=g.add("Decode", latent=t2i.latent, vae=load.vae).image)

Each networkx node carries `type` and `inputs` (input name -> literal or
Link); an edge runs from a producer to a consumer. The graph keeps a short
journal of edits so that a session can re-plan only what an edit reaches.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple

import networkx as nx

from .errors import UsageError

_JOURNAL_LIMIT = 4096


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building many small acyclic containers:
    on large graphs its passes would otherwise cost as much as the work itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class Link(NamedTuple):
    """A reference to another node's output; every other input value is a literal."""

    node: str
    output: str


class NodeRef:
    """What `Graph.add` returns: `ref.latent` or `ref["latent"]` links to an output."""

    __slots__ = ("id",)

    def __init__(self, node_id: str):
        self.id = node_id

    def __getattr__(self, output: str) -> Link:
        if output.startswith("__"):
            raise AttributeError(output)
        return Link(self.id, output)

    def __getitem__(self, output: str) -> Link:
        return Link(self.id, output)

    def __repr__(self) -> str:
        return f"NodeRef({self.id!r})"


class Graph:
    def __init__(self, ui: dict | None = None):
        self.nx = nx.DiGraph()
        self.ui = ui
        self.revision = 0
        # (revision, node id, structural): structural edits invalidate the whole plan
        self._journal: list[tuple[int, str, bool]] = []
        self._journal_floor = 0
        self._waiting: dict[str, set[str]] = {}  # missing producer -> consumers linking to it

    @classmethod
    def from_nodes(cls, nodes: dict[str, tuple[str, dict[str, Any]]], ui: dict | None = None) -> Graph:
        """Build a graph in one go from {id: (type, inputs)}, as a file loader does."""
        graph = cls(ui=ui)
        with gc_paused():
            add_node = graph.nx.add_node  # faster than add_nodes_from with attribute dicts
            for node_id, (node_type, inputs) in nodes.items():
                add_node(node_id, type=node_type, inputs=inputs)
            edges: dict[tuple[str, str], set[str]] = {}
            for consumer, (_, inputs) in nodes.items():
                for name, value in inputs.items():
                    if type(value) is not Link:
                        continue
                    if value.node in nodes:
                        edges.setdefault((value.node, consumer), set()).add(name)
                    else:
                        graph._waiting.setdefault(value.node, set()).add(consumer)
            graph.nx.add_edges_from((p, c, {"inputs": names}) for (p, c), names in edges.items())
        graph._record(None, structural=True)
        return graph

    # ---- reading -------------------------------------------------------------

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nx

    def __iter__(self) -> Iterator[str]:
        return iter(self.nx)

    def __len__(self) -> int:
        return len(self.nx)

    def consumers(self, node_id: str, output: str) -> list[tuple[str, str]]:
        """(consumer, input name) of every input linked to `node_id`'s `output`."""
        return [(consumer, name) for consumer in self.nx.successors(node_id)
                for name in sorted(self.nx.edges[node_id, consumer]["inputs"])
                if self.inputs_of(consumer)[name].output == output]

    def copy(self) -> Graph:
        """A graph to edit without touching this one: edits to either never reach the other.
        The copy starts at this graph's revision with an empty journal."""
        other = Graph(ui=self.ui)
        other.nx.add_nodes_from((n, {"type": d["type"], "inputs": dict(d["inputs"])}) for n, d in self.nx.nodes(data=True))
        other.nx.add_edges_from((p, c, {"inputs": set(d["inputs"])}) for p, c, d in self.nx.edges(data=True))
        other._waiting = {producer: set(consumers) for producer, consumers in self._waiting.items()}
        other.revision = other._journal_floor = self.revision
        return other

    def type_of(self, node_id: str) -> str:
        return self.nx.nodes[node_id]["type"]

    def inputs_of(self, node_id: str) -> dict[str, Any]:
        """The node's inputs; treat as read-only and edit through `set_input`."""
        return self.nx.nodes[node_id]["inputs"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.ui == other.ui and dict(self.nx.nodes(data=True)) == dict(other.nx.nodes(data=True))

    def __repr__(self) -> str:
        return f"<Graph of {len(self)} nodes>"

    # ---- editing -------------------------------------------------------------

    def add(self, node_type: str, /, *, id: str | None = None, **inputs: Any) -> NodeRef:
        """Add a node; returns a reference whose attributes link to its outputs."""
        if type(node_type) is not str:
            raise UsageError(f"a node type is a name such as \"LoadModel\", got {node_type!r}")
        if id is not None and (type(id) is not str or not id):
            raise UsageError(f"a node id is a non-empty string, got {id!r}")
        node_id = id if id is not None else self._fresh_id(node_type)
        if node_id in self.nx:
            raise UsageError(f"node id {node_id!r} is already in the graph; choose another id, or leave it out")
        inputs = {name: _as_link(value) for name, value in inputs.items()}
        self.nx.add_node(node_id, type=node_type, inputs=inputs)
        for name, value in inputs.items():
            if type(value) is Link:
                self._connect(value.node, node_id, name)
        for consumer in self._waiting.pop(node_id, ()):
            for name, value in self.inputs_of(consumer).items():
                if type(value) is Link and value.node == node_id:
                    self._connect(node_id, consumer, name)
        self._record(node_id, structural=True)
        return NodeRef(node_id)

    def set_input(self, node_id: str, name: str, value: Any) -> None:
        """Set a literal or link an input; an edit the next run re-plans cheaply."""
        inputs = self._inputs_to_edit(node_id, name)
        old = inputs.get(name)
        value = _as_link(value)
        structural = type(old) is Link or type(value) is Link
        if type(old) is Link:
            self._disconnect(old.node, node_id, name)
        inputs[name] = value
        if type(value) is Link:
            self._connect(value.node, node_id, name)
        self._record(node_id, structural)

    def remove_input(self, node_id: str, name: str) -> None:
        inputs = self._inputs_to_edit(node_id, name)
        if name not in inputs:
            raise UsageError(f"node {node_id!r} has no input {name!r} set; set inputs: {', '.join(inputs) or 'none'}")
        old = inputs.pop(name)
        if type(old) is Link:
            self._disconnect(old.node, node_id, name)
        self._record(node_id, structural=type(old) is Link)

    def redirect(self, old: Link, new: Link) -> list[tuple[str, str]]:
        """Point every input linked to `old` at `new` instead; returns the (consumer, input) redirected."""
        moved = self.consumers(old.node, old.output) if old.node in self.nx else []
        for consumer, name in moved:
            self.set_input(consumer, name, new)
        return moved

    def remove(self, node_id: str) -> None:
        """Remove a node; links to it stay in its consumers and fail validation."""
        self._require(node_id)
        for consumer in list(self.nx.successors(node_id)):
            self._waiting.setdefault(node_id, set()).add(consumer)
        for value in self.inputs_of(node_id).values():
            if type(value) is Link and value.node in self._waiting:
                self._waiting[value.node].discard(node_id)
        self.nx.remove_node(node_id)
        self._record(node_id, structural=True)

    def changes_since(self, revision: int) -> set[str] | None:
        """Nodes whose literals changed since `revision`; None if more than literals changed."""
        if revision < self._journal_floor:
            return None
        changed = set()
        for rev, node_id, structural in reversed(self._journal):
            if rev <= revision:
                break
            if structural:
                return None
            changed.add(node_id)
        return changed

    # ---- internals -----------------------------------------------------------

    def _require(self, node_id: str) -> None:
        if node_id not in self.nx:
            raise UsageError(f"there is no node {node_id!r} in the graph; nodes: {', '.join(map(str, self.nx)) or 'none'}")

    def _inputs_to_edit(self, node_id: str, name: str) -> dict[str, Any]:
        self._require(node_id)
        if type(name) is not str:
            raise UsageError(f"an input name is a string, got {name!r}")
        return self.inputs_of(node_id)

    def _fresh_id(self, node_type: str) -> str:
        stem = node_type.lower()
        n = len(self.nx) + 1
        while f"{stem}{n}" in self.nx:
            n += 1
        return f"{stem}{n}"

    def _connect(self, producer: str, consumer: str, name: str) -> None:
        if producer not in self.nx:
            self._waiting.setdefault(producer, set()).add(consumer)
            return
        if self.nx.has_edge(producer, consumer):
            self.nx.edges[producer, consumer]["inputs"].add(name)
        else:
            self.nx.add_edge(producer, consumer, inputs={name})

    def _disconnect(self, producer: str, consumer: str, name: str) -> None:
        if not self.nx.has_edge(producer, consumer):
            return
        names = self.nx.edges[producer, consumer]["inputs"]
        names.discard(name)
        if not names:
            self.nx.remove_edge(producer, consumer)

    def _record(self, node_id: str | None, structural: bool) -> None:
        self.revision += 1
        self._journal.append((self.revision, node_id, structural))
        if len(self._journal) > _JOURNAL_LIMIT:
            dropped = self._journal[: _JOURNAL_LIMIT // 2]
            del self._journal[: _JOURNAL_LIMIT // 2]
            self._journal_floor = dropped[-1][0]


def _as_link(value: Any) -> Any:
    """Pass values through, but refuse a NodeRef where a link to one of its outputs was meant,
    and a Link that names no node or output."""
    if isinstance(value, NodeRef):
        raise UsageError(f"link to an output, e.g. {value.id}.image, not to the node {value.id!r} itself")
    if type(value) is Link and not (type(value.node) is str and type(value.output) is str):
        raise UsageError(f"a Link names a node id and an output name, both strings, got {value!r}")
    return value
