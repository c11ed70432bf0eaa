"""Every route of the server, through an HTTP client: ComfyUI's API as its editor and clients
call it (with and without /api), and the native API."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from PIL import Image

from server_harness import Server, tiny_prompt

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    models = folder / "models"
    (models / "sd15").mkdir(parents=True)
    (models / "sd15" / "model_index.json").write_text("{}")
    (models / "one.safetensors").write_bytes(b"\0" * 8)
    running = Server(folder, models_dirs=(models,))
    yield running
    running.stop()


def png_bytes(size=(64, 64), colour=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(server, data: bytes, name: str, route="/api/upload/image", **fields) -> tuple[int, dict]:
    body, headers = multipart(fields, {"image": (name, data)})
    code, _, reply = server.call("POST", route, body, headers)
    return code, json.loads(reply)


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_the_editor_boot_routes_answer_in_its_shapes(server, prefix):
    assert server.json("GET", f"{prefix}/users") == {"storage": "server", "migrated": True}
    settings = server.json("GET", f"{prefix}/settings")
    assert settings["Comfy.TutorialCompleted"] is True and settings["Comfy.Notification.ShowVersionUpdates"] is False
    extensions = server.json("GET", f"{prefix}/extensions")
    assert extensions == ["/extensions/nodegraph/nodegraph.js"]
    code, headers, script = server.call("GET", extensions[0])
    assert code == 200 and "javascript" in headers["Content-Type"] and b"registerExtension" in script
    info = server.json("GET", f"{prefix}/object_info")
    assert {"LoadModel", "Text2Img", "Img2Img", "Decode", "Save"} <= set(info)
    for definition in info.values():  # what the editor needs of every definition, or it shows nothing
        assert isinstance(definition["python_module"], str) and isinstance(definition["name"], str)
        for spec in [*definition["input"]["required"].values(), *definition["input"]["optional"].values()]:
            assert isinstance(spec, list) and spec and (len(spec) == 1 or isinstance(spec[1], dict))
        assert len(definition["output"]) == len(definition["output_name"]) == len(definition["output_is_list"])
    assert server.json("GET", f"{prefix}/object_info/Decode") == {"Decode": info["Decode"]}
    stats = server.json("GET", f"{prefix}/system_stats")
    assert stats["system"]["python_version"] and stats["devices"][0]["type"] in ("cpu", "cuda")
    assert server.json("GET", f"{prefix}/features")["supports_preview_metadata"] is True
    assert server.json("GET", f"{prefix}/i18n") == {} and server.json("GET", f"{prefix}/embeddings") == []
    assert server.json("GET", f"{prefix}/global_subgraphs") == {}
    assert server.json("GET", f"{prefix}/workflow_templates") == {}
    assert server.json("GET", f"{prefix}/prompt") == {"exec_info": {"queue_remaining": 0}}


def test_object_info_types_sockets_by_latent_space_and_offers_models_and_images(server):
    upload(server, png_bytes(), "listed.png")
    info = server.json("GET", "/object_info")
    img2img = info["Img2Img"]["input"]["required"]
    assert img2img["image"][0].split(",")[:3] == ["IMAGE", "LATENT", "LATENT[sd]"]
    assert "LATENT[sdxl]" in img2img["image"][0].split(",")
    assert info["Text2Img"]["output"] == [info["Decode"]["input"]["required"]["latent"][0]]  # any latent, either way
    assert info["Text2Img"]["input"]["required"]["prompt"] == \
        ["STRING", {"default": "", "tooltip": "What to paint", "multiline": True}]
    seed = info["Text2Img"]["input"]["required"]["seed"][1]
    assert seed["control_after_generate"] is True and seed["max"] == 2**53 - 1
    height = info["Text2Img"]["input"]["optional"]["height"]
    assert height[0] == "INT" and height[1]["default"] == 0 and "unset" in height[1]["tooltip"]
    models = info["LoadModel"]["input"]["required"]["model"][0]
    assert "builtin:tiny-sd" in models and "sd15" in models and "one.safetensors" in models
    images = info["LoadImage"]["input"]["required"]["path"]
    assert "listed.png" in images[0] and images[1]["image_upload"] is True
    assert info["LoadImages"]["output_is_list"] == [True]


def test_settings_persist_from_bodies_without_a_content_type(server):
    code, _, _ = server.call("POST", "/api/settings/Comfy.InstalledVersion", '"1.58.1"',
                             {"Content-Type": "text/plain;charset=UTF-8"})
    assert code == 200
    server.json("POST", "/api/settings", {"Comfy.Locale": "en", "Comfy.TutorialCompleted": False})
    assert server.json("GET", "/api/settings/Comfy.InstalledVersion") == "1.58.1"
    settings = server.json("GET", "/api/settings")
    assert settings["Comfy.Locale"] == "en" and settings["Comfy.TutorialCompleted"] is False
    stored = json.loads((server.config.user_dir / "default" / "comfy.settings.json").read_text())
    assert stored["Comfy.InstalledVersion"] == "1.58.1"
    server.json("POST", "/api/settings", {"Comfy.TutorialCompleted": True})


def test_userdata_saves_lists_reads_moves_and_deletes_workflows(server):
    assert server.call("GET", "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")[0] == 404
    flow = json.dumps({"nodes": [], "links": []})
    info = server.json("POST", "/api/userdata/workflows%2Fmy%20flow.json?overwrite=false&full_info=true", flow)
    assert info["path"] == "workflows/my flow.json" and info["size"] == len(flow)
    assert server.call("POST", "/api/userdata/workflows%2Fmy%20flow.json?overwrite=false", flow)[0] == 409
    listed = server.json("GET", "/api/userdata?dir=workflows&recurse=true&split=false&full_info=true")
    assert [entry["path"] for entry in listed] == ["my flow.json"] and listed[0]["modified"] > 0
    assert server.call("GET", "/userdata/workflows%2Fmy%20flow.json")[2] == flow.encode()
    moved = server.json("POST", "/api/userdata/workflows%2Fmy%20flow.json/move/workflows%2Frenamed.json")
    assert moved["path"] == "workflows/renamed.json"
    assert server.call("DELETE", "/api/userdata/workflows%2Frenamed.json")[0] == 204
    assert server.call("GET", "/api/userdata/workflows%2Frenamed.json")[0] == 404


def test_templates_are_our_graphs_and_the_default_graph_is_quickstart(server):
    code, headers, data = server.call("GET", "/templates/index.json")
    assert code == 200 and headers["Content-Type"].startswith("application/json")
    names = [t["name"] for t in json.loads(data)[0]["templates"]]
    assert "quickstart" in names and "text2img2img" in names
    quickstart = server.json("GET", "/templates/quickstart.json")
    assert quickstart == server.json("GET", "/api/nodegraph/editor/default")
    assert {node["class_type"] for node in quickstart.values()} == {"LoadModel", "Text2Img", "Decode", "Save"}
    assert server.call("GET", "/templates/nothing.json")[0] == 404
    assert server.json("GET", "/api/experiment/models")[0]["name"] == "checkpoints"
    names = [m["name"] for m in server.json("GET", "/api/experiment/models/checkpoints")]
    assert names == ["one.safetensors", "sd15"]


def test_a_prompt_runs_and_its_image_is_in_history_jobs_and_view(server):
    reply = server.json("POST", "/prompt", {"prompt": tiny_prompt(seed=11, prefix="api"), "client_id": "c1"})
    assert set(reply) == {"prompt_id", "number", "node_errors"} and reply["node_errors"] == {}
    server.wait_idle()
    prompt_id = reply["prompt_id"]
    history = server.json("GET", f"/history/{prompt_id}")[prompt_id]
    assert history["status"] == {"status_str": "success", "completed": True, "messages": history["status"]["messages"]}
    image = history["outputs"]["save"]["images"][0]
    assert image["type"] == "output" and image["filename"].startswith("api_tiny_sd")
    code, headers, data = server.call("GET", f"/view?filename={image['filename']}&subfolder=&type=output")
    assert code == 200 and headers["Content-Type"] == "image/png" and Image.open(io.BytesIO(data)).size == (64, 64)
    assert prompt_id in server.json("GET", "/api/history?max_items=5")
    jobs = server.json("GET", "/api/jobs?status=completed,failed,cancelled&limit=64&offset=0")
    item = next(job for job in jobs["jobs"] if job["id"] == prompt_id)
    assert item["status"] == "completed" and item["preview_output"]["nodeId"] == "save"
    assert item["create_time"] <= item["execution_start_time"] <= item["execution_end_time"]
    assert jobs["pagination"]["total"] >= 1
    detail = server.json("GET", f"/api/jobs/{prompt_id}")
    assert detail["outputs"]["save"]["images"][0] == image and detail["workflow"]["prompt"]["t2i"]
    assert server.json("GET", "/api/jobs?status=in_progress,pending") == \
        {"jobs": [], "pagination": {"offset": 0, "limit": 200, "total": 0, "has_more": False}}
    assert server.json("GET", "/queue") == {"queue_running": [], "queue_pending": []}
    server.call("POST", "/api/history", {"delete": [prompt_id]})
    assert server.json("GET", f"/history/{prompt_id}") == {}
    assert server.call("GET", f"/api/jobs/{prompt_id}")[0] == 404


def test_an_invalid_prompt_gets_comfyuis_400_naming_node_and_input(server):
    prompt = tiny_prompt()
    prompt["t2i"]["inputs"]["num_inference_steps"] = 20000
    prompt["t2i"]["inputs"]["scheduler_of_doom"] = 1
    prompt["decode"]["inputs"]["vae"] = ["t2i", 0]
    reply = server.json("POST", "/prompt", {"prompt": prompt}, status=400)
    assert reply["error"]["type"] == "prompt_outputs_failed_validation"
    t2i = reply["node_errors"]["t2i"]
    assert t2i["class_type"] == "Text2Img" and t2i["dependent_outputs"] == ["save"]
    steps = next(e for e in t2i["errors"] if e["extra_info"].get("input_name") == "num_inference_steps")
    assert steps["type"] == "value_bigger_than_max" and "[1, 1000]" in steps["details"]
    decode = reply["node_errors"]["decode"]["errors"][0]
    assert decode["type"] == "return_type_mismatch" and decode["extra_info"] == {"input_name": "vae"}
    unknown = server.json("POST", "/prompt", {"prompt": {"1": {"class_type": "KSampler", "inputs": {}}}}, status=400)
    assert unknown["error"]["type"] == "missing_node_type" and "KSampler" in unknown["node_errors"]["1"]["errors"][0]["message"]
    assert server.json("POST", "/prompt", {"nothing": 1}, status=400)["error"]["type"] == "no_prompt"
    assert server.json("POST", "/prompt", "{not json", status=400)["error"]["type"] == "invalid_json"
    assert server.json("GET", "/api/users") == {"storage": "server", "migrated": True}  # still up


def test_a_client_chosen_prompt_id_is_kept_and_may_not_repeat(server):
    prompt_id = str(uuid.uuid4())
    reply = server.json("POST", "/prompt", {"prompt": tiny_prompt(seed=12), "prompt_id": prompt_id})
    assert reply["prompt_id"] == prompt_id
    assert server.json("POST", "/prompt", {"prompt": tiny_prompt(seed=12), "prompt_id": prompt_id},
                       status=400)["error"]["type"] == "invalid_prompt_id"
    assert server.json("POST", "/prompt", {"prompt": tiny_prompt(), "prompt_id": "../x"}, status=400)
    server.wait_idle()


def test_uploads_are_kept_without_overwriting_and_masks_composite(server):
    code, first = upload(server, png_bytes(), "photo.png", subfolder="pasted")
    assert code == 200 and first == {"name": "photo.png", "subfolder": "pasted", "type": "input"}
    code, second = upload(server, png_bytes(colour=(0, 0, 255)), "photo.png", subfolder="pasted")
    assert second["name"] == "photo (1).png"
    code, replaced = upload(server, png_bytes(colour=(0, 255, 0)), "photo.png", subfolder="pasted", overwrite="true")
    assert replaced["name"] == "photo.png"
    code, headers, data = server.call("GET", "/api/view?filename=photo.png&subfolder=pasted&type=input")
    assert Image.open(io.BytesIO(data)).getpixel((0, 0)) == (0, 255, 0)
    mask = png_bytes(mode="RGBA", colour=(0, 0, 0, 77))
    original = json.dumps({"filename": "photo.png", "subfolder": "pasted", "type": "input"})
    code, masked = upload(server, mask, "photo-mask.png", route="/upload/mask", original_ref=original)
    assert code == 200
    _, _, data = server.call("GET", f"/view?filename={masked['name']}&type=input")
    assert Image.open(io.BytesIO(data)).getpixel((5, 5)) == (0, 255, 0, 77)
    code, refused = upload(server, b"not an image", "x.png")
    assert code == 400 and refused["error"]["type"] == "image_unreadable"


def test_a_graph_reads_an_uploaded_image_by_its_name(server):
    upload(server, png_bytes(colour=(10, 200, 10)), "source.png")
    prompt = {"img": {"class_type": "LoadImage", "inputs": {"path": "source.png"}},
              "save": {"class_type": "Save", "inputs": {"image": ["img", 0], "prefix": "copied"}}}
    prompt_id = server.json("POST", "/prompt", {"prompt": prompt})["prompt_id"]
    server.wait_idle()
    image = server.json("GET", f"/history/{prompt_id}")[prompt_id]["outputs"]["save"]["images"][0]
    _, _, data = server.call("GET", f"/view?filename={image['filename']}&type=output")
    assert Image.open(io.BytesIO(data)).getpixel((3, 3)) == (10, 200, 10)


def test_a_missing_image_is_looked_for_in_the_input_folder_and_the_hint_says_so(server):
    prompt = {"img": {"class_type": "LoadImage", "inputs": {"path": "graphs/inputs/absent.png"}},
              "save": {"class_type": "Save", "inputs": {"image": ["img", 0], "prefix": "never"}}}
    reply = server.json("POST", "/prompt", {"prompt": prompt}, status=400)
    error = reply["node_errors"]["img"]["errors"][0]
    assert str(server.config.input_dir / "graphs" / "inputs" / "absent.png") in error["message"] + error["details"]
    assert f"input folder ({server.config.input_dir})" in error["details"] and "upload" in error["details"]
    assert "current directory" not in error["details"]


def test_queue_and_free_routes(server):
    server.call("POST", "/free", {"unload_models": True, "free_memory": True})
    server.call("POST", "/queue", {"clear": True})
    server.call("POST", "/api/interrupt", {})
    server.call("POST", "/api/interrupt")
    assert server.json("POST", "/api/jobs/nothing/cancel") == {"cancelled": False}
    assert server.json("POST", "/api/jobs/cancel", {"job_ids": ["nothing"]}) == {"cancelled": False}
    assert server.json("GET", "/api/users")  # still up


# ---- the native API ----------------------------------------------------------------------------------


def test_native_catalogue_validate_and_types(server):
    catalogue = server.json("GET", "/nodegraph/nodes")
    assert {"LoadModel", "Save"} <= {node["name"] for node in catalogue}
    graph = json.loads((ROOT / "graphs" / "text2img2img.json").read_text())
    valid = server.json("POST", "/nodegraph/validate", {"graph": graph, "rewrites": ["tiny"]})
    assert valid == {"valid": True, "problems": []}
    broken = server.json("POST", "/nodegraph/validate", {"graph": graph, "set": ["text2img.num_inference_steps=0"],
                                                          "rewrites": ["tiny"]})
    assert broken["valid"] is False and broken["problems"][0]["node"] == "text2img"
    assert broken["problems"][0]["input"] == "num_inference_steps" and broken["problems"][0]["hint"]
    bad_set = server.json("POST", "/nodegraph/validate", {"graph": graph, "set": ["nope.x=1"]})
    assert bad_set["valid"] is False and "no node 'nope'" in bad_set["problems"][0]["message"]
    prompt = tiny_prompt()
    prompt["sdxl"] = {"class_type": "LoadModel", "inputs": {"model": "builtin:tiny-sdxl"}}
    prompt["decode"]["inputs"]["vae"] = ["sdxl", 1]
    types = server.json("POST", "/api/nodegraph/types", prompt)
    assert types["t2i"]["outputs"] == ["LATENT[sd]"] and types["load"]["outputs"] == ["MODEL[sd]", "VAE[sd]"]
    assert types["decode"]["inputs"] == {"latent": "LATENT[sdxl]", "vae": "VAE,VAE[sd],VAE[sdxl],VAE[kandinsky22],"
                                                                         "VAE[x4-upscaler],VAE[demo]"}
    assert "prompt" not in types["t2i"]["inputs"]  # widgets keep their type
    assert server.json("POST", "/nodegraph/types", {"x": {"class_type": 3}}) == {}


def test_native_runs_submit_status_events_and_cancel(server):
    events = __import__("websocket").WebSocket()
    events.connect(f"ws://127.0.0.1:{server.port}/nodegraph/events", timeout=60)
    graph = json.loads((ROOT / "graphs" / "quickstart.json").read_text())
    submitted = server.json("POST", "/nodegraph/runs", {"graph": graph, "set": ["text2img.num_inference_steps=2",
                                                                              "save.prefix=native"]})
    server.wait_idle()
    run = server.json("GET", f"/nodegraph/runs/{submitted['id']}")
    assert run["status"] == "completed" and run["outputs"]["save"]["images"][0]["filename"].startswith("native")
    kinds = []
    while not kinds or kinds[-1] != "run_done":
        event = json.loads(events.recv())
        if event["run_id"] == submitted["id"]:
            kinds.append(event["event"])
    events.close()
    assert kinds[0] == "run_start" and "node_start" in kinds and "progress" in kinds
    assert any(r["id"] == submitted["id"] for r in server.json("GET", "/nodegraph/runs"))
    invalid = server.json("POST", "/nodegraph/runs", {"graph": {"nodegraph": 1, "nodes": {"x": {"type": "Nope"}}}},
                          status=400)
    assert invalid["problems"][0]["code"] == "node.unknown_type"
    assert server.call("POST", "/nodegraph/runs/nothing/cancel")[0] == 404
    assert server.json("POST", "/nodegraph/runs", {"no": "graph"}, status=400)["error"]["type"] == "no_graph"


def test_the_root_says_how_to_get_the_editor_when_it_is_off(server):
    assert "--editor" in server.json("GET", "/")["editor"]



def test_the_readme_client_example_runs_a_graph_file(server, tmp_path, monkeypatch):
    import shutil

    from test_readme import python_blocks

    shutil.copytree(ROOT / "graphs", tmp_path / "graphs")
    monkeypatch.chdir(tmp_path)
    example = next(block for block in python_blocks() if "SERVER = " in block)
    exec(compile(example.replace("http://127.0.0.1:8188", server.url), "README.md", "exec"), {})
    saved = sorted(tmp_path.glob("*.png"))  # the graph's two Saves: the image, and a grid
    assert len(saved) == 2 and json.loads(Image.open(saved[0]).text["nodegraph"])["nodes"]["text2img"]["inputs"]["seed"] == 7


def test_the_engine_imports_no_web_stack():
    import subprocess
    import sys

    code = ("import sys, nodegraph; graph = nodegraph.load('graphs/quickstart.json'); nodegraph.validate(graph); "
            "print(sorted(m for m in ('aiohttp', 'nodegraph.server', 'playwright') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr
