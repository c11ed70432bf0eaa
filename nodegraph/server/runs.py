"""ComfyUI's run routes: submit a prompt, the queue, the history and the jobs (in the editor's jobs
schema), interrupt, free, and the websocket that reports runs."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from aiohttp import web

from .. import fileformat
from ..errors import GraphFileError
from . import comfy
from .intake import check_graph, read_json, run_id, targets_of
from .jobs import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, Job, QueueFull
from .editor import feature_flags
from .replies import refusal
from .state import Routes, State, reply, state_of

_CLIENT_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")


def add_routes(app: web.Application) -> None:
    Routes(app).add_all([
        ("GET", "/prompt", queue_status), ("POST", "/prompt", post_prompt),
        ("GET", "/queue", get_queue), ("POST", "/queue", post_queue),
        ("GET", "/history", get_history), ("GET", "/history/{id}", get_history_item), ("POST", "/history", post_history),
        ("GET", "/jobs", jobs_list), ("GET", "/jobs/{id}", job_detail),
        ("POST", "/jobs/{id}/cancel", job_cancel), ("POST", "/jobs/cancel", jobs_cancel),
        ("POST", "/interrupt", interrupt), ("POST", "/free", free), ("GET", "/ws", websocket),
    ])


async def queue_status(request: web.Request) -> web.Response:
    return reply({"exec_info": {"queue_remaining": state_of(request).jobs.queue_remaining()}})


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes)
    prompt = body.get("prompt") if isinstance(body, dict) else None
    if not isinstance(prompt, dict) or not prompt:
        return reply({"error": {"type": "no_prompt", "message": "no prompt given", "extra_info": {},
                                "details": 'post {"prompt": {node id: {"class_type": ..., "inputs": {...}}}}'},
                      "node_errors": {}}, 400)
    job_id = run_id(body.get("prompt_id"))
    client_id = body.get("client_id") if isinstance(body.get("client_id"), str) and body.get("client_id") else None
    extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
    targets = targets_of(body.get("partial_execution_targets"))
    workflow = (extra.get("extra_pnginfo") or {}).get("workflow") if isinstance(extra.get("extra_pnginfo"), dict) else None
    graph, problems = await asyncio.to_thread(_comfy_graph, state, prompt, workflow, targets)
    if problems:
        return reply(comfy.validation_reply(problems, graph, state.registry), 400)
    job = enqueue(state, Job(job_id, 0, graph, targets, client_id, prompt, extra))
    return reply({"prompt_id": job.id, "number": job.number, "node_errors": {}})


def _comfy_graph(state: State, prompt: dict, workflow: Any, targets: list[str] | None):
    try:
        graph = comfy.graph_of(prompt, state.registry)
    except GraphFileError as error:
        return None, error.problems
    if isinstance(workflow, dict):
        graph.ui = {fileformat.WORKFLOW_KEY: workflow}  # Save embeds it, for the editor to reload
    return graph, check_graph(graph, state.registry, state.config, targets)


def enqueue(state: State, job: Job) -> Job:
    try:
        return state.jobs.submit(job)
    except QueueFull as full:
        raise refusal(429, "queue_full", str(full), "wait for runs to finish, then submit again") from None
    except ValueError as duplicate:
        raise refusal(400, "invalid_prompt_id", str(duplicate), "give each run an id of its own") from None


def _queue_entry(job: Job) -> list:
    return [job.number, job.id, job.prompt or fileformat.to_comfy(job.graph), job.extra_data, job.targets or []]


async def get_queue(request: web.Request) -> web.Response:
    jobs = state_of(request).jobs
    running = jobs.running
    return reply({"queue_running": [_queue_entry(running)] if running else [],
                  "queue_pending": [_queue_entry(job) for job in jobs.pending()]})


async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes, {})
    if isinstance(body, dict) and body.get("clear"):
        state.jobs.clear_pending()
    for job_id in (body.get("delete") or []) if isinstance(body, dict) else []:
        if isinstance(job_id, str) and any(job.id == job_id for job in state.jobs.pending()):
            state.jobs.cancel(job_id)
    return web.Response()


def history_entry(job: Job) -> dict:
    status = {COMPLETED: "success", FAILED: "error", CANCELLED: "error"}.get(job.status, job.status)
    return {"prompt": _queue_entry(job), "outputs": job.outputs,
            "status": {"status_str": status, "completed": job.status == COMPLETED,
                       "messages": [[kind, data] for kind, data in job.messages]},
            "meta": {node: {"node_id": node, "display_node": node} for node in job.outputs}}


async def get_history(request: web.Request) -> web.Response:
    jobs = list(reversed(state_of(request).jobs.history()))
    limit = _int(request.query.get("max_items"), len(jobs))
    return reply({job.id: history_entry(job) for job in jobs[:limit]})


async def get_history_item(request: web.Request) -> web.Response:
    job = state_of(request).jobs.get(request.match_info["id"])
    return reply({job.id: history_entry(job)} if job is not None and job.finished else {})


async def post_history(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes, {})
    if isinstance(body, dict) and body.get("clear"):
        state.jobs.forget()
    if isinstance(body, dict) and isinstance(body.get("delete"), list):
        state.jobs.forget([i for i in body["delete"] if isinstance(i, str)])
    return web.Response()


def _int(text: str | None, default: int) -> int:
    try:
        return max(0, int(text)) if text is not None else default
    except ValueError:
        return default


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


def job_item(job: Job) -> dict:
    """A job in the editor's jobs schema (its queue and history panels)."""
    images = [(node, image) for node, output in job.outputs.items() for image in output.get("images", [])]
    workflow = (job.extra_data.get("extra_pnginfo") or {}).get("workflow") \
        if isinstance(job.extra_data.get("extra_pnginfo"), dict) else None
    error = None
    if job.error is not None:
        error = {**job.error, "node_id": job.error.get("node_id") or "", "node_type": job.error.get("node_type") or ""}
    return {
        "id": job.id, "status": job.status, "priority": job.number, "create_time": _ms(job.create_time),
        "execution_start_time": _ms(job.start_time), "execution_end_time": _ms(job.end_time),
        "outputs_count": len(images), "previewable_outputs_count": len(images),
        "preview_output": {**images[-1][1], "nodeId": images[-1][0], "mediaType": "images"} if images else None,
        "execution_error": error,
        "workflow_id": workflow.get("id") if isinstance(workflow, dict) and isinstance(workflow.get("id"), str) else None,
    }


async def jobs_list(request: web.Request) -> web.Response:
    jobs = state_of(request).jobs
    wanted = set(request.query.get("status", "").split(",")) - {""} or {PENDING, RUNNING, COMPLETED, FAILED, CANCELLED}
    chosen = [job for job in jobs.every() if job.status in wanted]
    offset, limit = _int(request.query.get("offset"), 0), _int(request.query.get("limit"), 200)
    page = chosen[offset: offset + limit]
    return reply({"jobs": [job_item(job) for job in page],
                  "pagination": {"offset": offset, "limit": limit, "total": len(chosen),
                                 "has_more": offset + len(page) < len(chosen)}})


async def job_detail(request: web.Request) -> web.Response:
    job = state_of(request).jobs.get(request.match_info["id"])
    if job is None:
        raise refusal(404, "not_found", f"no job {request.match_info['id']!r}", "")
    return reply({**job_item(job), "outputs": job.outputs, "update_time": _ms(job.end_time or job.start_time),
                  "workflow": {"prompt": job.prompt, "extra_data": job.extra_data},
                  "execution_status": history_entry(job)["status"]})


async def job_cancel(request: web.Request) -> web.Response:
    return reply({"cancelled": state_of(request).jobs.cancel(request.match_info["id"])})


async def jobs_cancel(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes, {})
    ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list):
        raise refusal(400, "invalid_request", 'give the jobs to cancel: {"job_ids": [...]}', "")
    return reply({"cancelled": any([state.jobs.cancel(i) for i in ids if isinstance(i, str)])})


async def interrupt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes, {})
    prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
    state.jobs.interrupt(prompt_id if isinstance(prompt_id, str) else None)
    return web.Response()


async def free(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_json(request, state.config.max_body_bytes, {})
    if isinstance(body, dict) and (body.get("unload_models") or body.get("free_memory")):
        state.jobs.free_models()
    if isinstance(body, dict) and body.get("free_memory"):
        state.jobs.executor.cache.clear()
    return web.Response()


# ---- the websocket -----------------------------------------------------------------------------------------


async def websocket(request: web.Request) -> web.WebSocketResponse:
    state = state_of(request)
    given = request.query.get("clientId", "")
    client_id = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex
    socket = web.WebSocketResponse(heartbeat=30, max_msg_size=1 << 20)
    await socket.prepare(request)
    first = {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": state.jobs.queue_remaining()}},
                                         "sid": client_id}}
    state.hub.send({"type": "feature_flags", "data": feature_flags(state.config)}, client_id)
    await state.hub.serve(socket, client_id, first)
    return socket
