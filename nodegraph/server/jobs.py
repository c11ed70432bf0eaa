"""The queue of runs, and the one worker thread that owns the Executor.

One Executor serves every run, so its result cache and the models it keeps loaded serve the
next run: an editor that changes one widget re-runs only what depends on it. Runs go one at a
time, in the order they came. A queued run can be cancelled; the running one interrupted (it
stops at its next node or step; Save writes whole files or none). Finished runs are kept in
a bounded history.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..context import RunOptions
from ..errors import Interrupted, NodeExecutionError, ValidationError
from ..events import Event
from ..executor import Executor
from ..graph import Graph
from .comfy import RunRelay
from .config import ServerConfig

log = logging.getLogger("nodegraph.server")

PENDING, RUNNING, COMPLETED, FAILED, CANCELLED = "pending", "in_progress", "completed", "failed", "cancelled"
HISTORY_MESSAGES = ("execution_start", "execution_cached")  # kept in a job's messages, with its outcome


@dataclass
class Job:
    id: str
    number: int
    graph: Graph
    targets: list[str] | None = None  # the output nodes to run; None: all of them
    client_id: str | None = None
    prompt: dict | None = None  # the API-format prompt, as ComfyUI's history shows it
    extra_data: dict = field(default_factory=dict)
    status: str = PENDING
    create_time: float = field(default_factory=time.time)
    start_time: float | None = None
    end_time: float | None = None
    outputs: dict[str, dict] = field(default_factory=dict)  # node -> {"images": [...]}
    error: dict | None = None  # ComfyUI's execution_error data
    messages: list = field(default_factory=list)  # [(type, data)] of the run's start and end, for history
    failures: list[dict] = field(default_factory=list)  # stream items that failed, the others done
    seeds: dict[str, dict[str, int]] = field(default_factory=dict)  # the random seeds drawn

    @property
    def finished(self) -> bool:
        return self.status in (COMPLETED, FAILED, CANCELLED)


class QueueFull(Exception):
    pass


class Jobs:
    """`submit` queues a job; the worker runs them one by one and reports through `hub`."""

    def __init__(self, config: ServerConfig, hub, registry, on_event: Callable[[Event], None] | None = None):
        self.config, self.hub, self.registry = config, hub, registry
        self.on_event = on_event  # every event of every run, for the native event socket
        self.executor = Executor(registry, cache_bytes=config.cache_bytes, keep_models=True)
        self.options = RunOptions(device=config.device, output_dir=config.output_dir,
                                  max_image_pixels=config.max_image_pixels, unpickle=False)
        self._lock = threading.Condition()
        self._pending: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._history: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.running: Job | None = None
        self._numbers = 0
        self._stopping = False
        self._free_models = False
        self._thread = threading.Thread(target=self._work, name="nodegraph-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Cancel what waits, interrupt what runs, and wait for the worker to finish."""
        with self._lock:
            self._stopping = True
            for job in self._pending.values():
                self._end(job, CANCELLED)
            self._pending.clear()
            self._lock.notify_all()
        if self.running is not None:
            self.executor.cancel(self.running.id)
        self._thread.join(timeout)

    # ---- the queue -----------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        with self._lock:
            if len(self._pending) >= self.config.max_queue:
                raise QueueFull(f"{len(self._pending)} runs are waiting, the most this server queues")
            if self.get(job.id) is not None:
                raise ValueError(f"a run with id {job.id!r} exists already")
            job.number = self._numbers
            self._numbers += 1
            self._pending[job.id] = job
            self._lock.notify_all()
        self._status()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            if self.running is not None and self.running.id == job_id:
                return self.running
            return self._pending.get(job_id) or self._history.get(job_id)

    def pending(self) -> list[Job]:
        with self._lock:
            return list(self._pending.values())

    def history(self) -> list[Job]:
        with self._lock:
            return list(self._history.values())

    def every(self) -> list[Job]:
        """The running job, the waiting ones in order, then the history, newest first."""
        with self._lock:
            running = [self.running] if self.running is not None else []
            return [*running, *self._pending.values(), *reversed(self._history.values())]

    def queue_remaining(self) -> int:
        with self._lock:
            return len(self._pending) + (self.running is not None)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job, or interrupt the running one; False if it is neither."""
        with self._lock:
            job = self._pending.pop(job_id, None)
            if job is not None:
                self._end(job, CANCELLED)
        if job is not None:
            self._status()
            return True
        running = self.running
        if running is not None and running.id == job_id:
            self.executor.cancel(job_id)
            return True
        return False

    def interrupt(self, job_id: str | None = None) -> bool:
        """Interrupt the running job (if `job_id` is given: only if it is that one)."""
        running = self.running
        if running is None or job_id not in (None, running.id):
            return False
        self.executor.cancel(running.id)
        return True

    def clear_pending(self) -> None:
        for job in self.pending():
            self.cancel(job.id)

    def forget(self, job_ids: list[str] | None = None) -> None:
        """Drop finished jobs from the history (None: all of them)."""
        with self._lock:
            for job_id in list(self._history) if job_ids is None else job_ids:
                self._history.pop(job_id, None)

    def free_models(self) -> None:
        """Release the models kept loaded, between runs."""
        with self._lock:
            self._free_models = True
            self._lock.notify_all()

    # ---- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping and not self._free_models:
                    self._lock.wait()
                if self._free_models:
                    self._free_models = False
                    self.executor.release_models()
                    continue
                if self._stopping:
                    return
                _, job = self._pending.popitem(last=False)
                self.running = job
            try:
                self._run(job)
            except Exception:  # a bug must not stop the worker: the job fails, the next one runs
                log.exception("run %s failed in the server", job.id)
                if not job.finished:
                    self._end(job, FAILED)
            finally:
                with self._lock:
                    self.running = None
                self._status()

    def _run(self, job: Job) -> None:
        job.status, job.start_time = RUNNING, time.time()
        send = self._sender(job)
        preview = (lambda frame: self.hub.send_binary(frame, job.client_id)) if job.client_id else None
        relay = RunRelay(job.id, job.graph, self.config.output_dir, send, preview)

        def on_event(event: Event) -> None:
            relay(event)
            if self.on_event is not None:
                self.on_event(event)

        try:
            result = self.executor.run(job.graph, job.targets, on_event=on_event, options=self.options, run_id=job.id)
        except Interrupted as stop:
            relay.flush_cached()
            self._collect(job, relay, stop.result)
            node_type = job.graph.type_of(stop.node) if stop.node in job.graph else ""
            self._end(job, CANCELLED, ("execution_interrupted", relay.interruption(stop.node, node_type)))
        except NodeExecutionError as error:
            relay.flush_cached()
            self._collect(job, relay, None)
            job.error = relay.failure(error.node, error.node_type, str(error), type(error.cause).__name__)
            self._end(job, FAILED, ("execution_error", job.error))
        except ValidationError as invalid:  # a file it reads changed since it was queued
            first = invalid.problems[0]
            node_type = job.graph.type_of(first.node) if first.node in job.graph else ""
            job.error = relay.failure(first.node, node_type, str(invalid), "ValidationError")
            self._end(job, FAILED, ("execution_error", job.error))
        else:
            relay.flush_cached()
            self._collect(job, relay, result)
            self._end(job, COMPLETED, ("execution_success", relay.success()))

    def _collect(self, job: Job, relay: RunRelay, result) -> None:
        """Report the outputs of output nodes that came from the cache; keep what the run made
        (file names, failed items, seeds: never the values themselves, which the cache holds)."""
        job.outputs = relay.outputs  # filled as output nodes finish, so it holds what a failed run saved
        if result is None:
            return
        for node_id, value in result.outputs.items():
            if node_id not in relay.outputs and node_id not in relay.executed:
                relay.report_output(node_id, value)
        job.seeds = result.seeds
        job.failures = [{"node": f.node, "item": f.item, "label": f.label, "message": str(f.error)}
                        for f in result.failures]

    def _end(self, job: Job, status: str, final: tuple[str, dict] | None = None) -> None:
        """Record the job as finished, into the history, then tell its client: a client that reads
        the history once told (ComfyUI's API examples) finds the run there."""
        job.status, job.end_time = status, time.time()
        if final is not None:
            job.messages.append(final)
        with self._lock:
            self._history[job.id] = job
            while len(self._history) > self.config.max_history:
                self._history.popitem(last=False)
        if final is not None:  # as ComfyUI: the outcome, then "executing" no node: the run is over
            self.hub.send({"type": final[0], "data": final[1]}, job.client_id)
            self.hub.send({"type": "executing", "data": {"node": None, "prompt_id": job.id}}, job.client_id)

    def _sender(self, job: Job) -> Callable[[str, dict], None]:
        def send(kind: str, data: dict) -> None:
            if kind in HISTORY_MESSAGES:
                job.messages.append((kind, data))
            self.hub.send({"type": kind, "data": data}, job.client_id)
        return send

    def _status(self) -> None:
        self.hub.send({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}},
                      None)
