"""Checkpoints for tests: copies of a tiny builtin with some components given other weights, as
fine-tunes of one base model are (Comic-Diffusion and pixel-art-style: their own UNets, SD 1.5's
VAE and text encoder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from nodes.tiny_models import builtin_path

_CLASSES = {"unet": "UNet2DConditionModel", "vae": "AutoencoderKL"}


def fine_tune(folder: Path, seed: int, parts: tuple[str, ...] = ("unet",), base: str = "tiny-sd") -> Path:
    """A copy of builtin `base` at `folder` whose `parts` have weights of their own (seeded)."""
    import diffusers

    shutil.copytree(builtin_path(base), folder)
    generator = torch.Generator().manual_seed(seed)
    for part in parts:
        module = getattr(diffusers, _CLASSES[part]).from_pretrained(folder / part)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
        module.save_pretrained(folder / part, safe_serialization=True)
    return folder
