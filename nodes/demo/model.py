"""The demo model's parts: standard diffusers/transformers classes in an SD 1.5 layout.

The folder `save` writes is what `StableDiffusionPipeline.from_pretrained` (and the
Img2Img and Inpaint pipelines) load: model_index.json names StableDiffusionPipeline,
and each part has its usual subfolder and safetensors weights.

Its VAE is its own latent space. `vae/config.json` carries

    "_nodegraph_latent_space": "demo"

so a loader tells its latents from SD's by reading that one file, without loading a
weight. diffusers drops config keys that start with "_" when it builds the model
(no warning), and keeps them in `vae.config`, so a reloaded and re-saved VAE keeps
the marker. The VAE downsamples by DOWNSAMPLING (diffusers' pipelines compute it as
2 ** (len(block_out_channels) - 1)).

The tokenizer is CLIP's, with a word-level vocabulary: BPE merges learnt here from the
caption words, so every caption word is one token (letters remain tokens, so an
unknown word is spelt out rather than lost).
"""

from __future__ import annotations

import collections
import pathlib

from . import data

LATENT_SPACE = "demo"
LATENT_SPACE_KEY = "_nodegraph_latent_space"  # in vae/config.json

LATENT_CHANNELS = 4
VAE_CHANNELS = (16, 32, 64, 64)  # one level per 2× downsampling after the first; full resolution is the costly one
DOWNSAMPLING = 2 ** (len(VAE_CHANNELS) - 1)
LATENT_SIZE = data.SIZE // DOWNSAMPLING
GROUPS = 8  # GroupNorm groups: with one channel per group a layer would normalise away absolute colour

TEXT_WIDTH = 64
UNET_CHANNELS = (64, 128)

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_END_OF_WORD = "</w>"
_MAX_TOKENS = 77  # CLIP's context length; the pipelines pad and truncate to it


# ---- text -----------------------------------------------------------------------------------------


def tokenizer():
    """A CLIPTokenizer that reads every caption word as a single token."""
    from transformers import CLIPTokenizer

    vocab, merges = word_level_bpe(data.vocabulary())
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=_MAX_TOKENS)


def word_level_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """BPE vocabulary and merges learnt from `words` until each is one symbol.

    Ordinary BPE training: merge the most frequent adjacent pair (ties by name) until no
    word has two symbols. Applying the merges in the order learnt rebuilds each word.
    """
    letters = sorted({c for word in words for c in word} | set("abcdefghijklmnopqrstuvwxyz"))
    symbols = [*letters, *(c + _END_OF_WORD for c in letters)]
    spelt = [(*word[:-1], word[-1] + _END_OF_WORD) for word in words]
    merges = []
    while any(len(word) > 1 for word in spelt):
        pairs = collections.Counter(pair for word in spelt for pair in zip(word, word[1:]))
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        symbols.append("".join(best))
        spelt = [_merge(word, best) for word in spelt]
    vocab = {symbol: i for i, symbol in enumerate(dict.fromkeys([*symbols, _BOS, _EOS]))}
    return vocab, merges


def _merge(word: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(word):
        if word[i:i + 2] == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return tuple(merged)


def text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size,
        max_position_embeddings=_MAX_TOKENS,
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        hidden_act="quick_gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    ))


# ---- image ----------------------------------------------------------------------------------------


def vae(scaling_factor: float = 1.0):
    """An AutoencoderKL whose encoder starts out nearly deterministic.

    The log-variance half of the posterior starts at about -6: with SD's initial variance
    of about 1, the sampled latents drown the colour the decoder has to learn.
    """
    import torch
    from diffusers import AutoencoderKL

    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        norm_num_groups=GROUPS,
        latent_channels=LATENT_CHANNELS,
        sample_size=data.SIZE,
        scaling_factor=scaling_factor,
    )
    with torch.no_grad():
        model.quant_conv.bias[LATENT_CHANNELS:].fill_(-6.0)
    model.register_to_config(**{LATENT_SPACE_KEY: LATENT_SPACE})
    return model


def unet(in_channels: int = LATENT_CHANNELS):
    """The denoiser; 9 input channels make the inpainting variant (latents, masked-image latents, mask)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=in_channels,
        out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D",) * len(UNET_CHANNELS),
        up_block_types=("CrossAttnUpBlock2D",) * len(UNET_CHANNELS),
        block_out_channels=UNET_CHANNELS,
        layers_per_block=1,
        norm_num_groups=GROUPS,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
    )


def scheduler():
    """DDIM with SD 1.5's noise schedule: deterministic sampling for the report and the tests."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


# ---- the folder -----------------------------------------------------------------------------------


def save(folder: pathlib.Path, vae_model, text_model, unet_model, dtype, pipeline_class="StableDiffusionPipeline"):
    """Write a diffusers folder with copies of the given parts cast to `dtype` (fp16 for shipping).

    The tokenizer is saved by transformers (tokenizer.json) and also as the vocab.json and
    merges.txt that a slow CLIPTokenizer, and SD 1.5's own tokenizer folder, use.
    """
    import copy
    import json

    import diffusers

    vae_copy, text_copy, unet_copy = (copy.deepcopy(part).to(dtype) for part in (vae_model, text_model, unet_model))
    pipeline = getattr(diffusers, pipeline_class)(
        vae=vae_copy, text_encoder=text_copy, tokenizer=tokenizer(), unet=unet_copy, scheduler=scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    vocab, merges = word_level_bpe(data.vocabulary())
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (folder / "tokenizer" / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))


def latent_space(folder: pathlib.Path) -> str | None:
    """The latent space a diffusers folder's VAE declares, or None (SD's own)."""
    import json

    config = json.loads((pathlib.Path(folder) / "vae" / "config.json").read_text())
    return config.get(LATENT_SPACE_KEY)
