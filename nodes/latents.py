"""Encode and Decode: between images and the latent space of a VAE.

A latent's type carries its VAE's space, so Decode only accepts latents its VAE can
read. The conventions (scaling, Kandinsky's MoVQ) are the VAE handle's: see
nodes.handles.VaeHandle.
"""

from __future__ import annotations

from nodegraph import types as T
from nodegraph.node import Codec, Input, Output
from nodegraph.registry import node


def _vae_space(view) -> T.LatentSpace | None:
    vae = view.type("vae")
    return vae.space if isinstance(vae, T.Vae) else None


@node(
    "Encode",
    category="latent",
    inputs={
        "image": Input(T.IMAGE, "The images to encode; sides must be multiples of 8 (4 for the x4 upscaler's VAE)"),
        "vae": Input(T.VAE, "The VAE whose latent space to encode into"),
    },
    outputs={"latent": Output(T.LATENT, "The latents, in the VAE's space (the mean of its distribution)")},
    infer=lambda view: {"latent": T.Latent(_vae_space(view))},
    codec=Codec("encode", value="image", coder="vae", output="latent"),
)
def encode(image, vae):
    """Encode images into a VAE's latent space."""
    return vae.encode(image)


@node(
    "Decode",
    category="latent",
    inputs={
        "latent": Input(T.LATENT, "The latents to decode", expect=lambda view: T.Latent(_vae_space(view))),
        "vae": Input(T.VAE, "The VAE of the latents' space"),
    },
    outputs={"image": Output(T.IMAGE, "The decoded images")},
    codec=Codec("decode", value="latent", coder="vae", output="image"),
)
def decode(latent, vae):
    """Decode latents into images with the VAE of their space (pixels an Inpaint kept outside its mask
    are put back as they were)."""
    from .sampling import with_kept_pixels

    return with_kept_pixels(latent, vae.decode(latent))
