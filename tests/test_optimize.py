"""The optimiser: passes keep graphs valid and results bit-identical (but decode_encode, on purpose),
decode→encode elimination takes exactly the same-VAE pairs, shared components load once, and models
load late and go early, within a budget."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from checkpoints import fine_tune
from nodegraph.context import RunOptions
from nodegraph.executor import Executor
from nodegraph import fileformat
from nodegraph.cli import main
from nodegraph.explain import explain, lines, summary
from nodegraph.graph import Graph, Link
from nodegraph.optimize import optimize
from nodegraph.plan import plan
from nodes import weights
from nodes.weights import ComponentCache
from test_properties import dags
from toy_nodes import registry as toy_registry

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """Four SD checkpoints: base; two fine-tunes with their own UNets and base's VAE and text
    encoder; one with its own VAE too."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {"base": str(fine_tune(root / "base", seed=0, parts=())),
            "comic": str(fine_tune(root / "comic", seed=1)), "pixel": str(fine_tune(root / "pixel", seed=2)),
            "own_vae": str(fine_tune(root / "own_vae", seed=3, parts=("unet", "vae")))}


@pytest.fixture
def counted_loads(monkeypatch) -> list[tuple]:
    """(weight identity, dtype, placement) of every module read from disk, in a fresh component cache."""
    loaded: list[tuple] = []

    class CountingCache(ComponentCache):
        def get_or_load(self, key, load):
            return super().get_or_load(key, lambda: loaded.append(key) or load())

    monkeypatch.setattr(weights, "COMPONENTS", CountingCache())
    return loaded


def sampler(**options) -> dict:
    return {"prompt": "a red barn", "num_inference_steps": 2, "seed": 0, **options}


def run(graph: Graph, out: Path, **options):
    return Executor().run(graph, options=RunOptions(device="cpu", output_dir=out, **options))


def pixels(result, save: str) -> bytes:
    [path] = result.outputs[save]["files"]
    return Image.open(path).tobytes()


# ---- passes keep graphs valid, and results as they were -----------------------------------------


@SETTINGS
@given(dags(), st.integers(0, 3))
def test_optimising_any_valid_graph_keeps_it_valid_and_its_results_bit_identical(graph, dead):
    for i in range(dead):
        graph.add("Const", id=f"unread{i}", value=i)
    current = plan(graph, toy_registry)
    optimized = optimize(graph, current, current.outputs, registry=toy_registry)
    plan(optimized.graph, toy_registry)  # valid
    assert not any(f"unread{i}" in optimized.graph for i in range(dead))
    assert len(optimized.graph) == len(set(current.keys[n] for n in graph if not n.startswith("unread"))) + \
        sum(1 for n in graph if graph.type_of(n) == "Show") - len({current.keys[n] for n in graph
                                                                   if graph.type_of(n) == "Show"})
    assert Executor(toy_registry).run(optimized.graph).outputs == Executor(toy_registry).run(graph).outputs


def chain(checkpoints: dict[str, str], picture: str, decode_between: bool) -> Graph:
    """image -> image -> image over three checkpoints; with `decode_between`, written the naive
    way (each stage decodes, the next encodes again), else passing latents."""
    g = Graph()
    image = g.add("LoadImage", id="init", path=picture).image
    for stage, name in enumerate(("base", "comic", "pixel")):
        load = g.add("LoadModel", id=f"load_{name}", model=checkpoints[name])
        latent = g.add("Img2Img", id=f"i2i_{name}", model=load.model, image=image, **sampler(strength=0.6)).latent
        image = g.add("Decode", id=f"dec_{name}", latent=latent, vae=load.vae).image if decode_between else latent
    if not decode_between:
        image = g.add("Decode", id="dec_pixel", latent=image, vae=Link("load_pixel", "vae")).image
    g.add("Save", id="save", image=image, prefix="chain")
    # dead and duplicate work for the passes to find
    g.add("Resize", id="unused", image=Link("init", "image"), width=32)
    g.add("LoadModel", id="load_base_again", model=checkpoints["base"])
    return g


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "init.png"
    noise = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(5)).mul(255).byte().numpy()
    Image.fromarray(noise).save(path)
    return str(path)


def test_the_passes_that_keep_the_mathematics_give_bit_identical_images(checkpoints, picture, tmp_path):
    graph = chain(checkpoints, picture, decode_between=True)
    plain = run(graph, tmp_path / "plain", optimize=False)
    optimised = run(graph, tmp_path / "optimised", disable=frozenset({"decode_encode"}))
    assert {r.pass_name for r in optimised.rewrites} >= {"dead_nodes", "share_models"}
    assert pixels(optimised, "save") == pixels(plain, "save")


def test_decode_encode_elimination_changes_a_little_on_purpose(checkpoints, picture, tmp_path):
    graph = chain(checkpoints, picture, decode_between=True)
    plain = run(graph, tmp_path / "plain", optimize=False)
    optimised = run(graph, tmp_path / "optimised")
    eliminated = [r for r in optimised.rewrites if r.pass_name == "decode_encode"]
    assert [r.nodes for r in eliminated] == [("dec_base", "i2i_comic"), ("dec_comic", "i2i_pixel")]
    assert all(r.changes_results for r in eliminated)
    assert "dec_base" not in optimised.executed and "dec_comic" not in optimised.executed
    assert pixels(optimised, "save") != pixels(plain, "save")


# ---- decode→encode: exactly the same-VAE pairs ---------------------------------------------------------


def test_decode_encode_takes_same_vae_pairs_only(checkpoints, tmp_path):
    g = Graph()
    base = g.add("LoadModel", id="base", model=checkpoints["base"])
    comic = g.add("LoadModel", id="comic", model=checkpoints["comic"])  # base's VAE
    own_vae = g.add("LoadModel", id="own_vae", model=checkpoints["own_vae"])
    sdxl = g.add("LoadModel", id="sdxl", model="builtin:tiny-sdxl")
    decoded = g.add("Decode", id="dec", latent=g.add("Text2Img", id="t2i", model=base.model, **sampler()).latent,
                    vae=base.vae).image
    for name, model in (("same", comic), ("other_vae", own_vae), ("other_space", sdxl)):
        g.add("Save", id=f"save_{name}", image=g.add("Decode", id=f"out_{name}", vae=model.vae, latent=g.add(
            "Img2Img", id=f"i2i_{name}", model=model.model, image=decoded, **sampler(strength=0.5)).latent).image)
    encoded = g.add("Encode", id="enc_same", image=decoded, vae=comic.vae).latent
    g.add("Save", id="save_enc", image=g.add("Decode", id="dec_again", latent=encoded, vae=comic.vae).image)
    encoded_other = g.add("Encode", id="enc_other", image=decoded, vae=own_vae.vae).latent
    g.add("Save", id="save_enc_other", image=g.add("Decode", id="dec_other", latent=encoded_other,
                                                   vae=own_vae.vae).image)
    g.add("Save", id="save_decoded", image=decoded)  # the image is also saved: the Decode stays
    current = plan(g)
    optimized = optimize(g, current, current.outputs)
    pairs = {r.nodes for r in optimized.rewrites if r.pass_name == "decode_encode"}
    assert pairs == {("dec", "i2i_same"), ("dec", "enc_same")}
    rewired = optimized.graph
    assert rewired.inputs_of("i2i_same")["image"] == Link("t2i", "latent")
    assert rewired.inputs_of("dec_again")["latent"] == Link("t2i", "latent")
    assert rewired.inputs_of("i2i_other_vae")["image"] == Link("dec", "image")
    assert "dec" in rewired and "enc_same" not in rewired
    plan(rewired)  # still valid
    result = Executor().run(g, options=RunOptions(device="cpu", output_dir=tmp_path))
    assert "enc_same" not in result.executed and result.outputs["save_enc"]["files"]


def test_decode_encode_can_be_switched_off(checkpoints, picture):
    graph = chain(checkpoints, picture, decode_between=True)
    current = plan(graph)
    for disabled in ({"decode_encode"}, {"dead_nodes", "merge", "share_models", "decode_encode"}):
        rewrites = optimize(graph, current, current.outputs, disabled=frozenset(disabled)).rewrites
        assert not [r for r in rewrites if r.pass_name in disabled]


# ---- sharing ----------------------------------------------------------------------------------------------


def test_checkpoints_that_share_components_hold_them_once_and_read_each_file_once(checkpoints, picture, tmp_path,
                                                                                   counted_loads):
    graph = chain(checkpoints, picture, decode_between=False)
    result = run(graph, tmp_path)
    identities = [key[0] for key in counted_loads]
    assert len(identities) == len(set(identities)) == 5  # 3 UNets, 1 VAE, 1 text encoder
    shared = [r for r in result.rewrites if r.pass_name == "share_models" and r.into is None]
    assert [(r.nodes, r.note.split(" of ")[0]) for r in shared] == [
        (("load_base", "load_comic", "load_pixel"), "text_encoder, vae")]


def test_nodes_naming_the_same_weights_by_other_paths_are_one_model(checkpoints, tmp_path):
    os.symlink(checkpoints["comic"], tmp_path / "link")
    g = Graph()
    first = g.add("LoadModel", id="first", model=checkpoints["comic"])
    second = g.add("LoadModel", id="second", model=str(tmp_path / "link"))
    for name, load in (("a", first), ("b", second)):
        g.add("Save", id=f"save_{name}", image=g.add("Decode", id=f"dec_{name}", vae=load.vae, latent=g.add(
            "Text2Img", id=f"t2i_{name}", model=load.model, **sampler()).latent).image)
    current = plan(g)
    optimized = optimize(g, current, current.outputs)
    [shared] = [r for r in optimized.rewrites if r.pass_name == "share_models" and r.into]
    assert shared.nodes == ("first", "second") and "second" not in optimized.graph
    assert "t2i_b" not in optimized.graph  # then the two samplers were one too
    merged = {r.nodes for r in optimized.rewrites if r.pass_name == "merge"}
    assert merged == {("t2i_a", "t2i_b"), ("dec_a", "dec_b")}


def test_merged_nodes_are_reported_under_the_users_ids_in_events_results_and_the_png(checkpoints, tmp_path):
    g = Graph()
    loads = [g.add("LoadModel", id=f"load_{i}", model=checkpoints["comic"]) for i in range(3)]
    latent = g.add("Text2Img", id="t2i", model=loads[0].model, **sampler()).latent
    for i in (1, 2):
        g.add("Save", id=f"save_{i}", image=g.add("Decode", id=f"dec_{i}", latent=latent, vae=loads[i].vae).image)
    events = []
    result = Executor().run(g, on_event=events.append, options=RunOptions(device="cpu", output_dir=tmp_path))
    merges = {r.nodes for r in result.rewrites if r.pass_name == "merge"}
    assert merges == {("load_0", "load_1", "load_2"), ("dec_1", "dec_2")}
    assert summary(result.rewrites, None).startswith("optimised: 3 duplicate node(s) merged")
    assert {e.node for e in events if e.kind == "node_cached"} == {"load_1", "load_2", "dec_2"} <= set(result.cached)
    [path] = result.outputs["save_2"]["files"]
    identities = json.loads(Image.open(path).text["nodegraph-identities"])
    assert identities["load_2"] == identities["load_0"] and "load_1" not in identities  # load_1 is not upstream


def test_the_same_weights_in_two_precisions_are_two_models_not_one_shared(checkpoints):
    g = Graph()
    for dtype in ("float32", "bfloat16"):
        load = g.add("LoadModel", id=f"load_{dtype}", model=checkpoints["comic"], dtype=dtype)
        g.add("Save", id=f"save_{dtype}", image=g.add("Decode", id=f"dec_{dtype}", vae=load.vae, latent=g.add(
            "Text2Img", id=f"t2i_{dtype}", model=load.model, **sampler()).latent).image)
    optimized = explain(g)
    assert not [r for r in optimized.rewrites if r.pass_name == "share_models"]
    assert optimized.schedule.peak_bytes <= optimized.schedule.all_loaded_bytes


def test_a_budget_smaller_than_a_model_is_named_in_explain_and_after_the_run(checkpoints, tmp_path, capsys):
    graph = one_model_graph(checkpoints)
    assert "warning: models take" in "\n".join(lines(graph, explain(graph, RunOptions(model_memory=1000))))
    path = str(fileformat.save(graph, tmp_path / "graph.json"))
    assert main(["run", path, "--out", str(tmp_path / "out"), "--model-memory", "1kB"]) == 0
    assert "more than the model-memory budget of 1.0 kB" in capsys.readouterr().err
    assert main(["explain", path, "--output", "nosuch"]) == 1  # a user error, not a bug
    assert "there is no node 'nosuch' to run" in capsys.readouterr().out


# ---- lifetimes and the budget ----------------------------------------------------------------------------


def unets_alive() -> set[str]:
    gc.collect()
    return {key[0] for key, module in weights.COMPONENTS._modules.items() if key[0].startswith("UNet")}


def test_in_a_three_checkpoint_chain_no_two_unets_are_resident_at_once(checkpoints, picture, tmp_path, counted_loads):
    graph = chain(checkpoints, picture, decode_between=False)
    resident_at_start: dict[str, set[str]] = {}

    def record(event):
        if event.kind == "node_start":
            resident_at_start[event.node] = unets_alive()

    Executor().run(graph, on_event=record, options=RunOptions(device="cpu", output_dir=tmp_path))
    assert max(len(unets) for unets in resident_at_start.values()) <= 1
    assert resident_at_start["dec_pixel"] == set()  # decoding needs the VAE alone
    assert len({key[0] for key in counted_loads if key[0].startswith("UNet")}) == 3
    assert unets_alive() == set()  # and nothing stays loaded after the run


def batch_graph(checkpoints: dict[str, str], folder: Path, seed: int) -> Graph:
    g = Graph()
    images = g.add("LoadImages", id="images", folder=str(folder))
    name = g.add("ItemName", id="name", image=images.image)
    pick = g.add("PickString", id="pick", options="\n".join(checkpoints[n] for n in ("base", "comic", "pixel")),
                 mode="random", seed=seed, vary_with=name.name)
    load = g.add("LoadModel", id="load", model=pick.value)
    latent = g.add("Img2Img", id="i2i", model=load.model, image=images.image, **sampler(strength=0.5)).latent
    g.add("Save", id="save", image=g.add("Decode", id="dec", latent=latent, vae=load.vae).image, prefix="b")
    return g


def test_a_batch_over_three_models_loads_each_once_when_only_one_fits(checkpoints, tmp_path, counted_loads):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (64, 64), (30 * i, 90, 200 - 20 * i)).save(folder / f"image{i}.png")
    one_model = sum(os.path.getsize(p) for p in Path(checkpoints["base"]).rglob("*.safetensors"))
    result = run(batch_graph(checkpoints, folder, seed=11), tmp_path / "out", model_memory=int(one_model * 1.3))
    assert len(result.outputs["save"]) == 8 and all(result.outputs["save"])
    unets = [key[0] for key in counted_loads if key[0].startswith("UNet")]
    assert len(unets) == len(set(unets)) == 3  # all three picked, each loaded once
    assert result.peak_model_bytes <= one_model * 1.3


@pytest.mark.parametrize("off", [{"optimize": False}, {"disable": frozenset({"lifetimes"})}])
def test_with_the_optimiser_off_models_still_load_late_and_go_after_their_last_use(checkpoints, picture, tmp_path,
                                                                                   off):
    graph = chain(checkpoints, picture, decode_between=False)
    resident_at_start: dict[str, set[str]] = {}

    def record(event):
        if event.kind == "node_start":
            resident_at_start[event.node] = unets_alive()

    result = Executor().run(graph, on_event=record, options=RunOptions(device="cpu", output_dir=tmp_path, **off))
    assert resident_at_start["dec_pixel"] == set() and unets_alive() == set()
    assert result.schedule is not None and result.model_loads >= 3 and result.peak_model_bytes > 0
    assert not result.rewrites if "optimize" in off else result.rewrites


def test_explain_shows_the_shared_components_the_order_and_the_memory(checkpoints, picture):
    graph = chain(checkpoints, picture, decode_between=True)
    text = "\n".join(lines(graph, explain(graph)))
    assert "share_models: text_encoder, vae of load_base, load_comic, load_pixel" in text
    assert "decode_encode: i2i_comic.image gets i2i_base.latent" in text
    assert "[loads load_comic.model" in text and "then releases load_base.model" in text
    assert "model memory: peak" in text and "every model loaded at once" in text


def one_model_graph(checkpoints: dict[str, str]) -> Graph:
    g = Graph()
    load = g.add("LoadModel", id="load", model=checkpoints["base"])
    t2i = g.add("Text2Img", id="t2i", model=load.model, height=64, width=64, **sampler())
    g.add("Save", id="save", image=g.add("Decode", id="dec", latent=t2i.latent, vae=load.vae).image)
    return g


def test_an_incremental_rerun_is_planned_and_releases_its_models_too(checkpoints, tmp_path):
    g, executor = one_model_graph(checkpoints), Executor()
    executor.run(g, options=RunOptions(device="cpu", output_dir=tmp_path))
    g.set_input("t2i", "seed", 1)
    again = executor.run(g, options=RunOptions(device="cpu", output_dir=tmp_path))
    assert again.schedule is not None and again.model_loads >= 1 and unets_alive() == set()


def test_an_executor_that_keeps_models_loads_each_once_across_runs(checkpoints, tmp_path, counted_loads):
    g = one_model_graph(checkpoints)
    executor, options = Executor(keep_models=True), RunOptions(device="cpu", output_dir=tmp_path)
    first = executor.run(g, options=options)
    g.set_input("t2i", "seed", 1)
    second = executor.run(g, options=options)
    assert first.model_loads >= 1 and second.model_loads == 0 and "t2i" in second.executed
    assert any(key[0].startswith("UNet") for key in counted_loads) and unets_alive()  # still loaded
    reads = len(counted_loads)
    executor.release_models()
    assert unets_alive() == set()
    g.set_input("t2i", "seed", 2)
    assert executor.run(g, options=options).model_loads >= 1 and len(counted_loads) > reads


def test_an_executor_that_keeps_models_gives_a_later_run_the_models_it_picked_before(checkpoints, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 90, 200)).save(folder / f"image{i}.png")
    g, executor = batch_graph(checkpoints, folder, seed=11), Executor(keep_models=True)
    first = executor.run(g, options=RunOptions(device="cpu", output_dir=tmp_path / "first"))
    kept = executor.warm_models.resident()
    g.set_input("i2i", "seed", 1)  # new images, from the same picks
    second = executor.run(g, options=RunOptions(device="cpu", output_dir=tmp_path / "second"))
    assert first.model_loads >= 2 and second.model_loads == 0  # the picked models, made once for both runs
    assert {id(r) for r in executor.warm_models.resident()} == {id(r) for r in kept}
    executor.release_models()
