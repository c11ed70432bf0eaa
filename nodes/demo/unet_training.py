"""One step of text-conditioned UNet training: epsilon prediction with min-SNR weighting.

The text encoder starts random too and learns with the UNet. One caption in ten is
dropped (the empty prompt), so the model also learns the unconditional prediction
that classifier-free guidance needs.
"""

from __future__ import annotations

from . import data
from .vae_training import images_to_tensor

BATCH = 64
LEARNING_RATE = 1e-3
CAPTION_DROPOUT = 0.1
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023: weight = min(SNR, γ) / SNR for epsilon prediction


def token_ids(tokenizer, captions: list[str], device):
    """Padded to the tokenizer's 77, as the pipelines pad: the UNet must see the same context at training and use."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def loss(parts, step: int, generator, device):
    """`parts`: vae (frozen), text_encoder, unet, tokenizer, scheduler, scaling_factor."""
    import torch

    images, captions = data.batch(data.TRAIN, step * BATCH, BATCH)
    dropped = torch.rand(BATCH, generator=generator, device=device) < CAPTION_DROPOUT
    captions = ["" if drop else caption for drop, caption in zip(dropped.tolist(), captions)]
    with torch.no_grad():
        posterior = parts.vae.encode(images_to_tensor(images, device)).latent_dist
        latents = posterior.sample(generator) * parts.scaling_factor
    noise = torch.randn(latents.shape, generator=generator, device=device)
    steps = parts.scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (BATCH,), generator=generator, device=device)
    noisy = parts.scheduler.add_noise(latents, noise, timesteps)
    context = parts.text_encoder(token_ids(parts.tokenizer, captions, device))[0]
    predicted = parts.unet(noisy, timesteps, context).sample
    alpha_bar = parts.scheduler.alphas_cumprod.to(device)[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    weight = snr.clamp(max=MIN_SNR_GAMMA) / snr
    per_sample = ((predicted - noise) ** 2).mean(dim=(1, 2, 3))
    return (weight * per_sample).mean(), {"mse": float(per_sample.detach().mean())}
