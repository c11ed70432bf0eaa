"""What ComfyUI's editor needs besides runs: its files, its boot (users, settings, extensions, node
definitions, system stats), the user's saved workflows, the model folders, and the templates."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from aiohttp import web

from .. import fileformat
from ..resources import cuda_memory, host_memory
from . import catalog, comfy
from .config import ServerConfig
from .files import MIME_TYPES, inside
from .intake import read_body, read_json
from .replies import refusal
from .state import Routes, State, reply, state_of

EXTENSION_URL = "/extensions/nodegraph/nodegraph.js"
WEB_FOLDER = Path(__file__).parent / "web"
# What the editor's first open needs: our default graph, not ComfyUI's template browser, and no
# request to comfy.org for release notes.
SEEDED_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Notification.ShowVersionUpdates": False,
                   "Comfy.UseNewMenu": "Top"}


def add_routes(app: web.Application, config: ServerConfig) -> None:
    routes = Routes(app)
    routes.add_all([
        ("GET", "/users", users), ("GET", "/settings", get_settings), ("POST", "/settings", post_settings),
        ("GET", "/settings/{id}", get_setting), ("POST", "/settings/{id}", post_setting),
        ("GET", "/extensions", extensions), ("GET", "/object_info", object_info),
        ("GET", "/object_info/{node}", object_info_node), ("GET", "/system_stats", system_stats),
        ("GET", "/features", features), ("GET", "/i18n", empty_object), ("GET", "/embeddings", empty_list),
        ("GET", "/global_subgraphs", empty_object), ("GET", "/workflow_templates", empty_object),
        ("GET", "/userdata", userdata_list), ("GET", "/userdata/{file}", userdata_get),
        ("POST", "/userdata/{file}", userdata_post), ("DELETE", "/userdata/{file}", userdata_delete),
        ("POST", "/userdata/{file}/move/{dest}", userdata_move),
        ("GET", "/experiment/models", model_folders), ("GET", "/experiment/models/{folder}", models_in_folder),
    ])
    routes.add("GET", "/templates/index.json", templates_index, api=False)
    routes.add("GET", "/templates/{name}.json", template, api=False)
    routes.add("GET", "/extensions/nodegraph/{name}", extension_file, api=False)
    _add_editor(app, config)


# ---- boot ---------------------------------------------------------------------------------------------


async def users(request: web.Request) -> web.Response:
    return reply({"storage": "server", "migrated": True})  # one user: no login screen


async def get_settings(request: web.Request) -> web.Response:
    return reply(state_of(request).user.settings())


async def get_setting(request: web.Request) -> web.Response:
    return reply(state_of(request).user.settings().get(request.match_info["id"]))


async def post_setting(request: web.Request) -> web.Response:
    state = state_of(request)
    value = await read_json(request, state.config.max_body_bytes)
    state.user.set_settings({request.match_info["id"]: value})
    return web.Response()


async def post_settings(request: web.Request) -> web.Response:
    state = state_of(request)
    values = await read_json(request, state.config.max_body_bytes)
    if not isinstance(values, dict):
        raise refusal(400, "invalid_settings", "settings are a JSON object of setting id -> value", "")
    state.user.set_settings(values)
    return web.Response()


async def extensions(request: web.Request) -> web.Response:
    return reply([EXTENSION_URL])


async def extension_file(request: web.Request) -> web.StreamResponse:
    path = inside(WEB_FOLDER, request.match_info["name"])
    if not path.is_file():
        raise refusal(404, "not_found", "no such file", "")
    return web.FileResponse(path, headers={"Content-Type": "text/javascript", "Cache-Control": "no-cache"})


async def object_info(request: web.Request) -> web.Response:
    state = state_of(request)
    info = await asyncio.to_thread(comfy.object_info, state.registry, lambda spec: catalog.offered(spec, state.config))
    return reply(info)


async def object_info_node(request: web.Request) -> web.Response:
    state = state_of(request)
    definition = state.registry.get(request.match_info["node"])
    if definition is None:
        return reply({})
    universe = comfy.known_types(state.registry)
    info = await asyncio.to_thread(comfy.node_info, definition, universe, lambda s: catalog.offered(s, state.config))
    return reply({definition.name: info})


async def system_stats(request: web.Request) -> web.Response:
    gpu = cuda_memory()  # torch is not imported for this: the answer must be quick
    free, total = gpu if gpu is not None else (0, 0)
    devices = [{"name": "cuda" if gpu else "cpu", "type": "cuda" if gpu else "cpu", "index": 0, "vram_total": total,
                "vram_free": free, "torch_vram_total": total, "torch_vram_free": free}]
    # "--disable-api-nodes" in argv: the editor skips its release check on comfy.org
    return reply({
        "system": {"os": sys.platform, "ram_free": host_memory(), "ram_total": _total_memory(),
                   "comfyui_version": f"nodegraph-{_version('nodegraph')}",
                   "required_frontend_version": _version("comfyui-frontend-package"),
                   "python_version": platform.python_version(), "pytorch_version": _version("torch"),
                   "embedded_python": False, "argv": ["nodegraph", "serve", "--disable-api-nodes"]},
        "devices": devices,
        "queue": {"remaining": state_of(request).jobs.queue_remaining()},
    })


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def feature_flags(config: ServerConfig) -> dict:
    return {"supports_preview_metadata": True, "max_upload_size": config.max_upload_bytes}


async def features(request: web.Request) -> web.Response:
    return reply(feature_flags(state_of(request).config))


async def empty_object(request: web.Request) -> web.Response:
    return reply({})


async def empty_list(request: web.Request) -> web.Response:
    return reply([])


# ---- user data --------------------------------------------------------------------------------------


def _flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    return default if value is None else value.lower() in ("true", "1", "yes")


async def userdata_list(request: web.Request) -> web.Response:
    entries = state_of(request).user.list(request.query.get("dir", ""), _flag(request, "full_info"))
    return reply(entries if _flag(request, "recurse", True) else [e for e in entries if "/" not in str(e)])


async def userdata_get(request: web.Request) -> web.StreamResponse:
    path = state_of(request).user.path(request.match_info["file"])
    if not path.is_file():
        raise refusal(404, "not_found", f"no file {request.match_info['file']!r}", "")
    return web.FileResponse(path, headers={"Content-Type": MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")})


async def userdata_post(request: web.Request) -> web.Response:
    state = state_of(request)
    data = await read_body(request, state.config.max_body_bytes)
    name = request.match_info["file"]
    info = state.user.write(name, data, overwrite=_flag(request, "overwrite", True))
    return reply(info if _flag(request, "full_info") else name)


async def userdata_delete(request: web.Request) -> web.Response:
    path = state_of(request).user.path(request.match_info["file"])
    if not path.is_file():
        raise refusal(404, "not_found", f"no file {request.match_info['file']!r}", "")
    path.unlink()
    return web.Response(status=204)


async def userdata_move(request: web.Request) -> web.Response:
    info = state_of(request).user.move(request.match_info["file"], request.match_info["dest"],
                                     overwrite=_flag(request, "overwrite"))
    return reply(info if _flag(request, "full_info", True) else info["path"])


async def model_folders(request: web.Request) -> web.Response:
    folders = [str(d) for d in state_of(request).config.models_dirs]
    return reply([{"name": "checkpoints", "folders": folders, "extensions": [".safetensors"]}] if folders else [])


async def models_in_folder(request: web.Request) -> web.Response:
    if request.match_info["folder"] != "checkpoints":
        return reply([])
    names = await asyncio.to_thread(catalog.local_models, state_of(request).config.models_dirs)
    return reply([{"name": name, "pathIndex": 0} for name in names])


# ---- templates ----------------------------------------------------------------------------------------


def template_names(state: State) -> list[str]:
    if state.templates is None:
        return []
    return sorted(p.stem for p in state.templates.glob("*.json") if not p.name.startswith("."))


async def templates_index(request: web.Request) -> web.Response:
    state = state_of(request)
    templates = []
    for name in template_names(state):
        templates.append({"name": name, "title": name.replace("_", " "), "description": f"graphs/{name}.json",
                          "mediaType": "image", "mediaSubtype": "webp", "tags": ["nodegraph"], "models": []})
    return reply([{"moduleName": "default", "title": "nodegraph", "type": "image", "category": "nodegraph",
                   "templates": templates}])


async def template(request: web.Request) -> web.Response:
    return reply(await template_prompt(state_of(request), request.match_info["name"]))


async def template_prompt(state: State, name: str) -> dict:
    """A graph file of the templates folder as an API-format prompt (the extension loads those)."""
    if name not in template_names(state):
        raise refusal(404, "not_found", f"no template {name!r}", "")
    graph = await asyncio.to_thread(fileformat.load, state.templates / f"{name}.json")
    return fileformat.to_comfy(graph, state.registry)


# ---- the editor --------------------------------------------------------------------------------------


def _add_editor(app: web.Application, config: ServerConfig) -> None:
    if not config.editor:
        app.router.add_get("/", _no_editor)
        return
    static = editor_folder()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html", headers={"Cache-Control": "no-store"})

    app.router.add_get("/", index)
    app.router.add_static("/", static)


def editor_folder() -> Path:
    """The editor's files, from the comfyui-frontend-package wheel (the `editor` extra)."""
    try:
        from importlib.resources import files

        import comfyui_frontend_package
    except ImportError:
        raise SystemExit("--editor needs ComfyUI's editor: pip install 'nodegraph[editor]'") from None
    return Path(str(files(comfyui_frontend_package) / "static"))


async def _no_editor(request: web.Request) -> web.Response:
    return web.json_response({"nodegraph": "server", "editor": "off: start with --editor (pip install "
                              "'nodegraph[editor]') to serve ComfyUI's editor here",
                              "api": ["/nodegraph/nodes", "/object_info", "/prompt", "/ws"]})
