"""Websocket clients: who is connected, and what each is sent.

Messages come from the worker thread and go out from the event loop, in order, through one
outbox per socket. Each client's runs are remembered message by message (its last few runs), so
that a client that comes back with the same client id learns how its runs went: every run that
was going on when it left (or had just ended: the last messages may have been lost on the way)
is sent again from its start, then what else came while it was away. An editor that lost its
connection mid-run thus keeps its progress; a repeated message changes nothing in it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import Any

from aiohttp import web

BACKLOG = 2000  # messages kept for a client while it is away, besides its runs
RUNS_KEPT = 8  # runs remembered per client, and at most RUN_MESSAGES messages of each
RUN_MESSAGES = 5000
JUST_ENDED = 5.0  # seconds: a run that ended this shortly before its client left is sent again
FORGET_AFTER = 3600.0  # seconds a client may stay away before what it missed goes
OUTBOX = 10000  # messages waiting on one socket; a client that reads none is dropped beyond it


class _Run:
    def __init__(self):
        self.messages: list[str] = []
        self.ended: float | None = None  # when its last message went out


class _Client:
    def __init__(self):
        self.sockets: dict[web.WebSocketResponse, asyncio.Queue] = {}
        self.runs: collections.OrderedDict[str, _Run] = collections.OrderedDict()
        self.backlog: collections.deque = collections.deque(maxlen=BACKLOG)  # (run id or None, message)
        self.replay: list[str] = []  # the runs to send again when it is back
        self.left = time.monotonic()

    def record(self, run_id: str, message: str, ends: bool) -> None:
        run = self.runs.setdefault(run_id, _Run())
        self.runs.move_to_end(run_id)
        while len(self.runs) > RUNS_KEPT:
            self.runs.popitem(last=False)
        if len(run.messages) < RUN_MESSAGES:
            run.messages.append(message)
        if ends:
            run.ended = time.monotonic()

    def leave(self) -> None:
        self.left = now = time.monotonic()
        self.replay += [run_id for run_id, run in self.runs.items()
                        if run_id not in self.replay and (run.ended is None or now - run.ended < JUST_ENDED)]

    def missed(self) -> list[str]:
        """What a returning client is sent: its runs to replay, whole, then the rest of its backlog."""
        replayed = [message for run_id in self.replay if run_id in self.runs for message in self.runs[run_id].messages]
        rest = [message for run_id, message in self.backlog if run_id not in self.replay]
        self.replay, self.backlog = [], collections.deque(maxlen=BACKLOG)
        return replayed + rest


class Hub:
    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, _Client] = {}
        self._event_sockets: dict[web.WebSocketResponse, asyncio.Queue] = {}  # the native event stream

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    # ---- from any thread -------------------------------------------------------------------------

    def send(self, message: dict, client_id: str | None) -> None:
        """A JSON message to one client (None: to every client connected now). A message about a
        run (ComfyUI's: its data has a prompt_id) is remembered; `executing` no node ends the run."""
        data = message.get("data") or {}
        run_id = data.get("prompt_id") if isinstance(data, dict) else None
        ends = message.get("type") == "executing" and data.get("node") is None
        self._call(self._deliver, json.dumps(message), client_id, run_id, ends)

    def send_binary(self, frame: bytes, client_id: str) -> None:
        """A binary frame (a step preview) to a client, if it is connected now; never kept."""
        self._call(self._deliver_now, frame, client_id)

    def send_event(self, data: bytes) -> None:
        """One of our typed events, as JSON, to the native event sockets."""
        self._call(self._deliver_event, data)

    def _call(self, function, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(function, *args)
            except RuntimeError:  # the loop closed meanwhile: the server is going down
                pass

    # ---- on the event loop -----------------------------------------------------------------------

    def _deliver(self, text: str, client_id: str | None, run_id: str | None, ends: bool) -> None:
        if client_id is None:
            for client in self._clients.values():
                self._put(client, text)
            return
        client = self._clients.setdefault(client_id, _Client())
        if run_id is not None:
            client.record(run_id, text, ends)
        if client.sockets:
            self._put(client, text)
        else:
            client.backlog.append((run_id, text))

    def _deliver_now(self, frame: bytes, client_id: str) -> None:
        client = self._clients.get(client_id)
        if client is not None:
            self._put(client, frame)

    def _deliver_event(self, data: bytes) -> None:
        for socket, outbox in list(self._event_sockets.items()):
            self._enqueue(socket, outbox, data.decode())

    def _put(self, client: _Client, message: str | bytes) -> None:
        for socket, outbox in list(client.sockets.items()):
            self._enqueue(socket, outbox, message)

    @staticmethod
    def _enqueue(socket: web.WebSocketResponse, outbox: asyncio.Queue, message: str | bytes) -> None:
        try:
            outbox.put_nowait(message)
        except asyncio.QueueFull:  # it reads nothing: let it go, a reconnect starts afresh
            asyncio.ensure_future(socket.close())

    async def serve(self, socket: web.WebSocketResponse, client_id: str, first: dict) -> None:
        """Run one connection of `client_id`: send `first`, then what it missed, then what comes."""
        self._forget_absent()
        client = self._clients.setdefault(client_id, _Client())
        missed = client.missed()
        outbox: asyncio.Queue = asyncio.Queue(OUTBOX + len(missed) + 1)
        for message in [json.dumps(first), *missed]:
            outbox.put_nowait(message)
        client.sockets[socket] = outbox
        try:
            await self._pump(socket, outbox)
        finally:
            client.sockets.pop(socket, None)
            if not client.sockets:
                client.leave()

    async def serve_events(self, socket: web.WebSocketResponse) -> None:
        outbox: asyncio.Queue = asyncio.Queue(OUTBOX)
        self._event_sockets[socket] = outbox
        try:
            await self._pump(socket, outbox)
        finally:
            self._event_sockets.pop(socket, None)

    async def close_all(self) -> None:
        sockets = [*self._event_sockets, *(s for c in self._clients.values() for s in c.sockets)]
        for socket in sockets:
            await socket.close(code=1001, message=b"server shutting down")

    @staticmethod
    async def _pump(socket: web.WebSocketResponse, outbox: asyncio.Queue) -> None:
        """Send the outbox in order while reading (and ignoring) what the client sends."""

        async def write() -> None:
            while True:
                message = await outbox.get()
                if isinstance(message, bytes):
                    await socket.send_bytes(message)
                else:
                    await socket.send_str(message)

        writer = asyncio.ensure_future(write())
        try:
            async for _ in socket:  # the editor's feature_flags, pings; nothing to act on
                if writer.done():
                    break
        finally:
            writer.cancel()

    def _forget_absent(self) -> None:
        now = time.monotonic()
        for client_id, client in list(self._clients.items()):
            if not client.sockets and now - client.left > FORGET_AFTER:
                del self._clients[client_id]
