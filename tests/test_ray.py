"""The batch graph on a Ray cluster started here (CPU, tiny models): the bytes of a local run, model
affinity counted at the workers' component caches, a worker killed mid-batch, a resumed run, and a
corrupt image that fails alone, through the command line too."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")  # a guard only: the test extra installs ray, so CI runs these

import nodegraph.ray  # noqa: E402
import nodes  # noqa: E402,F401  (registers the built-in nodes)
from checkpoints import fine_tune  # noqa: E402
from nodegraph import fileformat  # noqa: E402
from nodegraph.cli import main  # noqa: E402
from nodegraph.context import RunOptions  # noqa: E402
from nodegraph.executor import Executor  # noqa: E402
from nodegraph.graph import Graph  # noqa: E402
from nodegraph.plan import with_seeds  # noqa: E402
from nodegraph.ray.journal import JOURNAL_NAME  # noqa: E402
from nodes.lists import pick  # noqa: E402
from test_graphs import REPO, files_of, tiny  # noqa: E402

WORKERS = 2


@pytest.fixture(scope="module")
def cluster():
    # Room for the two workers here, and one more for the command line's own.
    ray.init(num_cpus=WORKERS + 1, include_dashboard=False, logging_level=logging.WARNING)
    with nodegraph.ray.Cluster(workers=WORKERS) as workers:
        yield workers
    ray.shutdown()


def batch(folder: Path) -> Graph:
    graph = tiny(fileformat.load(REPO / "graphs" / "batch_img2img.json"))
    graph.set_input("images", "folder", str(folder))
    return graph


def pictures(folder: Path, count: int) -> Path:
    """`count` images of their own colours and sizes."""
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (48 + 8 * i, 64), (30 * i % 256, 90, 200 - 20 * i % 200)).save(folder / f"image{i}.png")
    return folder


def saved(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*.png"))}


def labels_of(folder: Path) -> Counter:
    """How many files each image's name starts (the batch names its files `<image>_...png`)."""
    return Counter(name.split("_")[0] for name in saved(folder))


@contextlib.contextmanager
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_the_batch_on_ray_gives_the_bytes_and_names_of_a_local_run(cluster, tmp_path):
    graph = batch(REPO / "graphs" / "inputs" / "batch")
    on_workers = cluster.run(graph, options=RunOptions(device="cpu", output_dir=tmp_path / "ray"))
    via_driver = cluster.run(graph, options=RunOptions(device="cpu", output_dir=tmp_path / "driver"),
                             driver_saves=True)
    assert on_workers.failures == [] and via_driver.failures == []
    assert on_workers.seeds["pick_model"] != via_driver.seeds["pick_model"]  # each run draws its own seeds
    for result, folder in ((on_workers, "ray"), (via_driver, "driver")):
        with one_thread():  # as Ray's workers run (one CPU each): a CPU's sums depend on how they are split
            local = Executor().run(with_seeds(graph, result.seeds),
                                   options=RunOptions(device="cpu", output_dir=tmp_path / f"local-{folder}"))
        assert len(saved(tmp_path / folder)) == 3
        assert saved(tmp_path / folder) == saved(tmp_path / f"local-{folder}")  # the PNGs, provenance and all
        assert sorted(files_of(result, "save")) == sorted(str(tmp_path / folder / n) for n in saved(tmp_path / folder))
        assert [Path(f).name for f in files_of(local, "save")] == [Path(f).name for f in files_of(result, "save")]
    assert not (tmp_path / "ray" / ".nodegraph-staging").exists()


def test_the_scheduler_keeps_each_model_on_its_worker_and_shares_out_a_long_queue():
    from nodegraph.executor import ItemPlan
    from nodegraph.node import StreamItem
    from nodegraph.ray.schedule import Scheduler

    def items(models: list[frozenset]) -> list[ItemPlan]:
        return [ItemPlan("images", i, StreamItem(f"key{i}", f"image{i}", lambda: None), m)
                for i, m in enumerate(models)]

    first, second = frozenset({b"first"}), frozenset({b"second"})
    scheduler = Scheduler(items([first, first, second, second]))
    assert [scheduler.next_for(w).index for w in (0, 1)] == [0, 2]  # not 0 and 1: each worker its own model
    scheduler.finished(0, seconds=2.0)
    assert scheduler.next_for(0).index == 1
    scheduler.finished(0, seconds=1.0)
    assert scheduler.next_for(0) is None  # worker 1 holds the other model, and one item of it is left
    assert scheduler.next_for(0, may_wait=False).index == 3  # ... unless nothing else would run
    many = Scheduler(items([first] * 12))
    assert [many.next_for(w).index for w in (0, 1)] == [0, 1]  # a long queue is worth a second load


def test_published_files_get_the_names_a_local_run_gives_them(tmp_path):
    from nodegraph.ray.publish import publish
    from nodes.save import write_new_file

    for folder in (tmp_path / "local", tmp_path / "published"):
        folder.mkdir()
        (folder / "cat.png").write_bytes(b"from before")
    for data in (b"first", b"second"):  # one item's two Saves that ask for the same name
        write_new_file(tmp_path / "local", "cat", ".png", data)
    published = publish({"cat.png": b"first", "cat-1.png": b"second"}, tmp_path / "published")
    assert [Path(p).name for p in published.values()] == ["cat-1.png", "cat-2.png"]
    assert saved(tmp_path / "published") == saved(tmp_path / "local")


def two_model_batch(checkpoints: list[str], folder: Path, seed: int) -> Graph:
    g = Graph()
    images = g.add("LoadImages", id="images", folder=str(folder))
    name = g.add("ItemName", id="name", image=images.image)
    chosen = g.add("PickString", id="pick", options="\n".join(checkpoints), mode="random", seed=seed,
                   vary_with=name.name)
    load = g.add("LoadModel", id="load", model=chosen.value)
    latent = g.add("Img2Img", id="i2i", model=load.model, image=images.image, prompt="a red barn", strength=0.5,
                   num_inference_steps=2, seed=0).latent
    g.add("Save", id="save", image=g.add("Decode", id="dec", latent=latent, vae=load.vae).image, prefix="b")
    return g


def test_each_model_loads_on_one_worker_only(cluster, tmp_path):
    checkpoints = [str(fine_tune(tmp_path / name, seed=n)) for n, name in enumerate(("comic", "pixel"))]
    folder = pictures(tmp_path / "in", 4)
    # A seed that picks the first model for the first two images and the second for the others: handed
    # out in stream order, one model's images would go to both workers.
    names = [f"image{i}" for i in range(4)]
    seed = next(s for s in range(1000) if [pick("\n".join(checkpoints), "random", 0, s, n) for n in names]
                == [checkpoints[0]] * 2 + [checkpoints[1]] * 2)
    graph = two_model_batch(checkpoints, folder, seed)
    groups = [item.models for item in Executor().survey(graph, options=RunOptions(device="cpu"))]
    assert groups[0] == groups[1] != groups[2] == groups[3]

    def count_loads(worker):  # in each worker: its component cache, counting what it reads from disk
        from nodes import weights

        class Counting(weights.ComponentCache):
            def get_or_load(self, key, load):
                return super().get_or_load(key, lambda: worker.loaded.append(key[0]) or load())

        worker.loaded = []
        weights.COMPONENTS = Counting()

    ray.get([w.__ray_call__.remote(count_loads) for w in cluster.workers])
    result = cluster.run(graph, options=RunOptions(device="cpu", output_dir=tmp_path / "out"))
    assert result.failures == [] and len(saved(tmp_path / "out")) == 4
    loaded = ray.get([w.__ray_call__.remote(lambda worker: worker.loaded) for w in cluster.workers])
    unets = [{identity for identity in each if identity.startswith("UNet")} for each in loaded]
    assert len(unets[0] | unets[1]) == 2  # both models were used ...
    assert unets[0].isdisjoint(unets[1])  # ... each loaded on one worker
    assert all(len(each) == len(set(each)) for each in loaded)  # and once there


def test_a_worker_killed_mid_batch_loses_no_item_and_saves_none_twice(cluster, tmp_path):
    folder = pictures(tmp_path / "in", 8)
    pids = ray.get([w.pid.remote() for w in cluster.workers])
    first_done, killed = threading.Event(), []

    def kill_a_busy_worker():
        # From a thread of its own: the driver goes on handing out items meanwhile, so a worker
        # is soon in the middle of one (both may be between items just when one finishes).
        first_done.wait(300)
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            busy = [pid for worker, pid in zip(cluster.workers, pids) if not _answers(worker)]
            if busy:
                killed.append(busy[0])
                os.kill(busy[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    graph = batch(folder)
    graph.set_input("img2img", "num_inference_steps", 40)  # items long enough to be killed in the middle of
    result = cluster.run(graph, options=RunOptions(device="cpu", output_dir=tmp_path / "out"),
                         on_event=lambda event: first_done.set() if event.kind == "node_done" else None)
    killer.join()
    assert killed and result.retried >= 1  # the item it was running went again
    assert result.failures == []
    assert labels_of(tmp_path / "out") == {f"image{i}": 1 for i in range(8)}  # every item, once
    assert all("-1." not in name for name in saved(tmp_path / "out"))
    assert set(ray.get([w.pid.remote() for w in cluster.workers])) - set(pids)  # Ray restarted it


def _answers(worker) -> bool:
    """Whether the worker answers at once: it is not running an item (it runs one call at a time)."""
    try:
        ray.get(worker.pid.remote(), timeout=0.2)
        return True
    except ray.exceptions.GetTimeoutError:
        return False


class Stop(Exception):
    pass


def test_resume_after_an_interrupted_run_saves_only_the_missing_items(cluster, tmp_path):
    graph = batch(pictures(tmp_path / "in", 6))
    out = tmp_path / "out"
    done = []

    def interrupt_after_two(event):
        if event.kind == "node_done":
            done.append(event.label)
            if len(done) == 2:
                raise Stop

    with pytest.raises(Stop):
        cluster.run(graph, options=RunOptions(device="cpu", output_dir=out), on_event=interrupt_after_two)
    first = saved(out)
    assert len(first) == 2 and (out / JOURNAL_NAME).is_file()
    resumed = cluster.run(graph, options=RunOptions(device="cpu", output_dir=out), resume=True)
    assert resumed.resumed == 2 and resumed.failures == []
    assert labels_of(out) == {f"image{i}": 1 for i in range(6)}  # the missing four, and nothing twice
    assert {n: b for n, b in saved(out).items() if n in first} == first  # the first files are untouched
    seeds = {fileformat.load(out / name).inputs_of("pick_model")["seed"] for name in saved(out)}
    assert len(seeds) == 1  # every image made with the seeds the first run drew
    again = cluster.run(graph, options=RunOptions(device="cpu", output_dir=out), resume=True)
    assert again.resumed == 6 and again.executed == [] and len(saved(out)) == 6  # nothing left to do


def test_a_corrupt_image_fails_alone_and_the_command_line_says_so(cluster, tmp_path, capsys):
    folder = tmp_path / "in"
    shutil.copytree(REPO / "graphs" / "inputs" / "batch", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    result = cluster.run(batch(folder), options=RunOptions(device="cpu", output_dir=tmp_path / "out"))
    [failure] = result.failures
    assert failure.label == "broken" and "broken.png is not a readable image" in str(failure.error)
    assert sorted(labels_of(tmp_path / "out")) == ["cat", "house", "tree"]
    fileformat.save(batch(folder), tmp_path / "batch.json")
    code = main(["run", str(tmp_path / "batch.json"), "--ray", "--workers", "1", "--out", str(tmp_path / "cli"),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 3  # as a local run with a failed item
    assert "[broken] error:" in captured.err and "broken.png is not a readable image" in captured.err
    assert sorted(Path(line).name.split("_")[0] for line in captured.out.split()) == ["cat", "house", "tree"]
