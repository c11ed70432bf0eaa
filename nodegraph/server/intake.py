"""What every submitted graph goes through, whichever API it came by: the size cap, path
confinement, validation. Request bodies are read here too, with their caps."""

from __future__ import annotations

import dataclasses
import re
import uuid
from typing import Any

import msgspec
from aiohttp import web

from ..errors import Problem
from ..graph import Graph
from ..validation import validate
from .catalog import confine
from .config import ServerConfig
from .replies import json_body_error, refusal

_RUN_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused (413) past `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise _too_large(len(data), limit)
    return data


async def read_json(request: web.Request, limit: int, empty: Any = None) -> Any:
    """The body as JSON, whatever its Content-Type (the editor and ComfyUI's examples send none,
    or a wrong one); `empty` for an empty body."""
    data = await read_body(request, limit)
    if not data.strip():
        return empty
    try:  # msgspec: strict JSON (no lone surrogates), and no stack overflow on deep nesting
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:
        raise json_body_error(error) from None


def _too_large(size: int, limit: int) -> web.HTTPException:
    return refusal(413, "body_too_large", f"the request body is {size} bytes, more than the {limit} this server takes",
                   "send a smaller graph or file, or start the server with higher limits")


def run_id(given: Any) -> str:
    """The run id a client chose (ComfyUI's prompt_id), or a new one."""
    if given is None:
        return str(uuid.uuid4())
    if not isinstance(given, str) or not _RUN_ID.fullmatch(given):
        raise refusal(400, "invalid_prompt_id", f"{str(given)[:100]!r} is not a run id",
                      "use up to 100 letters, digits, '-', '_' or '.', e.g. a UUID")
    return given


def check_graph(graph: Graph, registry, config: ServerConfig, targets: list[str] | None) -> list[Problem]:
    """Everything wrong with running `graph` here; its path inputs are pointed inside the server's
    folders on the way (see catalog.confine). Runs in a thread: validation reads files."""
    if len(graph) > config.max_graph_nodes:
        raise refusal(413, "graph_too_large", f"the graph has {len(graph)} nodes, more than the "
                      f"{config.max_graph_nodes} this server runs", "split the graph, or raise --max-graph-nodes")
    problems = confine(graph, registry, config)
    checked = validate(graph, registry, outputs=targets)
    return problems + [_with_server_hint(problem, config) for problem in checked.problems]


def _with_server_hint(problem: Problem, config: ServerConfig) -> Problem:
    """A missing file or folder is looked for in the input folder here, not the current directory."""
    if problem.code not in ("file.not_found", "folder.not_found"):
        return problem
    return dataclasses.replace(problem, hint=f"this server reads files from its input folder ({config.input_dir}): "
                                             "upload the image (POST /upload/image, or the editor's image picker), "
                                             "or put it there")


def targets_of(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise refusal(400, "invalid_targets", "the outputs to run are a list of node ids", 'e.g. ["save"]')
    return value
