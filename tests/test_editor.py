"""End to end in a browser: ComfyUI's editor (comfyui-frontend-package) served by `nodegraph serve
--editor`, driven by Playwright in Debian's headless Chromium (no browser download). One browser
boot for every check: the editor opens on nodegraph's default graph, finds our nodes in its
search, runs the graph and shows the image on the Save node, reloads the graph from a dropped PNG,
and refuses to connect an SDXL latent to an SD sampler while accepting an SD one."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from server_harness import serve_process

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("NODEGRAPH_SCREENSHOTS")  # a folder to keep the screenshots in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed "
                                                                    "(.ci/run installs it: apt-get install chromium)")

SDXL_AND_SD = {
    "sdxl": {"class_type": "LoadModel", "inputs": {"model": "builtin:tiny-sdxl"}},
    "sdxl_t2i": {"class_type": "Text2Img", "inputs": {"model": ["sdxl", 0], "prompt": "a square"}},
    "sd": {"class_type": "LoadModel", "inputs": {"model": "builtin:tiny-sd"}},
    "sd_t2i": {"class_type": "Text2Img", "inputs": {"model": ["sd", 0], "prompt": "a circle"}},
    "i2i": {"class_type": "Img2Img", "inputs": {"model": ["sd", 0], "prompt": "a star"}},
}


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("editor")
    process, url = serve_process(folder, "--editor")
    yield url, folder
    process.terminate()
    process.wait(60)


def test_the_editor_runs_nodegraph_graphs(editor):
    from playwright.sync_api import sync_playwright

    url, folder = editor
    outside, failures = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda r: outside.append(r.url) if r.url.split(":")[0] in ("http", "https", "ws", "wss")
                and not r.url.startswith(url) else None)
        page.on("pageerror", lambda error: failures.append(str(error)))
        try:
            check_editor(page, url, folder)
        finally:
            browser.close()
    assert outside == []  # no request leaves the machine: no release check, no fonts, no telemetry
    assert failures == []


def shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def check_editor(page, url: str, folder: Path) -> None:
    # First open: nodegraph's default graph, its sockets typed by our inference.
    page.goto(url)
    page.wait_for_function("() => window.nodegraph && window.app?.graph?.nodes?.length === 4", timeout=120_000)
    page.evaluate("() => window.nodegraph.typed()")
    nodes = page.evaluate("() => app.graph.nodes.map(n => [n.id, n.type, n.outputs.map(o => o.type)])")
    assert sorted(nodes) == [["decode", "Decode", ["IMAGE"]], ["load", "LoadModel", ["MODEL[sd]", "VAE[demo]"]],
                             ["save", "Save", []], ["text2img", "Text2Img", ["LATENT[demo]"]]]

    # The node search finds our nodes, under nodegraph's categories.
    page.mouse.dblclick(700, 650)
    page.keyboard.type("Text2Img")
    page.get_by_text("nodegraph / sampling").first.wait_for(timeout=30_000)
    shot(page, "search")
    page.keyboard.press("Escape")

    # Run it: the image appears on the Save node, and the PNG carries the editor's workflow.
    page.get_by_role("button", name="Run").first.click()
    page.wait_for_function("() => app.graph.getNodeById('save')?.imgs?.length > 0", timeout=120_000)
    source = page.evaluate("() => app.graph.getNodeById('save').imgs[0].src")
    assert "/api/view?filename=quickstart" in source and "type=output" in source
    page.wait_for_function("() => app.graph.getNodeById('save').imgs[0].naturalWidth === 64", timeout=30_000)
    shot(page, "run")
    saved = next((folder / "out").glob("quickstart*.png"))
    from PIL import Image

    workflow = json.loads(Image.open(saved).text["workflow"])
    assert {node["type"] for node in workflow["nodes"]} == {"LoadModel", "Text2Img", "Decode", "Save"}

    # Dropping the saved PNG on an empty canvas loads its graph back.
    page.evaluate("() => app.graph.clear()")
    assert page.evaluate("() => app.graph.nodes.length") == 0
    page.evaluate("""(b64) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "saved.png", {type: "image/png"}));
        document.querySelector("canvas").dispatchEvent(
            new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
    }""", base64.b64encode(saved.read_bytes()).decode())
    page.wait_for_function("() => app.graph.nodes.length === 4", timeout=30_000)
    assert sorted(page.evaluate("() => app.graph.nodes.map(n => n.type)")) == ["Decode", "LoadModel", "Save", "Text2Img"]

    # Latent spaces in the browser: an SDXL latent is refused by an SD Img2Img, an SD latent accepted.
    page.evaluate("(prompt) => app.loadApiJson(prompt, 'spaces')", SDXL_AND_SD)
    page.wait_for_function("() => app.graph.getNodeById('i2i')", timeout=30_000)
    page.evaluate("() => window.nodegraph.retype()")
    types = page.evaluate("""() => ({
        sdxl: app.graph.getNodeById('sdxl_t2i').outputs[0].type,
        sd: app.graph.getNodeById('sd_t2i').outputs[0].type,
        image: app.graph.getNodeById('i2i').inputs.find(i => i.name === 'image').type})""")
    assert types == {"sdxl": "LATENT[sdxl]", "sd": "LATENT[sd]", "image": "IMAGE,LATENT[sd]"}
    linked = page.evaluate("""() => {
        const i2i = app.graph.getNodeById('i2i');
        const slot = i2i.inputs.findIndex(i => i.name === 'image');
        const refused = app.graph.getNodeById('sdxl_t2i').connect(0, i2i, slot);
        const refusedLink = i2i.inputs[slot].link;
        const accepted = app.graph.getNodeById('sd_t2i').connect(0, i2i, slot);
        return {refused: !!refused, refusedLink, accepted: !!accepted, acceptedLink: i2i.inputs[slot].link !== null};
    }""")
    assert linked == {"refused": False, "refusedLink": None, "accepted": True, "acceptedLink": True}
    page.evaluate("() => { app.canvas.ds.scale = 0.6; app.canvas.ds.offset = [20, 10]; app.canvas.setDirty(true, true) }")
    shot(page, "spaces")

