"""The latent spaces and model families the built-in nodes know, as engine types.

A family is what LoadModel recognises from a model's config files; its space is
where its latents live, and its tasks are the pipelines it can run.
"""

from __future__ import annotations

from dataclasses import replace

from nodegraph.registry import registry
from nodegraph.types import LatentSpace, Latent, Model, Vae

SD = LatentSpace("sd", channels=4, scaling_factor=0.18215)
SDXL = LatentSpace("sdxl", channels=4, scaling_factor=0.13025)
KANDINSKY22 = LatentSpace("kandinsky22", channels=4, scaling_factor=1.0)
X4_UPSCALER = LatentSpace("x4-upscaler", channels=4, scaling_factor=0.08333, downscale=4)
OWN_SPACE_KEY = "_nodegraph_latent_space"  # in a VAE's config.json: the name of a latent space of its own

KANDINSKY_FAMILY = "kandinsky22"

TEXT2IMG, IMG2IMG, INPAINT = "text2img", "img2img", "inpaint"
LATENT_UPSCALE, UPSCALE = "latent-upscale", "upscale"

# family -> what a model of that family is, as the type of LoadModel's output
FAMILIES: dict[str, Model] = {
    "sd": Model("sd", SD, frozenset({TEXT2IMG, IMG2IMG, INPAINT}), latent_image=True),
    "sd-inpaint": Model("sd-inpaint", SD, frozenset({INPAINT}), latent_image=True),
    "sdxl": Model("sdxl", SDXL, frozenset({TEXT2IMG, IMG2IMG, INPAINT}), latent_image=True),
    "sdxl-inpaint": Model("sdxl-inpaint", SDXL, frozenset({INPAINT}), latent_image=True),
    "sdxl-refiner": Model("sdxl-refiner", SDXL, frozenset({IMG2IMG, INPAINT}), latent_image=True),
    # Kandinsky's img2img and inpaint pipelines always re-encode, so they take images only.
    KANDINSKY_FAMILY: Model(KANDINSKY_FAMILY, KANDINSKY22, frozenset({TEXT2IMG, IMG2IMG, INPAINT})),
    "latent-upscaler": Model("latent-upscaler", SD, frozenset({LATENT_UPSCALE})),
    "x4-upscaler": Model("x4-upscaler", X4_UPSCALER, frozenset({UPSCALE})),
}

registry.declare_types(*FAMILIES.values(),
                       *(kind(model.space) for model in FAMILIES.values() for kind in (Latent, Vae)))

# family -> the tiny builtin that stands in for it under `--tiny`
TINY_BUILTINS = {
    "sd": "tiny-sd",
    "sd-inpaint": "tiny-sd-inpaint",
    "sdxl": "tiny-sdxl",
    "sdxl-inpaint": "tiny-sdxl",  # no 9-channel tiny SDXL: the base model inpaints too
    "sdxl-refiner": "tiny-sdxl-refiner",
    KANDINSKY_FAMILY: "tiny-kandinsky22",
    "latent-upscaler": "tiny-latent-upscaler",
    "x4-upscaler": "tiny-x4-upscaler",
}


def space_of(family: str, vae_config: dict | None) -> LatentSpace:
    """A model's latent space: its family's, unless its VAE's config names one of its own (the
    demo model's "demo"), whose latents no other model may read."""
    own = (vae_config or {}).get(OWN_SPACE_KEY)
    if not isinstance(own, str):
        return FAMILIES[family].space
    return LatentSpace(own, channels=int(vae_config.get("latent_channels", 4)),
                       scaling_factor=float(vae_config.get("scaling_factor", 1.0)),
                       downscale=2 ** (len(vae_config.get("block_out_channels", (0,) * 4)) - 1))


def model_type(family: str, space: LatentSpace) -> Model:
    """What LoadModel outputs for a model of `family` whose latents live in `space`."""
    return replace(FAMILIES[family], space=space)
