"""The server keeps to its folders and its limits, and hostile requests get clear 4xx JSON errors
while it stays up: names that lead out (`..`, absolute paths, links, encoded separators) on every
route that takes one, caps on bodies, uploads, graphs and the queue, decompression bombs, DNS
rebinding (Host), cross-site requests (Origin), the token, and hypothesis' hostile graphs."""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import time
import urllib.parse
import zlib

import pytest
import websocket
from hypothesis import given, strategies as st

from server_harness import Server, tiny_prompt
from test_fuzz import FUZZ, comfy_prompts, document_of, graphs, json_safe, mutated_shipped_graphs, to_json, values
from test_server_api import png_bytes, upload

import nodegraph


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    (folder / "secret.txt").write_text("outside")
    (folder / "secret.png").write_bytes(png_bytes())
    running = Server(folder, max_body_bytes=200_000, max_upload_bytes=300_000, max_graph_nodes=50)
    for inner in (running.config.input_dir, running.config.output_dir, running.config.user_dir / "default"):
        inner.mkdir(parents=True, exist_ok=True)
    os.symlink(folder / "secret.png", running.config.output_dir / "link.png")
    os.symlink(folder, running.config.input_dir / "escape")
    os.symlink(folder, running.config.user_dir / "default" / "escape")
    yield running
    running.stop()


def error_of(reply: bytes) -> dict:
    return json.loads(reply)["error"]


@pytest.mark.parametrize("query", [
    "filename=secret.txt&subfolder=..&type=output",
    "filename=../secret.txt&type=output",
    "filename=..%2Fsecret.txt&type=input",
    "filename=secret.png&subfolder=escape&type=input",
    "filename=link.png&type=output",
    "filename=%2Fetc%2Fpasswd&type=output",
    "filename=passwd&subfolder=%2Fetc&type=output",
    "filename=..%5Csecret.txt&type=output",
    "filename=secret.txt&subfolder=a%00b&type=output",
])
def test_view_never_serves_a_file_outside_its_folders(server, query):
    code, headers, reply = server.call("GET", f"/view?{query}")
    assert code in (403, 404) and headers["Content-Type"].startswith("application/json")
    assert error_of(reply)["type"] in ("path_outside", "not_found")


def test_view_refuses_unknown_types_and_missing_files(server):
    assert server.call("GET", "/view?filename=x.png&type=models")[0] == 400
    assert server.call("GET", "/view?filename=nothing.png&type=output")[0] == 404
    assert server.call("GET", "/view")[0] == 404


@pytest.mark.parametrize("fields", [{"subfolder": "../x"}, {"subfolder": "/tmp/x"}, {"subfolder": "escape"},
                                    {"subfolder": "a\\..\\.."}, {"type": "models"}])
def test_uploads_never_write_outside_their_folder(server, fields):
    code, reply = upload(server, png_bytes(), "photo.png", **fields)
    assert code in (400, 403) and reply["error"]["type"] in ("path_outside", "invalid_type")
    assert not (server.folder / "photo.png").exists() and not (server.folder / "x").exists()


def test_an_upload_keeps_only_the_last_part_of_its_name(server):
    code, reply = upload(server, png_bytes(), "../../evil.png")
    assert code == 200 and reply["name"] == "evil.png" and (server.config.input_dir / "evil.png").is_file()
    for name in ("..", ".hidden.png", "a\0b.png", ""):
        assert upload(server, png_bytes(), name)[0] == 400


@pytest.mark.parametrize("name", ["..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "escape%2Fsecret.txt",
                                  "workflows%2F..%2F..%2F..%2Fsecret.txt", "a%5C..%5C..%5Csecret.txt"])
def test_userdata_never_reads_or_writes_outside_the_user_folder(server, name):
    assert server.call("GET", f"/api/userdata/{name}")[0] in (403, 404)
    code, _, reply = server.call("POST", f"/api/userdata/{name}?overwrite=true", "{}")
    assert code == 403 and error_of(reply)["type"] == "path_outside"
    assert server.call("DELETE", f"/api/userdata/{name}")[0] in (403, 404)
    assert (server.folder / "secret.txt").read_text() == "outside"
    assert server.call("GET", f"/api/userdata?dir={name}&full_info=true")[0] in (403, 404)


@pytest.mark.parametrize("node, value", [
    ({"class_type": "LoadImage", "inputs": {"path": "/etc/passwd"}}, "path"),
    ({"class_type": "LoadImage", "inputs": {"path": "../secret.png"}}, "path"),
    ({"class_type": "LoadImage", "inputs": {"path": "escape/secret.png"}}, "path"),
    ({"class_type": "LoadImages", "inputs": {"folder": ".."}}, "folder"),
    ({"class_type": "LoadModel", "inputs": {"model": str(nodegraph.__file__)}}, "model"),
    ({"class_type": "LoadModel", "inputs": {"model": "../secret.txt"}}, "model"),
])
def test_graphs_may_not_read_files_outside_the_servers_folders(server, node, value):
    reply = server.json("POST", "/prompt", {"prompt": {"n": node}}, status=400)
    errors = reply["node_errors"]["n"]["errors"]
    assert any(e["type"] == "path.outside" and e["extra_info"] == {"input_name": value} for e in errors)


def test_the_server_never_unpickles(server):
    prompt = tiny_prompt()
    prompt["load"]["inputs"]["allow_pickle"] = True
    ws = server.socket()
    prompt_id = server.json("POST", "/prompt", {"prompt": prompt, "client_id": ws.client_id})["prompt_id"]
    error = next(m for m in ws.until_done(prompt_id) if m["type"] == "execution_error")["data"]
    assert error["node_id"] == "load" and "never unpickles" in error["exception_message"]
    ws.close()


def test_caps_are_clear_4xx_json_errors(server):
    code, _, reply = server.call("POST", "/prompt", json.dumps({"prompt": {}, "pad": "x" * 300_000}))
    assert code == 413 and error_of(reply)["type"] == "body_too_large"
    code, reply = upload(server, b"\0" * 400_000, "big.png")
    assert code == 413 and reply["error"]["type"] == "upload_too_large"
    many = {str(i): {"class_type": "LoadImage", "inputs": {"path": "x.png"}} for i in range(60)}
    code, _, reply = server.call("POST", "/prompt", {"prompt": many})
    assert code == 413 and error_of(reply)["type"] == "graph_too_large"
    code, _, reply = server.call("GET", "/no/such/route")
    assert code == 404 and error_of(reply)["type"] == "http_error"


def test_the_queue_has_a_cap(tmp_path):
    small = Server(tmp_path, max_queue=1)
    try:
        first = small.json("POST", "/prompt", {"prompt": tiny_prompt(seed=1, steps=400)})["prompt_id"]
        while small.jobs.running is None:
            time.sleep(0.01)
        small.json("POST", "/prompt", {"prompt": tiny_prompt(seed=2)})
        code, _, reply = small.call("POST", "/prompt", {"prompt": tiny_prompt(seed=3)})
        assert code == 429 and error_of(reply)["type"] == "queue_full"
        small.json("POST", "/interrupt", {"prompt_id": first})
        small.call("POST", "/queue", {"clear": True})
    finally:
        small.stop()


def bomb_png(side: int) -> bytes:
    """A black `side`×`side` greyscale PNG, compressed row by row (the test never holds its pixels)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, body = zlib.compressobj(9), b"\0" * (side + 1), []
    for _ in range(side):
        body.append(compressor.compress(row))
    body.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_upload_is_refused_from_its_header(server):
    bomb = bomb_png(12000)
    assert len(bomb) < 300_000  # 144 megapixels in a small file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, reply = upload(server, bomb, "bomb.png")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert code == 413 and reply["error"]["type"] == "image_too_large" and "12000x12000" in reply["error"]["message"]
    assert grown_mb < 100 and not (server.config.input_dir / "bomb.png").exists()


def test_dns_rebinding_and_cross_site_requests_are_refused(server):
    code, _, reply = server.call("GET", "/api/users", headers={"Host": "evil.example:80"})
    assert code == 403 and error_of(reply)["type"] == "host_refused"
    assert server.call("GET", "/api/users", headers={"Host": f"localhost:{server.port}"})[0] == 200
    code, _, reply = server.call("POST", "/api/settings/x", "1", headers={"Origin": "http://evil.example"})
    assert code == 403 and error_of(reply)["type"] == "origin_refused"
    assert server.call("POST", "/api/settings/x", "1", headers={"Origin": "null"})[0] == 403
    assert server.call("POST", "/api/settings/x", "1", headers={"Origin": f"http://127.0.0.1:{server.port}"})[0] == 200
    assert server.call("GET", "/api/settings", headers={"Origin": "http://evil.example"})[0] == 200  # reads are safe
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws", origin="http://evil.example")


def test_a_token_is_required_when_set(tmp_path):
    token = "s3cret-token-of-some-length"
    guarded = Server(tmp_path, token=token)
    try:
        code, _, reply = guarded.call("GET", "/api/users")
        assert code == 401 and error_of(reply)["type"] == "unauthorized"
        assert guarded.call("GET", "/api/users", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert guarded.call("GET", "/api/users", headers={"Authorization": "Bearer wrong-token-xxxxxxxx"})[0] == 401
        code, headers, _ = guarded.call("GET", f"/api/users?token={token}")
        assert code == 200 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert guarded.call("GET", "/api/settings", headers={"Cookie": cookie})[0] == 200
    finally:
        guarded.stop()


def test_listening_beyond_localhost_warns(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "nodegraph", "serve", "--host", "0.0.0.0", "--port", "0",
                                "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                                "--user-dir", str(tmp_path / "user")], stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()
    finally:
        process.terminate()
        process.wait(30)
    assert first.startswith("warning: listening on 0.0.0.0") and "--token" in first
    short = subprocess.run([sys.executable, "-m", "nodegraph", "serve", "--token", "short"], capture_output=True,
                           text=True, timeout=60)
    assert short.returncode == 2 and "at least 16 characters" in short.stderr and "Traceback" not in short.stderr


# ---- hostile requests ---------------------------------------------------------------------------------------


def still_up(server) -> None:
    assert server.json("GET", "/api/users") == {"storage": "server", "migrated": True}


def answered_with_json(code: int, reply: bytes) -> None:
    assert code < 500, reply[:500]
    if code >= 400:
        assert isinstance(json.loads(reply), dict)


@FUZZ
@given(prompt=comfy_prompts)
def test_hostile_prompts_at_every_route_that_takes_one(server, prompt):
    body = to_json({"prompt": json_safe(prompt), "partial_execution_targets": ["no-such-node"]})  # never run
    answered_with_json(*_post(server, "/prompt", body))
    answered_with_json(*_post(server, "/api/nodegraph/types", to_json(json_safe(prompt))))


@FUZZ
@given(document=graphs().map(document_of) | mutated_shipped_graphs())
def test_hostile_graph_files_at_the_native_routes(server, document):
    body = b'{"graph": ' + document + b', "outputs": ["no-such-node"], "rewrites": ["tiny"]}'
    for route in ("/nodegraph/validate", "/nodegraph/runs"):
        answered_with_json(*_post(server, route, body))


@FUZZ
@given(body=values, route=st.sampled_from(["/prompt", "/nodegraph/validate", "/nodegraph/runs", "/nodegraph/types",
                                           "/api/settings", "/api/settings/x", "/interrupt", "/queue", "/history",
                                           "/api/jobs/cancel", "/free", "/api/userdata/workflows%2Ff.json"]))
def test_hostile_json_at_every_route_that_reads_a_body(server, body, route):
    answered_with_json(*_post(server, route, to_json(json_safe(body))))


@FUZZ
@given(query=st.dictionaries(st.sampled_from(["filename", "subfolder", "type", "dir", "full_info", "recurse",
                                              "max_items", "status", "limit", "offset", "clientId"]),
                             st.text(max_size=20), max_size=4),
       route=st.sampled_from(["/view", "/api/userdata", "/history", "/api/jobs", "/api/prompt", "/object_info"]))
def test_hostile_queries_get_json_answers(server, query, route):
    code, _, reply = server.call("GET", f"{route}?{urllib.parse.urlencode(query, errors='surrogatepass')}")
    answered_with_json(code, reply)


def _post(server, route: str, body: bytes) -> tuple[int, bytes]:
    code, _, reply = server.call("POST", route, body)
    return code, reply


def test_still_up_after_everything(server):
    still_up(server)
