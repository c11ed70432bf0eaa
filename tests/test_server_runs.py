"""Runs through the server: the websocket's messages in ComfyUI's order, ComfyUI's own API clients,
reconnects, interrupts and cancels (no partial files, the cache intact), and a clean shutdown."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import urllib.request

import pytest
from PIL import Image

import comfy_clients
from server_harness import Server, serve_process, tiny_prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("server"))
    yield running
    running.stop()


def slow_prompt(seed: int, prefix: str) -> dict:
    return tiny_prompt(seed=seed, steps=400, prefix=prefix)


def kinds(messages: list[dict]) -> list[str]:
    return [m["type"] for m in messages]


def submit(server, prompt: dict, client_id: str | None = None) -> str:
    body = {"prompt": prompt, **({"client_id": client_id} if client_id else {})}
    return server.json("POST", "/prompt", body)["prompt_id"]


def outputs(server) -> list[str]:
    return sorted(os.listdir(server.config.output_dir)) if server.config.output_dir.exists() else []


def test_a_run_then_a_cached_rerun_in_comfyuis_order(server):
    ws = server.socket()
    first = ws.next()
    assert first["type"] == "status" and first["data"]["sid"] == ws.client_id
    assert ws.next()["type"] == "feature_flags"
    prompt_id = submit(server, tiny_prompt(seed=21, prefix="order"), ws.client_id)
    run = [m for m in ws.until_done(prompt_id) if m["type"] != "status"]
    order = kinds(run)
    assert order[0] == "execution_start" and order[-2:] == ["execution_success", "executing"]
    assert order.index("executing") < order.index("progress") < order.index("executed") < order.index("execution_success")
    assert [m["data"]["node"] for m in run if m["type"] == "executing"] == ["load", "t2i", "decode", "save", None]
    assert all(m["data"]["prompt_id"] == prompt_id for m in run)
    running = [m for m in run if m["type"] == "progress_state"][-1]["data"]["nodes"]
    assert {n: s["state"] for n, s in running.items()} == dict.fromkeys(["load", "t2i", "decode", "save"], "finished")
    assert ws.binary and ws.binary[0][:4] == (4).to_bytes(4, "big")  # a step preview, with its metadata
    length = int.from_bytes(ws.binary[0][4:8], "big")
    assert json.loads(ws.binary[0][8:8 + length])["node_id"] == "t2i"
    assert Image.open(io.BytesIO(ws.binary[0][8 + length:])).format == "JPEG"
    executed = next(m["data"] for m in run if m["type"] == "executed")
    assert executed["node"] == "save" and executed["output"]["images"][0]["type"] == "output"

    again = submit(server, tiny_prompt(seed=21, prefix="order"), ws.client_id)
    rerun = [m for m in ws.until_done(again) if m["type"] != "status"]
    assert kinds(rerun) == ["execution_start", "execution_cached", "executed", "execution_success", "executing"]
    assert "save" in rerun[1]["data"]["nodes"]
    assert rerun[2]["data"]["output"] == executed["output"]  # the same file: nothing was written again
    ws.close()


def test_a_failing_node_sends_execution_error_naming_it(server):
    truncated = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated, format="PNG")
    server.config.input_dir.mkdir(parents=True, exist_ok=True)
    (server.config.input_dir / "truncated.png").write_bytes(truncated.getvalue()[:80])
    prompt = {"img": {"class_type": "LoadImage", "inputs": {"path": "truncated.png"}},
              "save": {"class_type": "Save", "inputs": {"image": ["img", 0]}}}
    ws = server.socket()
    prompt_id = submit(server, prompt, ws.client_id)
    messages = ws.until_done(prompt_id)
    states = [m["data"]["nodes"]["img"]["state"] for m in messages if m["type"] == "progress_state"]
    assert states == ["running", "error"]
    run = [m for m in messages if m["type"] not in ("status", "feature_flags", "progress_state")]
    assert kinds(run) == ["execution_start", "executing", "execution_error", "executing"]
    error = run[2]["data"]
    assert error["node_id"] == "img" and error["node_type"] == "LoadImage" and error["traceback"] == []
    assert "truncated.png" in error["exception_message"] and "hint" in error["exception_message"]
    assert server.json("GET", f"/history/{prompt_id}")[prompt_id]["status"]["status_str"] == "error"
    ws.close()


def test_an_interrupt_stops_the_run_leaving_no_file_and_the_cache_intact(server):
    ws = server.socket()
    before = outputs(server)
    prompt_id = submit(server, slow_prompt(31, "interrupted"), ws.client_id)
    while ws.next()["type"] != "progress":
        pass
    server.json("POST", "/api/interrupt", {"prompt_id": "some-other-run"})  # names another run: no effect
    server.json("POST", "/api/interrupt", {"prompt_id": prompt_id})
    rest = [m for m in ws.until_done(prompt_id) if m["type"] not in ("status", "progress", "progress_state")]
    assert kinds(rest)[-2:] == ["execution_interrupted", "executing"]
    assert rest[-2]["data"]["node_id"] == "t2i" and rest[-2]["data"]["node_type"] == "Text2Img"
    assert outputs(server) == before and not any(name.endswith(".tmp") for name in os.listdir(server.config.output_dir))
    assert server.json("GET", f"/api/jobs/{prompt_id}")["status"] == "cancelled"
    after = submit(server, tiny_prompt(seed=32, prefix="after"), ws.client_id)
    cached = [m for m in ws.until_done(after) if m["type"] == "execution_cached"]
    assert cached and cached[0]["data"]["nodes"] == ["load"]  # the model the interrupted run loaded
    ws.close()


def test_a_queued_run_can_be_cancelled_and_leaves_nothing(server):
    ws = server.socket()
    running = submit(server, slow_prompt(41, "first"), ws.client_id)
    while ws.next()["type"] != "execution_start":
        pass
    queued = submit(server, tiny_prompt(seed=42, prefix="cancelled"), ws.client_id)
    assert [job["id"] for job in server.json("GET", "/api/jobs?status=pending")["jobs"]] == [queued]
    assert server.json("POST", f"/api/jobs/{queued}/cancel") == {"cancelled": True}
    server.json("POST", "/interrupt")  # no id: the running one
    ws.until_done(running)
    server.wait_idle()
    assert server.json("GET", f"/api/jobs/{queued}")["status"] == "cancelled"
    assert not [name for name in outputs(server) if name.startswith("cancelled")]
    ws.close()


def test_a_reconnect_with_the_same_client_id_gets_what_it_missed(server):
    ws = server.socket()
    ws.next()
    prompt_id = submit(server, tiny_prompt(seed=51, prefix="away"), ws.client_id)
    ws.close()  # gone before the run even starts
    server.wait_idle()
    back = server.socket(ws.client_id)
    assert back.next()["data"]["sid"] == ws.client_id
    missed = [m for m in back.until_done(prompt_id) if m["type"] not in ("status", "feature_flags")]
    assert kinds(missed)[0] == "execution_start" and "executed" in kinds(missed)
    assert kinds(missed)[-2:] == ["execution_success", "executing"]
    back.close()


def test_a_client_that_drops_mid_run_gets_the_run_again_from_its_start(server):
    ws = server.socket()
    prompt_id = submit(server, tiny_prompt(seed=52, steps=100, prefix="dropped"), ws.client_id)
    while ws.next()["type"] != "progress":
        pass
    ws.close()
    back = server.socket(ws.client_id)
    run = [m for m in back.until_done(prompt_id) if m["type"] not in ("status", "feature_flags")]
    assert kinds(run)[0] == "execution_start" and kinds(run)[-2:] == ["execution_success", "executing"]
    assert "executed" in kinds(run)
    back.close()


def test_comfyuis_own_api_examples_get_their_image(server):
    comfy_clients.server_address = f"127.0.0.1:{server.port}"
    images = comfy_clients.websockets_example(tiny_prompt(seed=61, prefix="example"))
    picture = Image.open(io.BytesIO(images["save"][0]))
    assert picture.size == (64, 64) and picture.format == "PNG"
    text = picture.text
    assert json.loads(text["prompt"])["t2i"]["inputs"]["seed"] == 61  # ComfyUI's chunk: the API prompt
    count = len(server.jobs.history())
    comfy_clients.basic_queue_prompt(tiny_prompt(seed=62, prefix="basic"))
    server.wait_idle()
    assert len(server.jobs.history()) == count + 1 and server.jobs.history()[-1].status == "completed"


def test_an_editor_run_embeds_its_workflow_and_the_png_loads_back(server):
    workflow = {"id": "f00d", "nodes": [{"id": 1, "type": "LoadModel"}], "links": [], "version": 0.4}
    body = {"prompt": tiny_prompt(seed=71, prefix="editor"), "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    prompt_id = server.json("POST", "/prompt", body)["prompt_id"]
    server.wait_idle()
    image = server.json("GET", f"/history/{prompt_id}")[prompt_id]["outputs"]["save"]["images"][0]
    path = server.config.output_dir / image["filename"]
    chunks = Image.open(path).text
    assert json.loads(chunks["workflow"]) == workflow and "prompt" in chunks
    assert server.json("GET", "/api/jobs?status=completed")["jobs"][0]["workflow_id"] == "f00d"
    import nodegraph

    graph = nodegraph.load(path)  # `nodegraph run image.png` reads it too
    assert graph.type_of("t2i") == "Text2Img" and graph.inputs_of("t2i")["seed"] == 71
    assert graph.ui == {"workflow": workflow}


# ---- the server as a process -------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_nodegraph_serve_stops_cleanly_mid_run(tmp_path, stop):
    process, url = serve_process(tmp_path)
    try:
        data = json.dumps({"prompt": slow_prompt(81, "stopped")}).encode()
        prompt_id = json.loads(urllib.request.urlopen(urllib.request.Request(url + "/prompt", data=data)).read())["prompt_id"]
        while json.loads(urllib.request.urlopen(f"{url}/api/jobs/{prompt_id}").read())["status"] != "in_progress":
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
