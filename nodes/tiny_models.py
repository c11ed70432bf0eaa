"""Tiny, randomly initialised stand-ins for real diffusers checkpoints.

Each builtin is an ordinary diffusers folder (model_index.json, per-component
config.json, *.safetensors) whose layout and family-defining config values mirror
a real checkpoint, so code that recognises a family from those files treats the
tiny and the real model alike. Weights are random but deterministic: every
component is built by the real diffusers/transformers class right after seeding
torch with a seed derived from the component's role. Components that the real
checkpoints share (SD's VAE and text encoder, SDXL's VAE and second text encoder,
Kandinsky's MoVQ) are built by the same function, so they are bit-identical.

Folders are built on first use and cached under
`$NODEGRAPH_CACHE/builtin/<name>-<hash>` (default cache: ~/.cache/nodegraph); the
hash covers this file and the library versions, so any change rebuilds.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import pathlib
import shutil
import tempfile

from nodegraph.errors import InputError

from .parts import quiet_progress_bars
from .weights import cache_root

# builtin -> the model family it stands in for (see nodes.spaces)
BUILTIN_FAMILIES: dict[str, str] = {
    "tiny-sd": "sd",
    "tiny-sd-inpaint": "sd-inpaint",
    "tiny-sdxl": "sdxl",
    "tiny-sdxl-refiner": "sdxl-refiner",
    "tiny-kandinsky22": "kandinsky22",
    "tiny-latent-upscaler": "latent-upscaler",
    "tiny-x4-upscaler": "x4-upscaler",
}
BUILTIN_NAMES: tuple[str, ...] = tuple(BUILTIN_FAMILIES)


def builtin_path(name: str) -> pathlib.Path:
    """Local diffusers folder for builtin `name`, built on first use and cached on disk."""
    folder = cache_root() / "builtin" / builtin_identity(name)
    if not folder.is_dir():
        try:
            _build_atomically(_BUILDERS[name], folder)
        except OSError as error:
            raise InputError("model", f"cannot build the builtin model {name} in {cache_root()}: "
                             f"{error.strerror or error}", code="model.cache_unwritable",
                             hint="set NODEGRAPH_CACHE to a folder you may write to") from None
    return folder


def builtin_identity(name: str) -> str:
    """What fixes builtin `name`'s weights (its recipe), known without building it."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown builtin model {name!r}; known: {', '.join(BUILTIN_NAMES)}")
    return f"{name}-{_recipe_hash(name)}"


# ---- cache ------------------------------------------------------------------------


@functools.cache
def _recipe_hash(name: str) -> str:
    # The recipe is this file's code; weight initialisation also depends on the libraries.
    digest = hashlib.sha256(name.encode())
    digest.update(pathlib.Path(__file__).read_bytes())
    for package in ("torch", "diffusers", "transformers"):
        digest.update(f"{package}=={importlib.metadata.version(package)}".encode())
    return digest.hexdigest()[:12]


def _build_atomically(build, folder: pathlib.Path) -> None:
    """Build into a staging folder beside `folder`, then rename it into place."""
    import torch

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # fork_rng: seeding for the build must leave the caller's random stream untouched
        with torch.random.fork_rng(devices=[]), quiet_progress_bars():
            build(staging)
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process finished first; its copy is identical, so keep it.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _seed(role: str) -> None:
    """Seed torch for one component; equal roles give bit-identical weights."""
    import torch

    torch.manual_seed(int.from_bytes(hashlib.sha256(role.encode()).digest()[:4], "big"))


def _save(pipeline, folder: pathlib.Path) -> None:
    pipeline.save_pretrained(folder, safe_serialization=True)


# ---- text (CLIP) ------------------------------------------------------------------

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"
_MAX_TOKENS = 77  # CLIP's context length; pipelines pad and truncate to it


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for bytes, in GPT-2/CLIP order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    unprintable = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(unprintable))]


def _tokenizer():
    """A CLIP tokenizer with CLIP's vocabulary layout but no merges: every byte is a token."""
    from transformers import CLIPTokenizer

    alphabet = _byte_alphabet()
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    vocab.update({_BOS: len(vocab), _EOS: len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_MAX_TOKENS)


_VOCAB_SIZE = 2 * 256 + 2


def _text_config(hidden_act: str, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=_VOCAB_SIZE,
        max_position_embeddings=_MAX_TOKENS,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,  # enough for SDXL's penultimate layer plus a clip skip
        num_attention_heads=4,
        projection_dim=projection_dim,
        hidden_act=hidden_act,
        bos_token_id=_VOCAB_SIZE - 2,
        eos_token_id=_VOCAB_SIZE - 1,
        pad_token_id=_VOCAB_SIZE - 1,
    )


def _sd_text_encoder():
    """Stands in for OpenAI CLIP ViT-L/14, shared by SD 1.x, SDXL and the latent upscaler."""
    from transformers import CLIPTextModel

    _seed("clip-vit-l/text")
    return CLIPTextModel(_text_config("quick_gelu"))


def _sdxl_text_encoder_2():
    """Stands in for OpenCLIP ViT-bigG/14, shared by SDXL base and refiner."""
    from transformers import CLIPTextModelWithProjection

    _seed("clip-vit-bigg/text")
    return CLIPTextModelWithProjection(_text_config("gelu"))


def _sd2_text_encoder():
    """Stands in for OpenCLIP ViT-H/14, the SD 2.x text encoder used by the x4 upscaler."""
    from transformers import CLIPTextModel

    _seed("clip-vit-h/text")
    return CLIPTextModel(_text_config("gelu"))


# ---- Stable Diffusion 1.x ----------------------------------------------------------

_SD_TEXT_DIM = 32
_SD_IMAGE_SIZE = 64  # default height/width of the tiny SD family


def _autoencoder_kl(role: str, scaling_factor: float, down_blocks: int):
    """An AutoencoderKL downscaling by 2**(down_blocks - 1), as the real VAEs do."""
    from diffusers import AutoencoderKL

    _seed(role)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * down_blocks,
        up_block_types=("UpDecoderBlock2D",) * down_blocks,
        block_out_channels=(16, 16, 32, 32)[:down_blocks],
        norm_num_groups=8,
        latent_channels=4,
        sample_size=_SD_IMAGE_SIZE,
        scaling_factor=scaling_factor,
    )


def _sd_vae():
    return _autoencoder_kl("sd/vae", scaling_factor=0.18215, down_blocks=4)


def _sd_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    _seed("sd/unet")
    return UNet2DConditionModel(
        sample_size=_SD_IMAGE_SIZE // 8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_SD_TEXT_DIM,
        attention_head_dim=8,
    )


def _sd_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sd_components(unet_in_channels: int) -> dict:
    return dict(
        vae=_sd_vae(),
        text_encoder=_sd_text_encoder(),
        tokenizer=_tokenizer(),
        unet=_sd_unet(unet_in_channels),
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sd(folder: pathlib.Path) -> None:
    from diffusers import StableDiffusionPipeline

    _save(StableDiffusionPipeline(**_sd_components(unet_in_channels=4)), folder)


def _build_sd_inpaint(folder: pathlib.Path) -> None:
    from diffusers import StableDiffusionInpaintPipeline

    # noisy latents (4) + masked-image latents (4) + mask (1)
    _save(StableDiffusionInpaintPipeline(**_sd_components(unet_in_channels=9)), folder)


# ---- Stable Diffusion XL -----------------------------------------------------------

_SDXL_TIME_EMBED_DIM = 8


def _sdxl_vae():
    return _autoencoder_kl("sdxl/vae", scaling_factor=0.13025, down_blocks=4)


def _sdxl_unet(role: str, cross_attention_dim: int, time_ids: int):
    """An SDXL UNet; `time_ids` is 6 for the base (sizes and crop) and 5 for the refiner (+ aesthetic score)."""
    from diffusers import UNet2DConditionModel

    _seed(role)
    return UNet2DConditionModel(
        sample_size=_SD_IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=_SDXL_TIME_EMBED_DIM,
        # time ids are embedded one by one, then joined with text_encoder_2's pooled projection
        projection_class_embeddings_input_dim=time_ids * _SDXL_TIME_EMBED_DIM + _SD_TEXT_DIM,
    )


def _sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def _build_sdxl(folder: pathlib.Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline(
        vae=_sdxl_vae(),
        text_encoder=_sd_text_encoder(),
        text_encoder_2=_sdxl_text_encoder_2(),
        tokenizer=_tokenizer(),
        tokenizer_2=_tokenizer(),
        # the UNet cross-attends to both encoders' hidden states, concatenated
        unet=_sdxl_unet("sdxl/unet", cross_attention_dim=2 * _SD_TEXT_DIM, time_ids=6),
        scheduler=_sdxl_scheduler(),
    )
    _save(pipeline, folder)


def _build_sdxl_refiner(folder: pathlib.Path) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipeline = StableDiffusionXLImg2ImgPipeline(
        vae=_sdxl_vae(),
        text_encoder=None,
        text_encoder_2=_sdxl_text_encoder_2(),
        tokenizer=None,
        tokenizer_2=_tokenizer(),
        unet=_sdxl_unet("sdxl-refiner/unet", cross_attention_dim=_SD_TEXT_DIM, time_ids=5),
        scheduler=_sdxl_scheduler(),
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    _save(pipeline, folder)


# ---- Kandinsky 2.2 -----------------------------------------------------------------

_KANDINSKY_EMBED_DIM = 32  # CLIP image embedding: the prior's output, the decoder's condition


def _kandinsky_prior_pipeline():
    import torch
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import CLIPImageProcessorPil, CLIPTextModelWithProjection, CLIPVisionConfig
    from transformers import CLIPVisionModelWithProjection

    _seed("kandinsky22/prior")
    prior = PriorTransformer(
        num_attention_heads=2, attention_head_dim=12, num_layers=1, embedding_dim=_KANDINSKY_EMBED_DIM
    )
    with torch.no_grad():
        prior.clip_std.fill_(1.0)  # it starts at 0, which would scale every embedding to 0

    _seed("kandinsky22/image_encoder")
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            image_size=224,
            patch_size=14,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=_KANDINSKY_EMBED_DIM,
            hidden_act="gelu",
        )
    )

    _seed("kandinsky22/text_encoder")
    text_encoder = CLIPTextModelWithProjection(_text_config("gelu", projection_dim=_KANDINSKY_EMBED_DIM))

    return KandinskyV22PriorPipeline(
        prior=prior,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        tokenizer=_tokenizer(),
        scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        # the PIL backend: the default one needs torchvision, and would name another class
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 224},
            crop_size=224,
            resample=3,
            image_mean=[0.48145466, 0.4578275, 0.40821073],
            image_std=[0.26862954, 0.26130258, 0.27577711],
        ),
    )


def _kandinsky_unet(in_channels: int):
    from diffusers import UNet2DConditionModel

    _seed("kandinsky22/unet")
    return UNet2DConditionModel(
        sample_size=_SD_IMAGE_SIZE // 8,
        in_channels=in_channels,
        out_channels=8,  # noise and learned variance
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        attention_head_dim=4,
        cross_attention_dim=32,
        encoder_hid_dim=_KANDINSKY_EMBED_DIM,
        encoder_hid_dim_type="image_proj",
        addition_embed_type="image",
        resnet_time_scale_shift="scale_shift",
    )


def _movq():
    from diffusers import VQModel

    _seed("kandinsky22/movq")
    return VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        block_out_channels=(32,) * 4,  # SpatialNorm needs multiples of 32; 8x downscale like the real MoVQ
        layers_per_block=1,
        norm_num_groups=8,
        norm_type="spatial",
        latent_channels=4,
        num_vq_embeddings=16,
        vq_embed_dim=4,
        sample_size=_SD_IMAGE_SIZE,
    )


def _kandinsky_decoder_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        clip_sample=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def _build_kandinsky22(folder: pathlib.Path) -> None:
    from diffusers import KandinskyV22InpaintPipeline, KandinskyV22Pipeline

    _save(_kandinsky_prior_pipeline(), folder / "prior")
    decoder = KandinskyV22Pipeline(unet=_kandinsky_unet(4), scheduler=_kandinsky_decoder_scheduler(), movq=_movq())
    _save(decoder, folder / "decoder")
    # noisy latents (4) + masked-image latents (4) + mask (1)
    inpaint = KandinskyV22InpaintPipeline(
        unet=_kandinsky_unet(9), scheduler=_kandinsky_decoder_scheduler(), movq=_movq()
    )
    _save(inpaint, folder / "decoder-inpaint")


# ---- upscalers ---------------------------------------------------------------------


def _latent_upscaler_unet():
    from diffusers import UNet2DConditionModel

    _seed("latent-upscaler/unet")
    return UNet2DConditionModel(
        sample_size=_SD_IMAGE_SIZE // 4,
        in_channels=8,  # noisy latents + the nearest-upscaled input latents
        out_channels=5,  # latents + an unused variance channel
        # diffusers wires K blocks for exactly this 4-block layout, with multiples of 32 channels
        down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
        up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",),
        mid_block_type=None,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        norm_num_groups=None,
        act_fn="gelu",
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=_SD_TEXT_DIM,
        attention_head_dim=8,
        only_cross_attention=False,
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        # the pipeline conditions on 128 noise-level features plus the pooled text embedding
        time_cond_proj_dim=128 + _SD_TEXT_DIM,
    )


def _build_latent_upscaler(folder: pathlib.Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline

    pipeline = StableDiffusionLatentUpscalePipeline(
        vae=_sd_vae(),
        text_encoder=_sd_text_encoder(),
        tokenizer=_tokenizer(),
        unet=_latent_upscaler_unet(),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="sample"
        ),
    )
    _save(pipeline, folder)


_X4_MAX_NOISE_LEVEL = 350


def _x4_unet():
    from diffusers import UNet2DConditionModel

    _seed("x4-upscaler/unet")
    return UNet2DConditionModel(
        sample_size=_SD_IMAGE_SIZE // 4,
        in_channels=7,  # noisy latents + the low-resolution RGB image
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=_SD_TEXT_DIM,
        attention_head_dim=8,
        use_linear_projection=True,
        only_cross_attention=True,  # no self-attention: it would dominate at upscaling sizes
        num_class_embeds=1000,  # the noise level is passed as a class label
    )


def _build_x4_upscaler(folder: pathlib.Path) -> None:
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline

    pipeline = StableDiffusionUpscalePipeline(
        vae=_autoencoder_kl("x4-upscaler/vae", scaling_factor=0.08333, down_blocks=3),
        text_encoder=_sd2_text_encoder(),
        tokenizer=_tokenizer(),
        unet=_x4_unet(),
        low_res_scheduler=DDPMScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear"),
        scheduler=DDIMScheduler(
            beta_start=0.0001,
            beta_end=0.02,
            beta_schedule="scaled_linear",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="v_prediction",
        ),
        max_noise_level=_X4_MAX_NOISE_LEVEL,
    )
    _save(pipeline, folder)


_BUILDERS = {
    "tiny-sd": _build_sd,
    "tiny-sd-inpaint": _build_sd_inpaint,
    "tiny-sdxl": _build_sdxl,
    "tiny-sdxl-refiner": _build_sdxl_refiner,
    "tiny-kandinsky22": _build_kandinsky22,
    "tiny-latent-upscaler": _build_latent_upscaler,
    "tiny-x4-upscaler": _build_x4_upscaler,
}
assert tuple(_BUILDERS) == BUILTIN_NAMES
