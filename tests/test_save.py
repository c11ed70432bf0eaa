"""Save: descriptive names, never overwriting, atomic writes, and the provenance each PNG carries."""

from __future__ import annotations

import json
import threading

from pathlib import Path

import torch
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
import nodegraph.atomic
from nodegraph import fileformat
from nodegraph.context import NodeContext, RunOptions, RunState
from nodegraph.executor import Executor
from nodegraph.graph import Graph, Link
from nodegraph.registry import registry
from nodes.save import describe_source, file_stem, model_slug, save, write_new_file


def run(graph, out):
    return Executor().run(graph, options=RunOptions(device="cpu", output_dir=out))


def saved_files(result, node_id="save"):
    return result.outputs[node_id]["files"]


def png_text(path):
    with Image.open(path) as image:
        return dict(image.text)


# ---- never overwriting ------------------------------------------------------------------------


def test_an_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "photo.png").write_bytes(b"first")
    (tmp_path / "photo-1.png").write_bytes(b"second")
    written = write_new_file(tmp_path, "photo", ".png", b"third")
    assert written == tmp_path / "photo-2.png" and written.read_bytes() == b"third"
    assert (tmp_path / "photo.png").read_bytes() == b"first"
    assert (tmp_path / "photo-1.png").read_bytes() == b"second"


def test_no_temporary_file_is_left_behind_and_the_file_is_readable_by_others(tmp_path):
    written = write_new_file(tmp_path, "photo", ".png", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["photo.png"]
    assert written.stat().st_mode & 0o044 == 0o044


def test_racing_writers_each_get_their_own_file(tmp_path):
    payloads = [f"writer {i}".encode() * 1000 for i in range(8)]
    barrier = threading.Barrier(len(payloads))
    written = []

    def write(data):
        barrier.wait()
        written.append(write_new_file(tmp_path, "same", ".png", data))

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(written)) == len(payloads)
    assert sorted(path.read_bytes() for path in written) == sorted(payloads)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_without_hard_links_names_are_still_claimed_exclusively(tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(nodegraph.atomic.os, "link", no_links)
    (tmp_path / "photo.png").write_bytes(b"first")
    written = write_new_file(tmp_path, "photo", ".png", b"second")
    assert written.name == "photo-1.png" and written.read_bytes() == b"second"
    assert (tmp_path / "photo.png").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo-1.png", "photo.png"]


# ---- file names -----------------------------------------------------------------------------------


def test_file_names_are_safe_and_descriptive():
    assert model_slug("runwayml/stable-diffusion-v1-5") == "stable_diffusion_v1_5"
    assert model_slug("builtin:tiny-sd") == "tiny_sd"
    assert model_slug("C:\\models\\dreamshaper_8.safetensors") == "dreamshaper_8"
    assert file_stem("../../etc/x", "cat", ["str0.7"]) == "etc_x_cat_str0.7"
    assert file_stem("", None, []) == "image"
    assert len(file_stem("p" * 100, "l" * 100, ["m" * 40, "p" * 40, "str0.75", "guide7.5", "steps30"])) == 180
    long_prompt = "Van Gogh painting with thick brushstrokes, " * 10
    stem = file_stem("out", "a" * 500, ["stable_diffusion_v1_5", nodes.save.slug(long_prompt, 40)])
    assert stem == f"out_{'a' * 60}_stable_diffusion_v1_5_van_gogh_painting_with_thick"


# ---- provenance, without models ---------------------------------------------------------------------


def image_graph(photo_path):
    """A PickString with a random seed picks the file, so the run has a seed to resolve."""
    graph = Graph()
    pick = graph.add("PickString", id="pick", options=str(photo_path), mode="random", seed="random")
    photo = graph.add("LoadImage", id="photo", path=pick.value)
    graph.add("Save", id="save", image=photo.image, prefix="copy")
    return graph


def test_the_png_carries_the_graph_with_resolved_seeds_and_versions(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(photo)
    graph = image_graph(photo)
    result = run(graph, tmp_path / "out")
    [path] = saved_files(result)
    text = png_text(path)

    embedded = fileformat.loads(text["nodegraph"])
    seed = result.seeds["pick"]["seed"]
    assert isinstance(seed, int) and embedded.inputs_of("pick")["seed"] == seed
    graph.set_input("pick", "seed", seed)
    graph.set_input("pick", "options", "photo.png")  # a path outside the working directory: its name only
    assert embedded == graph

    prompt = json.loads(text["prompt"])
    assert prompt["photo"] == {"class_type": "LoadImage", "inputs": {"path": ["pick", 0]}}
    assert prompt["save"]["inputs"]["image"] == ["photo", 0]

    # the photo's path comes from a link: what it read is known only once it ran, so it is not recorded
    assert json.loads(text["nodegraph-identities"]) == {}
    versions = json.loads(text["nodegraph-versions"])
    assert {"nodegraph", "torch", "diffusers", "transformers"} <= set(versions)


def test_the_saved_png_runs_again_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the photo is inside the working directory: the PNG records where
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(photo)
    [first] = saved_files(run(image_graph(photo), tmp_path / "first"))
    [again] = saved_files(run(fileformat.load(first), tmp_path / "again"))
    assert open(again, "rb").read() == open(first, "rb").read()


def test_saving_twice_keeps_both_files(tmp_path):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 6), (10, 20, 30)).save(photo)
    graph = Graph()
    graph.add("Save", id="save", image=graph.add("LoadImage", path=str(photo)).image, prefix="copy")
    [first] = saved_files(run(graph, tmp_path))
    [second] = saved_files(run(graph, tmp_path))
    assert (first, second) == (str(tmp_path / "copy.png"), str(tmp_path / "copy-1.png"))


def test_a_batch_is_saved_one_file_per_image(tmp_path):
    graph = Graph()
    graph.add("Save", id="save", image=graph.add("LoadImage", path="unused.png").image, prefix="many")
    ctx = NodeContext("save", RunState(RunOptions(output_dir=tmp_path), workflow=lambda: fileformat.dumps(graph)))
    files = save(torch.rand(3, 3, 4, 4), "many", False, ctx)["files"]
    assert [Path(f).name for f in files] == ["many_0.png", "many_1.png", "many_2.png"]
    assert [Image.open(f).size for f in files] == [(4, 4)] * 3


# ---- with the tiny models -----------------------------------------------------------------------------


def text2img_graph(seed=7, steps=2):
    graph = Graph()
    load = graph.add("LoadModel", id="load", model="builtin:tiny-sd")
    t2i = graph.add("Text2Img", id="t2i", model=load.model, prompt="Astronaut in a jungle", seed=seed,
                    num_inference_steps=steps, guidance_scale=7.5, height=64, width=64)
    decode = graph.add("Decode", id="decode", latent=t2i.latent, vae=load.vae)
    graph.add("Save", id="save", image=decode.image, prefix="astronaut")
    return graph


def test_file_names_carry_the_model_prompt_and_settings(tmp_path):
    [path] = saved_files(run(text2img_graph(), tmp_path))
    assert path.rsplit("/", 1)[1] == "astronaut_tiny_sd_astronaut_in_a_jungle_guide7.5_steps2_seed7.png"


def test_a_fixed_seed_gives_bit_identical_pngs_and_the_png_reproduces_itself(tmp_path):
    [first] = saved_files(run(text2img_graph(), tmp_path / "a"))
    [second] = saved_files(run(text2img_graph(), tmp_path / "b"))
    assert open(first, "rb").read() == open(second, "rb").read()
    [again] = saved_files(run(fileformat.load(first), tmp_path / "c"))
    assert open(again, "rb").read() == open(first, "rb").read()
    [other_seed] = saved_files(run(text2img_graph(seed=8), tmp_path / "d"))
    assert Image.open(other_seed).tobytes() != Image.open(first).tobytes()


def test_the_png_names_the_weights_that_made_it(tmp_path):
    [path] = saved_files(run(text2img_graph(), tmp_path))
    identities = json.loads(png_text(path)["nodegraph-identities"])
    assert identities["load"] and isinstance(identities["load"], str)


def test_a_grid_of_a_sweep_names_only_what_its_images_share():
    graph = Graph()
    load = graph.add("LoadModel", id="load", model="builtin:tiny-sd")
    images = []
    for strength in (0.4, 0.6):
        step = graph.add("Img2Img", model=load.model, prompt="a cat", image=Link("init", "image"),
                         strength=strength, guidance_scale=5.0, num_inference_steps=2, seed=1)
        images.append(graph.add("Decode", latent=step.latent, vae=load.vae).image)
    graph.add("LoadImage", id="init", path="cat.png")
    grid = graph.add("ImageGrid", image1=images[0], image2=images[1])
    graph.add("Save", id="save", image=grid.image)

    def literal(node_id, name):  # what the run would say: these inputs are all literals
        return registry[graph.type_of(node_id)].inputs_as_run(graph.inputs_of(node_id)).get(name)

    assert describe_source(graph, "save", literal) == ["tiny_sd", "a_cat", "guide5.0", "steps2", "seed1"]
