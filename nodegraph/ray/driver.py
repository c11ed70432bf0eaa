"""One run on the cluster, as the driver sees it: seeds, the items, dispatch, publishing, the journal.

The driver draws the random seeds once (or, resuming, takes those the journal recorded), lists
the items and the models each uses (Executor.survey) and leaves out those the journal says are
done. The part of the graph outside streams runs once, on one worker; the items go to workers
model-affine (see schedule). As each item finishes, the driver publishes its files under the
names a local run gives them (see publish), records it in the journal, and reports it.

A worker that dies is restarted by Ray (its actor's max_restarts), and the item it was running
goes back to the front of the queue for the next free worker; an item whose worker died
MAX_ATTEMPTS times is reported as failed, so one item that kills its worker cannot stop the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgspec
import ray

from .. import fileformat
from ..context import RunOptions
from ..errors import InputError, NodeExecutionError, UsageError
from ..events import Event, NodeDone, NodeFailed, RunDone, RunStart
from ..executor import Executor, ItemFailure, ItemPlan, RunResult
from ..graph import Graph
from ..plan import resolve_random_seeds, run_targets, with_seeds
from .journal import Journal, graph_digest, item_key
from .publish import publish, renamed_files, summary_files
from .schedule import Scheduler
from .worker import Job, Outcome

MAX_ATTEMPTS = 3  # runs of one item whose worker died, before the item is reported as failed
STAGING = ".nodegraph-staging"  # in the output folder: files of items not yet published


@dataclass
class ClusterResult(RunResult):
    """A run's result (see RunResult), with per-item lists in stream order over every item."""

    resumed: int = 0  # items a previous run had finished (their outputs are as the journal recorded them)
    retried: int = 0  # runs of items that went again because their worker died


def drive(workers: list, graph: Graph, outputs: list[str] | None, options: RunOptions, *, resume: bool,
          on_event: Callable[[Event], None] | None, progress: bool, driver_saves: bool) -> ClusterResult:
    started = time.perf_counter()
    run_id = uuid.uuid4().hex
    options = dataclasses.replace(options, output_dir=Path(os.path.abspath(options.output_dir)))
    journal = Journal(options.output_dir)
    surveyor = Executor()
    digest = graph_digest(graph, outputs)
    seeds = (journal.seeds_of(digest) if resume else None) or _draw_seeds(surveyor, graph, options)
    resolved = with_seeds(graph, seeds)
    items = surveyor.survey(resolved, outputs, options=options)
    current = surveyor.plan(resolved, options, recheck_files=False)  # the survey's: its folders were just listed
    targets = run_targets(current, outputs)
    if not items:
        raise UsageError("--ray shares out the items of a stream (LoadImages over a folder), and this graph has "
                         "none; run it without --ray")
    journal.start(run_id, digest, seeds)
    staging = options.output_dir / STAGING / run_id
    job = Job(run_id, fileformat.dumps(resolved), options, os.getcwd(), str(staging), driver_saves)
    run = _Driver(workers, job, graph_digest(resolved, targets), current.stream_of, targets, items, journal,
                  on_event, progress)
    run.result.seeds = seeds
    run.skip_done(journal.finished() if resume else {}, items)
    if not driver_saves:
        staging.mkdir(parents=True, exist_ok=True)  # workers that see it stage their files there
    try:
        run.go()
    finally:  # done, or stopped (Ctrl-C, a failure outside the stream): then what was sent goes unpublished
        for call in run.in_flight:
            ray.cancel(call)  # those not started yet; a worker finishes the item it is running
        run.bar.close()
        shutil.rmtree(staging, ignore_errors=True)  # and what workers that died left there
        with contextlib.suppress(OSError):
            staging.parent.rmdir()  # unless another run is staging files too
    run.result.duration = time.perf_counter() - started
    run.emit(RunDone(run_id=run_id, duration=run.result.duration, executed=len(run.result.executed),
                     cached=len(run.result.cached), failed=len(run.result.failures)))
    return run.result


def _draw_seeds(executor: Executor, graph: Graph, options: RunOptions) -> dict[str, dict[str, int]]:
    current = executor.plan(graph, options)
    resolve_random_seeds(graph, current)
    return {node_id: dict(drawn) for node_id, drawn in current.seeds.items()}


class _Driver:
    """The state of one run on the cluster: what is pending, in flight and done."""

    def __init__(self, workers: list, job: Job, digest: str, stream_of: dict[str, str], targets: list[str],
                 items: list[ItemPlan], journal: Journal, on_event, progress: bool):
        self.workers, self.job, self.journal, self.on_event, self.progress = workers, job, journal, on_event, progress
        self.job_ref = ray.put(job)
        self.shared_targets = [t for t in targets if t not in stream_of]
        self.targets_of = {s: [t for t in targets if stream_of.get(t) == s] for s in {i.stream for i in items}}
        self.keys = {(i.stream, i.index): item_key(digest, f"{i.stream}:{i.item.key}") for i in items}
        self.shared_key = item_key(digest, "")
        self.result = ClusterResult(outputs={})
        for stream, stream_targets in self.targets_of.items():
            count = sum(1 for i in items if i.stream == stream)
            self.result.outputs.update({t: [None] * count for t in stream_targets})
        self.in_flight: dict[Any, tuple[int, ItemPlan | None]] = {}  # call -> (worker, its item)
        self.returning: dict[Any, int] = {}  # a call that answers once a worker Ray restarts is up -> that worker
        self.alive = set(range(len(workers)))
        self.attempts: Counter = Counter()  # item key -> runs of it whose worker died
        self.emit(RunStart(run_id=job.run_id, targets=targets))

    def skip_done(self, done: dict[str, dict[str, Any]], items: list[ItemPlan]) -> None:
        """Take the outputs of what the journal says is done (`done`: key -> outputs); queue the rest."""
        todo = []
        for item in items:
            key = self.keys[item.stream, item.index]
            if key in done:
                self._fill(item, done[key])
            else:
                todo.append(item)
        self.shared_pending = bool(self.shared_targets) and self.shared_key not in done
        self.result.outputs.update(done.get(self.shared_key, {}))
        self.result.resumed = len(items) - len(todo)
        self.scheduler = Scheduler(todo)
        self.bar = _bar(len(todo), self.progress)

    def go(self) -> None:
        while self.scheduler.pending or self.shared_pending or self.in_flight:
            self._assign(may_wait=True)
            if not self.in_flight:
                self._assign(may_wait=False)
            if not self.in_flight and not self.returning:
                raise UsageError(f"every Ray worker died and Ray gave up restarting them; what finished is in "
                                 f"{self.journal.path}: see the workers' logs, then run again with --resume")
            [ready], _ = ray.wait([*self.in_flight, *self.returning], num_returns=1)
            if ready in self.returning:
                self._returned(ready)
                continue
            worker, item = self.in_flight.pop(ready)
            try:
                outcome = ray.get(ready)
            except ray.exceptions.RayActorError:
                self._lost(worker, item)
                continue
            except ray.exceptions.RayTaskError as error:  # not an item's failure: the whole run's (as locally)
                if isinstance(error.cause, Exception):
                    raise error.cause from None
                raise
            if item is not None:
                self.scheduler.finished(worker, outcome.seconds)
            self._accept(outcome)

    def _assign(self, may_wait: bool) -> None:
        busy = {worker for worker, _ in self.in_flight.values()} | set(self.returning.values())
        for worker in sorted(self.alive - busy):
            if self.shared_pending:
                self.shared_pending = False
                self._send(worker, self.shared_targets, None)
                continue
            item = self.scheduler.next_for(worker, may_wait=may_wait)
            if item is not None:
                self._send(worker, self.targets_of[item.stream], item)

    def _send(self, worker: int, targets: list[str], item: ItemPlan | None) -> None:
        self.in_flight[self.workers[worker].run.remote(self.job_ref, targets, item)] = (worker, item)

    def _lost(self, worker: int, item: ItemPlan | None) -> None:
        """The worker died running `item`: the item goes again, to the next free worker; the dead one
        gets work again once Ray has restarted it (while it has restarts left)."""
        self.scheduler.lost(worker)
        self.returning[self.workers[worker].pid.remote()] = worker
        key = self.shared_key if item is None else self.keys[item.stream, item.index]
        self.attempts[key] += 1
        if self.attempts[key] < MAX_ATTEMPTS:
            self.result.retried += 1
            if item is None:
                self.shared_pending = True
            else:
                self.scheduler.retry(item)
            return
        cause = InputError(None, f"the worker running it died {MAX_ATTEMPTS} times (killed, or out of memory)",
                           code="worker.lost", hint="run it without --ray to see what it does")
        if item is None:  # the part outside streams: the whole run fails, as locally
            raise NodeExecutionError(self.shared_targets[0], "outside the stream", cause, "")
        self._failed(ItemFailure(item.stream, item.index, item.item.label,
                                 NodeExecutionError(item.stream, "stream item", cause, "")))

    def _returned(self, call) -> None:
        worker = self.returning.pop(call)
        try:
            ray.get(call)
        except ray.exceptions.RayActorError:
            self.alive.discard(worker)  # out of restarts

    def _accept(self, outcome: Outcome) -> None:
        """Publish what the item wrote and record it in the journal at once, then report it."""
        published = publish(outcome.staged, self.job.options.output_dir)
        values = {t: renamed_files(v, published.__getitem__) for t, v in outcome.outputs.items()}
        if outcome.failure is None:
            key = self.shared_key if outcome.item is None else self.keys[outcome.item.stream, outcome.item.index]
            self.journal.finish(key, "" if outcome.item is None else outcome.item.item.label,
                                {t: v for t, v in values.items() if summary_files(v)})
        self.result.executed += outcome.executed
        self.result.cached += outcome.cached
        self.result.model_loads += outcome.model_loads
        self.result.peak_model_bytes = max(self.result.peak_model_bytes, outcome.peak_model_bytes)
        if outcome.item is None:
            self.result.outputs.update(values)
        else:
            self._fill(outcome.item, values)
        for event in outcome.events:
            done = {"result": renamed_files(event.result, published.__getitem__)} if isinstance(event, NodeDone) else {}
            self.emit(msgspec.structs.replace(event, run_id=self.job.run_id, **done))
        if outcome.failure is not None:
            self._failed(outcome.failure, reported=True)
        elif outcome.item is not None:
            self.bar.update(1)

    def _fill(self, item: ItemPlan, values: dict[str, Any]) -> None:
        for target, value in values.items():
            self.result.outputs[target][item.index] = value

    def _failed(self, failure: ItemFailure, reported: bool = False) -> None:
        self.result.failures.append(failure)
        if not reported:
            self.emit(NodeFailed(run_id=self.job.run_id, node=failure.node, item=failure.item, label=failure.label,
                                 input=None, message=str(failure.error), hint=failure.error.hint))
        if self.progress:
            self.bar.write(f"[{failure.label}] error: {failure.error}", file=sys.stderr)
        self.bar.update(1)

    def emit(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)


def _bar(total: int, shown: bool):
    from tqdm import tqdm

    # disable=None: a bar on a terminal only, not in logs
    return tqdm(total=total, unit="item", desc="items", file=sys.stderr, disable=None if shown else True)
