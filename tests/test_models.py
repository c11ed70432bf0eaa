"""LoadModel, the model and VAE handles, Encode/Decode and `--tiny`, on the tiny builtins.

Graphs end in a Probe output node (in a private registry) that hands back what it gets.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph import fileformat
from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.executor import Executor
from nodegraph.graph import Graph
from nodegraph.node import Input
from nodegraph.registry import Registry
from nodegraph.registry import registry as builtin_registry
from nodegraph.validation import validate
from nodes import handles, models
from nodes.spaces import FAMILIES, IMG2IMG, INPAINT, KANDINSKY22, LATENT_UPSCALE, SD, SDXL, TEXT2IMG, UPSCALE, \
    X4_UPSCALER
from nodes.tiny_models import BUILTIN_FAMILIES, BUILTIN_NAMES, builtin_identity, builtin_path
from nodes.weights import component_identity

SIZE, STEPS = 64, 2

registry = Registry()
for definition in builtin_registry:
    registry.add(definition)


@registry.node("Probe", output_node=True,
               inputs={"value": Input(T.IMAGE | T.LATENT | T.MODEL | T.VAE, "Anything to hand back")})
def probe(value):
    return value


def run(graph: Graph, *probes: str) -> list:
    result = Executor(registry).run(graph)
    return [result.outputs[p] for p in probes]


def problems(graph: Graph) -> list:
    return [p for p in validate(graph, registry).problems if p.code != "graph.no_outputs"]


def output_types(graph: Graph, node_id: str) -> dict:
    return validate(graph, registry).output_types[node_id]


def handle(model: str = "builtin:tiny-sd", **options) -> handles.ModelHandle:
    family, sources, load_now = models.locate(model, options.get("allow_pickle", False))
    return handles.ModelHandle(family, sources, handles.LoadOptions(**options), load_now=load_now)


def latents_of(model: handles.ModelHandle, seed: int = 0) -> torch.Tensor:
    pipeline = model.pipeline(TEXT2IMG)
    return pipeline("a cat", num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="latent",
                    generator=torch.Generator("cpu").manual_seed(seed)).images


# ---- family and space, from config files alone --------------------------------------------


def copy_configs(source: Path, target: Path) -> Path:
    """The folder's JSON files without a single weight file."""
    for config in source.rglob("*.json"):
        destination = target / config.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(config, destination)
    return target


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_family_and_space_come_from_config_files_without_weights(name, tmp_path):
    configs_only = copy_configs(builtin_path(name), tmp_path / name)
    assert not list(configs_only.rglob("*.safetensors"))
    family = BUILTIN_FAMILIES[name]
    assert models.detect_family(str(configs_only)) == family
    g = Graph()
    load = g.add("LoadModel", id="load", model=str(configs_only))
    g.add("Probe", value=load.model)
    assert problems(g) == []
    assert output_types(g, "load") == {"model": FAMILIES[family], "vae": T.Vae(FAMILIES[family].space)}


def test_builtin_types_are_known_without_building_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NODEGRAPH_CACHE", str(tmp_path))  # an empty cache: nothing built
    g = Graph()
    g.add("LoadModel", id="load", model="builtin:tiny-kandinsky22")
    assert output_types(g, "load")["model"] == FAMILIES["kandinsky22"]
    assert models.fingerprint("builtin:tiny-kandinsky22") == f"builtin:{builtin_identity('tiny-kandinsky22')}"
    assert not any(tmp_path.iterdir())


def test_validating_a_graph_of_models_imports_no_torch():
    script = (
        "import sys, nodes\n"
        "from nodegraph.graph import Graph\n"
        "from nodegraph.validation import validate\n"
        "g = Graph()\n"
        "for model in ('builtin:tiny-sd', 'runwayml/stable-diffusion-v1-5', 'builtin:tiny-kandinsky22'):\n"
        "    load = g.add('LoadModel', model=model)\n"
        "    g.add('Decode', latent=g.add('Encode', image=g.add('LoadImage', path='x.png').image, "
        "vae=load.vae).latent, vae=load.vae)\n"
        "checked = validate(g)\n"
        "assert all(p.code in ('graph.no_outputs', 'image.not_found', 'file.not_found') "
        "for p in checked.problems), checked.problems\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == "[]"


def fake_checkpoint(path: Path, shapes: dict[str, list[int]]) -> Path:
    """A .safetensors file whose header promises tensors its (missing) data does not hold."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * torch.Size(shape).numel()
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text)  # no data: reading weights would fail
    return path


CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
CLIP_L = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"


@pytest.mark.parametrize("family, shapes", [
    ("sd", {CONV_IN: [320, 4, 3, 3], "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768]}),
    ("sd-inpaint", {CONV_IN: [320, 9, 3, 3]}),
    ("sdxl", {CONV_IN: [320, 4, 3, 3], CLIP_L: [49408, 768],
              "conditioner.embedders.1.model.token_embedding.weight": [49408, 1280]}),
    ("sdxl-refiner", {CONV_IN: [384, 4, 3, 3], "conditioner.embedders.0.model.token_embedding.weight": [49408, 1280]}),
    ("sdxl-inpaint", {CONV_IN: [320, 9, 3, 3], CLIP_L: [49408, 768],
                      "conditioner.embedders.1.model.token_embedding.weight": [49408, 1280]}),
    ("x4-upscaler", {CONV_IN: [256, 7, 3, 3]}),
])
def test_a_checkpoints_family_comes_from_its_header(family, shapes, tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model.safetensors", shapes)
    assert models.detect_family(str(checkpoint)) == family


def test_a_checkpoint_diffusers_cannot_configure_offline_fails_on_the_model_input(tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "sd15.safetensors"
    save_file({CONV_IN: torch.zeros(8, 4, 3, 3)}, checkpoint)
    model = handle(str(checkpoint))  # handles load their weights when first used
    with pytest.raises(InputError) as error:
        model.load()
    assert (error.value.input, error.value.code) == ("model", "model.load_failed")
    assert "network" in error.value.hint


def test_a_checkpoint_of_another_kind_is_reported(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "lora.safetensors", {"lora_unet_down.alpha": [1]})
    g = Graph()
    g.add("LoadModel", id="load", model=str(checkpoint))
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == ("load", "model", "model.unrecognized")


# ---- bad models are reported against the node and its `model` input -----------------------


@pytest.mark.parametrize("model, hint", [
    ("/no/such/folder", "builtin:NAME"),
    ("./models/missing.safetensors", "builtin:NAME"),
    ("nobody-knows/this-model-xyz", "--tiny"),
    ("builtin:tiny-nothing", "builtin:tiny-sd"),
])
def test_a_missing_model_is_a_validation_error_on_the_model_input(model, hint):
    g = Graph()
    g.add("LoadModel", id="load", model=model)
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == ("load", "model", "model.not_found")
    assert hint in problem.hint


def test_a_pickle_checkpoint_is_refused_unless_allowed(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"not even a pickle")
    g = Graph()
    g.add("LoadModel", id="load", model=str(checkpoint))
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == ("load", "model", "model.pickle_refused")
    g.set_input("load", "allow_pickle", True)
    assert problems(g) == []
    assert output_types(g, "load")["model"] == T.MODEL  # its family shows only when it is unpickled


def test_a_folder_with_pickle_weights_is_refused_unless_allowed(tmp_path):
    from safetensors.torch import load_file

    folder = shutil.copytree(builtin_path("tiny-sd"), tmp_path / "pickled")
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(unet), unet.with_suffix(".bin"))
    unet.unlink()
    g = Graph()
    load = g.add("LoadModel", id="load", model=str(folder))
    g.add("Probe", id="probe", value=load.model)
    [problem] = problems(g)
    assert (problem.input, problem.code) == ("model", "model.pickle_refused")
    g.set_input("load", "allow_pickle", True)
    [model] = run(g, "probe")
    assert model.family == "sd" and model.pipeline(TEXT2IMG).unet.config.in_channels == 4


# ---- --tiny ---------------------------------------------------------------------------------

SEED_MODELS = {
    "runwayml/stable-diffusion-v1-5": "tiny-sd",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "tiny-sd",
    "stabilityai/stable-diffusion-2": "tiny-sd",
    "ogkalu/Comic-Diffusion": "tiny-sd",
    "kohbanye/pixel-art-style": "tiny-sd",
    "runwayml/stable-diffusion-inpainting": "tiny-sd-inpaint",
    "stabilityai/stable-diffusion-2-inpainting": "tiny-sd-inpaint",
    "stabilityai/stable-diffusion-xl-base-1.0": "tiny-sdxl",
    "stabilityai/stable-diffusion-xl-refiner-1.0": "tiny-sdxl-refiner",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": "tiny-sdxl",
    "kandinsky-community/kandinsky-2-2-decoder": "tiny-kandinsky22",
    "kandinsky-community/kandinsky-2-2-prior": "tiny-kandinsky22",
    "kandinsky-community/kandinsky-2-2-decoder-inpaint": "tiny-kandinsky22",
    "stabilityai/sd-x2-latent-upscaler": "tiny-latent-upscaler",
    "stabilityai/stable-diffusion-x4-upscaler": "tiny-x4-upscaler",
}


def test_tiny_swaps_every_seed_model_for_the_builtin_of_its_family():
    g = Graph()
    for i, model in enumerate(SEED_MODELS):
        g.add("LoadModel", id=f"load{i}", model=model)
    written = fileformat.dumps(g)
    tiny_graph, done = builtin_registry.apply_rewrite("tiny", g)
    notes = [r.note for r in done]
    for i, (model, tiny) in enumerate(SEED_MODELS.items()):
        assert tiny_graph.inputs_of(f"load{i}")["model"] == f"builtin:{tiny}"
        assert f"load{i}: {model} -> builtin:{tiny}" in notes
    assert problems(tiny_graph) == []
    assert fileformat.dumps(g) == written  # the user's graph is not rewritten in place


@pytest.mark.parametrize("model, tiny", [
    ("someone/juggernautXL-v9", "tiny-sdxl"),
    ("someone/my-sdxl-refiner", "tiny-sdxl-refiner"),
    ("someone/anime-inpainting", "tiny-sd-inpaint"),
    ("someone/kandinsky-2-2-finetune", "tiny-kandinsky22"),
    ("someone/pixel-diffusion", "tiny-sd"),
])
def test_tiny_guesses_the_family_of_unknown_hub_models_from_their_names(model, tiny):
    assert models.stand_in(model) == f"builtin:{tiny}"


def test_tiny_rewrites_the_model_list_a_load_is_linked_to():
    g = Graph()
    models_list = "runwayml/stable-diffusion-v1-5\nogkalu/Comic-Diffusion\n"
    prompts = "Van Gogh painting\nin the style of picasso"
    pick = g.add("PickString", id="pick", options=models_list, mode="random", seed=1)
    g.add("PickString", id="prompt", options=prompts, mode="random", seed=1)
    g.add("LoadModel", id="load", model=pick.value)
    g, done = builtin_registry.apply_rewrite("tiny", g)
    assert g.inputs_of("pick")["options"] == "builtin:tiny-sd\nbuiltin:tiny-sd\n"
    assert g.inputs_of("prompt")["options"] == prompts
    assert [(r.pass_name, r.nodes, r.note) for r in done] == [
        ("tiny", ("pick",), "pick.options: runwayml/stable-diffusion-v1-5 -> builtin:tiny-sd"),
        ("tiny", ("pick",), "pick.options: ogkalu/Comic-Diffusion -> builtin:tiny-sd")]


# ---- loading: sharing, options, release ------------------------------------------------------


def test_loads_share_identical_components_and_keep_their_own():
    g = Graph()
    for name in ("tiny-sd", "tiny-latent-upscaler", "tiny-sdxl", "tiny-sdxl-refiner"):
        g.add("Probe", id=name, value=g.add("LoadModel", model=f"builtin:{name}").model)
    sd, upscaler, sdxl, refiner = run(g, "tiny-sd", "tiny-latent-upscaler", "tiny-sdxl", "tiny-sdxl-refiner")
    sd_pipeline, upscaler_pipeline = sd.pipeline(TEXT2IMG), upscaler.pipeline(LATENT_UPSCALE)
    assert sd_pipeline.vae is upscaler_pipeline.vae
    assert sd_pipeline.text_encoder is upscaler_pipeline.text_encoder
    assert sd_pipeline.unet is not upscaler_pipeline.unet
    assert sd.vae.identity == upscaler.vae.identity != sdxl.vae.identity
    assert sdxl.pipeline(TEXT2IMG).vae is refiner.pipeline(IMG2IMG).vae
    assert sdxl.pipeline(TEXT2IMG).text_encoder_2 is refiner.pipeline(IMG2IMG).text_encoder_2


def test_component_identity_is_the_weights_content_not_their_place(tmp_path):
    vae = builtin_path("tiny-sd") / "vae"
    copy = shutil.copytree(vae, tmp_path / "vae")
    assert component_identity(copy) == component_identity(vae)
    weights = copy / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    weights.write_bytes(bytes(data))
    assert component_identity(copy) != component_identity(vae)


def test_pipelines_for_each_task_share_the_models_modules():
    sd = handle()
    text2img, img2img, inpaint = (sd.pipeline(task) for task in (TEXT2IMG, IMG2IMG, INPAINT))
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    assert text2img.unet is img2img.unet is inpaint.unet
    assert text2img.scheduler is not img2img.scheduler  # schedulers keep state: one each
    assert sd.pipeline(TEXT2IMG) is text2img


def test_kandinsky_runs_as_prior_plus_decoders_sharing_one_movq():
    kandinsky = handle("builtin:tiny-kandinsky22")
    text2img, inpaint = kandinsky.pipeline(TEXT2IMG), kandinsky.pipeline(INPAINT)
    assert type(inpaint).__name__ == "KandinskyV22InpaintCombinedPipeline"
    assert inpaint.movq is text2img.movq is kandinsky.vae_module()
    assert inpaint.unet.config.in_channels == 9 and text2img.unet.config.in_channels == 4
    assert inpaint.prior_prior is text2img.prior_prior


def test_a_lone_kandinsky_decoder_takes_the_prior_and_other_decoder_from_the_hub(tmp_path):
    folder = shutil.copytree(builtin_path("tiny-kandinsky22") / "decoder-inpaint", tmp_path / "inpaint")
    family, sources, load_now = models.locate(str(folder), allow_pickle=False)
    assert family == "kandinsky22" and load_now == ("prior", "decoder-inpaint")
    assert sources == {"prior": "kandinsky-community/kandinsky-2-2-prior",
                       "decoder": "kandinsky-community/kandinsky-2-2-decoder", "decoder-inpaint": str(folder)}
    with pytest.raises(InputError) as error:  # offline, and the prior is not in the cache
        handles.ModelHandle(family, sources, load_now=load_now)
    assert (error.value.input, error.value.code) == ("model", "model.not_found")
    assert "kandinsky-community/kandinsky-2-2-prior" in str(error.value)


@pytest.mark.parametrize("removed, copy", [("runwayml/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                                           ("runwayml/stable-diffusion-inpainting",
                                            "stable-diffusion-v1-5/stable-diffusion-inpainting")])
def test_a_hub_id_taken_down_is_answered_with_the_id_of_its_copy(removed, copy):
    from nodes import parts

    with pytest.raises(InputError) as error:  # offline, and not in the cache
        parts.local_folder(removed, allow_pickle=False)
    assert error.value.code == "model.not_found" and f"the same weights are at {copy}" in error.value.hint
    assert "stacktrace" not in str(error.value)


def test_a_task_the_family_cannot_do_is_an_input_error():
    with pytest.raises(InputError) as error:
        handle("builtin:tiny-sd-inpaint").pipeline(TEXT2IMG)
    assert error.value.input == "model" and error.value.code == "model.wrong_task"


def test_the_chosen_scheduler_drives_the_pipeline():
    default, euler = handle(), handle(scheduler="Euler")
    assert type(euler.pipeline(TEXT2IMG).scheduler).__name__ == "EulerDiscreteScheduler"
    assert type(handle(scheduler="UniPC").pipeline(TEXT2IMG).scheduler).__name__ == "UniPCMultistepScheduler"
    # built from the model's own config
    assert euler.pipeline(TEXT2IMG).scheduler.config.beta_schedule == "scaled_linear"
    assert torch.equal(latents_of(default), latents_of(handle()))
    assert not torch.equal(latents_of(default), latents_of(euler))


@pytest.mark.parametrize("model, scheduler", [("builtin:tiny-latent-upscaler", "DDIM"),
                                              ("builtin:tiny-kandinsky22", "UniPC")])
def test_a_scheduler_the_pipeline_cannot_use_is_ignored_with_a_note(model, scheduler, caplog):
    with caplog.at_level(logging.WARNING, logger="nodes.handles"):
        loaded = handle(model, scheduler=scheduler)
    assert loaded.scheduler == "default"
    assert f"scheduler {scheduler} ignored" in caplog.text


def test_lms_needs_scipy():
    import importlib.util

    if importlib.util.find_spec("scipy") is None:
        with pytest.raises(InputError) as error:
            handle(scheduler="LMS")
        assert error.value.input == "scheduler" and "scipy" in error.value.hint
        g = Graph()
        g.add("LoadModel", id="load", model="builtin:tiny-sd", scheduler="LMS")
        [problem] = problems(g)
        assert (problem.node, problem.input, problem.code) == ("load", "scheduler", "scheduler.unavailable")
    else:
        assert type(handle(scheduler="LMS").pipeline(TEXT2IMG).scheduler).__name__ == "LMSDiscreteScheduler"


def test_options_that_need_a_gpu_are_ignored_on_the_cpu_with_a_note(caplog):
    with caplog.at_level(logging.WARNING, logger="nodes.handles"):
        loaded = handle(cpu_offload=True, attention="xformers")
    assert "cpu_offload ignored" in caplog.text and "xformers attention ignored" in caplog.text
    assert loaded.attention == "sdpa" and not loaded.offloaded
    assert torch.equal(latents_of(loaded), latents_of(handle()))


def test_sliced_attention_applies_to_shared_modules_only_while_its_model_runs():
    sliced, plain = handle(attention="sliced"), handle()
    unet = sliced.pipeline(TEXT2IMG).unet
    assert unet is plain.pipeline(TEXT2IMG).unet
    sliced_latents = latents_of(sliced)
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    plain_latents = latents_of(plain)
    assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert torch.allclose(sliced_latents, plain_latents, atol=1e-4)


def test_vae_tiling_and_slicing_are_set_on_the_vae():
    tiled = handle(vae_tiling=True, vae_slicing=True)
    vae = tiled.pipeline(TEXT2IMG).vae
    assert vae.use_tiling and vae.use_slicing
    handle().pipeline(TEXT2IMG)  # shares the VAE, without the options
    assert not vae.use_tiling and not vae.use_slicing


def test_dtype_is_explicit_and_modules_of_another_dtype_are_not_shared():
    half, full = handle(dtype="bfloat16"), handle()
    assert half.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert half.pipeline(TEXT2IMG).unet.dtype == torch.bfloat16
    assert half.vae_module() is not full.vae_module()
    image = half.vae.decode(half.vae.encode(torch.rand(1, 3, SIZE, SIZE)))
    assert image.dtype == torch.float32


def test_release_frees_weights_and_the_handle_loads_them_again():
    upscaler = handle("builtin:tiny-x4-upscaler", dtype="bfloat16")  # held by no other test
    unet = weakref.ref(upscaler.pipeline(UPSCALE).unet)
    upscaler.unload()
    gc.collect()
    assert unet() is None
    assert upscaler.pipeline(UPSCALE).unet.dtype == torch.bfloat16


def test_fingerprint_follows_weight_contents_and_configs_not_places_or_times(tmp_path):
    folder = shutil.copytree(builtin_path("tiny-sd"), tmp_path / "model")
    before = models.fingerprint(str(folder))
    assert before == models.fingerprint(str(builtin_path("tiny-sd")))  # the same weights elsewhere
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    assert models.fingerprint(str(folder)) == before  # touched, not changed
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    changed = models.fingerprint(str(folder))
    assert changed != before
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace("scaled_linear", "linear"))
    assert models.fingerprint(str(folder)) != changed
    assert str(tmp_path) not in changed and "scaled_linear" not in changed  # a digest: no path, no contents


# ---- Encode and Decode ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("images") / "noise.png"
    pixels = torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(7)).mul(255).byte().numpy()
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


@pytest.mark.parametrize("name, space, latent_side", [
    ("tiny-sd", SD, SIZE // 8),
    ("tiny-sdxl", SDXL, SIZE // 8),
    ("tiny-kandinsky22", KANDINSKY22, SIZE // 8),
    ("tiny-x4-upscaler", X4_UPSCALER, SIZE // 4),
])
def test_encode_then_decode_gives_latents_of_the_vaes_space_and_images_of_the_same_size(
        name, space, latent_side, picture):
    g = Graph()
    load = g.add("LoadModel", model=f"builtin:{name}")
    encode = g.add("Encode", id="encode", image=g.add("LoadImage", path=picture).image, vae=load.vae)
    g.add("Probe", id="latent", value=encode.latent)
    g.add("Probe", id="image", value=g.add("Decode", latent=encode.latent, vae=load.vae).image)
    assert output_types(g, "encode") == {"latent": T.Latent(space)}
    latent, image = run(g, "latent", "image")
    assert tuple(latent.shape) == (1, space.channels, latent_side, latent_side) and latent.dtype == torch.float32
    assert tuple(image.shape) == (1, 3, SIZE, SIZE) and 0 <= image.min() and image.max() <= 1


def test_encode_gives_the_latents_img2img_starts_from():
    sd = handle()
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    latent = sd.vae.encode(image)
    vae = sd.vae_module()
    with torch.no_grad():
        expected = vae.encode(image * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    assert torch.equal(latent, expected)
    assert not torch.equal(sd.vae.encode(image, seed=0), latent)  # a seed samples the distribution
    assert torch.equal(sd.vae.encode(image, seed=0), sd.vae.encode(image, seed=0))


def test_decode_refuses_a_latent_of_another_space_before_anything_runs():
    g = Graph()
    sd, kandinsky = g.add("LoadModel", model="builtin:tiny-sd"), g.add("LoadModel", model="builtin:tiny-kandinsky22")
    t2i = g.add("Text2Img", model=sd.model, prompt="x", num_inference_steps=STEPS, height=SIZE, width=SIZE)
    g.add("Probe", value=g.add("Decode", id="decode", latent=t2i.latent, vae=kandinsky.vae).image)
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == ("decode", "latent", "type.mismatch")
    assert "LATENT[kandinsky22]" in problem.message and "LATENT[sd]" in problem.message


def test_bad_tensors_are_input_errors():
    sd = handle()
    with pytest.raises(InputError) as error:
        sd.vae.encode(torch.rand(1, 3, 60, 64))
    assert error.value.input == "image" and "multiples of 8" in str(error.value)
    with pytest.raises(InputError) as error:
        sd.vae.decode(torch.rand(1, 3, 8, 8))
    assert error.value.input == "latent"
