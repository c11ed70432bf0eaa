"""Builtin models, `builtin:NAME`: the tiny stand-ins for every family, built in code on first use
(nodes.tiny_models), and the demo model, trained by `python -m nodes.demo.train` and shipped in the
package (nodes/demo/demo-sd), which draws the coloured shapes its captions name."""

from __future__ import annotations

import json
from pathlib import Path

from nodegraph.registry import registry
from nodegraph.types import Latent, Vae

from . import spaces, tiny_models, weights

DEMO_FOLDER = Path(__file__).parent / "demo" / "demo-sd"
# name -> family. The demo model is an SD-family model with a latent space of its own (its VAE's
# config says "demo"); it inpaints through SD's inpaint pipeline, as a 4-channel SD model does.
_SHIPPED = {"demo-sd": DEMO_FOLDER, "demo-sd-inpaint": DEMO_FOLDER} if (DEMO_FOLDER / "model_index.json").is_file() \
    else {}
FAMILIES: dict[str, str] = {**dict.fromkeys(_SHIPPED, "sd"), **tiny_models.BUILTIN_FAMILIES}
if _SHIPPED:  # editors offer the demo model's own latent space next to the families' spaces
    _demo_space = spaces.space_of("sd", json.loads((DEMO_FOLDER / "vae" / "config.json").read_text()))
    registry.declare_types(Latent(_demo_space), Vae(_demo_space))


def path(name: str) -> Path:
    """The builtin's diffusers folder (a tiny one is built on first use)."""
    return _SHIPPED[name] if name in _SHIPPED else tiny_models.builtin_path(name)


def identity(name: str) -> str:
    """What fixes the builtin's weights, known without building it."""
    if name in _SHIPPED:
        return f"{name}-{weights.folder_identity(_SHIPPED[name])[:16]}"
    return tiny_models.builtin_identity(name)
