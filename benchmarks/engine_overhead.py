"""Engine overhead on 10,000-node graphs of no-op nodes, side by side with dask's local scheduler.

    python benchmarks/engine_overhead.py [--nodes 10000] [--repeat 5]

For a chain and a layered DAG (100 nodes wide) it times the cold path (load the
JSON file + validate + plan + execute, in a fresh executor) and a warm re-run after
one leaf (a node nothing reads from) changed a literal, and dask.local.get_sync on
the same graphs. Dask does no typing, validation or caching. Best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import time

from dask.local import get_sync

from nodegraph import fileformat, types as T
from nodegraph.executor import Executor
from nodegraph.node import Input, Output
from nodegraph.registry import Registry

registry = Registry()


@registry.node("Noop", inputs={"a": Input(T.INT, optional=True), "b": Input(T.INT, optional=True)},
               outputs={"value": Output(T.INT)})
def noop(a, b):
    return 0


@registry.node("Sink", inputs={"value": Input(T.INT), "label": Input(T.STRING, default="")}, output_node=True)
def sink(value, label):
    return None


def link(node_id: str) -> dict:
    return {"from": node_id, "output": "value"}


def chain(n: int) -> dict:
    nodes = {"n0": {"type": "Noop", "inputs": {}}}
    for i in range(1, n - 1):
        nodes[f"n{i}"] = {"type": "Noop", "inputs": {"a": link(f"n{i - 1}")}}
    nodes[f"n{n - 1}"] = {"type": "Sink", "inputs": {"value": link(f"n{n - 2}")}}
    return nodes


def layered(n: int, width: int = 100) -> dict:
    layers = n // width
    nodes = {f"l0_{j}": {"type": "Noop", "inputs": {}} for j in range(width)}
    for k in range(1, layers):
        last = k == layers - 1
        for j in range(width):
            left, right = f"l{k - 1}_{j}", f"l{k - 1}_{(j + 1) % width}"
            if last:
                nodes[f"l{k}_{j}"] = {"type": "Sink", "inputs": {"value": link(left)}}
            else:
                nodes[f"l{k}_{j}"] = {"type": "Noop", "inputs": {"a": link(left), "b": link(right)}}
    return nodes


def as_dask(nodes: dict) -> tuple[dict, list[str]]:
    def task(spec):
        function = sink if spec["type"] == "Sink" else noop
        args = [value["from"] for value in spec["inputs"].values() if isinstance(value, dict)]
        if spec["type"] == "Sink":
            return (function, args[0], "")
        return (function, *(args + [None] * (2 - len(args))))

    dsk = {node_id: task(spec) for node_id, spec in nodes.items()}
    return dsk, [node_id for node_id, spec in nodes.items() if spec["type"] == "Sink"]


def best(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def measure(name: str, nodes: dict, repeat: int) -> None:
    text = json.dumps({"nodegraph": 1, "nodes": nodes})
    n = len(nodes)

    def cold():
        graph = fileformat.loads(text)
        Executor(registry).run(graph)

    executor = Executor(registry)
    graph = fileformat.loads(text)
    executor.run(graph)
    leaf = next(node_id for node_id in reversed(list(graph)) if graph.type_of(node_id) == "Sink")
    labels = iter(range(10**9))

    def warm():
        graph.set_input(leaf, "label", str(next(labels)))
        result = executor.run(graph)
        assert result.executed == [leaf], result.executed

    dsk, sinks = as_dask(nodes)
    cold_s = best(cold, repeat)
    warm_s = best(warm, repeat)
    dask_s = best(lambda: get_sync(dsk, sinks), repeat)
    print(f"{name}: {n} nodes")
    print(f"  nodegraph cold (load+validate+plan+execute): {cold_s * 1e3:8.1f} ms  {cold_s / n * 1e6:6.1f} us/node")
    print(f"  dask get_sync                              : {dask_s * 1e3:8.1f} ms  {dask_s / n * 1e6:6.1f} us/node")
    print(f"  nodegraph warm re-run after one leaf change: {warm_s * 1e3:8.1f} ms")
    print(f"  ratios: cold/dask = {cold_s / dask_s:.2f}   warm/cold = {warm_s / cold_s:.3%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    measure("chain", chain(args.nodes), args.repeat)
    measure("layered DAG, 100 wide", layered(args.nodes), args.repeat)


if __name__ == "__main__":
    main()
