"""What the routes share: the server's state, a registrar for ComfyUI's twin paths, JSON replies."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from ..registry import Registry
from .config import ServerConfig
from .files import UserFiles
from .hub import Hub
from .jobs import Jobs


@dataclass
class State:
    """One per server."""

    config: ServerConfig
    registry: Registry
    jobs: Jobs
    hub: Hub
    user: UserFiles
    templates: Path | None  # graph files the editor offers as templates


STATE = web.AppKey("nodegraph", State)


class Routes:
    """Registers each handler at /PATH and /api/PATH."""

    def __init__(self, app: web.Application):
        self.app = app

    def add(self, method: str, path: str, handler, api: bool = True) -> None:
        self.app.router.add_route(method, path, handler)
        if api:
            self.app.router.add_route(method, "/api" + path, handler)

    def add_all(self, table: list[tuple]) -> None:
        for method, path, handler in table:
            self.add(method, path, handler)


def state_of(request: web.Request) -> State:
    return request.app[STATE]


def reply(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=lambda v: json.dumps(v, default=str))
