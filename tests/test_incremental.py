"""Re-runs do exactly what an edit, or a change outside the graph, reaches: an incremental plan
equals a fresh one after any edit, and changed files, weights and node versions re-run their nodes."""

from __future__ import annotations

import shutil

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph import types as T
from nodegraph.context import RunOptions
from nodegraph.errors import ValidationError
from nodegraph.executor import Executor
from nodegraph.graph import Graph, Link
from nodegraph.node import Input, Output, define
from nodegraph.plan import plan
from nodegraph.registry import Registry
from nodes.tiny_models import builtin_path
from test_properties import dags
from toy_nodes import registry as toy_registry

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- an incremental plan is a fresh plan -----------------------------------------------------------


def plan_of(make) -> tuple:
    """(keys, order, stream regions, problems) of a plan, whether it was made or refused."""
    try:
        made = make()
    except ValidationError as error:
        return None, None, None, sorted(map(str, error.problems))
    return made.keys, made.order, made.stream_of, []


@st.composite
def edits(draw, graph: Graph):
    """One edit of the kinds an editor makes: a literal, a link, an input dropped, a node removed or added."""
    ids = sorted(graph)
    kind = draw(st.sampled_from(["literal", "link", "remove_input", "remove", "add"]))
    node_id = draw(st.sampled_from(ids))
    name = "value" if graph.type_of(node_id) in ("Const", "Show") else draw(st.sampled_from(["a", "b"]))
    if kind == "literal":
        return lambda: graph.set_input(node_id, name, draw(st.integers(-3, 200)))
    if kind == "link":
        return lambda: graph.set_input(node_id, name, Link(draw(st.sampled_from(ids)), "value"))
    if kind == "remove_input":
        return lambda: graph.remove_input(node_id, name) if name in graph.inputs_of(node_id) else None
    if kind == "remove":
        return lambda: graph.remove(node_id) if len(graph) > 1 else None
    return lambda: graph.add("Add", a=Link(draw(st.sampled_from(ids)), "value"), b=draw(st.integers(0, 3)))


@SETTINGS
@given(dags(max_nodes=8), st.data())
def test_after_any_edits_an_incremental_plan_equals_a_fresh_one(graph, data):
    executor = Executor(toy_registry)
    for _ in range(data.draw(st.integers(1, 6))):
        data.draw(edits(graph))()
        incremental = plan_of(lambda: executor.plan(graph))
        assert incremental == plan_of(lambda: plan(graph, toy_registry))


def test_switching_a_model_to_another_family_reports_the_decode_it_invalidates():
    graph = Graph()
    load = graph.add("LoadModel", id="load", model="builtin:tiny-sd")
    other = graph.add("LoadModel", id="other", model="builtin:tiny-sd")
    latent = graph.add("Text2Img", id="t2i", model=load.model, prompt="a cat").latent
    graph.add("Save", id="save", image=graph.add("Decode", id="decode", latent=latent, vae=other.vae).image)
    executor = Executor()
    executor.plan(graph)
    graph.set_input("other", "model", "builtin:tiny-sdxl")
    with pytest.raises(ValidationError) as caught:
        executor.plan(graph)
    assert [(p.node, p.input, p.code) for p in caught.value.problems] == [("decode", "latent", "type.mismatch")]


def test_removing_an_input_falls_back_to_its_default_and_reruns():
    graph = Graph()
    graph.add("Show", id="show", value=graph.add("Add", id="add", a=graph.add("Const", value=1).value, b=5).value)
    executor = Executor(toy_registry)
    assert executor.run(graph).outputs["show"]["shown"] == 6
    graph.remove_input("add", "b")
    result = executor.run(graph)
    assert result.outputs["show"]["shown"] == 1 and result.executed == ["add", "show"]


# ---- changes outside the graph -----------------------------------------------------------------------


def started(events: list[dict]) -> set[tuple[str, str | None]]:
    return {(e.node, e.label) for e in events if e.kind == "node_start"}


def test_a_file_rewritten_under_its_name_reruns_its_item_only(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / f"{name}.png")
    graph = Graph()
    small = graph.add("Resize", id="resize", image=graph.add("LoadImages", id="images", folder=str(folder)).image,
                      width=4)
    graph.add("Save", id="save", image=small.image)
    executor, options = Executor(), RunOptions(output_dir=tmp_path / "out")
    executor.run(graph, options=options)
    Image.new("RGB", (16, 16), (0, 0, 200)).save(folder / "b.png")
    events: list[dict] = []
    executor.run(graph, options=options, on_event=events.append)
    assert started(events) == {("images", None), ("resize", "b"), ("save", "b")}


def test_a_new_version_of_a_node_type_reruns_it():
    registry = Registry()
    for definition in toy_registry:
        registry.add(definition)

    def double(value):
        return 2 * value

    registry.add(define("Double", double, inputs={"value": Input(T.INT)}, outputs={"value": Output(T.INT)}))
    graph = Graph()
    graph.add("Show", id="show", value=graph.add("Double", id="double", value=graph.add("Const", value=2).value).value)
    executor = Executor(registry)
    executor.run(graph)
    assert executor.run(graph).executed == []
    registry.add(define("Double", double, inputs={"value": Input(T.INT)}, outputs={"value": Output(T.INT)},
                        version=2))
    assert executor.run(graph).executed == ["double", "show"]


def test_changed_weight_files_rerun_the_model_and_what_follows(tmp_path):
    model = shutil.copytree(builtin_path("tiny-sd"), tmp_path / "model")
    graph = Graph()
    load = graph.add("LoadModel", id="load", model=str(model))
    latent = graph.add("Text2Img", id="t2i", model=load.model, prompt="a cat", num_inference_steps=2).latent
    graph.add("Save", id="save", image=graph.add("Decode", id="decode", latent=latent, vae=load.vae).image)
    image = graph.add("LoadImage", id="photo", path=str(tmp_path / "photo.png"))
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    graph.add("Save", id="save_photo", image=image.image)
    executor, options = Executor(), RunOptions(device="cpu", output_dir=tmp_path / "out")
    executor.run(graph, options=options)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x40  # one bit of one weight; the file stays a valid safetensors file
    weights.write_bytes(bytes(data))
    result = executor.run(graph, options=options)
    assert set(result.executed) == {"load"} | nx.descendants(graph.nx, "load")
    assert result.cached == ["save_photo"]
