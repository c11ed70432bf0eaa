"""Samplers on diffusers pipelines: Text2Img, Img2Img, Inpaint, LatentUpscale and Upscale.

Text2Img, Img2Img, Inpaint and LatentUpscale output `latent`: what the pipeline
returns with output_type="latent", i.e. a LATENT in the model's space (SD and SDXL:
UNet latents, already scaled by the VAE's factor; Kandinsky 2.2: MoVQ latents before
quantisation). Where a model's img2img and inpaint pipelines take such latents as
`image` (SD, SDXL, the refiner), `image` accepts a LATENT of that space too, so chains
stay in latent space; Kandinsky re-encodes its input, so it takes images only.

Every node seeds a CPU torch.Generator with its `seed` (CPU runs are bit-identical)
and reports each denoising step to `ctx.progress`, which is also where a cancelled
run stops. Kandinsky 2.2 runs its prior, then its decoder: one progress bar covers both.
torch and diffusers are imported inside the functions, so importing this module is instant.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.node import Input, Output
from nodegraph.registry import node

from .spaces import FAMILIES, IMG2IMG, INPAINT, KANDINSKY_FAMILY, LATENT_UPSCALE, TEXT2IMG, UPSCALE

SMALLEST_SIDE = 8  # a latent cell of every family these nodes run covers at most 8x8 pixels
KANDINSKY_GRID = 64  # Kandinsky rounds sizes up to multiples of 64, and its inpainting fails off them
MAX_SIDE = 8192


# ---- inputs shared by the nodes --------------------------------------------------------


def _model(task: str) -> Input:
    # A model that cannot do the task is a type error at validation, before anything loads.
    return Input(T.Model(tasks=frozenset({task})), f"The model (from LoadModel); it must be able to do {task}")


PROMPT = Input(T.STRING, "What to paint")
UPSCALE_PROMPT = Input(T.STRING, "What the image shows", default="")
NEGATIVE_PROMPT = Input(T.STRING, "What not to paint", default="")
STEPS = Input(T.INT, "Number of denoising steps", default=30, min=1, max=1000)
GUIDANCE = Input(T.FLOAT, "Classifier-free guidance: how closely to follow the prompt; unset: the pipeline's "
                 "own default (e.g. 7.5 for SD, 4 for Kandinsky)", default=None, optional=True, min=0, max=100)
SEED = Input(T.SEED, "Seed of the noise; the same seed gives the same result", default=0)
IMAGES_PER_PROMPT = Input(T.INT, "How many results to make for each input", default=1, min=1, max=64)


def _strength(default: float) -> Input:
    return Input(T.FLOAT, "How much to change the image: 0 keeps it, 1 repaints it from noise",
                 default=default, min=0, max=1)


def _side(name: str, unset: str) -> Input:
    return Input(T.INT, f"{name.capitalize()} in pixels, a multiple of 8 (of 64 for Kandinsky); unset: {unset}",
                 default=None, optional=True, min=SMALLEST_SIDE, max=MAX_SIDE)


def _image(what: str) -> Input:
    return Input(T.IMAGE | T.LATENT, f"The image to {what}; SD and SDXL models also take a latent of their space",
                 expect=_image_or_own_latent, encoded_by=("model", "vae"))


# ---- types: what validation sees ------------------------------------------------------


def _known_model(view) -> T.Model | None:
    """The model's type, if validation knows its family (a model id from a link is known only when it loads)."""
    model = view.type("model")
    return model if isinstance(model, T.Model) and model.family else None


def _model_space_latent(view) -> T.Latent:
    model = _known_model(view)
    return T.Latent(model.space if model else None)


def _image_or_own_latent(view) -> T.Type:
    """expect hook: `image` takes a latent of the model's own space where its pipelines read latents."""
    model = _known_model(view)
    if model is None:
        return T.IMAGE | T.LATENT  # checked when the model has loaded
    return T.IMAGE | T.Latent(model.space) if model.latent_image else T.IMAGE


def _latent_output(view) -> dict[str, T.Type]:
    return {"latent": _model_space_latent(view)}


def _text2img_types(view) -> dict[str, T.Type]:
    _check_literal_sides(view)
    return _latent_output(view)


def _img2img_types(view) -> dict[str, T.Type]:
    _check_literal_strength(view)
    return _latent_output(view)


def _inpaint_types(view) -> dict[str, T.Type]:
    _check_literal_sides(view)
    _check_literal_strength(view)
    model = _known_model(view)
    if model and model.family == KANDINSKY_FAMILY and view.value("strength") is not None:
        check_kandinsky_strength(view.value("strength"))
    return _latent_output(view)


def _check_literal_sides(view) -> None:
    model = _known_model(view)
    for side in ("height", "width"):
        if view.value(side) is not None:
            check_side(side, view.value(side), model)


def _check_literal_strength(view) -> None:
    steps, strength = view.value("num_inference_steps"), view.value("strength")
    if steps is not None and strength is not None:
        check_strength(steps, strength)


# ---- checks, at validation (on literals) and when running -----------------------------


def check_side(name: str, pixels: int, model) -> None:
    """A side in pixels must cover whole latent cells of the model (its type, or a loaded model)."""
    if model is None:
        multiple = SMALLEST_SIDE
    else:
        multiple = KANDINSKY_GRID if model.family == KANDINSKY_FAMILY else model.space.downscale
    if pixels % multiple:
        lower, upper = pixels // multiple * multiple, (pixels // multiple + 1) * multiple
        raise InputError(name, f"expected a multiple of {multiple} pixels, got {pixels}", code="value.not_multiple",
                         hint=f"use {lower or upper} or {upper}")


def denoising_steps(steps: int, strength: float) -> int:
    """How many of `steps` an img2img pipeline runs at `strength`, as diffusers counts them."""
    return min(int(steps * strength), steps)


def check_strength(steps: int, strength: float) -> None:
    if denoising_steps(steps, strength) < 1:
        raise InputError("strength", f"strength {strength} of {steps} steps leaves no denoising step to run",
                         code="value.no_steps", hint=f"raise strength to at least {1 / steps:g}, or the steps")


def check_kandinsky_strength(strength: float) -> None:
    if strength != 1:
        raise InputError("strength", "Kandinsky 2.2 inpainting always repaints the masked area from noise, "
                         f"so strength must be 1, got {strength}", code="value.unsupported", hint="set strength to 1")


def _pipeline(model, task: str, image=None):
    """The model's pipeline for `task` (the handle refuses tasks its family cannot do)."""
    if image is not None and is_latent(image) and not FAMILIES[model.family].latent_image:
        # validation catches this unless the model was chosen by a link and loaded only now
        raise InputError("image", f"{model.family} pipelines take images only, got a latent of shape "
                         f"{tuple(image.shape)}", code="type.mismatch",
                         hint="insert a Decode node (with this latent's VAE) to turn the latent into an image")
    return model.pipeline(task)


def _check_mask_size(image, mask, space) -> None:
    height, width = pixel_size(image, space)
    if tuple(mask.shape[-2:]) != (height, width):
        raise InputError("mask_image", f"expected a mask of {width}x{height} (the image's size), "
                         f"got {mask.shape[-1]}x{mask.shape[-2]}", code="mask.wrong_size",
                         hint="Resize the mask (ResizeMask with size_of set to the image)")


def is_latent(value) -> bool:
    return value.shape[1] != 3  # an IMAGE is RGB


def pixel_size(image, space) -> tuple[int, int]:
    """(height, width) of an IMAGE, or of the image a latent of `space` decodes to."""
    scale = space.downscale if is_latent(image) else 1
    return image.shape[-2] * scale, image.shape[-1] * scale


# ---- running a pipeline ------------------------------------------------------------------


def _prompts(prompt: str, negative_prompt: str, count: int) -> dict:
    # One prompt per input image. An empty negative prompt is left unset: SDXL then uses
    # zero embeddings, as diffusers does by default.
    return {"prompt": [prompt] * count, "negative_prompt": [negative_prompt] * count if negative_prompt else None}


def _generator(seed: int):
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def _is_two_stage(pipeline) -> bool:
    """Kandinsky's combined pipelines run a prior (text -> image embedding), then a decoder."""
    return hasattr(pipeline, "prior_pipe")


def _report_steps(ctx, before: int = 0, after: int = 0):
    """A diffusers `callback_on_step_end` that reports to ctx.progress, which raises
    Interrupted when the run was cancelled: interrupts take effect between steps.
    `before`/`after` count the steps of the other stage of a two-stage pipeline."""

    def report(pipeline, step, timestep, tensors):
        ctx.progress(before + step + 1, before + pipeline.num_timesteps + after,
                     preview=latent_preview(tensors.get("latents")))
        return {}

    return report


def latent_preview(latents) -> Callable[[], Any] | None:
    """A cheap look at a denoising latent, for progress events: its first three channels, each
    stretched to 0..255, as an RGB image the latent's size (no VAE decode). None for what is not
    an image latent (Kandinsky's prior steps an embedding)."""
    if latents is None or latents.ndim != 4 or latents.shape[1] < 3:
        return None

    def look():
        from PIL import Image

        channels = latents[0, :3].detach().float().cpu()
        low = channels.amin(dim=(1, 2), keepdim=True)
        span = (channels.amax(dim=(1, 2), keepdim=True) - low).clamp(min=1e-6)
        pixels = ((channels - low) / span * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
        return Image.fromarray(pixels, "RGB")

    return look


def _step_callbacks(pipeline, ctx, steps: int, decoder_steps: int) -> dict:
    if not _is_two_stage(pipeline):
        return {"callback_on_step_end": _report_steps(ctx)}
    return {"prior_num_inference_steps": steps,
            "prior_callback_on_step_end": _report_steps(ctx, after=decoder_steps),
            "callback_on_step_end": _report_steps(ctx, before=steps)}


def _denoise(pipeline, ctx, seed: int, guidance_scale: float | None, **arguments):
    """Run a text2img/img2img/inpaint pipeline to latents; they come back on the CPU, in float32."""
    import torch

    steps = arguments["num_inference_steps"]
    if guidance_scale is not None:
        arguments["guidance_scale"] = guidance_scale
        if _is_two_stage(pipeline):
            arguments["prior_guidance_scale"] = guidance_scale
    decoder_steps = denoising_steps(steps, arguments.get("strength", 1.0))
    arguments.update(_step_callbacks(pipeline, ctx, steps, decoder_steps))
    latents = pipeline(generator=_generator(seed), output_type="latent", **arguments).images
    return latents.to("cpu", torch.float32)


# ---- Text2Img -----------------------------------------------------------------------------


@node(
    "Text2Img",
    category="sampling",
    inputs={
        "model": _model(TEXT2IMG),
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "height": _side("height", "the model's native size"),
        "width": _side("width", "the model's native size"),
        "num_images_per_prompt": IMAGES_PER_PROMPT,
        "seed": SEED,
    },
    outputs={"latent": Output(T.LATENT, "The generated latents, in the model's latent space")},
    infer=_text2img_types,
)
def text2img(model, prompt, negative_prompt, num_inference_steps, guidance_scale, height, width,
             num_images_per_prompt, seed, ctx):
    """Generate latents from a text prompt."""
    pipeline = _pipeline(model, TEXT2IMG)
    native = pipeline.unet.config.sample_size * model.space.downscale  # the size the model was trained at
    height, width = height or native, width or native
    check_side("height", height, model)
    check_side("width", width, model)
    return _denoise(pipeline, ctx, seed, guidance_scale, **_prompts(prompt, negative_prompt, 1),
                    num_inference_steps=num_inference_steps, height=height, width=width,
                    num_images_per_prompt=num_images_per_prompt)


# ---- Img2Img ------------------------------------------------------------------------------


@node(
    "Img2Img",
    category="sampling",
    inputs={
        "model": _model(IMG2IMG),
        "image": _image("start from"),
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "strength": _strength(0.8),
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "num_images_per_prompt": IMAGES_PER_PROMPT,
        "seed": SEED,
    },
    outputs={"latent": Output(T.LATENT, "The new latents, in the model's latent space")},
    infer=_img2img_types,
)
def img2img(model, image, prompt, negative_prompt, strength, num_inference_steps, guidance_scale,
            num_images_per_prompt, seed, ctx):
    """Repaint an image (or latent) guided by a text prompt; `strength` says how much."""
    check_strength(num_inference_steps, strength)
    pipeline = _pipeline(model, IMG2IMG, image)
    return _denoise(pipeline, ctx, seed, guidance_scale, **_prompts(prompt, negative_prompt, len(image)),
                    image=image, strength=strength, num_inference_steps=num_inference_steps,
                    num_images_per_prompt=num_images_per_prompt)


# ---- Inpaint ------------------------------------------------------------------------------


@node(
    "Inpaint",
    category="sampling",
    inputs={
        "model": _model(INPAINT),
        "image": _image("paint into"),
        "mask_image": Input(T.MASK, "Where to paint: 1 (white) repaints, 0 (black) keeps; the image's size"),
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "strength": _strength(1.0),
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "height": _side("height", "the image's height"),
        "width": _side("width", "the image's width"),
        "num_images_per_prompt": IMAGES_PER_PROMPT,
        "seed": SEED,
        "keep_unmasked": Input(T.BOOL, "Keep the pixels outside the mask exactly as they were: the Decode of "
                               "these latents puts them back (a VAE would change them a little)", default=True),
    },
    outputs={"latent": Output(T.LATENT, "The inpainted latents, in the model's latent space")},
    infer=_inpaint_types,
)
def inpaint(model, image, mask_image, prompt, negative_prompt, strength, num_inference_steps, guidance_scale,
            height, width, num_images_per_prompt, seed, keep_unmasked, ctx):
    """Repaint the masked area of an image (or latent) guided by a text prompt."""
    _check_mask_size(image, mask_image, model.space)
    check_strength(num_inference_steps, strength)
    for name, side in (("height", height), ("width", width)):
        if side is not None:
            check_side(name, side, model)
    pipeline = _pipeline(model, INPAINT, image)
    image, mask_image = _resized(image, mask_image, height, width, model.space)
    # A latent image is decoded once, for whichever of the masked image and the kept pixels needs it.
    pixels = functools.cache(lambda: model.vae.decode(image) if is_latent(image) else image)
    if _is_two_stage(pipeline):
        check_kandinsky_strength(strength)
        arguments = _kandinsky_inpaint_arguments(image, mask_image, num_images_per_prompt, model.space)
    else:
        arguments = _sd_inpaint_arguments(model, pipeline, image, mask_image, strength, pixels)
    latents = _denoise(pipeline, ctx, seed, guidance_scale, **_prompts(prompt, negative_prompt, len(image)),
                       num_inference_steps=num_inference_steps, num_images_per_prompt=num_images_per_prompt,
                       **arguments)
    if keep_unmasked:
        keep_unmasked_pixels(latents, pixels().repeat_interleave(num_images_per_prompt, 0),
                             mask_image.repeat_interleave(num_images_per_prompt, 0))
    return latents


KEPT_PIXELS = "nodegraph_kept_pixels"  # latents' attribute: (pixels, mask) their Decode puts back


def keep_unmasked_pixels(latents, pixels, mask) -> None:
    """Have the Decode of `latents` keep `pixels` where `mask` is 0, blending where it is between."""
    setattr(latents, KEPT_PIXELS, (pixels, mask))


def with_kept_pixels(latents, decoded):
    """`decoded` with the pixels an Inpaint kept outside its mask put back (see keep_unmasked_pixels)."""
    kept = getattr(latents, KEPT_PIXELS, None)
    if kept is None or kept[0].shape != decoded.shape:
        return decoded
    pixels, mask = kept
    return decoded * mask + pixels * (1 - mask)


def _resized(image, mask, height: int | None, width: int | None, space):
    """Image and mask stretched to height x width (each defaults to the image's own)."""
    from .images import resize_tensor

    old_height, old_width = pixel_size(image, space)
    height, width = height or old_height, width or old_width
    if (height, width) == (old_height, old_width):
        return image, mask
    if is_latent(image):
        raise InputError("height" if height != old_height else "width",
                         f"a latent image ({old_width}x{old_height}) cannot be resized to {width}x{height}",
                         code="value.unsupported", hint="leave height and width unset, or Decode and Resize first")
    return (resize_tensor(image, width, height, "stretch", "bicubic"),
            resize_tensor(mask, width, height, "stretch", "bilinear"))


def _sd_inpaint_arguments(model, pipeline, image, mask, strength: float, pixels) -> dict:
    """`pixels()`: the image decoded, where it is a latent."""
    # Without height and width, diffusers would resize to the model's native size; sides
    # off the latent grid are resized down onto it, as Img2Img does.
    height, width = pixel_size(image, model.space)
    grid = model.space.downscale
    arguments = {"image": image, "mask_image": mask, "strength": strength,
                 "height": height - height % grid, "width": width - width % grid}
    if is_latent(image):
        # diffusers masks the image in pixel space, which a latent cannot be; hand it the
        # masked image's latents instead (only 9-channel inpainting UNets read them).
        reads_masked_image = pipeline.unet.config.in_channels == 9
        arguments["masked_image_latents"] = (_masked_image_latents(model.vae, pixels(), mask) if reads_masked_image
                                             else image)
    return arguments


def _masked_image_latents(vae, pixels, mask):
    """Latents of the image with the masked area blanked to grey (0 in [-1, 1]), as diffusers blanks it."""
    keep = (mask < 0.5).float()  # diffusers binarises masks at 0.5
    return vae.encode(pixels * keep + 0.5 * (1 - keep))


def _kandinsky_inpaint_arguments(image, mask, copies: int, space) -> dict:
    height, width = pixel_size(image, space)
    if height % KANDINSKY_GRID or width % KANDINSKY_GRID:
        raise InputError("image", f"Kandinsky 2.2 inpaints images whose sides are multiples of {KANDINSKY_GRID} "
                         f"pixels, got {width}x{height}", code="value.not_multiple",
                         hint="set height and width, or Resize the image and its mask")
    if len(image) != 1:
        # diffusers' Kandinsky inpainting keeps the unmasked area of the first image only
        raise InputError("image", f"Kandinsky 2.2 inpaints one image at a time, got a batch of {len(image)}",
                         code="value.unsupported", hint="use LoadImages to stream the images one by one")
    # Its decoder wants one image and mask per result (as new tensors: it binarises the mask
    # in place), the image in [-1, 1]. Since diffusers 0.19 it repaints where the mask is 1, as we do.
    return {"image": image.repeat(copies, 1, 1, 1) * 2 - 1, "mask_image": mask.repeat(copies, 1, 1, 1),
            "height": height, "width": width}


# ---- upscalers ----------------------------------------------------------------------------


@node(
    "LatentUpscale",
    category="sampling",
    inputs={
        "model": _model(LATENT_UPSCALE),
        "latent": Input(T.LATENT, "The latent to upscale, in the model's (SD) space", expect=_model_space_latent),
        "prompt": UPSCALE_PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "num_inference_steps": Input(T.INT, "Number of denoising steps", default=20, min=1, max=1000),
        "guidance_scale": GUIDANCE,
        "seed": SEED,
    },
    outputs={"latent": Output(T.LATENT, "The latent at twice the width and height, in the same space")},
    infer=_latent_output,
)
def latent_upscale(model, latent, prompt, negative_prompt, num_inference_steps, guidance_scale, seed, ctx):
    """Double a latent's width and height with the SD x2 latent upscaler."""
    import torch

    pipeline = _pipeline(model, LATENT_UPSCALE)
    upscaled = pipeline(image=latent, num_inference_steps=num_inference_steps, generator=_generator(seed),
                        output_type="latent", **_legacy_step_callback(ctx, num_inference_steps),
                        **_optional(guidance_scale=guidance_scale), **_prompts(prompt, negative_prompt, len(latent)))
    return upscaled.images.to("cpu", torch.float32)


@node(
    "Upscale",
    category="sampling",
    inputs={
        "model": _model(UPSCALE),
        # IMAGE only: the x4 upscaler conditions on pixels; diffusers fails deep inside on a latent
        "image": Input(T.IMAGE, "The image to upscale"),
        "prompt": UPSCALE_PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "noise_level": Input(T.INT, "How much noise to add to the image first; more invents more detail",
                             default=20, min=0, max=350),
        "num_inference_steps": STEPS,
        "guidance_scale": GUIDANCE,
        "seed": SEED,
    },
    outputs={"image": Output(T.IMAGE, "The image at four times the width and height")},
)
def upscale(model, image, prompt, negative_prompt, noise_level, num_inference_steps, guidance_scale, seed, ctx):
    """Make an image four times as wide and high with the SD x4 upscaler."""
    import torch

    pipeline = _pipeline(model, UPSCALE)
    upscaled = pipeline(image=image, noise_level=noise_level, num_inference_steps=num_inference_steps,
                        generator=_generator(seed), output_type="pt", **_legacy_step_callback(ctx, num_inference_steps),
                        **_optional(guidance_scale=guidance_scale), **_prompts(prompt, negative_prompt, len(image)))
    return upscaled.images.to("cpu", torch.float32)


def _legacy_step_callback(ctx, steps: int) -> dict:
    """The upscalers predate callback_on_step_end: they call `callback(step, timestep, latents)`."""
    return {"callback": lambda step, timestep, latents: ctx.progress(step + 1, steps), "callback_steps": 1}


def _optional(**arguments) -> dict:
    """The arguments that are set; unset ones keep the pipeline's defaults."""
    return {name: value for name, value in arguments.items() if value is not None}
