"""Running a graph's stream on a Ray cluster: its items fan out to workers, each a Ray actor that
owns a long-lived Executor, so models load once per worker.

    import nodegraph, nodegraph.ray
    graph = nodegraph.load("graphs/batch_img2img.json")
    result = nodegraph.ray.run(graph, address="auto", gpus_per_worker=1,
                               options=nodegraph.RunOptions(output_dir="out"))

or `nodegraph run graph.json --ray [ADDRESS]`. The outputs are those of a local run with the same
seeds, byte for byte, under the same names; see driver for how a run goes, and worker, schedule,
publish and journal for its parts. A `Cluster` keeps its workers (and their loaded models) between
runs. Paths in the graph (the input folder, models) must be readable on every worker at the same
path, as on shared storage; the output folder need not be: workers that do not see it send their
files to the driver, which writes them.
"""

from __future__ import annotations

import logging
import os

from ..context import RunOptions
from ..errors import UsageError
from ..graph import Graph

try:
    import ray
except ImportError as missing:
    raise ImportError("running on Ray needs ray: pip install 'nodegraph[ray]'", name=missing.name) from None

from .driver import ClusterResult, drive
from .worker import WORKER_RESTARTS, Worker

__all__ = ["Cluster", "ClusterResult", "run"]

LOCAL = "local"  # Ray's address for a cluster started on the spot, in this process's machine


class Cluster:
    """Workers on a Ray cluster, kept between runs.

    `address`: "auto" (the cluster `ray start` made on this machine), an address ("host:6379",
    "ray://host:10001"), "local" (a cluster started now, with this process), or None (Ray's own
    choice: $RAY_ADDRESS, else a local cluster). If this process is connected to Ray already, that
    cluster is used. `gpus_per_worker`: default 1 where the cluster has GPUs, else 0 (workers on CPU).
    `workers`: how many (default: as many as the cluster has room for, with a CPU each, and their GPUs)."""

    def __init__(self, address: str | None = None, *, workers: int | None = None,
                 gpus_per_worker: float | None = None):
        if workers is not None and (type(workers) is not int or workers < 1):
            raise UsageError(f"workers is a number of workers, 1 or more, got {workers!r}")
        if gpus_per_worker is not None and (not isinstance(gpus_per_worker, (int, float)) or gpus_per_worker < 0):
            raise UsageError(f"gpus_per_worker is a number of GPUs, 0 or more (e.g. 1, or 0.5 to share one), "
                             f"got {gpus_per_worker!r}")
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            starts_one = address == LOCAL or (address is None and not os.environ.get("RAY_ADDRESS"))
            try:
                ray.init(address=address, logging_level=logging.WARNING,
                         **({"include_dashboard": False} if starts_one else {}))
            except ConnectionError as error:  # nothing listens there: the user's address, not a bug
                raise UsageError(f"no Ray cluster answers at {address or os.environ.get('RAY_ADDRESS')!r}: "
                                 f"{str(error).split('. ')[0]}; start one with `ray start --head`, give "
                                 f"its address, or leave the address out to start one for this run") from None
        self.workers: list = []
        try:
            self.workers = _start_workers(workers, gpus_per_worker)
        except BaseException:
            self.close()
            raise

    def run(self, graph: Graph, outputs: list[str] | None = None, *, options: RunOptions | None = None,
            resume: bool = False, on_event=None, progress: bool = False, driver_saves: bool = False) -> ClusterResult:
        """Run the graph (or what `outputs` need) with its stream's items shared out among the workers.

        `resume`: skip the items the run journal in the output folder says are done, with the seeds
        the run that did them drew. `progress`: one bar on stderr, and failures as they happen.
        `on_event`: the run's start and end, and per item what its output nodes did and its failure.
        `driver_saves`: workers send their files to the driver even where they see the output folder.
        Failing items are in `failures`, as in a local run; a failure outside the stream raises."""
        if not isinstance(graph, Graph):
            raise UsageError(f"run() takes a nodegraph.Graph, got {type(graph).__name__}; "
                             "load one with nodegraph.load(path)")
        return drive(self.workers, graph, outputs, options or RunOptions(), resume=resume, on_event=on_event,
                     progress=progress, driver_saves=driver_saves)

    def close(self) -> None:
        """Stop the workers (and the Ray cluster, if this Cluster started it)."""
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        if self._started_ray:
            ray.shutdown()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run(graph: Graph, outputs: list[str] | None = None, *, address: str | None = None, workers: int | None = None,
        gpus_per_worker: float | None = None, **run_options) -> ClusterResult:
    """Run the graph on a Ray cluster (see Cluster for the cluster, Cluster.run for the rest)."""
    with Cluster(address, workers=workers, gpus_per_worker=gpus_per_worker) as cluster:
        return cluster.run(graph, outputs, **run_options)


def _start_workers(workers: int | None, gpus_per_worker: float | None) -> list:
    if gpus_per_worker is None:
        gpus_per_worker = 1 if ray.cluster_resources().get("GPU") else 0
    room = _room_for(gpus_per_worker)
    if workers is not None and workers > room:
        raise UsageError(f"the Ray cluster has room for {room} worker(s) with {gpus_per_worker:g} GPU(s) and a CPU "
                         f"each, not {workers}")
    actor = ray.remote(Worker).options(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=WORKER_RESTARTS,
                                       max_task_retries=0)
    started = [actor.remote() for _ in range(workers or room)]
    ray.get([worker.pid.remote() for worker in started])  # every one is up
    return started


def _room_for(gpus_per_worker: float) -> int:
    """How many workers the cluster has room for, each with a CPU and `gpus_per_worker` GPUs."""
    resources = ray.cluster_resources()
    room = int(resources.get("CPU", 0))
    if gpus_per_worker:
        room = min(room, int(resources.get("GPU", 0) // gpus_per_worker))
    if room < 1:
        raise UsageError(f"the Ray cluster has {resources.get('CPU', 0):g} CPU(s) and {resources.get('GPU', 0):g} "
                         f"GPU(s): no room for a worker with a CPU and {gpus_per_worker:g} GPU(s)")
    return room
