"""A real nodegraph server for tests: the aiohttp application on a free port of 127.0.0.1, run by
an event loop on a thread of its own, and plain HTTP and websocket clients to talk to it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import websocket  # websocket-client, as ComfyUI's API examples use
from aiohttp import web

from nodegraph.server import ServerConfig, make_app


class Server:
    def __init__(self, folder: Path, **settings):
        self.folder = folder
        settings = {"input_dir": folder / "input", "output_dir": folder / "output", "user_dir": folder / "user",
                    **settings}
        self.config = ServerConfig(port=0, **settings)
        self.app = make_app(self.config)
        self.loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the server did not start")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(90)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    @property
    def jobs(self):
        from nodegraph.server.state import STATE

        return self.app[STATE].jobs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: bytes | str | dict | list | None = None,
             headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request; a dict or list body is sent as JSON, with no
        Content-Type (as the editor and ComfyUI's examples send it)."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body=None, headers: dict | None = None, status: int = 200):
        code, _, data = self.call(method, path, body, headers)
        assert code == status, (code, data[:2000])
        return json.loads(data) if data else None

    def socket(self, client_id: str | None = None) -> "Socket":
        return Socket(self, client_id or uuid.uuid4().hex)

    def wait_idle(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.jobs.queue_remaining():
            assert time.monotonic() < deadline, "runs did not finish"
            time.sleep(0.02)


class Socket:
    """A websocket client of the server's /ws, as ComfyUI's websockets_api_example connects."""

    def __init__(self, server: Server, client_id: str):
        self.client_id = client_id
        self.ws = websocket.WebSocket()
        self.ws.connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=120)
        self.binary: list[bytes] = []

    def next(self) -> dict:
        while True:
            message = self.ws.recv()
            if isinstance(message, str):
                return json.loads(message)
            self.binary.append(message)

    def until_done(self, prompt_id: str) -> list[dict]:
        """Messages up to the run's `executing` with no node (the run is over)."""
        seen = []
        while True:
            message = self.next()
            seen.append(message)
            data = message.get("data", {})
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return seen

    def close(self) -> None:
        self.ws.close()


def tiny_prompt(seed: int = 0, steps: int = 2, prefix: str = "t", prompt: str = "a red circle") -> dict:
    """An API-format prompt: text to image on the tiny SD, decoded and saved."""
    return {
        "load": {"class_type": "LoadModel", "inputs": {"model": "builtin:tiny-sd"}},
        "t2i": {"class_type": "Text2Img", "inputs": {"model": ["load", 0], "prompt": prompt, "seed": seed,
                                                     "num_inference_steps": steps, "height": 64, "width": 64}},
        "decode": {"class_type": "Decode", "inputs": {"latent": ["t2i", 0], "vae": ["load", 1]}},
        "save": {"class_type": "Save", "inputs": {"image": ["decode", 0], "prefix": prefix}},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_process(folder: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`nodegraph serve` as a user starts it, with its folders under `folder`; once it answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "nodegraph", "serve", "--port", str(port), *options,
                                "--input-dir", str(folder / "in"), "--output-dir", str(folder / "out"),
                                "--user-dir", str(folder / "user")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # it imports torch and diffusers before it listens
    while True:
        try:
            urllib.request.urlopen(url + "/api/users", timeout=5).read()
            return process, url
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"nodegraph serve did not start: {process.stdout.read()}") from None
            time.sleep(0.2)
