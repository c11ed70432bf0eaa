"""`nodegraph serve`: one long-lived engine behind HTTP and a websocket, speaking ComfyUI's API, so
that ComfyUI's web editor and API clients drive it, and a native API of nodegraph's own.

Needs the `server` extra (aiohttp); the `editor` extra adds ComfyUI's editor
(comfyui-frontend-package). The engine itself imports none of this.

    config   the folders, limits and switches of one server
    files    names confined to the server's folders; uploads; user files
    catalog  the models LoadModel's widget offers
    comfy    ComfyUI's shapes: node definitions, socket types, errors, history, jobs
    jobs     the queue, and the one worker thread that owns the Executor
    hub      websocket clients, with replay on reconnect
    routes   the HTTP routes, ComfyUI's and native
    app      the aiohttp application: guards (Host, Origin, token) and startup/shutdown
"""

from .app import make_app, serve  # noqa: F401
from .config import ServerConfig  # noqa: F401
