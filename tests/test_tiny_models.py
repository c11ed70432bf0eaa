"""The tiny builtins: real diffusers folders, built deterministically, sharing what real checkpoints share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodes.tiny_models import BUILTIN_FAMILIES, BUILTIN_NAMES, builtin_identity, builtin_path

SIZE, STEPS = 64, 2


def config(name: str, *parts: str) -> dict:
    return json.loads(builtin_path(name).joinpath(*parts).read_text())


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_a_builtin_is_built_into_a_folder_named_by_its_recipe(name):
    folder = builtin_path(name)
    assert folder.name == builtin_identity(name)
    assert any(folder.rglob("*.safetensors"))
    assert not list(folder.rglob("*.bin")), "weights are written as safetensors only"


def test_two_builds_give_byte_identical_folders(tmp_path, monkeypatch):
    originals = {name: builtin_path(name) for name in BUILTIN_NAMES}
    monkeypatch.setenv("NODEGRAPH_CACHE", str(tmp_path))
    for name, original in originals.items():
        rebuilt = builtin_path(name)
        assert rebuilt.is_relative_to(tmp_path)
        assert files(rebuilt) == files(original), name


@pytest.mark.parametrize("component, builtins", [
    ("vae/diffusion_pytorch_model.safetensors", ["tiny-sd", "tiny-sd-inpaint", "tiny-latent-upscaler"]),
    ("text_encoder/model.safetensors", ["tiny-sd", "tiny-sd-inpaint", "tiny-latent-upscaler", "tiny-sdxl"]),
    ("vae/diffusion_pytorch_model.safetensors", ["tiny-sdxl", "tiny-sdxl-refiner"]),
    ("text_encoder_2/model.safetensors", ["tiny-sdxl", "tiny-sdxl-refiner"]),
])
def test_components_real_checkpoints_share_are_bit_identical(component, builtins):
    contents = {(builtin_path(name) / component).read_bytes() for name in builtins}
    assert len(contents) == 1


def test_kandinsky_decoders_share_their_movq():
    folder = builtin_path("tiny-kandinsky22")
    movq = "movq/diffusion_pytorch_model.safetensors"
    assert (folder / "decoder" / movq).read_bytes() == (folder / "decoder-inpaint" / movq).read_bytes()


def test_different_models_have_different_weights():
    unets = {(builtin_path(n) / "unet/diffusion_pytorch_model.safetensors").read_bytes()
             for n in ("tiny-sd", "tiny-sd-inpaint", "tiny-sdxl", "tiny-sdxl-refiner", "tiny-x4-upscaler")}
    assert len(unets) == 5
    assert (builtin_path("tiny-sd") / "vae/diffusion_pytorch_model.safetensors").read_bytes() != \
        (builtin_path("tiny-sdxl") / "vae/diffusion_pytorch_model.safetensors").read_bytes()


# ---- the config values that define each family ------------------------------------------------


def test_sd_configs():
    assert config("tiny-sd", "model_index.json")["_class_name"] == "StableDiffusionPipeline"
    assert config("tiny-sd", "unet", "config.json")["in_channels"] == 4
    assert config("tiny-sd", "vae", "config.json")["scaling_factor"] == 0.18215
    assert config("tiny-sd-inpaint", "model_index.json")["_class_name"] == "StableDiffusionInpaintPipeline"
    assert config("tiny-sd-inpaint", "unet", "config.json")["in_channels"] == 9


def test_sdxl_configs():
    base, refiner = config("tiny-sdxl", "model_index.json"), config("tiny-sdxl-refiner", "model_index.json")
    assert base["_class_name"] == "StableDiffusionXLPipeline"
    assert refiner["_class_name"] == "StableDiffusionXLImg2ImgPipeline"
    assert refiner["text_encoder"] == [None, None] and refiner["requires_aesthetics_score"] is True
    for name in ("tiny-sdxl", "tiny-sdxl-refiner"):
        assert config(name, "unet", "config.json")["addition_embed_type"] == "text_time"
        assert config(name, "vae", "config.json")["scaling_factor"] == 0.13025


def test_kandinsky_configs():
    assert config("tiny-kandinsky22", "prior", "model_index.json")["_class_name"] == "KandinskyV22PriorPipeline"
    assert config("tiny-kandinsky22", "decoder", "model_index.json")["movq"] == ["diffusers", "VQModel"]
    assert config("tiny-kandinsky22", "decoder", "unet", "config.json")["in_channels"] == 4
    assert config("tiny-kandinsky22", "decoder-inpaint", "unet", "config.json")["in_channels"] == 9


def test_upscaler_configs():
    assert config("tiny-latent-upscaler", "model_index.json")["_class_name"] == "StableDiffusionLatentUpscalePipeline"
    assert config("tiny-latent-upscaler", "unet", "config.json")["in_channels"] == 8
    x4 = config("tiny-x4-upscaler", "model_index.json")
    assert x4["_class_name"] == "StableDiffusionUpscalePipeline" and x4["max_noise_level"] == 350
    assert config("tiny-x4-upscaler", "vae", "config.json")["scaling_factor"] == 0.08333
    assert config("tiny-x4-upscaler", "unet", "config.json")["in_channels"] == 7


def test_tokenizers_pad_to_clips_77_tokens():
    # Without model_max_length a CLIPTokenizer's length is ~1e30 and the pipelines break.
    tokenizers = [t for name in BUILTIN_NAMES for t in builtin_path(name).rglob("tokenizer_config.json")]
    assert len(tokenizers) == 8
    for tokenizer in tokenizers:
        assert json.loads(tokenizer.read_text())["model_max_length"] == 77, tokenizer


# ---- they load with the real pipeline classes and run -----------------------------------------


def generator():
    return torch.Generator("cpu").manual_seed(0)


def image(side: int = SIZE):
    return torch.rand(1, 3, side, side, generator=generator())


def left_half_mask():
    mask = torch.zeros(1, 1, SIZE, SIZE)
    mask[..., : SIZE // 2] = 1
    return mask


# builtin -> its pipeline class, and the arguments of a 2-step run making a 64x64 image
RUNS = {
    "tiny-sd": ("StableDiffusionPipeline", lambda: dict(height=SIZE, width=SIZE)),
    "tiny-sd-inpaint": ("StableDiffusionInpaintPipeline", lambda: dict(image=image(), mask_image=left_half_mask())),
    "tiny-sdxl": ("StableDiffusionXLPipeline", lambda: dict(height=SIZE, width=SIZE)),
    "tiny-sdxl-refiner": ("StableDiffusionXLImg2ImgPipeline", lambda: dict(image=image(), strength=1.0)),
    "tiny-x4-upscaler": ("StableDiffusionUpscalePipeline", lambda: dict(image=image(SIZE // 4))),
}


@pytest.mark.parametrize("name", RUNS)
def test_builtin_runs_with_its_diffusers_pipeline(name):
    from diffusers import DiffusionPipeline

    pipeline_class, arguments = RUNS[name]
    pipeline = DiffusionPipeline.from_pretrained(builtin_path(name))
    assert type(pipeline).__name__ == pipeline_class
    out = pipeline(prompt="a cat", num_inference_steps=STEPS, generator=generator(), output_type="pt",
                   **arguments()).images
    assert tuple(out.shape) == (1, 3, SIZE, SIZE)
    assert torch.isfinite(out).all()


def test_latent_upscaler_doubles_an_sd_latent():
    from diffusers import StableDiffusionLatentUpscalePipeline

    pipeline = StableDiffusionLatentUpscalePipeline.from_pretrained(builtin_path("tiny-latent-upscaler"))
    latent = torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=generator())
    out = pipeline(prompt="a cat", image=latent, num_inference_steps=STEPS, generator=generator(),
                   output_type="latent").images
    assert tuple(out.shape) == (1, 4, SIZE // 4, SIZE // 4)


def test_kandinsky_prior_and_decoders_run():
    from diffusers import KandinskyV22InpaintPipeline, KandinskyV22Pipeline, KandinskyV22PriorPipeline

    folder = builtin_path("tiny-kandinsky22")
    prior = KandinskyV22PriorPipeline.from_pretrained(folder / "prior")
    embeds = prior(prompt="a cat", num_inference_steps=STEPS, generator=generator())
    assert tuple(embeds.image_embeds.shape) == (1, 32)
    decoder = KandinskyV22Pipeline.from_pretrained(folder / "decoder")
    conditioning = dict(image_embeds=embeds.image_embeds, negative_image_embeds=embeds.negative_image_embeds,
                        height=SIZE, width=SIZE, num_inference_steps=STEPS, output_type="pt")
    assert tuple(decoder(generator=generator(), **conditioning).images.shape) == (1, 3, SIZE, SIZE)
    inpaint = KandinskyV22InpaintPipeline.from_pretrained(folder / "decoder-inpaint")
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, : SIZE // 2] = 1
    out = inpaint(image=torch.rand(1, 3, SIZE, SIZE) * 2 - 1, mask_image=mask, generator=generator(), **conditioning)
    assert tuple(out.images.shape) == (1, 3, SIZE, SIZE)


def test_families_cover_every_builtin():
    from nodes.spaces import FAMILIES, TINY_BUILTINS

    assert set(BUILTIN_FAMILIES.values()) <= set(FAMILIES)
    assert {TINY_BUILTINS[family] for family in BUILTIN_FAMILIES.values()} == set(BUILTIN_NAMES)
