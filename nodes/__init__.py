"""The built-in node pack: diffusion nodes on diffusers, images, and tiny offline models.

Registered through the `nodegraph.nodes` entry point, exactly as a third-party pack would be.
Importing it is cheap: torch and diffusers load only when a node runs.
"""

from . import images, latents, lists, models, sampling, save  # noqa: F401  (importing registers the nodes)
