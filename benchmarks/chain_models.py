"""Models for benchmarks/chains.py, built offline with fixed seeds and saved as diffusers folders.

Three SD-family checkpoints share their VAE and text encoder (bit-identical files) but not their
UNets, as the SD 1.5 fine-tunes of the seed tutorial do; an inpainting checkpoint shares them too.
"tiny" has the shapes of the tiny builtins; "mid" is big enough that one cold chain takes 5 to 30 s
on one CPU thread (UNet blocks of 64, 128 and 256 channels, 256x256 images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

SIZES = {
    "tiny": {"unet": (16, 32), "layers": 1, "vae": (16, 16, 32, 32), "text": 32, "text_layers": 4, "image": 64},
    "mid": {"unet": (64, 128, 256), "layers": 2, "vae": (32, 64, 128, 128), "text": 256, "text_layers": 4,
            "image": 256},
}
CHECKPOINTS = ("base", "comic", "pixel")


def models(root: Path, size: str) -> dict[str, str]:
    """The benchmark's checkpoints of `size` under `root` (built if missing): name -> folder."""
    folders = {name: root / size / name for name in (*CHECKPOINTS, "inpaint")}
    if not all((folder / "model_index.json").is_file() for folder in folders.values()):
        _build(root / size, SIZES[size], folders)
    return {name: str(folder) for name, folder in folders.items()}


def _build(where: Path, config: dict, folders: dict[str, Path]) -> None:
    import torch
    from diffusers import (AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel

    from nodes.tiny_models import builtin_path

    shutil.rmtree(where, ignore_errors=True)
    template = StableDiffusionPipeline.from_pretrained(builtin_path("tiny-sd"))  # tokenizer and scheduler
    torch.manual_seed(1)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=config["vae"], layers_per_block=1, latent_channels=4,
                        norm_num_groups=16, sample_size=config["image"])
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=template.text_encoder.config.vocab_size, max_position_embeddings=77, hidden_size=config["text"],
        intermediate_size=4 * config["text"], num_hidden_layers=config["text_layers"], num_attention_heads=4,
        bos_token_id=template.text_encoder.config.bos_token_id,
        eos_token_id=template.text_encoder.config.eos_token_id, pad_token_id=template.text_encoder.config.pad_token_id))
    for seed, name in enumerate((*CHECKPOINTS, "inpaint"), start=10):
        torch.manual_seed(seed)
        depth = len(config["unet"])
        unet = UNet2DConditionModel(
            sample_size=config["image"] // 8, in_channels=9 if name == "inpaint" else 4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * (depth - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (depth - 1),
            block_out_channels=config["unet"], layers_per_block=config["layers"], norm_num_groups=16,
            cross_attention_dim=config["text"], attention_head_dim=8)
        pipeline_class = StableDiffusionInpaintPipeline if name == "inpaint" else StableDiffusionPipeline
        pipeline = pipeline_class(vae=vae, text_encoder=text_encoder, tokenizer=template.tokenizer, unet=unet,
                                  scheduler=template.scheduler, safety_checker=None, feature_extractor=None,
                                  requires_safety_checker=False)
        pipeline.save_pretrained(folders[name], safe_serialization=True)
