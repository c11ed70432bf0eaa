"""The graphs in graphs/: each validates, and runs end to end on the tiny builtins (`--tiny`).
Also: the tutorial's latent-into-x4 wiring and cross-family latents are rejected by
validation, and PickString, which the batch graph picks its model and prompt with."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph import fileformat
from nodegraph.context import RunOptions
from nodegraph.errors import InputError
from nodegraph.executor import Executor
from nodegraph.graph import Graph
from nodegraph.registry import registry
from nodegraph.validation import validate
from nodes import weights
from nodes.lists import pick
from nodes.weights import ComponentCache

REPO = Path(__file__).resolve().parent.parent
GRAPHS = sorted((REPO / "graphs").glob("*.json"))
TUTORIAL_WIRING = REPO / "tests" / "data" / "tutorial_latent_to_x4.json"
TEST_SIZE = 64
ON_BUILTINS = {"quickstart"}  # runs on the shipped model as it is; the others name the seeds' checkpoints


@pytest.fixture(autouse=True)
def from_the_repository_root(monkeypatch):
    # Paths in graph files are relative to the current directory, which is the repository root.
    monkeypatch.chdir(REPO)


def tiny(graph: Graph) -> Graph:
    """What `nodegraph run FILE --tiny` runs, made as small as the tests need: 64x64, 2 steps."""
    graph, _ = registry.apply_rewrite("tiny", graph)
    for node_id in list(graph):
        inputs, declared = graph.inputs_of(node_id), registry[graph.type_of(node_id)].inputs
        for side in ("width", "height"):
            if inputs.get(side):
                graph.set_input(node_id, side, TEST_SIZE)
        if "num_inference_steps" in declared:
            graph.set_input(node_id, "num_inference_steps", steps_for(inputs.get("strength", 1.0)))
    return graph


def steps_for(strength) -> int:
    """2 steps, or as few as leave one denoising step at this strength."""
    return max(2, math.ceil(1 / strength)) if isinstance(strength, (int, float)) and strength > 0 else 2


def save_nodes(graph: Graph) -> list[str]:
    return [n for n in graph if graph.type_of(n) == "Save"]


def files_of(result, node_id) -> list[str]:
    output = result.outputs[node_id]
    outputs = output if isinstance(output, list) else [output]  # one per stream item
    return [path for one in outputs if one for path in one["files"]]


# ---- every graph ------------------------------------------------------------------------------------


def test_there_is_a_graph_for_every_seed_use_case():
    assert {path.stem for path in GRAPHS} >= {
        "text2img2img", "img2img2img", "img2upscale", "text2img2inpaint", "inpaint2img2img",
        "img2img_sweep", "batch_img2img"}


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.stem)
def test_graph_files_are_in_the_format_and_name_their_models(path):
    document = json.loads(path.read_text())
    assert set(document) <= {"nodegraph", "nodes", "ui"} and document["nodegraph"] == 1
    models = [spec["inputs"]["model"] for spec in document["nodes"].values() if spec["type"] == "LoadModel"]
    named_builtins = [m for m in models if isinstance(m, str) and m.startswith("builtin:")]
    assert models and named_builtins == ([models[0]] if path.stem in ON_BUILTINS else [])
    assert fileformat.loads(fileformat.dumps(fileformat.load(path))) == fileformat.load(path)


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.stem)
def test_graph_validates_as_written_and_with_the_tiny_builtins(path):
    graph = fileformat.load(path)
    assert validate(graph).problems == []  # offline: LoadModel knows the seeds' checkpoints by name
    graph, done = registry.apply_rewrite("tiny", graph)
    notes = [r.note for r in done]
    assert any("builtin:tiny-" in note for note in notes)
    assert all("builtin:tiny-" in note or note.split(": ")[0].endswith((".width", ".height")) for note in notes)
    assert validate(graph).problems == []


# graph -> Save node -> the sizes of the images it writes, at the test size (--tiny, then 64 px)
EXPECTED_SIZES = {
    "batch_img2img": {"save": {(64, 96), (80, 80), (96, 64)}},  # each image back at its own size
    "img2img2img": {"save": {(64, 64)}, "save_grid": {(128, 64)}},
    "img2img_sweep": {**{f"{sweep}_save": {(64, 64)} for sweep in (
        "strength_0_4", "strength_0_6", "strength_1_0", "guidance_0_1", "guidance_5_0", "guidance_10_0",
        "negative_ugly", "negative_jungle")},
        "strength_grid_save": {(192, 64)}, "guidance_grid_save": {(192, 64)}, "negative_grid_save": {(128, 64)}},
    "img2upscale": {"save": {(512, 512)}, "save_grid": {(128, 64)}},  # 64 -> latent x2 -> x4
    "inpaint2img2img": {"save": {(64, 64)}, "save_grid": {(192, 64)}},
    "quickstart": {"save": {(64, 64)}},
    "text2img2img": {"save": {(64, 64)}, "save_grid": {(128, 64)}},
    "text2img2inpaint": {"save": {(64, 64)}, "save_grid": {(128, 64)}},
}


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255


def grid_tiles(graph: Graph, result, save_id: str) -> tuple[str, list[np.ndarray]] | None:
    """(the ImageGrid a Save writes, its tiles left to right), if the Save writes a one-row grid."""
    grid = graph.inputs_of(save_id)["image"].node
    if graph.type_of(grid) != "ImageGrid":
        return None
    [path] = files_of(result, save_id)
    picture = pixels(path)
    side = picture.shape[0]
    return grid, [picture[:, x: x + side] for x in range(0, picture.shape[1], side)]


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.stem)
def test_graph_runs_end_to_end_on_the_tiny_builtins(path, tmp_path):
    graph = tiny(fileformat.load(path))
    result = Executor().run(graph, options=RunOptions(device="cpu", output_dir=tmp_path))
    assert result.failures == []
    sizes = {node_id: {Image.open(f).size for f in files_of(result, node_id)} for node_id in save_nodes(graph)}
    assert sizes == EXPECTED_SIZES[path.stem]
    for node_id in save_nodes(graph):
        for file in files_of(result, node_id):
            assert Path(file).parent == tmp_path and fileformat.load(file) is not None
        tiles = grid_tiles(graph, result, node_id)
        if tiles is not None:
            check_grid(graph, result, *tiles)


def check_grid(graph: Graph, result, grid: str, tiles: list[np.ndarray]) -> None:
    """A grid's tiles are the images it was given: the input where its first tile is the input, which the
    chain then changed; a result some other Save writes at the tile's size, pixel for pixel."""
    first = graph.inputs_of(grid)["image1"].node
    if graph.type_of(first) == "Resize" and graph.type_of(graph.inputs_of(first)["image"].node) == "LoadImage":
        source = graph.inputs_of(graph.inputs_of(first)["image"].node)["path"]
        height, width = tiles[0].shape[:2]
        expected = np.asarray(Image.open(source).convert("RGB").resize((width, height), Image.BICUBIC)) / 255
        assert np.abs(tiles[0] - expected).mean() < 0.03  # the input, as the chain started from it
        assert np.abs(tiles[-1] - tiles[0]).mean() > 0.05  # ... and the chain's result is not the input
    last = [graph.inputs_of(grid)[f"image{i}"].node for i in (4, 3, 2, 1) if f"image{i}" in graph.inputs_of(grid)][0]
    for save in save_nodes(graph):
        if graph.inputs_of(save)["image"].node == last:
            [path] = files_of(result, save)
            if pixels(path).shape == tiles[-1].shape:
                assert np.array_equal(pixels(path), tiles[-1])


# ---- the batch graph ---------------------------------------------------------------------------------


def test_the_batch_loads_each_models_weights_once_and_one_bad_image_does_not_stop_it(tmp_path, monkeypatch):
    loaded = []  # (weight identity, dtype, placement) of every module really read from disk

    class CountingCache(ComponentCache):  # the real cache, starting empty, counting what it loads
        def get_or_load(self, key, load):
            return super().get_or_load(key, lambda: loaded.append(key) or load())

    monkeypatch.setattr(weights, "COMPONENTS", CountingCache())
    folder = tmp_path / "in"
    shutil.copytree(REPO / "graphs" / "inputs" / "batch", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    graph = tiny(fileformat.load(REPO / "graphs" / "batch_img2img.json"))
    graph.set_input("images", "folder", str(folder))
    result = Executor().run(graph, options=RunOptions(device="cpu", output_dir=tmp_path / "out"))
    assert [failure.label for failure in result.failures] == ["broken"]
    assert "broken.png is not a readable image" in str(result.failures[0].error)
    assert loaded and len(loaded) == len(set(loaded))  # the model of every image, loaded once
    names = sorted(Path(f).name for f in files_of(result, "save"))
    assert [name.split("_")[0] for name in names] == ["cat", "house", "tree"]
    assert all("_str0.7_guide18.0_" in name for name in names)


# The batch graph's prompts, as its file names show them (lower case, words joined, cut at a word within 40)
PROMPT_NAMES = {
    "Van Gogh painting with thick brushstrokes": "van_gogh_painting_with_thick",
    "in the style of picasso": "in_the_style_of_picasso",
    "charliebo artstyle": "charliebo_artstyle",
    "pixelartstyle": "pixelartstyle",
    "watercolor painting, soft pastel colors": "watercolor_painting_soft_pastel_colors",
}


def documented_pick(options: list[str], seed: int, vary_with: str | None = None) -> str:
    """PickString's random mode as its documentation states it, written out here independently:
    the first 8 bytes of SHA-256("nodegraph.PickString:<seed>[:<vary_with>]"), big-endian, modulo the count."""
    salt = "" if vary_with is None else f":{vary_with}"
    digest = hashlib.sha256(f"nodegraph.PickString:{seed}{salt}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def test_the_batch_records_its_random_picks(tmp_path):
    graph = tiny(fileformat.load(REPO / "graphs" / "batch_img2img.json"))
    graph.set_input("images", "pattern", "cat.png")
    result = Executor().run(graph, options=RunOptions(device="cpu", output_dir=tmp_path))
    [path] = files_of(result, "save")
    saved = fileformat.load(path)
    for picker in ("pick_model", "pick_prompt"):
        assert saved.inputs_of(picker)["seed"] == result.seeds[picker]["seed"]
    prompt = documented_pick(list(PROMPT_NAMES), result.seeds["pick_prompt"]["seed"], "cat")
    assert f"_{PROMPT_NAMES[prompt]}_str0.7_" in Path(path).name


# ---- validation catches wrong wiring before anything loads ---------------------------------------------


def test_the_tutorials_latent_into_x4_wiring_is_rejected_before_anything_loads():
    # In a fresh interpreter, with the real checkpoint names: no torch, no diffusers, no weights.
    script = (
        "import sys, json; from nodegraph import fileformat; from nodegraph.validation import validate\n"
        f"problems = validate(fileformat.load({str(TUTORIAL_WIRING)!r})).problems\n"
        "print(json.dumps([p.to_json() for p in problems]))\n"
        "assert not {'torch', 'diffusers', 'transformers'} & set(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    problems = json.loads(done.stdout)
    [wrong] = [p for p in problems if p["code"] == "type.mismatch"]
    assert (wrong["node"], wrong["input"]) == ("upscale", "image")
    assert "expected IMAGE" in wrong["message"] and "LATENT" in wrong["message"]
    assert "latent_upscale.latent" in wrong["message"] and "Decode" in wrong["hint"]


def test_the_tutorials_wiring_names_the_latent_space_with_the_tiny_builtins():
    graph, _ = registry.apply_rewrite("tiny", fileformat.load(TUTORIAL_WIRING))
    problems = validate(graph).problems
    assert [(p.node, p.input, p.code) for p in problems] == [("upscale", "image", "type.mismatch")]
    assert "LATENT[sd]" in problems[0].message


def sd_latent_into(node_type: str) -> list:
    """Problems of a graph that hands a tiny SD latent to a Kandinsky node of `node_type`."""
    graph = Graph()
    sd = graph.add("LoadModel", id="sd", model="builtin:tiny-sd")
    kandinsky = graph.add("LoadModel", id="kandinsky", model="builtin:tiny-kandinsky22")
    latent = graph.add("Text2Img", id="t2i", model=sd.model, prompt="a cat").latent
    if node_type == "Img2Img":
        latent = graph.add("Img2Img", id="img2img", model=kandinsky.model, image=latent, prompt="a cat").latent
    decoded = graph.add("Decode", id="decode", latent=latent, vae=kandinsky.vae)
    graph.add("Save", image=decoded.image)
    return validate(graph).problems


def test_an_sd_latent_into_kandinsky_img2img_is_a_validation_error():
    problems = sd_latent_into("Img2Img")
    assert [(p.node, p.input, p.code) for p in problems] == [("img2img", "image", "type.mismatch")]
    assert "expected IMAGE" in problems[0].message and "LATENT[sd]" in problems[0].message


def test_an_sd_latent_into_a_kandinsky_decode_is_a_validation_error():
    problems = sd_latent_into("Decode")
    assert [(p.node, p.input, p.code) for p in problems] == [("decode", "latent", "type.mismatch")]
    assert "LATENT[sd]" in problems[0].message and "kandinsky22" in problems[0].message


# ---- PickString ----------------------------------------------------------------------------------------


def test_pick_by_index_ignores_blank_lines():
    assert pick("first\n\n  second  \n", "index", 1, 0) == "second"


def test_random_picks_are_decided_by_the_seed():
    options = "\n".join(f"prompt {i}" for i in range(10))
    picks = [pick(options, "random", 0, seed) for seed in range(40)]
    assert picks == [pick(options, "random", 0, seed) for seed in range(40)]
    assert len(set(picks)) > 3


def test_random_picks_vary_with_each_item_but_repeat_for_the_same_one():
    options = "\n".join(f"prompt {i}" for i in range(10))
    per_image = [pick(options, "random", 0, 7, f"image{i}") for i in range(40)]
    assert per_image == [pick(options, "random", 0, 7, f"image{i}") for i in range(40)]
    assert len(set(per_image)) > 3


def test_the_batch_picks_per_image_and_names_each_file_after_its_own_pick(tmp_path):
    graph = tiny(fileformat.load(REPO / "graphs" / "batch_img2img.json"))
    graph.set_input("pick_prompt", "seed", 3)
    result = Executor().run(graph, options=RunOptions(device="cpu", output_dir=tmp_path))
    names = sorted(Path(path).name for path in files_of(result, "save"))
    assert [name.split("_")[0] for name in names] == ["cat", "house", "tree"]
    for name in names:
        image = name.split("_")[0]
        assert name.startswith(f"{image}_tiny_sd_{PROMPT_NAMES[documented_pick(list(PROMPT_NAMES), 3, image)]}_")


def test_bad_picks_are_input_errors():
    with pytest.raises(InputError) as caught:
        pick("a\nb", "index", 2, 0)
    assert caught.value.input == "index" and "there are 2 options" in str(caught.value)
    with pytest.raises(InputError) as caught:
        pick(" \n", "random", 0, 0)
    assert caught.value.input == "options"


def test_an_index_out_of_range_is_caught_by_validation():
    graph = Graph()
    graph.add("Save", image=graph.add("LoadImage", path=graph.add("PickString", id="pick", options="a\nb",
                                                                  index=5).value).image)
    assert [(p.node, p.input) for p in validate(graph).problems] == [("pick", "index")]


def test_picked_strings_feed_a_model_and_a_prompt(tmp_path):
    graph = Graph()
    model = graph.add("PickString", id="models", options="builtin:tiny-sd\nbuiltin:tiny-sdxl", index=0)
    prompt = graph.add("PickString", id="prompts", options="a red barn\na blue lake", mode="random", seed=3)
    load = graph.add("LoadModel", id="load", model=model.value)
    latent = graph.add("Text2Img", model=load.model, prompt=prompt.value, num_inference_steps=2, height=64,
                       width=64).latent
    graph.add("Save", id="save", image=graph.add("Decode", latent=latent, vae=load.vae).image, prefix="")
    assert validate(graph).problems == []
    result = Executor().run(graph, options=RunOptions(device="cpu", output_dir=tmp_path))
    [path] = files_of(result, "save")
    expected_prompt = documented_pick(["a red barn", "a blue lake"], 3).replace(" ", "_")
    assert Path(path).name.startswith(f"tiny_sd_{expected_prompt}_")
