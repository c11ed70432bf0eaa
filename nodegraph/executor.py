"""The executor: runs a plan in topological order, reusing cached results by key.

    executor = Executor()
    result = executor.run(graph, on_event=print)
    result.outputs["save"]          # what the Save node returned

Work is demand-driven: from the requested output nodes back to the first cached
result. Nodes with equal keys run once. A value is dropped from the working set
after its last consumer ran (the byte-bounded result cache may keep it for later
runs). Nodes after a stream output run once per item, one item at a time, and a
failing item is reported without stopping the others.

A stream's items can be shared out: `survey` lists them (with the models each uses) without
running them, and `run(items=...)` runs only those given, here or in another process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from . import fileformat
from .cache import MISSING, ResultCache
from .context import ItemInfo, NodeContext, RunOptions, RunState
from .errors import Interrupted, NodeExecutionError, NodegraphError, Problem, UsageError, ValidationError
from .events import Event, NodeCached, NodeDone, NodeFailed, NodeStart, RunDone, RunInterrupted, RunStart
from .graph import Graph, Link
from .node import StreamItem
from .optimize import Optimized, Rewrite, disabled_passes, optimize
from .optimize.lifetimes import Schedule
from .plan import Plan, item_key, node_key, replan, resolve_random_seeds, run_targets, with_seeds
from .registry import Registry
from .registry import registry as default_registry
from .residency import Residency
from .resources import ModelMemory

EventCallback = Callable[[Event], None]


@dataclass
class ItemFailure:
    """A stream item that failed; the run went on with the other items."""

    node: str
    item: int
    label: str
    error: NodeExecutionError


@dataclass(frozen=True)
class ItemPlan:
    """One item of a stream, as `Executor.survey` finds it, to hand to `Executor.run(items=...)`."""

    stream: str  # the node whose stream output gives it
    index: int  # its position in that stream
    item: StreamItem
    # The value keys of the models the item makes (a model picked per item): items with equal sets
    # use the same models. Empty where no model is picked per item (or the optimiser is off).
    models: frozenset[bytes]


@dataclass
class RunResult:
    # node id -> its outputs ({name: value}, or what an output node returned); for nodes run per
    # stream item a list with one entry per item run (None where it failed), in stream order (or
    # in the order `run(items=...)` was handed them)
    outputs: dict[str, Any]
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)  # resolved "random" seeds
    failures: list[ItemFailure] = field(default_factory=list)
    duration: float = 0.0
    rewrites: list[Rewrite] = field(default_factory=list)  # what the optimiser did
    schedule: Schedule | None = None  # when models were planned to load and go
    model_loads: int = 0  # resources (models, VAEs) loaded, or loaded again after a release
    peak_model_bytes: int = 0  # the most model memory resident at once


class Executor:
    """Runs graphs; keeps results and the last plan of each graph between runs."""

    def __init__(self, registry=None, *, cache_bytes: int = 2 << 30, on_event: EventCallback | None = None,
                 keep_models: bool = False):
        """`keep_models`: models stay loaded after a run, until memory runs short or
        `release_models()` (a server, whose next run likely needs them); by default each is
        released after its last use."""
        if registry is not None and not isinstance(registry, Registry):
            raise UsageError(f"registry is a nodegraph Registry of node types, got {registry!r}")
        if type(cache_bytes) is not int or cache_bytes < 0:
            raise UsageError(f"cache_bytes is a number of bytes, got {cache_bytes!r}")
        self.registry = registry or default_registry
        self.cache = ResultCache(cache_bytes)
        self.on_event = on_event
        self.warm_models = ModelMemory(keep_warm=True) if keep_models else None
        self._plans: dict[int, tuple[weakref.ref, Plan]] = {}
        self._running = threading.Lock()  # one run at a time: runs share the cache, plans and models
        self._state = threading.Lock()  # guards the two below
        self._current: tuple[str, threading.Event] | None = None  # the running run's id, and its cancel flag
        self._cancel_before_start: set[str] = set()

    def cancel(self, run_id: str | None = None) -> None:
        """Stop the run `run_id` (None: the one running now) at its next node or diffusion step;
        a run that has not started yet stops before its first node."""
        with self._state:
            if self._current is not None and run_id in (None, self._current[0]):
                self._current[1].set()
            elif run_id is not None:
                self._cancel_before_start.add(run_id)

    def release_models(self) -> None:
        """Let go of the models kept loaded between runs (see keep_models); refused while a run goes on."""
        if not self._running.acquire(blocking=False):
            raise UsageError("models cannot be released while a run is using them; wait for it to finish")
        try:
            if self.warm_models is not None:
                self.warm_models.release_all()
        finally:
            self._running.release()

    def plan(self, graph: Graph, options: RunOptions | None = None, recheck_files: bool = True) -> Plan:
        """Validate and key the graph, re-using the previous plan where edits did not reach (see replan)."""
        remembered = self._plans.get(id(graph))
        previous = remembered[1] if remembered and remembered[0]() is graph else None
        current = replan(previous, graph, self.registry, options, recheck_files)
        self._plans = {k: v for k, v in self._plans.items() if v[0]() is not None}
        self._plans[id(graph)] = (weakref.ref(graph), current)
        return current

    def run(
        self,
        graph: Graph,
        outputs: list[str] | None = None,
        *,
        on_event: EventCallback | None = None,
        options: RunOptions | None = None,
        run_id: str | None = None,
        items: Sequence[ItemPlan] | None = None,
        recheck_files: bool = True,
    ) -> RunResult:
        """Run the graph (or only the nodes needed by `outputs`, a list of node ids) as run `run_id`
        (default: a new one); raises ValidationError, NodeExecutionError or Interrupted. One
        executor runs one graph at a time: a second run while one is going is refused (UsageError).

        `items` (from `survey` of the same graph, seeds included): run the streams' nodes for these
        items only, in place of every item the stream nodes give; the stream nodes do not run.
        `recheck_files`: look at the files the graph reads (folders, weights) for changes since its
        last run here; off, they are taken as they were then: for one run handed in item by item,
        where listing a large folder again for each item would cost more than the item."""
        with self._one_run(run_id) as (this_run, cancelled):
            run, targets = self._start(graph, outputs, on_event, options, this_run, cancelled, draw_seeds=True,
                                       recheck_files=recheck_files)
            return run.execute(targets, items)

    def survey(self, graph: Graph, outputs: list[str] | None = None, *,
               options: RunOptions | None = None) -> list[ItemPlan]:
        """The items of the graph's streams, each with the models it will use, found without running
        them: only the stream nodes run, and what picks each item's models. The graph's seeds must be
        numbers (see nodegraph.plan.with_seeds), since they may decide what each item picks."""
        with self._one_run(None) as (this_run, cancelled):
            run, targets = self._start(graph, outputs, None, options, this_run, cancelled, draw_seeds=False)
            return run.survey(targets)

    @contextlib.contextmanager
    def _one_run(self, run_id: str | None) -> Iterator[tuple[str, threading.Event]]:
        """The run's id and cancel flag, while it holds this executor."""
        if not self._running.acquire(blocking=False):
            raise UsageError(f"this Executor is running {self._current[0] if self._current else 'a run'}; wait "
                             "for it to finish, or give each thread an Executor of its own")
        run_id = run_id or uuid.uuid4().hex
        cancelled = threading.Event()
        with self._state:
            self._current = (run_id, cancelled)
            if run_id in self._cancel_before_start:
                self._cancel_before_start.discard(run_id)
                cancelled.set()
        try:
            yield run_id, cancelled
        finally:
            with self._state:
                self._current = None
            self._running.release()

    def _start(self, graph, outputs, on_event, options, run_id: str, cancelled: threading.Event,
               draw_seeds: bool, recheck_files: bool = True) -> tuple[_Run, list[str]]:
        """The run, planned and optimised, and its targets."""
        if not isinstance(graph, Graph):
            raise UsageError(f"run() takes a nodegraph.Graph, got {type(graph).__name__}; "
                             "load one with nodegraph.load(path)")
        if outputs is not None and (isinstance(outputs, str) or not all(isinstance(t, str) for t in outputs)):
            raise UsageError(f"outputs is a list of node ids, e.g. [\"save\"], got {outputs!r}")
        options = options if options is not None else RunOptions()
        if not isinstance(options, RunOptions):
            raise UsageError(f"options is a nodegraph.RunOptions, e.g. RunOptions(device=\"cpu\"), got {options!r}")
        current = self.plan(graph, options, recheck_files)
        if draw_seeds:
            resolve_random_seeds(graph, current)
        elif current.seeds:
            raise UsageError(f"the random seeds of {', '.join(current.seeds)} may decide what each item picks: "
                             "draw them first, and survey the graph with them as numbers (nodegraph.plan.with_seeds)")
        targets = run_targets(current, outputs)
        _check_output_dir(graph, current, targets)
        optimized = self.optimize(graph, current, targets, options)
        return _Run(self, graph, optimized, on_event or self.on_event, options, run_id, cancelled), targets

    def optimize(self, graph: Graph, current: Plan, targets: list[str], options: RunOptions) -> Optimized:
        """The graph as it will run. Where no models are involved the passes would change nothing
        the executor does not do anyway (it runs on demand, and equal keys once), so they are skipped."""
        disabled = disabled_passes(options)
        if not current.typed.resource_nodes:
            return Optimized(graph, current)
        return optimize(graph, current, targets, disabled, options.model_memory, self.registry)


class _Run:
    """The state of one run: the user's graph, the optimised graph that runs, and what was done."""

    def __init__(self, executor: Executor, user_graph: Graph, optimized: Optimized, emit: EventCallback | None,
                 options: RunOptions, run_id: str, cancelled: threading.Event):
        self.cache, self.options, self.run_id = executor.cache, options, run_id
        self.user_graph, self.graph, self.plan = user_graph, optimized.graph, optimized.plan
        self.aliases = optimized.aliases
        self._merged_into: dict[str, list[str]] = {}  # node that runs -> the user's nodes merged into it
        for merged, survivor in self.aliases.items():
            self._merged_into.setdefault(survivor, []).append(merged)
        self.cancelled = cancelled
        self.emit = emit
        fingerprints = self.plan.typed.fingerprints
        self.state = RunState(options, run_id, emit or _ignore, cancelled, self.workflow,
                              {**{merged: fingerprints.get(survivor) for merged, survivor in self.aliases.items()},
                               **fingerprints}, self._input_value)
        self._item_keys: dict[int | None, Callable[[str], bytes]] = {None: self.plan.keys.__getitem__}
        self.result = RunResult(outputs={}, seeds={node_id: dict(drawn) for node_id, drawn in self.plan.seeds.items()},
                                rewrites=optimized.rewrites, schedule=optimized.schedule)
        self.residency = Residency(self.graph, self.plan, options.model_memory, executor.warm_models) \
            if optimized.schedule else None
        self._shared_targets: set[str] = set()  # targets outside streams, whose outputs are reported as they come
        self._workflow: str | None = None

    # ---- the run as a whole ------------------------------------------------------------

    def execute(self, user_targets: list[str], items: Sequence[ItemPlan] | None = None) -> RunResult:
        """Run the targets; with `items`, the streams' nodes only for those (see Executor.run)."""
        started = time.perf_counter()
        self._send(RunStart, None, targets=user_targets)
        targets = list(dict.fromkeys(self.aliases.get(t, t) for t in user_targets))
        self._shared_targets = {t for t in targets if t not in self.plan.stream_of}
        try:
            shared = [t for t in targets if t not in self.plan.stream_of]
            per_item = [t for t in targets if t in self.plan.stream_of]
            # Nodes outside streams first: everything a streamed node reads is then ready.
            needs = self._inputs_of_streams(per_item)
            if items is not None:  # the items are given: their stream nodes do not run
                stream_nodes = set(self.plan.stream_of.values())
                needs = [n for n in needs if n not in stream_nodes]
            read_later = {v.node for n in self.plan.stream_of for v in self.graph.inputs_of(n).values()
                          if type(v) is Link and v.node not in self.plan.stream_of}
            values = self._run_nodes(shared + needs, self.plan.keys.__getitem__, keep=set(shared + needs),
                                     needed_later=lambda r: self._made_by(r) in read_later)
            for target in shared:
                self.result.outputs[target] = values[self.plan.keys[target]]
            for stream_node in dict.fromkeys(self.plan.stream_of[t] for t in per_item):
                chosen = None if items is None else [(p.index, p.item) for p in items if p.stream == stream_node]
                self._run_stream(stream_node, [t for t in per_item if self.plan.stream_of[t] == stream_node], values,
                                 chosen)
        except Interrupted as stop:
            self._send(RunInterrupted, stop.node)
            stop.result = self._finish(started, user_targets)
            raise
        except NodeExecutionError as error:
            self._send(NodeFailed, error.node, **_error_fields(error))
            self._finish(started, user_targets)
            raise
        self._finish(started, user_targets)
        self._send(RunDone, None, duration=self.result.duration, executed=len(self.result.executed),
                   cached=len(self.result.cached), failed=len(self.result.failures))
        return self.result

    def survey(self, user_targets: list[str]) -> list[ItemPlan]:
        """The items of the streams the targets are in, with their models (see Executor.survey)."""
        targets = [self.aliases.get(t, t) for t in user_targets]
        found = []
        for stream_node in dict.fromkeys(self.plan.stream_of[t] for t in targets if t in self.plan.stream_of):
            values = self._run_nodes([stream_node], self.plan.keys.__getitem__, keep={stream_node})
            stream_outputs, stream_names, items = self._stream_items(stream_node, values)
            region = self._region(stream_node)
            contexts = [self._item_context(stream_node, stream_outputs, stream_names, index, item, region, values)
                        for index, item in items]
            found += [ItemPlan(stream_node, index, item, models)
                      for (index, item), models in zip(items, self._uses(contexts, region))]
        return found

    def _finish(self, started: float, user_targets: list[str]) -> RunResult:
        """Release every model, report outputs under the user's node ids, and time the run."""
        if self.residency is not None:
            memory = self.residency.memory
            if not memory.keep_warm:
                memory.release_all()
            self.result.model_loads = memory.loads - self.residency.loads_before
            self.result.peak_model_bytes = memory.peak_bytes
        for target in user_targets:
            if target in self.aliases and self.aliases[target] in self.result.outputs:
                self.result.outputs[target] = self.result.outputs[self.aliases[target]]
        self.result.duration = time.perf_counter() - started
        return self.result

    def _made_by(self, resource: Any) -> str | None:
        label = self.residency.label(resource) if self.residency else None
        return label.rsplit(".", 1)[0] if label else None

    def _inputs_of_streams(self, per_item: list[str]) -> list[str]:
        """Nodes outside any stream that streamed targets read (the stream nodes included)."""
        stream_of, seen, needed = self.plan.stream_of, set(), []
        stack = list(per_item)
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            if node_id in stream_of:
                stack.extend(self.graph.nx.predecessors(node_id))
            else:
                needed.append(node_id)
        return needed

    # ---- running a set of nodes -----------------------------------------------------------

    def _run_nodes(self, targets: list[str], key_of: Callable[[str], bytes], keep: set[str],
                   given: dict[str, Any] | None = None, item: ItemInfo | None = None,
                   needed_later: Callable[[Any], bool] = lambda resource: False) -> dict[bytes, Any]:
        """Run what `targets` need; returns the working set (key -> outputs) holding the targets.

        `given` holds values of nodes outside this set (by key), `key_of` names each node's key, and
        `needed_later(resource)` whether nodes after this set still read a resource.
        """
        graph, plan, cache = self.graph, self.plan, self.cache
        given = given or {}
        values: dict[bytes, Any] = dict(given)
        to_run: dict[str, bytes] = {}  # node -> key; nodes with equal keys run once
        stack, seen = list(targets), set()
        while stack:
            node_id = stack.pop()
            if node_id in seen:
                continue
            seen.add(node_id)
            key = key_of(node_id)
            if key in given:
                continue  # computed outside this set of nodes
            if key not in values:
                hit = cache.get(key)
                if hit is MISSING or not _effect_present(plan.definitions[node_id], hit):
                    to_run[node_id] = key
                    stack.extend(graph.nx.predecessors(node_id))
                    continue
                values[key] = hit
            self._cached(node_id, item)
        readers: dict[bytes, int] = {}  # key -> consumers still to run
        for producer_key in [*(k for n in to_run for k in self._read_keys(n, key_of)), *map(key_of, keep)]:
            readers[producer_key] = readers.get(producer_key, 0) + 1
        order = sorted(to_run, key=plan.index.__getitem__)
        with self.residency.batch(order, needed_later) if self.residency else contextlib.nullcontext():
            for node_id in order:
                key = to_run[node_id]
                if key in values:  # an identical node ran before it
                    self._cached(node_id, item)
                else:
                    values[key] = self._execute(node_id, values, key_of, item)
                    cache.put(key, values[key])
                if node_id in self._shared_targets:  # known at once, should the run stop before its end
                    self.result.outputs[node_id] = values[key]
                for producer_key in self._read_keys(node_id, key_of):
                    readers[producer_key] -= 1
                    if readers[producer_key] == 0 and producer_key not in given:
                        del values[producer_key]  # its last consumer ran
            if self.residency:
                self.residency.finish_batch()
        return values

    def _read_keys(self, node_id: str, key_of) -> set[bytes]:
        return {key_of(producer) for producer in self.graph.nx.predecessors(node_id)}

    def _run_stream(self, stream_node: str, targets: list[str], values: dict[bytes, Any],
                    chosen: list[tuple[int, StreamItem]] | None) -> None:
        """Run the per-item part of the graph once per item of `stream_node`'s stream outputs (or
        per `chosen` (index, item)); items that use the same models run one after another, so each
        model loads once."""
        if chosen is None:
            stream_outputs, stream_names, items = self._stream_items(stream_node, values)
        else:
            stream_outputs, stream_names, items = {}, self._stream_names(stream_node), chosen
        for target in targets:
            self.result.outputs[target] = [None] * len(items)
        region = self._region(stream_node)
        contexts = [self._item_context(stream_node, stream_outputs, stream_names, index, item, region, values)
                    for index, item in items]
        uses = self._uses(contexts, region)
        order = sorted(range(len(items)), key=lambda i: (uses.index(uses[i]), i))
        for position, at in enumerate(order):
            key_of, given, info = contexts[at]
            following = uses[order[position + 1]] if position + 1 < len(order) else None
            try:
                item_values = self._run_nodes(targets, key_of, keep=set(targets), given=given, item=info,
                                              needed_later=lambda r: self._needed_by(following, r, region))
            except NodeExecutionError as error:
                self.result.failures.append(ItemFailure(error.node, info.index, info.label, error))
                self._send(NodeFailed, error.node, item=info, **_error_fields(error))
                continue
            for target in targets:
                self.result.outputs[target][at] = item_values[key_of(target)]

    def _stream_items(self, stream_node: str, values: dict[bytes, Any]):
        """(the stream node's outputs, the names of its stream outputs, its (index, item)s)."""
        stream_outputs = values[self.plan.keys[stream_node]]
        stream_names = self._stream_names(stream_node)
        return stream_outputs, stream_names, list(enumerate(stream_outputs[stream_names[0]]))

    def _stream_names(self, stream_node: str) -> list[str]:
        return [n for n, o in self.plan.definitions[stream_node].outputs.items() if o.stream]

    def _region(self, stream_node: str) -> list[str]:
        """The nodes run per item of the stream, in order."""
        return sorted((n for n, s in self.plan.stream_of.items() if s == stream_node),
                      key=self.plan.index.__getitem__)

    def _uses(self, contexts: list, region: list[str]) -> list[frozenset]:
        return self._models_of_items(contexts, region) if self.residency else [frozenset()] * len(contexts)

    def _item_context(self, stream_node: str, stream_outputs: dict, stream_names: list[str], index: int,
                      item: StreamItem, region: list[str], values: dict[bytes, Any]):
        """(key_of, given values, ItemInfo) for running one item."""
        plan = self.plan
        # The item's identity stands in for the stream node's key, so an item keeps its
        # cached results when other items of the stream change.
        keys = _Overlay(plan.keys)
        keys[stream_node] = item_key(plan.definitions[stream_node], item)
        for node_id in region:
            keys[node_id] = node_key(self.graph, node_id, plan, keys)
        given = dict(values)
        given[keys[stream_node]] = _ItemOutputs(stream_outputs, stream_names, item, stream_node,
                                                plan.definitions[stream_node].name)
        self._item_keys[index] = keys.__getitem__
        return keys.__getitem__, given, ItemInfo(index, item.label)

    def _models_of_items(self, contexts: list, region: list[str]) -> list[frozenset]:
        """For each item, the value keys of the models it makes (a model picked per item): what the
        items' model-making nodes read is worked out first (cheap: names, picks), not the models."""
        makers = [n for n in region if n in self.plan.typed.resource_nodes]
        inputs_of_makers = [p for n in makers for p in self.graph.nx.predecessors(n) if p in self.plan.stream_of]
        uses = []
        for key_of, given, info in contexts:
            try:
                found = self._run_nodes(inputs_of_makers, key_of, keep=set(inputs_of_makers), given=given, item=info)
            except NodeExecutionError:
                uses.append(frozenset())  # the item fails when it runs, and is reported then
                continue
            uses.append(frozenset(self.residency.value_key(maker, self._resolved(maker, found, key_of))
                                  for maker in makers))
        return uses

    def _resolved(self, node_id: str, values: dict[bytes, Any], key_of) -> dict[str, Any]:
        inputs = self.plan.definitions[node_id].inputs_as_run(self.graph.inputs_of(node_id), self.plan.seeds.get(node_id))
        return {name: values[key_of(v.node)][v.output] if type(v) is Link else v for name, v in inputs.items()}

    def _needed_by(self, following: frozenset | None, resource: Any, region: list[str]) -> bool:
        """Whether the next item reads `resource`: a model made outside the stream, or the same model."""
        if following is None:
            return False
        return self._made_by(resource) not in region or self.residency.made_with(resource) in following

    # ---- running one node -------------------------------------------------------------------

    def _execute(self, node_id: str, values: dict[bytes, Any], key_of, item: ItemInfo | None) -> Any:
        if self.cancelled.is_set():
            raise Interrupted(node_id)
        definition = self.plan.definitions[node_id]
        kwargs = definition.inputs_as_run(self.graph.inputs_of(node_id), self.plan.seeds.get(node_id))
        try:
            for name, value in kwargs.items():
                if type(value) is Link:  # an identity-only input is not loaded (e.g. ItemName's image)
                    kwargs[name] = None if definition.inputs[name].identity_only else \
                        values[key_of(value.node)][value.output]
            shared = self.residency.value_key(node_id, kwargs) if self.residency else None
            if self.residency and self.residency.made_before(shared) is not None:
                self._cached(node_id, item)  # the same resource, made from the same inputs for another item
                return self.residency.made_before(shared)
            if self.residency:
                self.residency.before(node_id, kwargs)
            if definition.takes_context:
                kwargs["ctx"] = NodeContext(node_id, self.state, item)
            self._send(NodeStart, node_id, item=item, type=definition.name)
            started = time.perf_counter()
            returned = definition.function(**kwargs)
            outputs = _outputs(definition, returned)
            if self.residency:
                self.residency.after(node_id, kwargs)
                self.residency.made(shared, outputs)
        except (Interrupted, NodeExecutionError):
            raise
        except Exception as error:
            raise NodeExecutionError(node_id, definition.name, error, traceback.format_exc()) from error
        self.result.executed.append(node_id)
        self._send(NodeDone, node_id, item=item, duration=time.perf_counter() - started,
                   result=outputs if definition.output_node else None)
        self._merged_done(node_id, item)
        return outputs

    def _input_value(self, node_id: str, name: str, item: ItemInfo | None) -> Any:
        """What input `name` of `node_id` was in this run (see RunState.input_value)."""
        node_id = self.aliases.get(node_id, node_id)
        if node_id not in self.plan.definitions:
            return None
        definition = self.plan.definitions[node_id]
        value = definition.inputs_as_run(self.graph.inputs_of(node_id), self.plan.seeds.get(node_id)).get(name)
        if type(value) is not Link:
            return value
        key_of = self._item_keys.get(item.index if item is not None else None, self._item_keys[None])
        outputs = self.cache.get(key_of(value.node))
        produced = outputs.get(value.output) if isinstance(outputs, dict) else None
        return produced if isinstance(produced, (str, int, float, bool)) else None

    def workflow(self) -> str:
        """The graph as it runs, random seeds resolved, as graph-file JSON (made once per run)."""
        if self._workflow is None:
            self._workflow = fileformat.dumps(with_seeds(self.user_graph, self.plan.seeds))
        return self._workflow

    # ---- events -----------------------------------------------------------------------------

    def _cached(self, node_id: str, item: ItemInfo | None) -> None:
        self.result.cached.append(node_id)
        self._send(NodeCached, node_id, item=item)
        self._merged_done(node_id, item)

    def _merged_done(self, node_id: str, item: ItemInfo | None) -> None:
        """The user's nodes merged into `node_id` have their result too: reported as cached (another
        node computed it), so that whoever follows the user's nodes sees each of them finish."""
        for merged in self._merged_into.get(node_id, ()):
            self._cached(merged, item)

    def _send(self, kind: type[Event], node_id: str | None, item: ItemInfo | None = None, **fields: Any) -> None:
        if self.emit is None:
            return
        where = {"item": item.index, "label": item.label} if item is not None else {}
        self.emit(kind(run_id=self.run_id, node=node_id, **where, **fields))


def _ignore(event: Event) -> None:
    pass


def _effect_present(definition, result: Any) -> bool:
    """Whether a cached result may stand: for a node with side effects, only while its effect does."""
    if not definition.side_effects:
        return True
    return definition.effect_present is not None and definition.effect_present(result)


def _check_output_dir(graph: Graph, current: Plan, targets: list[str]) -> None:
    """Refuse an output folder that cannot be written before anything runs, not after every node did."""
    wanted = set(targets)
    writers = [n for n, definition in current.definitions.items() if "output_dir" in definition.reads_options
               and (n in wanted or wanted & nx.descendants(graph.nx, n))]  # writers are few, and mostly sinks
    if not writers:
        return
    folder = current.options.output_dir
    reason = _unwritable(folder)
    if reason:
        raise ValidationError([Problem(writers[0], None, "output.unwritable",
                                       f"cannot write to the output folder {folder}: {reason}",
                                       hint="choose an output folder you may write to (--out DIR, or "
                                            "RunOptions.output_dir)")])


def _unwritable(folder) -> str | None:
    """Why files cannot be written into `folder` (made if missing), or None if they can."""
    try:
        for path in [folder, *folder.absolute().parents]:
            try:
                os.lstat(path)
                break
            except FileNotFoundError:
                continue  # made when the first file is written
        if os.path.islink(path) and not path.exists():
            return f"{path} is a link that leads nowhere"
        if not path.is_dir():
            return f"{path} is a file, not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
    except OSError as error:  # a name too long, a loop of links
        return error.strerror or str(error)
    return None


class _Overlay(dict):
    """Keys of one stream item's nodes, falling back to the plan's keys for shared nodes."""

    def __init__(self, shared: dict):
        super().__init__()
        self._shared = shared

    def __missing__(self, node_id: str) -> bytes:
        return self._shared[node_id]


class _ItemOutputs(dict):
    """A stream node's outputs as one item sees them: the stream outputs hold that item's value,
    loaded on first use (so a cached item is never even read)."""

    def __init__(self, outputs: dict, stream_names: list[str], item: StreamItem, node_id: str, node_type: str):
        super().__init__(outputs)
        self._stream_names, self._item = set(stream_names), item
        self._node_id, self._node_type = node_id, node_type

    def __getitem__(self, name: str) -> Any:
        if name in self._stream_names:
            try:
                value = self._item.load()
            except Exception as error:  # the stream node's fault, whichever node asked for the item
                raise NodeExecutionError(self._node_id, self._node_type, error, traceback.format_exc()) from error
            self[name] = value
            self._stream_names.discard(name)
            return value
        return super().__getitem__(name)


def _outputs(definition, returned: Any) -> Any:
    """A node function's return value as {output name: value}."""
    names = list(definition.outputs)
    if not names:
        return returned
    if len(names) == 1:
        returned = (returned,)
    elif not isinstance(returned, tuple) or len(returned) != len(names):
        raise TypeError(f"{definition.name} must return a tuple of {len(names)} values ({', '.join(names)})")
    outputs = dict(zip(names, returned))
    for name, output in definition.outputs.items():
        if output.stream:
            outputs[name] = tuple(outputs[name])
    return outputs


def _error_fields(error: NodegraphError) -> dict:
    return {"input": getattr(error, "input", None), "message": str(error), "hint": getattr(error, "hint", None)}
