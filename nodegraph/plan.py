"""Execution plans: a validated graph, its order, and a Merkle cache key per node.

A node's key hashes its type and version, its effective literal inputs, the keys
of the nodes it reads from and the fingerprint of what it reads from outside the
graph (files, weights). It never includes the node id, so identical subgraphs
share keys and run once. After an edit that only changed literals, `replan`
re-checks the edited nodes and re-keys only them and their descendants.
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
from .node import REQUIRED, NodeDef
from .validate import Checked, check_node, validate

_encode = msgspec.msgpack.Encoder().encode


@dataclass
class Plan:
    revision: int
    checked: Checked
    index: dict[str, int]  # position in the topological order
    keys: dict[str, bytes]
    # (node, input) of every SEED literal "random", and the number it was resolved to this run
    seeds: dict[tuple[str, str], int] = field(default_factory=dict)
    stream_of: dict[str, str] = field(default_factory=dict)  # node run per item -> the stream node
    outputs: list[str] = field(default_factory=list)  # output nodes, in order
    options: RunOptions = field(default_factory=RunOptions)  # those that nodes declare they read join their keys
    registry_revision: int = 0  # the registry's revision it was made at; a later registration means a new plan
    # node -> identity of what it reads from outside the graph, for nodes with a fingerprint;
    # None where it cannot be known before the node runs (such a node is never taken from the cache)
    fingerprints: dict[str, str | None] = field(default_factory=dict)

    @property
    def order(self) -> list[str]:
        return self.checked.order

    @property
    def definitions(self) -> dict[str, NodeDef]:
        return self.checked.definitions


def plan(graph: Graph, registry=None, options: RunOptions | None = None) -> Plan:
    """Validate the graph and key every node; raises ValidationError listing every problem."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    with gc_paused():
        checked = validate(graph, registry)
    stream_of = _stream_regions(graph, checked) if not checked.problems else {}
    if checked.problems:
        raise ValidationError(checked.problems)
    index = {node_id: i for i, node_id in enumerate(checked.order)}
    result = Plan(graph.revision, checked, index, {}, stream_of=stream_of,
                  outputs=[n for n in checked.order if checked.definitions[n].output_node],
                  options=options or RunOptions(), registry_revision=registry.revision)
    result.seeds = dict.fromkeys(_random_seed_inputs(graph, checked), 0)
    with gc_paused():
        _key_nodes(graph, result, checked.order)
    return result


def replan(previous: Plan | None, graph: Graph, registry=None, options: RunOptions | None = None) -> Plan:
    """The plan for `graph` as it is now, reusing `previous` where an edit did not reach."""
    from .registry import registry as default_registry

    registry = registry or default_registry
    options = options or RunOptions()
    changed = graph.changes_since(previous.revision) if previous is not None else None
    if changed is None or registry.revision != previous.registry_revision:
        return plan(graph, registry, options)
    checked = previous.checked
    for node_id in changed:
        before = checked.output_types.get(node_id)
        # A copy: a failed re-plan must leave the previous plan's types as they were.
        scratch = Checked(definitions={}, output_types=checked.output_types.copy())
        check_node(graph, node_id, registry, scratch)
        if scratch.problems or scratch.output_types.get(node_id) != before:
            return plan(graph, registry, options)  # report every problem, or re-type what the change reached
    seeds = {k: v for k, v in previous.seeds.items() if k[0] not in changed}
    for node_id in changed:
        seeds.update(dict.fromkeys(_random_seed_inputs(graph, checked, [node_id]), 0))
    result = Plan(graph.revision, checked, previous.index, dict(previous.keys), seeds,
                  previous.stream_of, previous.outputs, options, previous.registry_revision,
                  dict(previous.fingerprints))
    reached = changed | _changed_outside(graph, result)
    if options != previous.options:
        reached |= {n for n, definition in checked.definitions.items() if definition.reads_options}
    _key_nodes(graph, result, _with_descendants(graph, result, reached))
    return result


def _changed_outside(graph: Graph, current: Plan) -> set[str]:
    """Nodes whose fingerprint moved since the plan was made: a file or model changed on disk."""
    moved = set()
    for node_id, definition in current.checked.definitions.items():
        if definition.fingerprint is not None:
            try:
                now = fingerprint(graph, node_id, current)
                if now is None or now != current.fingerprints.get(node_id):
                    moved.add(node_id)
            except (InputError, OSError):
                moved.add(node_id)  # re-keying it reports the problem
    return moved


def resolve_random_seeds(graph: Graph, current: Plan) -> None:
    """Draw a fresh number for every "random" seed and re-key what it reaches.

    Seeds are drawn when a run is submitted and recorded, so a cache hit is never a
    surprise and the saved graph reproduces the run.
    """
    if not current.seeds:
        return
    for key in current.seeds:
        current.seeds[key] = secrets.randbelow(2**53)  # exact in JSON readers that use doubles
    _key_nodes(graph, current, _with_descendants(graph, current, {node for node, _ in current.seeds}))


def _random_seed_inputs(graph: Graph, checked: Checked, nodes=None) -> list[tuple[str, str]]:
    found = []
    for node_id in nodes if nodes is not None else checked.order:
        definition = checked.definitions[node_id]
        for name, value in graph.inputs_of(node_id).items():
            if value == T.RANDOM and definition.inputs[name].type == T.SEED:
                found.append((node_id, name))
    return found


def _with_descendants(graph: Graph, current: Plan, nodes) -> list[str]:
    reached = set(nodes)
    for node_id in nodes:
        reached |= nx.descendants(graph.nx, node_id)
    return sorted(reached, key=current.index.__getitem__)


def _key_nodes(graph: Graph, current: Plan, nodes: list[str]) -> None:
    """(Re)compute the fingerprints and keys of `nodes`, given in topological order."""
    problems, failed = [], set()
    for node_id in nodes:
        if any(producer in failed for producer in graph.nx.predecessors(node_id)):
            failed.add(node_id)  # it cannot be keyed; its producer's problem says why
            continue
        try:
            if current.checked.definitions[node_id].fingerprint is not None:
                current.fingerprints[node_id] = fingerprint(graph, node_id, current)
            current.keys[node_id] = node_key(graph, node_id, current, current.keys)
        except InputError as error:
            failed.add(node_id)
            problems.append(Problem(node_id, error.input, error.code, str(error), hint=error.hint))
        except OSError as error:
            failed.add(node_id)
            problems.append(Problem(node_id, None, "file.unreadable", f"could not read {error.filename or 'a file'}: "
                                    f"{error.strerror or error}", hint="check the paths this node is given"))
    if problems:
        raise ValidationError(problems)


def fingerprint(graph: Graph, node_id: str, current: Plan) -> str | None:
    """The node's fingerprint hook on its literal inputs: the identity of what it reads from outside,
    or None if that is known only when it runs (e.g. a file whose path comes from a link)."""
    definition = current.checked.definitions[node_id]
    return definition.fingerprint(dict(_literals(graph, node_id, current)))


def _literals(graph: Graph, node_id: str, current: Plan) -> list[tuple[str, object]]:
    """The node's literal inputs as it runs: defaults filled in, random seeds resolved."""
    definition, seeds = current.checked.definitions[node_id], current.seeds
    inputs = graph.inputs_of(node_id)
    literals = []
    for name, spec in definition.inputs.items():
        value = inputs.get(name, spec.default)
        if type(value) is not Link and value is not REQUIRED:
            literals.append((name, seeds.get((node_id, name), value) if seeds else value))
    return literals


def node_key(graph: Graph, node_id: str, current: Plan, keys: dict[str, bytes]) -> bytes:
    """The Merkle key of one node, given the keys of the nodes it reads from."""
    definition = current.checked.definitions[node_id]
    links = [(name, keys[value.node], value.output) for name, value in graph.inputs_of(node_id).items()
             if type(value) is Link]
    options = [(name, _option_identity(getattr(current.options, name))) for name in definition.reads_options]
    # Nodes with side effects are never merged: each one's own effect is what was asked for.
    own = node_id if definition.side_effects else None
    outside = current.fingerprints.get(node_id)
    if outside is None and node_id in current.fingerprints:
        outside = secrets.token_hex(16)  # unknown until it runs: a key no earlier result has
    signature = (definition.name, definition.version, _literals(graph, node_id, current), sorted(links),
                 outside, options, own)
    return blake2b(_encode(signature), digest_size=16).digest()


def _option_identity(value: object) -> object:
    return os.path.abspath(value) if isinstance(value, Path) else value


def item_key(stream_definition: NodeDef, item) -> bytes:
    """The key of one stream item: what the stream node is, and the item's own content identity."""
    return blake2b(_encode((stream_definition.name, stream_definition.version, item.key)), digest_size=16).digest()


def _stream_regions(graph: Graph, checked: Checked) -> dict[str, str]:
    """Map each node that runs once per stream item to its stream node; a node may follow one stream."""
    stream_of: dict[str, str] = {}
    for producer in checked.order:
        streams = {n for n, o in checked.definitions[producer].outputs.items() if o.stream}
        if not streams:
            continue
        for consumer in graph.nx.successors(producer):
            if not any(graph.inputs_of(consumer)[i].output in streams for i in graph.nx.edges[producer, consumer]["inputs"]):
                continue
            for node_id in {consumer} | nx.descendants(graph.nx, consumer):
                other = stream_of.setdefault(node_id, producer)
                if other != producer:
                    checked.problems.append(Problem(
                        node_id, None, "stream.multiple",
                        f"runs per item of two streams ({other!r} and {producer!r})",
                        hint="a node can follow one stream; run the streams in separate graphs",
                    ))
    return stream_of
