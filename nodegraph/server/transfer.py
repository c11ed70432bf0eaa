"""Files in and out, as ComfyUI's API moves them: /view serves the input, output and temp folders,
/upload/image and /upload/mask take multipart uploads into them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .files import MIME_TYPES, annotated, check_image, composite_mask, inside, keep, upload_name
from .replies import refusal
from .state import Routes, State, reply, state_of


def add_routes(app: web.Application) -> None:
    Routes(app).add_all([("GET", "/view", view), ("POST", "/upload/image", upload_image),
                         ("POST", "/upload/mask", upload_mask)])


# ---- files ----------------------------------------------------------------------------------------------


def _folder(state: State, kind: str) -> Path:
    folder = state.config.folder(kind)
    if folder is None:
        raise refusal(400, "invalid_type", f"type is input, output or temp, got {kind[:40]!r}", "")
    return folder


async def view(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    name, annotation = annotated(request.query.get("filename", ""))
    folder = _folder(state, annotation or request.query.get("type", "output"))
    subfolder = request.query.get("subfolder", "")
    path = inside(folder, subfolder, name)
    if not name or not path.is_file():
        raise refusal(404, "not_found", f"no file {name[:200]!r}", "")
    return web.FileResponse(path, headers={"Content-Type": MIME_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                                           "Content-Disposition": f'filename="{path.name}"'})


async def _upload_form(request: web.Request) -> dict[str, Any]:
    """The multipart fields of an upload: files as (name, bytes), the rest as text; within the size cap."""
    state = state_of(request)
    if not request.content_type.startswith("multipart/"):
        raise refusal(400, "invalid_upload", "an upload is a multipart/form-data request", "send the file as the 'image' field")
    fields: dict[str, Any] = {}
    limit = state.config.max_upload_bytes
    try:
        async for part in await request.multipart():
            data = bytearray()
            while chunk := await part.read_chunk(1 << 16):
                data += chunk
                if len(data) > limit:
                    raise refusal(413, "upload_too_large", f"the upload is more than {limit} bytes, the most this "
                                  "server takes", "upload a smaller file, or start the server with a higher "
                                  "--max-upload-size")
            fields[part.name or ""] = (part.filename, bytes(data)) if part.filename is not None \
                else data.decode(errors="replace")
    except (HttpProcessingError, ValueError, AssertionError) as error:  # aiohttp's reader asserts on some bodies
        raise refusal(400, "invalid_upload", f"the multipart body is malformed: {str(error).strip()[:200]}",
                      "send a multipart/form-data body with the file in the 'image' field") from None
    return fields


async def upload_image(request: web.Request) -> web.Response:
    state = state_of(request)
    fields = await _upload_form(request)
    if not isinstance(fields.get("image"), tuple):
        raise refusal(400, "invalid_upload", "no file in the 'image' field", "send the file as the 'image' field")
    filename, data = fields["image"]
    await asyncio.to_thread(check_image, data, state.config.max_image_pixels)
    return reply(await asyncio.to_thread(_keep_upload, state, fields, filename, data))


async def upload_mask(request: web.Request) -> web.Response:
    """ComfyUI's mask upload: the original image, its alpha replaced by the mask's."""
    state = state_of(request)
    fields = await _upload_form(request)
    try:
        original = json.loads(fields.get("original_ref") or "null")
        source_folder = _folder(state, original.get("type") or "input")
        source = inside(source_folder, str(original.get("subfolder") or ""), str(original["filename"]))
    except (ValueError, AttributeError, KeyError, TypeError):
        raise refusal(400, "invalid_upload", "original_ref names the image the mask is for",
                      '{"filename": "photo.png", "subfolder": "", "type": "input"}') from None
    if not isinstance(fields.get("image"), tuple) or not source.is_file():
        raise refusal(400, "invalid_upload", "send the mask as the 'image' field, for an image that exists", "")
    filename, mask = fields["image"]
    combined = await asyncio.to_thread(composite_mask, source, mask, state.config.max_image_pixels)
    return reply(await asyncio.to_thread(_keep_upload, state, fields, filename, combined))


def _keep_upload(state: State, fields: dict, filename: str, data: bytes) -> dict:
    kind = fields.get("type") or "input"
    subfolder = (fields.get("subfolder") or "").rstrip("/")
    folder = inside(_folder(state, kind), subfolder)
    path = keep(data, folder, upload_name(filename), overwrite=str(fields.get("overwrite", "")).lower() in ("true", "1"))
    return {"name": path.name, "subfolder": subfolder, "type": kind}
