"""The batch graph over a folder of images: local streaming against Ray with 1 and 2 workers.

    OMP_NUM_THREADS=1 python benchmarks/ray_batch.py [--items 24] [--rounds 3] [--steps 4] [--size 64]

On the tiny builtins (CPU), one thread per process, so that one Ray worker and the local run
each get one core. The modes run interleaved, round after round, each round with a new seed (so
no cache answers); a first round warms every mode up (imports, model loads) and is not counted.
Ray's per-item overhead is (Ray with 1 worker - local) / items: what the driver, the transfers,
publishing and the journal add to each item. Then, for the arithmetic of large batches, the
driver's own work per item, which does not spread over workers: the survey (listing and hashing
the images, picking each one's model), and publishing a 400 kB PNG (an SD 1.5 512x512 image)
with its journal line.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in Ray's workers
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ray  # noqa: E402

import nodegraph.ray  # noqa: E402
from nodegraph import fileformat  # noqa: E402
from nodegraph.context import RunOptions  # noqa: E402
from nodegraph.executor import Executor  # noqa: E402
from nodegraph.graph import Graph  # noqa: E402
from nodegraph.plan import resolve_random_seeds, with_seeds  # noqa: E402
from nodegraph.ray.journal import Journal  # noqa: E402
from nodegraph.ray.publish import publish  # noqa: E402
from nodegraph.registry import registry  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def batch(folder: Path, steps: int, size: int) -> Graph:
    graph, _ = registry.apply_rewrite("tiny", fileformat.load(REPO / "graphs" / "batch_img2img.json"))
    graph.set_input("images", "folder", str(folder))
    graph.set_input("to_512", "width", size)
    graph.set_input("to_512", "height", size)
    graph.set_input("img2img", "num_inference_steps", steps)
    return graph


def pictures(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (96, 96), (37 * i % 256, 90, 255 - 11 * i % 256)).save(folder / f"image{i:03}.png")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3, help="counted rounds, after one to warm up")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="ray-batch-"))
    graph = batch(pictures(root / "in", args.items), args.steps, args.size)
    ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.WARNING)  # 1 + 2 workers; 2 run at a time
    local = Executor(keep_models=True)
    one, two = nodegraph.ray.Cluster(workers=1), nodegraph.ray.Cluster(workers=2)
    modes = {
        "local": lambda g, out: local.run(g, options=RunOptions(device="cpu", output_dir=out)),
        "ray, 1 worker": lambda g, out: one.run(g, options=RunOptions(device="cpu", output_dir=out)),
        "ray, 2 workers": lambda g, out: two.run(g, options=RunOptions(device="cpu", output_dir=out)),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for round_ in range(args.rounds + 1):
        graph.set_input("img2img", "seed", round_)  # new work every round: no cache answers
        names = list(modes) if round_ % 2 == 0 else list(reversed(modes))
        for name in names:
            started = time.perf_counter()
            result = modes[name](graph, root / f"out-{round_}-{name.replace(' ', '').replace(',', '')}")
            elapsed = time.perf_counter() - started
            assert not result.failures, result.failures
            if round_:
                times[name].append(elapsed)
            print(f"round {round_}{' (warm-up)' if not round_ else ''}: {name:15} {elapsed:7.2f} s", flush=True)
    one.close()
    two.close()
    ray.shutdown()
    report(times, args.items)
    driver_costs(graph, args.items, root)


def driver_costs(graph: Graph, items: int, root: Path) -> None:
    """The driver's serial work per item: the survey, and publishing with the journal."""
    executor = Executor()
    current = executor.plan(graph)
    resolve_random_seeds(graph, current)
    resolved = with_seeds(graph, current.seeds)
    started = time.perf_counter()
    Executor().survey(resolved, options=RunOptions(device="cpu"))
    survey = (time.perf_counter() - started) / items
    folder, journal, png = root / "published", Journal(root / "published"), os.urandom(400_000)
    started = time.perf_counter()
    for i in range(200):
        published = publish({f"image{i}.png": png}, folder)
        journal.finish(f"key{i}", f"image{i}", {"save": {"files": list(published.values()), "bytes": [len(png)]}})
    publishing = (time.perf_counter() - started) / 200
    print("\nthe driver's own work per item (serial, whatever the number of workers):")
    print(f"  survey (list, hash, pick the model): {1000 * survey:6.2f} ms")
    print(f"  publish a 400 kB PNG + journal line: {1000 * publishing:6.2f} ms")


def report(times: dict[str, list[float]], items: int) -> None:
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{items} items, median of {len(next(iter(times.values())))} rounds:")
    for name, seconds in median.items():
        print(f"  {name:15} {seconds:7.2f} s   {items / seconds:6.2f} items/s   {1000 * seconds / items:7.1f} ms/item")
    local, one, two = median["local"], median["ray, 1 worker"], median["ray, 2 workers"]
    print(f"  ray 1 worker / local:      {one / local:5.2f}x the time")
    print(f"  ray 2 workers / local:     {two / local:5.2f}x the time ({local / two:.2f}x the throughput)")
    print(f"  ray 2 workers / 1 worker:  {one / two:5.2f}x the throughput")
    print(f"  Ray's overhead per item:   {1000 * (one - local) / items:6.1f} ms "
          f"({100 * (one - local) / local:.0f}% of a local item)")


if __name__ == "__main__":
    main()
