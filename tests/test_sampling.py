"""Samplers and upscalers on the tiny builtins: shapes, spaces, seeds, masks, progress and interrupts.

Real diffusers pipelines, 64x64 images, 2 steps. The graphs end in a Probe output node
(registered in a private registry) that hands back whatever it is given.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph import types as T
from nodegraph.errors import Interrupted, NodeExecutionError
from nodegraph.executor import Executor
from nodegraph.graph import Graph
from nodegraph.node import Input
from nodegraph.registry import Registry
from nodegraph.registry import registry as builtin_registry
from nodegraph.validation import validate
from nodes.spaces import FAMILIES, KANDINSKY22, SD, SDXL, TINY_BUILTINS

SIZE, STEPS = 64, 2
LATENT_SIDE = SIZE // 8

registry = Registry()
for definition in builtin_registry:
    registry.add(definition)


@registry.node("Probe", output_node=True,
               inputs={"value": Input(T.IMAGE | T.LATENT | T.MODEL, "Anything to hand back")})
def probe(value):
    return value


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 64x64 noise PNG: structure for the VAEs to encode."""
    path = tmp_path_factory.mktemp("images") / "noise.png"
    pixels = torch.rand(SIZE, SIZE, 3, generator=torch.Generator().manual_seed(7)).mul(255).byte().numpy()
    Image.fromarray(pixels, "RGB").save(path)
    return str(path)


def square_mask_png(path, size: int = SIZE) -> str:
    """White (repaint) in the middle half, black (keep) around it."""
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    mask.save(path)
    return str(path)


def load(g: Graph, family: str):
    return g.add("LoadModel", model=f"builtin:{TINY_BUILTINS[family]}")


def sampler_options(**overrides) -> dict:
    return {"prompt": "a red fox in the snow", "num_inference_steps": STEPS, "seed": 0, **overrides}


def run(g: Graph, probe_id: str, **run_options):
    """Run the graph in a fresh executor (no cached results) and return what the probe was given."""
    return Executor(registry).run(g, **run_options).outputs[probe_id]


def probed(g: Graph, link) -> str:
    return g.add("Probe", value=link).id


def output_type(g: Graph, node_id: str, output: str) -> T.Type:
    checked = validate(g, registry)
    assert not checked.problems, checked.problems
    return checked.output_types[node_id][output]


def problems(g: Graph) -> list:
    return validate(g, registry).problems


# ---- Text2Img ------------------------------------------------------------------------------


@pytest.mark.parametrize("family, space", [("sd", SD), ("sdxl", SDXL), ("kandinsky22", KANDINSKY22)])
def test_text2img_makes_a_latent_in_the_models_space(family, space):
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, family).model, height=SIZE, width=SIZE, **sampler_options())
    probe_id = probed(g, t2i.latent)
    assert output_type(g, t2i.id, "latent") == T.Latent(space)
    latent = run(g, probe_id)
    assert latent.shape == (1, space.channels, LATENT_SIDE, LATENT_SIDE)
    assert latent.dtype == torch.float32 and latent.device.type == "cpu" and latent.isfinite().all()


def test_text2img_defaults_to_the_models_native_size_and_makes_a_batch():
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "sd").model, num_images_per_prompt=2, **sampler_options())
    latent = run(g, probed(g, t2i.latent))
    assert latent.shape == (2, 4, LATENT_SIDE, LATENT_SIDE)  # the tiny SD's native size is 64x64
    assert not torch.equal(latent[0], latent[1])


def text2img_graph(seed: int) -> tuple[Graph, str]:
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "sd").model, **sampler_options(seed=seed))
    return g, probed(g, t2i.latent)


def test_same_seed_gives_identical_latents_and_another_seed_does_not():
    first, second, other = (run(*text2img_graph(seed)) for seed in (1, 1, 2))
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


# ---- Img2Img -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["sd", "sdxl", "sdxl-refiner", "kandinsky22"])
def test_img2img_from_an_image_makes_a_latent_of_the_same_size(family, picture):
    g = Graph()
    image = g.add("LoadImage", path=picture).image
    i2i = g.add("Img2Img", model=load(g, family).model, image=image, strength=0.5, **sampler_options())
    probe_id = probed(g, i2i.latent)
    assert output_type(g, i2i.id, "latent") == T.Latent(FAMILIES[family].space)
    assert run(g, probe_id).shape == (1, 4, LATENT_SIDE, LATENT_SIDE)


@pytest.mark.parametrize("base, refiner", [("sd", "sd"), ("sdxl", "sdxl-refiner")])
def test_img2img_from_a_latent_has_the_type_and_shape_of_img2img_from_an_image(base, refiner, picture):
    g = Graph()
    model = load(g, refiner).model
    latent = g.add("Text2Img", model=load(g, base).model, **sampler_options()).latent
    from_latent = g.add("Img2Img", model=model, image=latent, **sampler_options(strength=0.5))
    from_image = g.add("Img2Img", model=model, image=g.add("LoadImage", path=picture).image,
                       **sampler_options(strength=0.5))
    from_latent_id, from_image_id = probed(g, from_latent.latent), probed(g, from_image.latent)
    assert output_type(g, from_latent.id, "latent") == output_type(g, from_image.id, "latent")
    outputs = Executor(registry).run(g).outputs
    assert outputs[from_latent_id].shape == outputs[from_image_id].shape == (1, 4, LATENT_SIDE, LATENT_SIDE)


def test_img2img_hands_a_latent_to_diffusers_as_it_is():
    g = Graph()
    model = load(g, "sd").model
    latent = g.add("Text2Img", model=model, **sampler_options()).latent
    i2i = g.add("Img2Img", model=model, image=latent, **sampler_options(strength=0.5, seed=3))
    probes = [probed(g, model), probed(g, latent), probed(g, i2i.latent)]
    handle, start, result = map(Executor(registry).run(g).outputs.get, probes)
    expected = handle.pipeline("img2img")(
        prompt=sampler_options()["prompt"], image=start, strength=0.5, num_inference_steps=STEPS,
        generator=torch.Generator("cpu").manual_seed(3), output_type="latent").images
    assert torch.equal(result, expected)


def test_kandinsky_img2img_takes_images_only():
    g = Graph()
    latent = g.add("Text2Img", model=load(g, "kandinsky22").model, **sampler_options()).latent
    i2i = g.add("Img2Img", model=load(g, "kandinsky22").model, image=latent, **sampler_options())
    probed(g, i2i.latent)
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == (i2i.id, "image", "type.mismatch")
    assert "Decode" in problem.hint


def test_a_model_that_cannot_do_the_task_is_a_type_error():
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "sd-inpaint").model, **sampler_options())
    probed(g, t2i.latent)
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == (t2i.id, "model", "type.mismatch")


def test_literal_values_are_checked_at_validation():
    g = Graph()
    sd, kandinsky = load(g, "sd").model, load(g, "kandinsky22").model
    latent = g.add("Text2Img", model=sd, **sampler_options()).latent
    expected = {
        g.add("Text2Img", model=sd, height=60, **sampler_options()).id: ("height", "value.not_multiple"),
        g.add("Text2Img", model=kandinsky, width=96, **sampler_options()).id: ("width", "value.not_multiple"),
        g.add("Img2Img", model=sd, image=latent, **sampler_options(strength=0.2)).id: ("strength", "value.no_steps"),
    }
    assert {p.node: (p.input, p.code) for p in problems(g)} == expected


# ---- Inpaint -------------------------------------------------------------------------------


def inpaint_graph(family: str, picture: str, mask_path: str, from_latent: bool = False, **options):
    """LoadImage (-> Encode) -> Inpaint -> Probe; returns the graph, the Inpaint node and the probe."""
    g = Graph()
    image = g.add("LoadImage", path=picture).image
    if from_latent:
        image = g.add("Encode", image=image, vae=load(g, family).vae).latent
    mask = g.add("LoadMask", path=mask_path).mask
    inpaint = g.add("Inpaint", model=load(g, family).model, image=image, mask_image=mask, **sampler_options(**options))
    return g, inpaint, probed(g, inpaint.latent)


@pytest.mark.parametrize("family", ["sd", "sd-inpaint", "sdxl", "sdxl-refiner", "kandinsky22"])
def test_inpaint_makes_a_latent_of_the_images_size(family, picture, tmp_path):
    g, inpaint, probe_id = inpaint_graph(family, picture, square_mask_png(tmp_path / "mask.png"))
    assert output_type(g, inpaint.id, "latent") == T.Latent(FAMILIES[family].space)
    assert run(g, probe_id).shape == (1, 4, LATENT_SIDE, LATENT_SIDE)


def test_inpaint_height_and_width_resize_the_image_and_its_mask(picture, tmp_path):
    g, _, probe_id = inpaint_graph("sd", picture, square_mask_png(tmp_path / "mask.png"), height=32, width=48)
    assert run(g, probe_id).shape == (1, 4, 32 // 8, 48 // 8)


def kept_area() -> torch.Tensor:
    """The latent cells outside square_mask_png's white square."""
    keep = torch.ones(LATENT_SIDE, LATENT_SIDE, dtype=torch.bool)
    quarter = LATENT_SIDE // 4
    keep[quarter:-quarter, quarter:-quarter] = False
    return keep


@pytest.mark.parametrize("family", ["sd", "sd-inpaint"])  # a 4-channel and a 9-channel inpainting UNet
def test_inpaint_takes_a_latent_of_the_models_space(family, picture, tmp_path):
    g, inpaint, probe_id = inpaint_graph(family, picture, square_mask_png(tmp_path / "mask.png"), from_latent=True)
    encoded_id = probed(g, g.inputs_of(inpaint.id)["image"])
    outputs = Executor(registry).run(g).outputs
    latent, encoded = outputs[probe_id], outputs[encoded_id]
    assert latent.shape == (1, 4, LATENT_SIDE, LATENT_SIDE)
    repainted = (latent - encoded).abs().amax(dim=1)[0] > 1e-4
    assert repainted[~kept_area()].all()
    if family == "sd":  # the 4-channel pipeline pastes the image's latents back outside the mask
        assert not repainted[kept_area()].any()


def test_a_9_channel_inpaint_decodes_a_latent_once_for_its_masked_image_and_kept_pixels(picture, tmp_path,
                                                                                       monkeypatch):
    from diffusers import AutoencoderKL

    g, _, probe_id = inpaint_graph("sd-inpaint", picture, square_mask_png(tmp_path / "mask.png"), from_latent=True)
    decodes = []
    real_decode = AutoencoderKL.decode
    monkeypatch.setattr(AutoencoderKL, "decode", lambda self, *a, **k: decodes.append(1) or real_decode(self, *a, **k))
    latent = run(g, probe_id)
    assert len(decodes) == 1
    pixels, mask = latent.nodegraph_kept_pixels  # what the Decode puts back outside the mask
    assert pixels.shape == (1, 3, SIZE, SIZE) and mask.shape == (1, 1, SIZE, SIZE)


def test_kandinsky_inpaint_repaints_where_the_mask_is_white(picture, tmp_path):
    g, _, probe_id = inpaint_graph("kandinsky22", picture, square_mask_png(tmp_path / "mask.png"))
    encoded_id = probed(g, g.add("Encode", image=g.add("LoadImage", path=picture).image,
                                 vae=load(g, "kandinsky22").vae).latent)
    outputs = Executor(registry).run(g).outputs
    repainted = (outputs[probe_id] - outputs[encoded_id]).abs().amax(dim=1)[0] > 1e-4
    assert repainted[~kept_area()].all()
    # diffusers grows the repainted area by one latent cell; the outer ring is kept
    ring = torch.ones_like(repainted)
    ring[1:-1, 1:-1] = False
    assert not repainted[ring].any()


def test_inpaint_with_a_mask_of_the_wrong_size_names_mask_image(picture, tmp_path):
    g, inpaint, _ = inpaint_graph("sd", picture, square_mask_png(tmp_path / "small.png", size=SIZE // 2))
    with pytest.raises(NodeExecutionError) as failure:
        Executor(registry).run(g)
    assert (failure.value.node, failure.value.input) == (inpaint.id, "mask_image")
    assert f"{SIZE}x{SIZE}" in str(failure.value) and "Resize" in failure.value.hint


def test_kandinsky_inpaint_needs_full_strength():
    g = Graph()
    node = g.add("Inpaint", model=load(g, "kandinsky22").model, image=g.add("LoadImage", path="x.png").image,
                 mask_image=g.add("LoadMask", path="x.png").mask, **sampler_options(strength=0.5))
    probed(g, node.latent)
    assert ("strength", "value.unsupported") in {(p.input, p.code) for p in problems(g) if p.node == node.id}


# ---- upscalers ---------------------------------------------------------------------------------


def test_latent_upscale_doubles_an_sd_latent():
    g = Graph()
    latent = g.add("Text2Img", model=load(g, "sd").model, **sampler_options()).latent
    upscaled = g.add("LatentUpscale", model=load(g, "latent-upscaler").model, latent=latent, prompt="a fox",
                     num_inference_steps=STEPS, seed=0)
    probe_id = probed(g, upscaled.latent)
    assert output_type(g, upscaled.id, "latent") == T.Latent(SD)
    assert run(g, probe_id).shape == (1, 4, 2 * LATENT_SIDE, 2 * LATENT_SIDE)


def test_latent_upscale_takes_sd_latents_only():
    g = Graph()
    latent = g.add("Text2Img", model=load(g, "sdxl").model, **sampler_options()).latent
    upscaled = g.add("LatentUpscale", model=load(g, "latent-upscaler").model, latent=latent)
    probed(g, upscaled.latent)
    [problem] = problems(g)
    assert (problem.node, problem.input, problem.code) == (upscaled.id, "latent", "type.mismatch")


def test_upscale_quadruples_an_image(picture):
    g = Graph()
    upscaled = g.add("Upscale", model=load(g, "x4-upscaler").model, image=g.add("LoadImage", path=picture).image,
                     prompt="a fox", num_inference_steps=STEPS, seed=0)
    image = run(g, probed(g, upscaled.image))
    assert image.shape == (1, 3, 4 * SIZE, 4 * SIZE)
    assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1


def test_a_latent_into_upscale_is_a_validation_error_that_suggests_a_decode():
    g = Graph()
    latent = g.add("Img2Img", model=load(g, "sd").model, image=g.add("LoadImage", path="x.png").image,
                   **sampler_options()).latent
    upscale = g.add("Upscale", model=load(g, "x4-upscaler").model, image=latent)
    probed(g, upscale.image)
    [problem] = [p for p in problems(g) if p.node == upscale.id]
    assert (problem.input, problem.code) == ("image", "type.mismatch")
    assert "Decode" in problem.hint


# ---- progress and interrupts --------------------------------------------------------------------


def test_each_step_reaches_the_events_and_kandinsky_reports_prior_and_decoder_as_one():
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "kandinsky22").model, **sampler_options())
    events = []
    run(g, probed(g, t2i.latent), on_event=events.append)
    progress = [(e.value, e.max) for e in events if e.kind == "progress" and e.node == t2i.id]
    assert progress == [(step, 2 * STEPS) for step in range(1, 2 * STEPS + 1)]  # prior steps, then decoder steps


def test_cancelling_stops_between_steps():
    g, probe_id = text2img_graph(seed=0)
    executor = Executor(registry)
    progress = []

    def cancel_at_first_step(event):
        if event.kind == "progress":
            progress.append(event.value)
            executor.cancel()

    with pytest.raises(Interrupted):
        executor.run(g, on_event=cancel_at_first_step)
    assert progress == [1]


# ---- behaviour: every parameter changes the result, in the right direction ------------------------


def img2img_from(picture: str, **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(the picture's latent as the model's VAE encodes it, Img2Img's latent from the picture)."""
    g = Graph()
    model = load(g, "sd")
    image = g.add("LoadImage", path=picture).image
    encoded = probed(g, g.add("Encode", image=image, vae=model.vae).latent)
    changed = probed(g, g.add("Img2Img", model=model.model, image=image, **sampler_options(**options)).latent)
    outputs = Executor(registry).run(g).outputs
    return outputs[encoded], outputs[changed]


def test_a_lower_strength_stays_closer_to_the_input(picture):
    distances = {}
    for strength in (0.3, 0.9):
        encoded, result = img2img_from(picture, strength=strength, num_inference_steps=10)
        distances[strength] = (result - encoded).pow(2).mean().item()
    assert distances[0.3] < distances[0.9] / 2


def test_strengths_that_start_at_different_steps_give_different_results(picture):
    # At 2 steps, 0.5 and 0.8 both run one step from the same timestep; at 10 they do not.
    _, half = img2img_from(picture, strength=0.5, num_inference_steps=10)
    _, most = img2img_from(picture, strength=0.8, num_inference_steps=10)
    assert not torch.allclose(half, most)


@pytest.mark.parametrize("name, one, other", [
    ("negative_prompt", "", "blurry, ugly"),
    ("guidance_scale", 7.5, 1.5),
    ("prompt", "a red fox in the snow", "a blue whale"),
    ("seed", 0, 1),
])
def test_each_text2img_setting_changes_the_latent(name, one, other):
    def latent(value):
        g = Graph()
        options = sampler_options(**{"guidance_scale": 7.5, name: value})
        return run(g, probed(g, g.add("Text2Img", model=load(g, "sd").model, **options).latent))

    assert not torch.allclose(latent(one), latent(other))


def test_a_wide_text2img_gives_a_wide_latent():
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "sd").model, height=64, width=128, **sampler_options())
    assert run(g, probed(g, t2i.latent)).shape == (1, 4, 8, 16)


def test_img2img_makes_as_many_images_per_prompt_as_asked(picture):
    _, latent = img2img_from(picture, strength=0.5, num_images_per_prompt=2)
    assert latent.shape == (2, 4, LATENT_SIDE, LATENT_SIDE) and not torch.equal(latent[0], latent[1])


def test_the_upscalers_noise_level_changes_the_image(picture):
    def upscaled(noise_level):
        g = Graph()
        image = g.add("LoadImage", path=picture).image
        node = g.add("Upscale", model=load(g, "x4-upscaler").model, image=image, prompt="a fox",
                     num_inference_steps=STEPS, seed=0, noise_level=noise_level)
        return run(g, probed(g, node.image))

    assert not torch.allclose(upscaled(20), upscaled(200))


def test_the_inpainting_seed_changes_the_latent(picture, tmp_path):
    mask = square_mask_png(tmp_path / "mask.png")
    latents = []
    for seed in (0, 1):
        g, _, probe_id = inpaint_graph("sd-inpaint", picture, mask, seed=seed)
        latents.append(run(g, probe_id))
    assert not torch.allclose(*latents)


@pytest.mark.parametrize("node_type", ["Img2Img", "Inpaint"])
def test_the_negative_prompt_changes_img2img_and_inpaint(node_type, picture, tmp_path):
    def latent(negative):
        g = Graph()
        extra = {"mask_image": g.add("LoadMask", path=square_mask_png(tmp_path / "mask.png")).mask} \
            if node_type == "Inpaint" else {}
        node = g.add(node_type, model=load(g, "sd").model, image=g.add("LoadImage", path=picture).image,
                     **extra, **sampler_options(strength=0.9, guidance_scale=7.5, negative_prompt=negative))
        return run(g, probed(g, node.latent))

    assert not torch.allclose(latent(""), latent("blurry, ugly"))


def test_inpaint_makes_as_many_images_per_prompt_as_asked(picture, tmp_path):
    g, _, probe_id = inpaint_graph("sd-inpaint", picture, square_mask_png(tmp_path / "mask.png"),
                                   num_images_per_prompt=2)
    latent = run(g, probe_id)
    assert latent.shape[0] == 2 and not torch.equal(latent[0], latent[1])


def test_inpaint_strength_matters_and_less_keeps_more(picture, tmp_path):
    mask = square_mask_png(tmp_path / "mask.png")
    results = {}
    for strength in (0.3, 1.0):
        g, _, probe_id = inpaint_graph("sd", picture, mask, strength=strength, num_inference_steps=10)
        encoded = probed(g, g.add("Encode", image=g.add("LoadImage", path=picture).image,
                                  vae=load(g, "sd").vae).latent)
        outputs = Executor(registry).run(g).outputs
        results[strength] = (outputs[probe_id] - outputs[encoded]).pow(2).mean().item()
    assert results[0.3] < results[1.0] / 2


def test_kandinsky_img2img_keeps_a_wide_images_shape():
    g = Graph()
    wide = g.add("Text2Img", model=load(g, "kandinsky22").model, height=64, width=128, **sampler_options()).latent
    decoded = g.add("Decode", latent=wide, vae=load(g, "kandinsky22").vae).image
    i2i = g.add("Img2Img", model=load(g, "kandinsky22").model, image=decoded, **sampler_options(strength=0.5))
    assert run(g, probed(g, i2i.latent)).shape == (1, 4, 8, 16)


def test_kandinsky_guidance_reaches_the_prior_too(monkeypatch):
    import diffusers

    seen = []
    original = diffusers.KandinskyV22CombinedPipeline.__call__

    def recording(self, *args, **kwargs):  # the real pipeline runs; this only notes what it was given
        seen.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(diffusers.KandinskyV22CombinedPipeline, "__call__", recording)
    g = Graph()
    t2i = g.add("Text2Img", model=load(g, "kandinsky22").model, **sampler_options(guidance_scale=6.0))
    run(g, probed(g, t2i.latent))
    assert (seen[0]["guidance_scale"], seen[0]["prior_guidance_scale"]) == (6.0, 6.0)


def test_the_latent_upscalers_seed_and_the_upscalers_guidance_change_results(picture):
    def upscaled(node_type, **options):
        g = Graph()
        if node_type == "LatentUpscale":
            source = g.add("Text2Img", model=load(g, "sd").model, **sampler_options()).latent
            node = g.add("LatentUpscale", model=load(g, "latent-upscaler").model, latent=source, prompt="a fox",
                         num_inference_steps=STEPS, **options).latent
        else:
            node = g.add("Upscale", model=load(g, "x4-upscaler").model, image=g.add("LoadImage", path=picture).image,
                         prompt="a fox", num_inference_steps=STEPS, seed=0, **options).image
        return run(g, probed(g, node))

    assert not torch.allclose(upscaled("LatentUpscale", seed=0), upscaled("LatentUpscale", seed=1))
    assert not torch.allclose(upscaled("Upscale", guidance_scale=1.0), upscaled("Upscale", guidance_scale=9.0))


def test_inpaint_resizes_image_and_mask_alike():
    from nodes.sampling import _resized

    image, mask = torch.rand(1, 3, 64, 64), torch.rand(1, 1, 64, 64)
    resized_image, resized_mask = _resized(image, mask, 32, 48, SD)
    assert resized_image.shape[-2:] == resized_mask.shape[-2:] == (32, 48)


def test_the_masked_image_latents_blank_the_repainted_area_to_grey():
    from nodes.sampling import _masked_image_latents

    class Identity:  # an exact encoder, so the masking arithmetic itself shows
        def encode(self, image):
            return image

    pixels = torch.rand(1, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1  # repaint the left half
    result = _masked_image_latents(Identity(), pixels, mask)
    assert torch.equal(result[..., :2], torch.full_like(result[..., :2], 0.5))
    assert torch.equal(result[..., 2:], pixels[..., 2:])
