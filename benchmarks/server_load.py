"""How fast `nodegraph serve` answers /system_stats, idle and while 20 clients run 5 graphs each.

    pip install -e '.[test]' && python benchmarks/server_load.py [--rounds 3] [--clients 20] [--runs 5]

The server runs as a user starts it, in a process of its own, on the tiny builtins. Each client
does what ComfyUI's websocket example does: it posts a prompt, waits on /ws for the run's end, then
reads /history and /view. Idle and loaded phases alternate, round after round, each round with new
seeds (so no cache answers); a first round warms the server up and is not counted. One thread asks
for /system_stats every 50 ms throughout and times each answer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the server inherits it: no download, ever
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from server_harness import serve_process, tiny_prompt  # noqa: E402  (the tests' way to start a server)

IDLE_SECONDS = 3.0
STATS_INTERVAL = 0.05


async def client(session: aiohttp.ClientSession, url: str, seeds: range) -> None:
    client_id = uuid.uuid4().hex
    async with session.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
        for seed in seeds:
            async with session.post(f"{url}/prompt", json={"prompt": tiny_prompt(seed=seed, prefix=f"bench{seed}"),
                                                           "client_id": client_id}) as posted:
                prompt_id = (await posted.json())["prompt_id"]
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = message.json()
                data = event.get("data", {})
                if event["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
            async with session.get(f"{url}/history/{prompt_id}") as history:
                image = (await history.json())[prompt_id]["outputs"]["save"]["images"][0]
            async with session.get(f"{url}/view", params={"filename": image["filename"], "type": "output"}) as view:
                assert view.status == 200 and (await view.read())[:4] == b"\x89PNG"


async def load(url: str, clients: int, runs: int, first_seed: int) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session, url, range(first_seed + c * runs, first_seed + (c + 1) * runs))
                               for c in range(clients)))
    return time.perf_counter() - started


class StatsWatcher:
    """Times /system_stats every 50 ms, on a thread of its own; `phase` says where an answer counts."""

    def __init__(self, url: str):
        self.url, self.phase = url, None
        self.latencies: dict[str, list[float]] = {"idle": [], "load": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            phase, started = self.phase, time.perf_counter()
            urllib.request.urlopen(self.url + "/system_stats", timeout=60).read()
            if phase is not None and phase == self.phase:
                self.latencies[phase].append(time.perf_counter() - started)
            time.sleep(STATS_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"{len(ordered):5d} answers  median {statistics.median(ordered) * 1000:6.1f} ms  "
            f"p95 {p95 * 1000:6.1f} ms  max {ordered[-1] * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="runs per client")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, url = serve_process(Path(folder))
        watcher = StatsWatcher(url)
        try:
            per_round = options.clients * options.runs
            asyncio.run(load(url, options.clients, options.runs, first_seed=0))  # warm-up, not counted
            seconds = []
            for number in range(1, options.rounds + 1):
                watcher.phase = "idle"
                time.sleep(IDLE_SECONDS)
                watcher.phase = "load"
                seconds.append(asyncio.run(load(url, options.clients, options.runs, first_seed=number * per_round)))
                watcher.phase = None
                print(f"round {number}: {per_round} runs in {seconds[-1]:.1f} s", flush=True)
        finally:
            watcher.stop()
            process.terminate()
            process.wait(30)
    idle, loaded = watcher.latencies["idle"], watcher.latencies["load"]
    print(f"/system_stats idle:        {summary(idle)}")
    print(f"/system_stats under load:  {summary(loaded)}")
    print(f"median under load / idle:  {statistics.median(loaded) / statistics.median(idle):.2f}x")
    print(f"runs per second under load: {per_round / statistics.median(seconds):.1f} "
          f"({options.clients} clients x {options.runs} runs, median of {options.rounds} rounds)")


if __name__ == "__main__":
    main()
