"""Execution plans: a typed graph (see nodegraph.validation), a Merkle key per node, and the
numbers drawn for "random" seeds.

A node's key hashes its type and version, its inputs as it runs (literals, and the keys
of the nodes its links read from), the fingerprint of what it reads from outside the
graph (files, weights) and the run options it declares it reads. It never includes the
node id, so identical subgraphs share keys and run once; nodes with side effects are the
exception, since each one's own effect is what was asked for. After an edit that only
changed literals, `replan` re-checks the edited nodes and re-keys only them and their
descendants.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from hashlib import blake2b
from pathlib import Path

import msgspec
import networkx as nx

from . import types as T
from .context import RunOptions
from .errors import InputError, Problem, ValidationError
from .graph import Graph, Link, gc_paused
from .node import NodeDef
from .registry import registry as default_registry
from .resources import Component
from .validation import TypedGraph, check_node, fingerprint_node, stream_regions, target_problems, validate

_encode = msgspec.msgpack.Encoder().encode


@dataclass
class Plan:
    revision: int  # the graph's revision it was made at
    typed: TypedGraph
    index: dict[str, int]  # position in the topological order
    keys: dict[str, bytes]
    # node -> SEED input given as "random" -> the number drawn for it this run
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)
    options: RunOptions = field(default_factory=RunOptions)  # those that nodes declare they read join their keys
    registry_revision: int = 0  # the registry's revision it was made at; a later registration means a new plan
    _resources: dict[str, dict | None] = field(default_factory=dict, repr=False)  # see resources()

    def resources(self, graph: Graph, node_id: str) -> dict[str, dict[str, Component]] | None:
        """What the node's resource outputs will hold (see NodeDef.resources), from its literal inputs;
        None where that is not known before it runs (an input comes from a link, or the files say nothing)."""
        if node_id not in self._resources:
            definition = self.definitions[node_id]
            inputs = definition.inputs_as_run(graph.inputs_of(node_id), self.seeds.get(node_id))
            found = None
            if definition.resources is not None and not any(type(v) is Link for v in inputs.values()):
                try:
                    found = definition.resources(inputs)
                except (InputError, OSError):  # validation read these files; they changed since
                    found = None
            self._resources[node_id] = found
        return self._resources[node_id]

    @property
    def order(self) -> list[str]:
        return self.typed.order

    @property
    def definitions(self) -> dict[str, NodeDef]:
        return self.typed.definitions

    @property
    def stream_of(self) -> dict[str, str]:
        return self.typed.stream_of

    @property
    def outputs(self) -> list[str]:
        """The output nodes, in order: what a run without named outputs runs."""
        return self.typed.output_nodes


def run_targets(current: Plan, outputs: list[str] | None) -> list[str]:
    """The nodes a run of `outputs` asks for (None: every output node); raises ValidationError
    naming those the graph does not have."""
    problems = target_problems(current.typed, outputs)
    if problems:
        raise ValidationError(problems)
    return list(outputs) if outputs is not None else current.outputs


def plan(graph: Graph, registry=None, options: RunOptions | None = None) -> Plan:
    """Validate the graph and key every node; raises ValidationError listing every problem."""
    registry = registry or default_registry
    with gc_paused():
        typed = validate(graph, registry)
    if typed.problems:
        raise ValidationError(typed.problems)
    current = Plan(graph.revision, typed, {node_id: i for i, node_id in enumerate(typed.order)}, {},
                   _random_seed_inputs(graph, typed, typed.order), options or RunOptions(), registry.revision)
    with gc_paused():
        for node_id in typed.order:
            current.keys[node_id] = node_key(graph, node_id, current, current.keys)
    return current


def replan(previous: Plan | None, graph: Graph, registry=None, options: RunOptions | None = None,
           recheck_files: bool = True) -> Plan:
    """The plan for `graph` as it is now, reusing `previous` where an edit did not reach. The files
    the graph reads are looked at again for changes, unless not `recheck_files`."""
    registry = registry or default_registry
    options = options or RunOptions()
    changed = graph.changes_since(previous.revision) if previous is not None else None
    if changed is None or registry.revision != previous.registry_revision:
        return plan(graph, registry, options)
    old = previous.typed
    # A copy: a failed re-plan must leave the previous plan as it was.
    typed = TypedGraph(definitions=dict(old.definitions), input_types=dict(old.input_types),
                       output_types=dict(old.output_types), order=old.order, stream_of=old.stream_of,
                       fingerprints=dict(old.fingerprints), output_nodes=old.output_nodes,
                       resource_nodes=old.resource_nodes)
    for node_id in changed:
        before = typed.output_types.get(node_id)
        check_node(graph, node_id, registry, typed)
        if typed.problems or typed.output_types.get(node_id) != before:
            return plan(graph, registry, options)  # report every problem, or re-type what the change reached
    moved = _changed_outside(graph, typed, changed) if recheck_files else set()
    seeds = {node_id: drawn for node_id, drawn in previous.seeds.items() if node_id not in changed}
    seeds.update(_random_seed_inputs(graph, typed, changed))
    current = Plan(graph.revision, typed, previous.index, dict(previous.keys), seeds, options,
                   previous.registry_revision)
    reached = changed | moved
    if options != previous.options:
        reached |= {n for n, definition in typed.definitions.items() if definition.reads_options}
    for node_id in _with_descendants(graph, current, reached):
        current.keys[node_id] = node_key(graph, node_id, current, current.keys)
    return current


def derive(previous: Plan, before: Graph, graph: Graph, registry=None) -> Plan:
    """The plan of `graph`, which the optimiser made from `before` (planned as `previous`) by removing nodes and
    re-linking inputs to nodes earlier in the order: only the re-linked nodes are checked again, and
    only they and what they reach get new keys. Raises ValidationError if a re-linked node is not valid."""
    registry = registry or default_registry
    old = previous.typed
    kept = [n for n in old.order if n in graph]
    relinked = [n for n in kept if graph.inputs_of(n) != before.inputs_of(n)]
    typed = TypedGraph(definitions={n: old.definitions[n] for n in kept},
                       input_types={n: old.input_types[n] for n in kept},
                       output_types={n: old.output_types[n] for n in kept}, order=kept,
                       fingerprints={n: f for n, f in old.fingerprints.items() if n in graph})
    for node_id in relinked:
        types_before = typed.output_types[node_id]
        check_node(graph, node_id, registry, typed)
        if typed.problems or typed.output_types[node_id] != types_before:
            raise ValidationError(typed.problems or [Problem(
                node_id, None, "optimize.invalid", "a rewrite of the optimiser changed what this node outputs",
                hint="run with --no-optimize, and please report this bug")])
    typed.stream_of = stream_regions(graph, typed)
    typed.output_nodes = [n for n in old.output_nodes if n in graph]
    typed.resource_nodes = [n for n in old.resource_nodes if n in graph]
    current = Plan(graph.revision, typed, {n: i for i, n in enumerate(kept)}, {n: previous.keys[n] for n in kept},
                   {n: drawn for n, drawn in previous.seeds.items() if n in graph}, previous.options,
                   previous.registry_revision, {n: r for n, r in previous._resources.items() if n in graph})
    for node_id in _with_descendants(graph, current, relinked):
        current.keys[node_id] = node_key(graph, node_id, current, current.keys)
    return current


def _changed_outside(graph: Graph, typed: TypedGraph, checked: set[str]) -> set[str]:
    """Nodes whose fingerprint moved since they were checked: a file or model changed on disk.
    Their new fingerprints go into `typed`; raises ValidationError if one can no longer be read."""
    moved = set()
    for node_id, before in list(typed.fingerprints.items()):
        if node_id not in checked:
            fingerprint_node(graph, node_id, typed)
            if before is None or typed.fingerprints[node_id] != before:
                moved.add(node_id)
    if typed.problems:
        raise ValidationError(typed.problems)
    return moved


def resolve_random_seeds(graph: Graph, current: Plan) -> None:
    """Draw a fresh number for every "random" seed and re-key what it reaches.

    Seeds are drawn when a run is submitted and recorded, so a cache hit is never a
    surprise and the saved graph reproduces the run.
    """
    if not current.seeds:
        return
    for drawn in current.seeds.values():
        for name in drawn:
            drawn[name] = secrets.randbelow(2**53)  # exact in JSON readers that use doubles
    for node_id in _with_descendants(graph, current, set(current.seeds)):
        current.keys[node_id] = node_key(graph, node_id, current, current.keys)


def with_seeds(graph: Graph, seeds: dict[str, dict[str, int]]) -> Graph:
    """A copy of the graph with the drawn numbers written in as the seeds' values: the graph as a
    run with those seeds ran it (a node that no longer exists is passed over)."""
    resolved = graph.copy()
    for node_id, drawn in seeds.items():
        for name, value in drawn.items():
            if node_id in resolved:
                resolved.set_input(node_id, name, value)
    return resolved


def _random_seed_inputs(graph: Graph, typed: TypedGraph, nodes) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for node_id in nodes:
        definition = typed.definitions[node_id]
        for name, value in graph.inputs_of(node_id).items():
            if type(value) is str and value == T.RANDOM and definition.inputs[name].type == T.SEED:
                found.setdefault(node_id, {})[name] = 0
    return found


def _with_descendants(graph: Graph, current: Plan, nodes) -> list[str]:
    reached = set(nodes)
    for node_id in nodes:
        reached |= nx.descendants(graph.nx, node_id)
    return sorted(reached, key=current.index.__getitem__)


def node_key(graph: Graph, node_id: str, current: Plan, keys: dict[str, bytes]) -> bytes:
    """The Merkle key of one node, given the keys of the nodes it reads from."""
    definition = current.definitions[node_id]
    literals, links = [], []
    for name, value in definition.inputs_as_run(graph.inputs_of(node_id), current.seeds.get(node_id)).items():
        if type(value) is Link:
            links.append((name, keys[value.node], value.output))
        else:
            literals.append((name, value))
    outside = current.typed.fingerprints.get(node_id)
    if outside is None and node_id in current.typed.fingerprints:
        outside = secrets.token_hex(16)  # unknown until it runs: a key no earlier result has
    options = [(name, _option_identity(getattr(current.options, name))) for name in definition.reads_options]
    own = node_id if definition.side_effects else None
    signature = (definition.name, definition.version, literals, links, outside, options, own)
    return blake2b(_encode(signature), digest_size=16).digest()


def _option_identity(value: object) -> object:
    return os.path.abspath(value) if isinstance(value, Path) else value


def item_key(stream_definition: NodeDef, item) -> bytes:
    """The key of one stream item: what the stream node is, and the item's own content identity."""
    return blake2b(_encode((stream_definition.name, stream_definition.version, item.key)), digest_size=16).digest()
