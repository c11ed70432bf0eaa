"""The built-in node pack: diffusion nodes on diffusers, images, and tiny offline models.

Registered through the `nodegraph.nodes` entry point, exactly as a third-party pack would be.
Importing it is cheap: torch and diffusers load only when a node runs.
"""

from nodegraph.registry import registry

from . import images, latents, lists, models, sampling, save  # noqa: F401  (importing registers the nodes)


def _import_libraries() -> None:
    """What the first diffusion run imports: torch, diffusers and the pipelines' transformers parts."""
    import torch  # noqa: F401
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: F401


registry.add_warm_up(_import_libraries)
