"""One step of VAE training, and the scaling factor measured after it.

The loss is a weighted pixel MSE plus SD's tiny KL term. Shapes cover a small part
of each picture, so a plain MSE is best served by a washed-out average colour;
weighting shape pixels ×5 makes the VAE keep each shape's colour.
"""

from __future__ import annotations

import numpy as np

from . import data

BATCH = 32
LEARNING_RATE = 1e-3
FOREGROUND_WEIGHT = 5.0
KL_WEIGHT = 1e-6  # SD's, with both terms summed over each picture
SCALING_SAMPLES = 512  # pictures the scaling factor is measured on


def images_to_tensor(images: np.ndarray, device):
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [-1, 1], the pipelines' convention."""
    import torch

    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1


def training_batch(step: int, device):
    """Pictures and foreground coverage (N, 1, H, W) of training step `step`."""
    import torch

    drawn = data.samples(data.TRAIN, step * BATCH, BATCH)
    images = images_to_tensor(np.stack([s.image for s in drawn]), device)
    foreground = np.stack([s.masks.max(axis=0) for s in drawn])[:, None]
    return images, torch.from_numpy(foreground).to(device)


def loss(vae, step: int, generator, device):
    images, foreground = training_batch(step, device)
    posterior = vae.encode(images).latent_dist
    decoded = vae.decode(posterior.sample(generator)).sample
    weight = 1 + (FOREGROUND_WEIGHT - 1) * foreground
    pixels = images[0].numel()
    reconstruction = (weight * (decoded - images) ** 2).sum() / len(images) / pixels
    kl = posterior.kl().mean() / pixels
    mse = ((decoded - images) ** 2).mean().detach()
    psnr = 10 * float(np.log10(4 / max(float(mse), 1e-12)))  # the peak-to-peak range of [-1, 1] is 2
    return reconstruction + KL_WEIGHT * kl, {"psnr": psnr, "kl": float(kl.detach())}


def scaling_factor(vae, device, seed: int) -> float:
    """1 / the standard deviation of sampled latents, as SD measured its 0.18215: unit-variance latents."""
    import torch

    images, _ = data.batch(data.TRAIN, 0, SCALING_SAMPLES)
    generator = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        latents = vae.encode(images_to_tensor(images, device)).latent_dist.sample(generator)
    return float(1 / latents.std())
