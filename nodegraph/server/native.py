"""nodegraph's own API, under /nodegraph: our graph format in, our typed errors and events out.

    GET  /nodegraph/nodes              the node catalogue (as `nodegraph nodes --json`)
    POST /nodegraph/validate           {"graph", "set", "rewrites", "outputs"} -> {"valid", "problems"}
    POST /nodegraph/runs               the same -> {"id", "number"}; 400 with "problems"
    GET  /nodegraph/runs               every run: status and results
    GET  /nodegraph/runs/{id}          one run
    POST /nodegraph/runs/{id}/cancel   cancel a queued run, or interrupt the running one
    POST /nodegraph/types              an API-format prompt -> its sockets' types (the editor extension)
    GET  /nodegraph/editor/default     the graph the editor opens first, as an API-format prompt
    GET  /nodegraph/events             websocket: every run's events, as nodegraph.events JSON

Uploads and outputs go through /upload/image and /view, as in ComfyUI's API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from .. import fileformat
from ..assignments import prepare
from ..errors import GraphFileError, Problem, UsageError
from ..graph import Graph
from . import comfy
from .intake import check_graph, read_json, run_id, targets_of
from .jobs import Job
from .replies import refusal
from .editor import template_prompt
from .runs import enqueue
from .state import Routes, State, reply, state_of

DEFAULT_TEMPLATE = "quickstart"


def add_routes(app: web.Application) -> None:
    Routes(app).add_all([
        ("GET", "/nodegraph/nodes", nodes), ("POST", "/nodegraph/validate", validate_graph),
        ("POST", "/nodegraph/runs", submit), ("GET", "/nodegraph/runs", runs), ("GET", "/nodegraph/runs/{id}", run),
        ("POST", "/nodegraph/runs/{id}/cancel", cancel), ("POST", "/nodegraph/types", socket_types),
        ("GET", "/nodegraph/editor/default", default_graph), ("GET", "/nodegraph/events", events),
    ])


async def nodes(request: web.Request) -> web.Response:
    return reply([definition.to_json() for definition in state_of(request).registry])


async def _graph_request(request: web.Request) -> tuple[State, Graph | None, list[Problem], dict]:
    """The graph of a native request, prepared (--set, rewrites) and checked: (state, graph, problems, body)."""
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes)
    if not isinstance(body, dict) or not isinstance(body.get("graph"), dict):
        raise refusal(400, "no_graph", "the body is {\"graph\": {...}} (a graph file's JSON, or a ComfyUI API prompt)",
                      'optionally with "set": ["node.input=value"], "rewrites": ["tiny"], "outputs": ["save"]')
    targets = targets_of(body.get("outputs"))

    def checked():
        try:
            graph, _ = prepare(fileformat.loads(json.dumps(body["graph"])), _strings(body, "set"),
                               _strings(body, "rewrites"), state.registry)
        except GraphFileError as error:
            return None, error.problems
        except UsageError as error:
            return None, [Problem(None, None, "request.invalid", str(error))]
        return graph, check_graph(graph, state.registry, state.config, targets)

    graph, problems = await asyncio.to_thread(checked)
    return state, graph, problems, body


def _strings(body: dict, name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise refusal(400, "invalid_request", f"{name} is a list of strings", "")
    return value


async def validate_graph(request: web.Request) -> web.Response:
    _, _, problems, _ = await _graph_request(request)
    return reply({"valid": not problems, "problems": [p.to_json() for p in problems]})


async def submit(request: web.Request) -> web.Response:
    state, graph, problems, body = await _graph_request(request)
    if problems:
        return reply({"problems": [p.to_json() for p in problems]}, 400)
    client_id = body.get("client_id") if isinstance(body.get("client_id"), str) else None
    job = enqueue(state, Job(run_id(body.get("id")), 0, graph, targets_of(body.get("outputs")), client_id))
    return reply({"id": job.id, "number": job.number})


def run_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "number": job.number, "status": job.status,
        "created": job.create_time, "started": job.start_time, "ended": job.end_time,
        "outputs": job.outputs,
        "error": job.error,
        "failures": job.failures,
        "seeds": job.seeds,
    }


async def runs(request: web.Request) -> web.Response:
    return reply([run_json(job) for job in state_of(request).jobs.every()])


async def run(request: web.Request) -> web.Response:
    job = state_of(request).jobs.get(request.match_info["id"])
    if job is None:
        raise refusal(404, "not_found", f"no run {request.match_info['id']!r}", "list the runs: GET /nodegraph/runs")
    return reply(run_json(job))


async def cancel(request: web.Request) -> web.Response:
    cancelled = state_of(request).jobs.cancel(request.match_info["id"])
    return reply({"cancelled": cancelled}, 200 if cancelled else 404)


async def socket_types(request: web.Request) -> web.Response:
    state = state_of(request)
    prompt = await read_json(request, state.config.max_body_bytes)
    if not isinstance(prompt, dict):
        raise refusal(400, "no_prompt", "send the graph as an API-format prompt", "")

    def typed() -> dict:
        try:
            graph = comfy.graph_of(prompt, state.registry)
        except GraphFileError:
            return {}  # a graph too broken to type: the sockets keep their declared types
        return comfy.typed_sockets(graph, state.registry)

    return reply(await asyncio.to_thread(typed))


async def default_graph(request: web.Request) -> web.Response:
    return reply(await template_prompt(state_of(request), DEFAULT_TEMPLATE))


async def events(request: web.Request) -> web.WebSocketResponse:
    socket = web.WebSocketResponse(heartbeat=30)
    await socket.prepare(request)
    await state_of(request).hub.serve_events(socket)
    return socket
