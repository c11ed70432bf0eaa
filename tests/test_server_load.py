"""Load: 20 clients submit 5 runs each on the tiny models, as ComfyUI's websocket example does, all
at once, and every run finishes with its own, correct image. That the event loop is never held up
by a run is shown by the server answering in the middle of one; how fast it answers under load is
a figure of `benchmarks/server_load.py`, not a bound of a test (the machines are shared)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

import nodegraph
from server_harness import Server, tiny_prompt

CLIENTS, RUNS_EACH = 20, 5


def test_twenty_clients_five_runs_each(tmp_path):
    server = Server(tmp_path)

    def client(number: int) -> list[tuple[int, bytes]]:
        ws = server.socket()
        ws.next()
        results = []
        for run in range(RUNS_EACH):
            seed = number * RUNS_EACH + run
            prompt_id = server.json("POST", "/prompt", {"prompt": tiny_prompt(seed=seed, prefix=f"load{seed}"),
                                                        "client_id": ws.client_id})["prompt_id"]
            ws.until_done(prompt_id)
            image = server.json("GET", f"/history/{prompt_id}")[prompt_id]["outputs"]["save"]["images"][0]
            results.append((seed, server.call("GET", f"/view?filename={image['filename']}&type=output")[2]))
        ws.close()
        return results

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for batch in pool.map(client, range(CLIENTS)) for r in batch]
    finally:
        server.stop()

    assert len(results) == CLIENTS * RUNS_EACH and len({seed for seed, _ in results}) == CLIENTS * RUNS_EACH
    pictures = {seed: np.asarray(Image.open(io.BytesIO(data))) for seed, data in results}
    assert all(picture.shape == (64, 64, 3) for picture in pictures.values())
    for seed in (0, 57, 99):  # the server's image is the one the library makes for that seed
        graph = nodegraph.fileformat.from_comfy(tiny_prompt(seed=seed, prefix="direct"))
        direct = nodegraph.Executor().run(graph, options=nodegraph.RunOptions(output_dir=tmp_path / "direct"))
        expected = np.asarray(Image.open(direct.outputs["save"]["files"][0]))
        assert np.abs(pictures[seed].astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(pictures[0], pictures[1])


def test_the_server_answers_in_the_middle_of_a_run(tmp_path):
    """/system_stats and /queue answer after the run's first step and while it still runs: the
    runs sample on a thread of their own, never on the event loop."""
    server = Server(tmp_path)
    try:
        ws = server.socket()
        ws.next()
        steps = 200  # seconds of sampling after the first step: the run is still going when /queue answers
        prompt_id = server.json("POST", "/prompt", {"prompt": tiny_prompt(steps=steps), "client_id": ws.client_id})[
            "prompt_id"]
        while (message := ws.next())["type"] != "progress":
            pass
        assert message["data"]["value"] < steps
        assert server.json("GET", "/system_stats")["system"]["python_version"]
        running = server.json("GET", "/queue")["queue_running"]
        assert [entry[1] for entry in running] == [prompt_id]  # the answer was made while the run ran
        later = ws.until_done(prompt_id)
        assert any(m["type"] == "progress" and m["data"]["value"] == steps for m in later)
        ws.close()
    finally:
        server.stop()
