"""The demo model's report: what it does on held-out pictures and captions, at fixed seeds.

Every figure is measured with diffusers' own pipelines on a saved folder, judged by
the pixel probe (nodes.demo.probe) against what the caption or the source picture
says. The issue's acceptance targets sit beside each figure.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
from scipy import ndimage

from . import data, probe
from .vae_training import images_to_tensor

STEPS = 25
GUIDANCE = 5.0
COUNT = 64  # held-out single-shape pictures per measurement
PAIRS = 32  # held-out two-shape captions
SHEET_ROWS = 8
INPAINT_MARGIN = 3  # pixels the inpainting mask reaches beyond the shape

TARGETS = {
    "vae_psnr_db": 22.0,
    "vae_colour_accuracy": 0.95,
    "text2img_colour_accuracy": 0.75,
    "text2img_shape_accuracy": 0.60,
    "img2img_0.3_ssim": 0.6,
    "img2img_0.8_recolour_accuracy": 0.70,
    "inpaint_recolour_accuracy": 0.70,
}


def write(folder: pathlib.Path, report_dir: pathlib.Path, device, extra: dict | None = None) -> dict:
    """Measure the model in `folder`; write report.json and contact_sheet.png to `report_dir`."""
    pipes = _pipelines(folder, device)
    singles = [s for s in data.samples(data.HELDOUT, 0, 4 * COUNT) if len(s.shapes) == 1][:COUNT]
    pairs = [s for s in data.samples(data.HELDOUT, 0, 4 * PAIRS) if len(s.shapes) == 2][:PAIRS]
    results, sheet = {}, {}
    results["vae"], sheet["round trip"] = vae_round_trip(pipes["text2img"].vae, singles + pairs, device)
    results["text2img"], sheet["text2img"] = text_to_image(pipes["text2img"], singles)
    results["text2img_pairs"], sheet["pairs"] = text_to_image_pairs(pipes["text2img"], pairs)
    results["img2img_0.3"], sheet["img2img 0.3"] = img2img_layout(pipes["img2img"], singles)
    results["img2img_0.8"], sheet["img2img 0.8"] = img2img_recolour(pipes["img2img"], singles)
    results["inpaint"], sheet["inpaint"] = inpaint_recolour(pipes["inpaint"], singles)
    report = {"results": results, "acceptance": acceptance(results), "settings": _settings(), **(extra or {})}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    contact_sheet([s.image for s in singles], sheet).save(report_dir / "contact_sheet.png")
    return report


def acceptance(results: dict) -> dict:
    measured = {
        "vae_psnr_db": results["vae"]["psnr_db"],
        "vae_colour_accuracy": results["vae"]["colour_accuracy"],
        "text2img_colour_accuracy": results["text2img"]["colour_accuracy"],
        "text2img_shape_accuracy": results["text2img"]["shape_accuracy"],
        "img2img_0.3_ssim": results["img2img_0.3"]["ssim"],
        "img2img_0.8_recolour_accuracy": results["img2img_0.8"]["recolour_accuracy"],
        "inpaint_recolour_accuracy": results["inpaint"]["recolour_accuracy"],
    }
    return {name: {"measured": value, "target": TARGETS[name], "met": value >= TARGETS[name]}
            for name, value in measured.items()}


# ---- measurements -----------------------------------------------------------------------------------


def vae_round_trip(vae, samples: list[data.Sample], device) -> tuple[dict, list[np.ndarray]]:
    """PSNR of decode(encode(x)); how often each shape keeps its colour (read inside the shape), and how
    often the probe still recognises a single shape (a ceiling for text→image shape accuracy)."""
    import torch

    images = np.stack([s.image for s in samples])
    with torch.no_grad():
        latents = vae.encode(images_to_tensor(images, device).to(vae.dtype)).latent_dist.mode()
        decoded = vae.decode(latents).sample.float()
    decoded = ((decoded.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    mse = np.mean((decoded.astype(np.float64) - images) ** 2)
    kept = [probe.dominant_colour(out.astype(np.float32), _inside(mask)) == shape.colour
            for s, out in zip(samples, decoded) for shape, mask in zip(s.shapes, s.masks)]
    recognised = [probe.read(out).shape == s.shapes[0].kind for s, out in zip(samples, decoded) if len(s.shapes) == 1]
    return {"psnr_db": _round(10 * np.log10(255 ** 2 / mse)), "colour_accuracy": _round(np.mean(kept)),
            "single_shape_accuracy": _round(np.mean(recognised)), "pictures": len(samples),
            "shapes": len(kept)}, list(decoded)


def text_to_image(pipe, samples: list[data.Sample]) -> tuple[dict, list[np.ndarray]]:
    images = _run(pipe, [s.caption for s in samples])
    readings = [probe.read(image) for image in images]
    colour = [r.colour == s.shapes[0].colour for r, s in zip(readings, samples)]
    shape = [r.shape == s.shapes[0].kind for r, s in zip(readings, samples)]
    return {"colour_accuracy": _round(np.mean(colour)), "shape_accuracy": _round(np.mean(shape)),
            "captions": len(samples), "distinct_captions": len({s.caption for s in samples})}, images


def text_to_image_pairs(pipe, samples: list[data.Sample]) -> tuple[dict, list[np.ndarray]]:
    """Two-shape captions, each half of the picture read on its own (the caption names them left to right)."""
    images = _run(pipe, [s.caption for s in samples])
    half = data.SIZE // 2
    readings = [(probe.read(image[:, :half]), probe.read(image[:, half:])) for image in images]
    colour = [r.colour == shape.colour for rs, s in zip(readings, samples) for r, shape in zip(rs, s.shapes)]
    shape = [r.shape == shape.kind for rs, s in zip(readings, samples) for r, shape in zip(rs, s.shapes)]
    return {"colour_accuracy": _round(np.mean(colour)), "shape_accuracy": _round(np.mean(shape)),
            "captions": len(samples), "target": None}, images


def img2img_layout(pipe, samples: list[data.Sample]) -> tuple[dict, list[np.ndarray]]:
    images = _run(pipe, [s.caption for s in samples], image=_pil([s.image for s in samples]), strength=0.3)
    scores = [ssim(out, s.image) for out, s in zip(images, samples)]
    return {"ssim": _round(np.mean(scores)), "ssim_min": _round(np.min(scores)), "pictures": len(samples)}, images


def img2img_recolour(pipe, samples: list[data.Sample]) -> tuple[dict, list[np.ndarray]]:
    colours = [new_colour(s, i) for i, s in enumerate(samples)]
    prompts = [recaptioned(s, c) for s, c in zip(samples, colours)]
    images = _run(pipe, prompts, image=_pil([s.image for s in samples]), strength=0.8)
    changed = [probe.read(image).colour == colour for image, colour in zip(images, colours)]
    return {"recolour_accuracy": _round(np.mean(changed)), "pictures": len(samples)}, images


def inpaint_recolour(pipe, samples: list[data.Sample]) -> tuple[dict, list[np.ndarray]]:
    """Repaint a shape's region in a new colour: does the colour appear inside, and what changes outside?"""
    colours = [new_colour(s, i) for i, s in enumerate(samples)]
    prompts = [recaptioned(s, c) for s, c in zip(samples, colours)]
    regions = [ndimage.binary_dilation(s.masks[0] > 0, iterations=INPAINT_MARGIN) for s in samples]
    masks = _pil([(region * 255).astype(np.uint8) for region in regions])
    images = _run(pipe, prompts, image=_pil([s.image for s in samples]), mask_image=masks)
    hits, outside = [], []
    for image, sample, region, colour in zip(images, samples, regions, colours):
        background = np.array(data.BACKGROUNDS[sample.background], np.float32)
        painted = region & probe.foreground(image.astype(np.float32), background)
        hits.append(probe.dominant_colour(image.astype(np.float32), painted) == colour)
        outside.append(np.abs(image.astype(np.float32) - sample.image)[~region].mean())
    return {"recolour_accuracy": _round(np.mean(hits)), "mean_abs_change_outside_mask": _round(np.mean(outside)),
            "pictures": len(samples), "unet": "the 4-channel UNet (the pipeline blends known latents)"}, images


def new_colour(sample: data.Sample, index: int) -> str:
    """A colour other than the shape's, cycling through all the others."""
    names = list(data.COLOURS)
    return names[(names.index(sample.shapes[0].colour) + 1 + index % (len(names) - 1)) % len(names)]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two RGB pictures' luminance (Wang et al. 2004, Gaussian window σ=1.5)."""
    luma = np.array([0.299, 0.587, 0.114])
    x, y = np.asarray(a, np.float64) @ luma, np.asarray(b, np.float64) @ luma
    blur = lambda image: ndimage.gaussian_filter(image, 1.5)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(np.mean((2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))))


# ---- the contact sheet ------------------------------------------------------------------------------


def contact_sheet(originals: list[np.ndarray], columns: dict[str, list[np.ndarray]], scale: int = 2):
    """One row per held-out picture: the original, then each measurement's output for it."""
    from PIL import Image

    rows = [np.concatenate([originals[i], *(images[i] for images in columns.values())], axis=1)
            for i in range(SHEET_ROWS)]
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    return sheet.resize((sheet.width * scale, sheet.height * scale), Image.NEAREST)


# ---- helpers ----------------------------------------------------------------------------------------


def _pipelines(folder: pathlib.Path, device) -> dict:
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    text2img = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32).to(device)
    pipes = {"text2img": text2img,
             "img2img": StableDiffusionImg2ImgPipeline.from_pipe(text2img, torch_dtype=torch.float32),
             "inpaint": StableDiffusionInpaintPipeline.from_pipe(text2img, torch_dtype=torch.float32)}
    for pipe in pipes.values():
        pipe.set_progress_bar_config(disable=True)
    return pipes


def _run(pipe, prompts: list[str], **inputs) -> list[np.ndarray]:
    """uint8 pictures, seed i for prompt i."""
    import torch

    generators = [torch.Generator(pipe.device).manual_seed(i) for i in range(len(prompts))]
    out = pipe(prompts, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generators,
               height=data.SIZE, width=data.SIZE, output_type="np", **inputs).images
    return list(np.clip(np.rint(out * 255), 0, 255).astype(np.uint8))


def recaptioned(sample: data.Sample, colour: str) -> str:
    """The single-shape sample's caption with its shape in `colour`."""
    return data.caption((dataclasses.replace(sample.shapes[0], colour=colour),), sample.background)


def _pil(images: list[np.ndarray]):
    from PIL import Image

    return [Image.fromarray(image) for image in images]


def _inside(mask: np.ndarray) -> np.ndarray:
    """The shape's fully covered pixels, one pixel in from the edge, where the colour is read."""
    core = ndimage.binary_erosion(mask >= 1)
    return core if core.any() else mask > 0.5


def _round(value) -> float:
    return round(float(value), 4)


def _settings() -> dict:
    return {"steps": STEPS, "guidance_scale": GUIDANCE, "seeds": "prompt i uses seed i", "count": COUNT,
            "pairs": PAIRS, "split": data.HELDOUT, "scheduler": "DDIM (the model's own)"}
