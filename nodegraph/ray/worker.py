"""A worker: a Ray actor that owns a long-lived Executor, and runs one item of a stream at a time.

Its models stay loaded between items (`keep_models`), and its result and component caches stay
warm, so a worker that gets the items of one model loads that model once. Each item runs with an
empty staging folder as its output folder; the driver publishes what was written there.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .. import fileformat
from ..context import RunOptions
from ..events import Event, NodeDone, NodeFailed
from ..executor import Executor, ItemFailure, ItemPlan
from ..graph import Graph
from .publish import renamed_files, summary_files

WORKER_RESTARTS = 3  # times Ray starts a worker again after its process died


@dataclass(frozen=True)
class Job:
    """What every item of one run shares; sent once, and handed to each call by reference."""

    run_id: str
    graph: str  # the graph file's JSON, random seeds resolved
    options: RunOptions  # output_dir: the folder the driver publishes into
    cwd: str  # the driver's working directory: relative paths in the graph are read from there
    # Staging folder inside the output folder: a worker that sees it stages files there, and the
    # driver moves them; other workers send the files' bytes.
    staging: str
    driver_saves: bool = False  # send the bytes even where the staging folder is seen


@dataclass
class Outcome:
    """What one item (or the part of the graph outside streams: `item` None) gave."""

    item: ItemPlan | None
    outputs: dict[str, Any]  # target -> its value for the item (None where it failed); file names staged
    staged: dict[str, bytes | str]  # staged file name -> its bytes, or its path on shared storage
    failure: ItemFailure | None
    events: list[Event] = field(default_factory=list)  # what output nodes did, and failures
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    model_loads: int = 0
    peak_model_bytes: int = 0
    seconds: float = 0.0


class Worker:
    def __init__(self):
        self.executor = Executor(keep_models=True)
        self._graph: tuple[str, Graph] | None = None  # the last job's graph, kept so its plan is reused

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Job, targets: list[str], item: ItemPlan | None) -> Outcome:
        """Run `targets` for `item` (None: the targets outside streams, and no stream item)."""
        if os.path.isdir(job.cwd):
            os.chdir(job.cwd)
        shared = not job.driver_saves and os.path.isdir(job.staging)
        staging = Path(tempfile.mkdtemp(prefix="item-", dir=job.staging if shared else None))
        staged_name = functools.partial(_staged_name, staging=staging)
        events: list[Event] = []

        def keep(event: Event) -> None:  # what the driver reports: failures, and what output nodes did
            if isinstance(event, NodeFailed):
                events.append(event)
            elif isinstance(event, NodeDone) and event.result is not None:
                events.append(msgspec.structs.replace(event, result=renamed_files(event.result, staged_name)))

        started = time.perf_counter()
        try:
            result = self.executor.run(self._graph_of(job), targets, options=dataclasses.replace(
                job.options, output_dir=staging), run_id=job.run_id, items=[] if item is None else [item],
                on_event=keep, recheck_files=False)  # the driver listed the folder: not again per item
            outputs = {t: _one(result.outputs[t], item) for t in targets}
            staged = _staged_files(outputs, staging, shared)
        finally:
            if not shared:
                shutil.rmtree(staging, ignore_errors=True)
        return Outcome(item, {t: renamed_files(v, staged_name) for t, v in outputs.items()}, staged,
                       result.failures[0] if result.failures else None, events, result.executed, result.cached,
                       result.model_loads, result.peak_model_bytes, time.perf_counter() - started)

    def _graph_of(self, job: Job) -> Graph:
        if self._graph is None or self._graph[0] != job.graph:
            self._graph = (job.graph, fileformat.loads(job.graph))
        return self._graph[1]


def _one(value: Any, item: ItemPlan | None) -> Any:
    """A target's value for the one item run (per-item targets give a list of one)."""
    return value[0] if item is not None and isinstance(value, list) else value


def _staged_files(outputs: dict[str, Any], staging: Path, shared: bool) -> dict[str, bytes | str]:
    """The files the targets wrote, in the order written: name in the staging folder -> bytes or path."""
    staged: dict[str, bytes | str] = {}
    for summary in outputs.values():
        for file in summary_files(summary):
            name = _staged_name(file, staging)
            staged[name] = file if shared else Path(file).read_bytes()
    return staged


def _staged_name(file: str, staging: Path) -> str:
    """A file's name in the staging folder, as the driver publishes it."""
    return Path(file).relative_to(staging).as_posix()
