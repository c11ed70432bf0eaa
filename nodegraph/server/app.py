"""The aiohttp application: guards in front of every route, the editor's files, and a clean
start and stop (Ctrl-C or SIGTERM interrupt the running job; Save leaves no partial file).

Guards: a server on localhost answers only requests whose Host is a local name, so a web page
cannot reach it by rebinding its own domain to 127.0.0.1; a request that changes something (or
opens a websocket) from a page of another origin is refused; with a token, every request must
carry it (`Authorization: Bearer`, or `?token=` once, which leaves a cookie for the editor).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from ..registry import Registry
from ..registry import registry as default_registry
from .config import LOCAL_NAMES, ServerConfig
from .files import UserFiles
from .hub import Hub
from .jobs import Jobs
from . import editor, native, runs, transfer
from .replies import refusal
from .state import STATE, State

log = logging.getLogger("nodegraph.server")
TOKEN_COOKIE = "nodegraph_token"
TEMPLATES = Path(__file__).resolve().parents[2] / "graphs"  # the graphs of a source checkout
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def make_app(config: ServerConfig, registry: Registry | None = None) -> web.Application:
    registry = registry or default_registry
    app = web.Application(middlewares=[_guard, _errors],
                          client_max_size=max(config.max_upload_bytes, config.max_body_bytes) + (1 << 20))
    hub = Hub()
    state = State(config=config, registry=registry, hub=hub, user=UserFiles(config.user_dir, editor.SEEDED_SETTINGS),
                  jobs=Jobs(config, hub, registry, on_event=_event_sender(hub)),
                  templates=TEMPLATES if TEMPLATES.is_dir() else None)
    app[STATE] = state
    native.add_routes(app)
    runs.add_routes(app)
    transfer.add_routes(app)
    editor.add_routes(app, config)  # last: the editor's files are served at /, under every other route
    app.on_startup.append(_start)
    app.on_shutdown.append(_stop)
    return app


def _event_sender(hub: Hub):
    from ..events import to_json

    return lambda event: hub.send_event(to_json(event))


async def _start(app: web.Application) -> None:
    state = app[STATE]
    for folder in (state.config.input_dir, state.config.output_dir, state.config.user_dir, state.config.temp_dir):
        folder.mkdir(parents=True, exist_ok=True)
    state.hub.bind(asyncio.get_running_loop())
    await asyncio.to_thread(state.registry.warm_up)  # before listening: no request waits on a first import
    state.jobs.start()


async def _stop(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.to_thread(state.jobs.stop)
    await state.hub.close_all()


# ---- guards ------------------------------------------------------------------------------------------


@web.middleware
async def _guard(request: web.Request, handler):
    config = request.app[STATE].config
    host = _hostname(request.host)
    if (config.local_only or config.allowed_hosts) and host not in {*LOCAL_NAMES, config.host, *config.allowed_hosts}:
        raise refusal(403, "host_refused", f"this server does not answer to the host name {host[:100]!r}",
                      "open it as http://127.0.0.1:PORT, or start it with --allow-host NAME")
    origin = request.headers.get("Origin")
    if origin is not None and (request.method not in _SAFE_METHODS or _is_websocket(request)):
        if origin == "null" or urlsplit(origin).netloc.lower() != request.host.lower():
            raise refusal(403, "origin_refused", f"a page of {origin[:100]!r} may not use this server",
                          "use the editor this server serves, or a client that sends no Origin")
    response_cookie = None
    if config.token is not None:
        given = _bearer(request) or request.cookies.get(TOKEN_COOKIE) or request.query.get("token") or ""
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            raise refusal(401, "unauthorized", "this server needs its token",
                          "send 'Authorization: Bearer TOKEN', or open the editor at /?token=TOKEN")
        response_cookie = config.token if request.query.get("token") else None
    response = await handler(request)
    if response_cookie is not None and not response.prepared:
        response.set_cookie(TOKEN_COOKIE, response_cookie, httponly=True, samesite="Strict")
    return response


def _hostname(host: str) -> str:
    """The Host header's name, without its port (and brackets, for IPv6)."""
    host = host.lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else None


@web.middleware
async def _errors(request: web.Request, handler):
    """Whatever goes wrong in a handler is a JSON error for that request; the server stays up."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status >= 400 and error.content_type != "application/json":  # aiohttp's own 404s and 405s
            raise refusal(error.status if error.status in (400, 401, 403, 404, 409, 429) else 400,
                          "http_error", error.reason or "request refused", "") from None
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as error:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": {"type": "server_error", "message": f"{type(error).__name__}: {error}",
                                            "details": "this is a bug in nodegraph's server; please report it",
                                            "extra_info": {}}}, status=500)


# ---- running -----------------------------------------------------------------------------------------


async def _freeze_imported_objects(_: web.Application) -> None:
    """Once the libraries are imported, their millions of objects leave the cyclic collector's
    sweeps: a full sweep over them holds the interpreter, and every request with it, for a fifth of
    a second. Only `serve` does it: it owns its process, an app embedded elsewhere does not."""
    gc.collect()
    gc.freeze()


def serve(config: ServerConfig, registry: Registry | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM; then interrupt the running job and stop cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not config.local_only:
        print(f"warning: listening on {config.host}: anyone who can reach this machine can run graphs"
              + ("" if config.token else " (start with --token to require a token)"), file=sys.stderr)
    app = make_app(config, registry)
    app.on_startup.append(_freeze_imported_objects)
    where = f"http://{'127.0.0.1' if config.host in ('0.0.0.0', '::') else config.host}:{config.port}"
    web.run_app(app, host=config.host, port=config.port, access_log=None, shutdown_timeout=10,
                print=lambda _: print(f"nodegraph serving on {where}" + (" (the editor is at /)" if config.editor else ""),
                                      file=sys.stderr, flush=True))
