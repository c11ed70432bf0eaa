"""Error replies: JSON in ComfyUI's shape, `{"error": {"type", "message", "details"}}`, which the
editor shows as they are; `details` holds the hint."""

from __future__ import annotations

import json

from aiohttp import web


def refusal(status: int, kind: str, message: str, hint: str = "") -> web.HTTPException:
    """An HTTP error to raise, with a JSON body saying what was wrong and what to do."""
    body = json.dumps({"error": {"type": kind, "message": message, "details": hint, "extra_info": {}}})
    if status == 413:  # its class wants the sizes, which the message already gives
        return web.HTTPRequestEntityTooLarge(0, 0, text=body, content_type="application/json")
    return _STATUS[status](text=body, content_type="application/json")


def json_body_error(error: Exception) -> web.HTTPException:
    return refusal(400, "invalid_json", f"the request body is not JSON: {error}",
                   "send the JSON text as the body (any Content-Type)")


_STATUS = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
    421: web.HTTPMisdirectedRequest,
    429: web.HTTPTooManyRequests,
    503: web.HTTPServiceUnavailable,
}
