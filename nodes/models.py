"""LoadModel, and the `--tiny` rewrite that swaps every model for a tiny builtin.

A model is a Hugging Face hub id, a local diffusers folder, a single checkpoint
file, or `builtin:NAME`. LoadModel learns its family and latent space without
loading a weight: from its config files (model_index.json, unet/config.json), from
a checkpoint's safetensors header, or, for a hub model that is not in the local
Hugging Face cache, from a table of well-known ids. So validation types the whole
graph at once; the weights load when the node runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.graph import Graph, Link
from nodegraph.node import MODEL_PATH, Input, Output
from nodegraph.optimize.rewrite import Rewrite
from nodegraph.registry import node, registry, rewrite
from nodegraph.resources import Component

from . import builtins, handles, parts, weights
from .handles import KANDINSKY_DECODER, KANDINSKY_INPAINT_DECODER, KANDINSKY_PRIOR, MAIN
from .spaces import KANDINSKY_FAMILY, TINY_BUILTINS, model_type, space_of

BUILTIN_PREFIX = "builtin:"
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_NOT_FOUND_HINT = ("give a local diffusers folder, a .safetensors checkpoint, a Hugging Face hub id (owner/name) "
                   "or builtin:NAME; run with --tiny to use the tiny builtins instead")

# Hub models whose family is known without their config files (when they are not in the local cache).
KNOWN_HUB_MODELS: dict[str, str] = {
    "runwayml/stable-diffusion-v1-5": "sd",
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd",
    "compvis/stable-diffusion-v1-4": "sd",
    "stabilityai/stable-diffusion-2": "sd",
    "stabilityai/stable-diffusion-2-base": "sd",
    "stabilityai/stable-diffusion-2-1": "sd",
    "stabilityai/stable-diffusion-2-1-base": "sd",
    "ogkalu/comic-diffusion": "sd",
    "kohbanye/pixel-art-style": "sd",
    "runwayml/stable-diffusion-inpainting": "sd-inpaint",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "sd-inpaint",
    "stabilityai/stable-diffusion-2-inpainting": "sd-inpaint",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "stabilityai/stable-diffusion-xl-refiner-1.0": "sdxl-refiner",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": "sdxl-inpaint",
    "kandinsky-community/kandinsky-2-2-prior": KANDINSKY_FAMILY,
    "kandinsky-community/kandinsky-2-2-decoder": KANDINSKY_FAMILY,
    "kandinsky-community/kandinsky-2-2-decoder-inpaint": KANDINSKY_FAMILY,
    "stabilityai/sd-x2-latent-upscaler": "latent-upscaler",
    "stabilityai/stable-diffusion-x4-upscaler": "x4-upscaler",
}

# Kandinsky 2.2 comes as three hub models; a handle needs the prior and a decoder.
KANDINSKY_HUB_MODELS = {
    KANDINSKY_PRIOR: "kandinsky-community/kandinsky-2-2-prior",
    KANDINSKY_DECODER: "kandinsky-community/kandinsky-2-2-decoder",
    KANDINSKY_INPAINT_DECODER: "kandinsky-community/kandinsky-2-2-decoder-inpaint",
}
KANDINSKY_ROLES = tuple(KANDINSKY_HUB_MODELS)

# model_index.json's pipeline class -> family (refined by the UNet's input channels)
_PIPELINE_FAMILIES = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionImg2ImgPipeline": "sd",
    "StableDiffusionInpaintPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusionXLImg2ImgPipeline": "sdxl",
    "StableDiffusionXLInpaintPipeline": "sdxl",
    "KandinskyV22PriorPipeline": KANDINSKY_FAMILY,
    "KandinskyV22Pipeline": KANDINSKY_FAMILY,
    "KandinskyV22Img2ImgPipeline": KANDINSKY_FAMILY,
    "KandinskyV22InpaintPipeline": KANDINSKY_FAMILY,
    "KandinskyV22CombinedPipeline": KANDINSKY_FAMILY,
    "StableDiffusionLatentUpscalePipeline": "latent-upscaler",
    "StableDiffusionUpscalePipeline": "x4-upscaler",
}


# ---- where a model is ------------------------------------------------------------------------


def classify(model: str) -> tuple[str, str]:
    """(kind, what) for LoadModel's `model`: ("builtin", name), ("folder", path), ("file", path) or ("hub", id)."""
    text = model.strip()
    if not text:
        raise InputError("model", "no model given", code="model.not_found", hint=_NOT_FOUND_HINT)
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):]
        if name not in builtins.FAMILIES:
            raise InputError("model", f"there is no builtin model {name!r}", code="model.not_found",
                             hint="the builtins: " + ", ".join(BUILTIN_PREFIX + n for n in builtins.FAMILIES))
        return "builtin", name
    try:
        path = Path(text).expanduser()
        if path.is_dir():
            return "folder", str(path)
        if path.is_file():
            return "file", str(path)
        if os.path.lexists(path):
            raise InputError("model", f"{_short(text)} is neither a model folder nor a checkpoint file (a device, "
                             "a pipe, or a link that leads nowhere)", code="model.not_found", hint=_NOT_FOUND_HINT)
    except (OSError, RuntimeError) as error:  # a name longer than the file system allows, ~nosuchuser
        raise InputError("model", f"{_short(text)} cannot be a model path: {getattr(error, 'strerror', None) or error}",
                         code="model.not_found", hint=_NOT_FOUND_HINT) from None
    if _HUB_ID.fullmatch(text) and not text.lower().endswith((".safetensors", *PICKLE_SUFFIXES)):
        return "hub", text
    raise InputError("model", f"no model at {_short(text)}: there is no such file or folder", code="model.not_found",
                     hint=_NOT_FOUND_HINT)


def _short(text: str, limit: int = 120) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def cached_hub_folder(repo_id: str) -> Path | None:
    """The model's folder in the local Hugging Face cache, if its model_index.json is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


# ---- what a model is, from its config files ------------------------------------------------


def detect_family(model: str, allow_pickle: bool = False) -> str | None:
    """The model's family, read from config files or a checkpoint header only.

    None for a pickle checkpoint, whose contents cannot be read without unpickling:
    its family is learnt when it loads.
    """
    kind, what = classify(model)
    if kind == "builtin":
        return builtins.FAMILIES[what]
    if kind == "folder":
        family = folder_family(Path(what))
        for folder in _diffusers_folders(Path(what)).values():
            for component in weights.component_folders(folder):
                weights.refuse_pickle_only(component, allow_pickle)
        return family
    if kind == "file":
        if what.lower().endswith(PICKLE_SUFFIXES):
            _refuse_pickle(what, allow_pickle)
            return None
        return checkpoint_family(weights.tensor_shapes(Path(what)), Path(what).name)
    cached = cached_hub_folder(what)
    if cached is not None:
        return folder_family(cached)
    family = KNOWN_HUB_MODELS.get(what.lower())
    if family is None:
        raise InputError("model", f"{what!r} is neither a local path nor a model in the local Hugging Face cache",
                         code="model.not_found",
                         hint=f"download it first (hf download {what}), or {_NOT_FOUND_HINT}")
    return family


def detect_space(model: str, family: str) -> T.LatentSpace:
    """The model's latent space, from its VAE's config (see spaces.space_of), without loading a weight."""
    kind, what = classify(model)
    folder = builtins.DEMO_FOLDER if kind == "builtin" and what.startswith("demo-") else \
        Path(what) if kind == "folder" else cached_hub_folder(what) if kind == "hub" else None
    return space_of(family, vae_config(folder) if folder is not None else None)


def vae_config(folder: Path) -> dict | None:
    config = weights.read_json(folder / "vae" / "config.json")
    return config if isinstance(config, dict) else None


def folder_family(folder: Path) -> str:
    """Family of a diffusers folder, from model_index.json and unet/config.json."""
    if _is_kandinsky_layout(folder):
        for role_folder in _diffusers_folders(folder).values():
            weights.read_model_index(role_folder)  # checks each is a sound model_index.json
        return KANDINSKY_FAMILY
    index = weights.read_model_index(folder)
    pipeline = index.get("_class_name", "?")
    family = _PIPELINE_FAMILIES.get(pipeline)
    if family is None:
        raise InputError("model", f"{folder} holds a {pipeline}, which no node here runs", code="model.unsupported",
                         hint="supported: SD 1.x/2.x (and inpainting), SDXL base/refiner/inpainting, Kandinsky 2.2, "
                              "the SD x2 latent upscaler and the SD x4 upscaler")
    if family not in ("sd", "sdxl"):
        return family
    unet = _unet_config(folder)
    # noisy latents (4) + masked-image latents (4) + mask (1); the class name tells when the config is not cached
    if unet.get("in_channels", 9 if "Inpaint" in str(pipeline) else 4) == 9:
        return f"{family}-inpaint"
    text_encoder = index.get("text_encoder")
    if family == "sdxl" and not (weights.is_component_spec(text_encoder) and text_encoder[0] is not None):
        return "sdxl-refiner"  # the refiner has only the second (OpenCLIP bigG) text encoder
    return family


def _unet_config(folder: Path) -> dict:
    config = weights.read_json(folder / "unet" / "config.json")
    return config if isinstance(config, dict) else {}


def _is_kandinsky_layout(folder: Path) -> bool:
    """The builtin's layout: prior/, decoder/ and decoder-inpaint/ diffusers folders side by side."""
    return (folder / KANDINSKY_PRIOR / "model_index.json").is_file() and any(
        (folder / role / "model_index.json").is_file() for role in (KANDINSKY_DECODER, KANDINSKY_INPAINT_DECODER))


def _diffusers_folders(folder: Path) -> dict[str, Path]:
    """The diffusers folders a model folder holds, by role: itself, or Kandinsky's in the builtin's layout."""
    if _is_kandinsky_layout(folder):
        return {role: folder / role for role in KANDINSKY_ROLES if (folder / role / "model_index.json").is_file()}
    return {MAIN: folder}


def checkpoint_family(shapes: dict[str, list[int]], name: str) -> str:
    """Family of an original-format (CompVis/SGM) checkpoint, from its tensor names and shapes."""
    conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None:
        raise InputError("model", f"{name} is not a Stable Diffusion checkpoint this library knows "
                         "(it has no model.diffusion_model.input_blocks.0.0.weight)", code="model.unrecognized",
                         hint="use the model's diffusers folder or hub id")
    if len(conv_in) != 4:
        raise InputError("model", f"{name}: the first UNet convolution has shape {conv_in}, not 4 dimensions",
                         code="model.unrecognized", hint="the checkpoint is damaged or not a Stable Diffusion one")
    in_channels = conv_in[1]
    if any(key.startswith("conditioner.embedders.") for key in shapes):  # SDXL's conditioning stack
        if in_channels == 9:
            return "sdxl-inpaint"
        # the base has CLIP ViT-L (embedder 0) and OpenCLIP bigG; the refiner has bigG alone
        has_clip_l = any(key.startswith("conditioner.embedders.0.transformer.") for key in shapes)
        return "sdxl" if has_clip_l else "sdxl-refiner"
    return {9: "sd-inpaint", 7: "x4-upscaler"}.get(in_channels, "sd")


def _refuse_pickle(path: str, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise InputError("model", f"{Path(path).name} is a pickle checkpoint, and unpickling can run any code",
                         code="model.pickle_refused",
                         hint="use a .safetensors file, or set allow_pickle to true if you trust where it comes from")


def guess_family_from_name(repo_id: str) -> str:
    """A last resort for hub ids nothing else knows: most community checkpoints are SD 1.x fine-tunes."""
    name = repo_id.lower()
    if "kandinsky" in name:
        return KANDINSKY_FAMILY
    if "x4-upscaler" in name:
        return "x4-upscaler"
    if "latent-upscaler" in name:
        return "latent-upscaler"
    if re.search(r"xl(?![a-z])", name):  # "sdxl", "-xl-", "juggernautXL"; not "pixel"
        return "sdxl-refiner" if "refiner" in name else "sdxl-inpaint" if "inpaint" in name else "sdxl"
    return "sd-inpaint" if "inpaint" in name else "sd"


# ---- identity, for the cache key ------------------------------------------------------------


def fingerprint(model: str) -> str:
    """What the model's weights are: SHA-256 hashes of its weight files and its settings (hashed
    once per file version and kept, see weights.file_sha256); a builtin's recipe; a hub id and
    commit. It names no local path and holds no file's contents: Save records it in PNGs."""
    kind, what = classify(model)
    if kind == "builtin":
        return f"builtin:{builtins.identity(what)}"
    if kind == "hub":
        cached = cached_hub_folder(what)
        # a snapshot folder is named by its commit: same commit, same files
        return f"hub:{what}@{cached.name}" if cached else f"hub:{what}"
    path = Path(what)
    if kind == "file":
        return f"sha256:{weights.file_sha256(path)}"
    folders = _diffusers_folders(path)
    return "weights:" + weights.combined_identity({role: weights.folder_identity(f) for role, f in folders.items()})


# ---- LoadModel -------------------------------------------------------------------------------


def _infer(view) -> dict[str, T.Type]:
    handles.require_scheduler(view.value("scheduler"))
    model = view.value("model")
    if model is None:  # a link: the model is known when it runs
        return {}
    family = detect_family(model, allow_pickle=bool(view.value("allow_pickle")))
    if family is None:
        return {}
    space = detect_space(model, family)
    return {"model": model_type(family, space), "vae": T.Vae(space)}


def _fingerprint(literals: dict) -> str | None:
    model = literals.get("model")
    return fingerprint(model) if isinstance(model, str) else None


_ELEMENT_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}  # "auto" depends on the device: as stored


def _resources(literals: dict) -> dict | None:
    """The components the model and its VAE will hold, from the files alone (a builtin is built
    first); None for a hub model that is not in the local cache."""
    located = locate(literals["model"], literals["allow_pickle"], download=False)
    if located is None:
        return None
    family, sources, load_now = located
    model = {}
    for role in load_now:
        path = Path(sources[role]) if Path(sources[role]).exists() else cached_hub_folder(sources[role])
        if path is None:  # Kandinsky's other parts come from the hub, and are not in the local cache
            return None
        spec = parts.describe(path, _ELEMENT_BYTES.get(literals["dtype"]), literals["allow_pickle"])
        model.update({handles.component_name(role, name): Component(handles.held_identity(identity, literals["dtype"]),
                                                                     spec.nbytes.get(name, 0))
                      for name, identity in spec.identities.items()})
    vae_role = next(role for role in load_now if role != KANDINSKY_PRIOR)
    return {"model": model, "vae": {"vae": model[handles.component_name(vae_role, handles.vae_name(family))]}}


@node(
    "LoadModel",
    category="model",
    inputs={
        "model": Input(T.STRING, "A Hugging Face hub id (owner/name), a local diffusers folder, a .safetensors "
                                 "checkpoint, or builtin:NAME (tiny offline models: builtin:tiny-sd, ...)", path=MODEL_PATH,
                       suggestions=lambda: [BUILTIN_PREFIX + name for name in builtins.FAMILIES]),
        "dtype": Input(T.Choice(*handles.DTYPES), "Weight precision; auto: float16 on CUDA, float32 on MPS and CPU",
                       default="auto"),
        "scheduler": Input(T.Choice(handles.DEFAULT_SCHEDULER, *handles.SCHEDULERS),
                           "Noise scheduler, built from the model's own scheduler config; default: the model's own",
                           default=handles.DEFAULT_SCHEDULER),
        "attention": Input(T.Choice(*handles.ATTENTION_MODES), "Attention implementation: PyTorch SDPA, xformers "
                           "(CUDA; falls back to sdpa where it does not work) or sliced (least memory)",
                           default="sdpa"),
        "vae_tiling": Input(T.BOOL, "Decode and encode large images tile by tile, to save memory", default=False),
        "vae_slicing": Input(T.BOOL, "Decode and encode a batch one image at a time, to save memory", default=False),
        "cpu_offload": Input(T.BOOL, "Keep weights on the CPU and move each model to the GPU only while it runs "
                             "(CUDA only)", default=False),
        "allow_pickle": Input(T.BOOL, "Allow pickle checkpoints (.ckpt, .bin, .pt), which can run code when "
                              "loaded; only for files you trust", default=False),
    },
    outputs={
        "model": Output(T.MODEL, "The diffusion model, typed by family and latent space", resource=True),
        "vae": Output(T.VAE, "The model's VAE, which encodes images to and decodes latents from its space",
                      resource=True),
    },
    infer=_infer,
    fingerprint=_fingerprint,
    resources=_resources,
    reads_options=("device",),
)
def load_model(model, dtype, scheduler, attention, vae_tiling, vae_slicing, cpu_offload, allow_pickle, ctx):
    """Load a diffusion model; components already loaded with identical weights are shared."""
    if allow_pickle and not ctx.options.unpickle:
        raise InputError("allow_pickle", "this host never unpickles files: a pickle runs whatever code it holds",
                         code="pickle.refused", hint="convert the checkpoint to .safetensors, and set allow_pickle "
                                                     "to false")
    options = handles.LoadOptions(dtype=dtype, scheduler=scheduler, attention=attention, vae_tiling=vae_tiling,
                                  vae_slicing=vae_slicing, cpu_offload=cpu_offload, allow_pickle=allow_pickle)
    family, sources, load_now = locate(model, allow_pickle)
    handle = handles.ModelHandle(family, sources, options, device=ctx.options.device, load_now=load_now)
    return handle, handle.vae


def locate(model: str, allow_pickle: bool, download: bool = True) -> tuple[str, dict[str, str], tuple[str, ...]] | None:
    """(family, where each part of the model is, the parts to load now); downloads a hub model if need be
    (without `download`: None for a hub model that is not in the local cache)."""
    kind, what = classify(model)
    if kind == "builtin":
        folder = builtins.path(what)
    elif kind == "hub" and not download:
        folder = cached_hub_folder(what)
        if folder is None:
            return None
    elif kind == "hub":
        folder = parts.local_folder(what, allow_pickle)
    elif kind == "folder":
        folder = Path(what)
    else:
        return _checkpoint_family(Path(what), allow_pickle), {MAIN: what}, (MAIN,)
    family = folder_family(folder)
    if family == KANDINSKY_FAMILY:
        return family, *_kandinsky_parts(folder)
    return family, {MAIN: str(folder)}, (MAIN,)


def _checkpoint_family(path: Path, allow_pickle: bool) -> str:
    if not path.name.lower().endswith(PICKLE_SUFFIXES):
        return checkpoint_family(weights.tensor_shapes(path), path.name)
    _refuse_pickle(str(path), allow_pickle)
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    return checkpoint_family({name: list(tensor.shape) for name, tensor in state.items()}, path.name)


def _kandinsky_parts(folder: Path) -> tuple[dict[str, str], tuple[str, ...]]:
    """The prior and decoders: side by side in the builtin's layout; else this one part plus the hub's others."""
    if _is_kandinsky_layout(folder):
        sources = {role: str(folder / role) for role in KANDINSKY_ROLES if (folder / role).is_dir()}
        decoder = KANDINSKY_DECODER if KANDINSKY_DECODER in sources else KANDINSKY_INPAINT_DECODER
        return sources, (KANDINSKY_PRIOR, decoder)
    role = _kandinsky_role(folder)
    sources = {**KANDINSKY_HUB_MODELS, role: str(folder)}
    return sources, (KANDINSKY_PRIOR, KANDINSKY_DECODER if role == KANDINSKY_PRIOR else role)


def _kandinsky_role(folder: Path) -> str:
    pipeline = weights.read_model_index(folder).get("_class_name", "")
    if "Prior" in str(pipeline):
        return KANDINSKY_PRIOR
    unet = _unet_config(folder)
    return KANDINSKY_INPAINT_DECODER if unet.get("in_channels") == 9 else KANDINSKY_DECODER


# ---- --tiny and --demo ---------------------------------------------------------------------------


def stand_in(model: str, builtins_of: dict[str, str] = TINY_BUILTINS) -> str | None:
    """`builtin:<the builtin of the same family>` for a model reference; None if `model` is not one."""
    try:
        family = detect_family(model, allow_pickle=True)
    except InputError:  # e.g. a hub model that is not in the local cache
        if not _HUB_ID.fullmatch(model.strip()):
            return None
        family = None
    if family is None:  # that, or a pickle checkpoint, whose family shows only once it is unpickled
        family = guess_family_from_name(model)
    return BUILTIN_PREFIX + builtins_of[family]


@rewrite("tiny", help="swap every model for the tiny offline builtin of its family (random weights) and divide "
                      "pixel sizes of 512 and more by 8: any graph runs in seconds on a fresh offline machine")
def use_tiny_models(graph) -> tuple[Graph, list[Rewrite]]:
    """A copy of the graph with every LoadModel pointed at a tiny builtin (where `model` is linked, the
    model list it comes from is rewritten). Pixel sizes shrink with the models, so a 1024px SDXL
    graph runs at 128px."""
    return _use_builtins(graph, TINY_BUILTINS, "tiny")


DEMO_BUILTINS = {**TINY_BUILTINS, "sd": "demo-sd", "sd-inpaint": "demo-sd-inpaint"}

if "demo-sd" in builtins.FAMILIES:
    @rewrite("demo", help="swap every SD 1.x/2.x model for the trained demo model (it draws coloured shapes: "
                          "\"a red circle on a white background\"), other families for their tiny builtins, "
                          "and divide pixel sizes of 512 and more by 8, as --tiny does")
    def use_demo_model(graph) -> tuple[Graph, list[Rewrite]]:
        """As --tiny, with the demo model for the SD family, so SD chains draw shapes offline."""
        return _use_builtins(graph, DEMO_BUILTINS, "demo")


def _use_builtins(graph, builtins_of: dict[str, str], pass_name: str) -> tuple[Graph, list[Rewrite]]:
    graph = graph.copy()
    notes = _shrink_sizes(graph)
    for node_id in list(graph):
        if graph.type_of(node_id) != "LoadModel":
            continue
        model = graph.inputs_of(node_id).get("model")
        if isinstance(model, str):
            notes += _swap_models(graph, node_id, "model", model, node_id, builtins_of)
        elif type(model) is Link and model.node in graph:
            for name, value in list(graph.inputs_of(model.node).items()):
                if isinstance(value, str):
                    notes += _swap_models(graph, model.node, name, value, f"{model.node}.{name}", builtins_of)
    return graph, [Rewrite(pass_name, (note.split(":")[0].split(".")[0],), note) for note in notes]


SIZE_INPUTS = ("width", "height")


def _shrink_sizes(graph) -> list[str]:
    """Sizes of 512 pixels and more, on the 8-pixel grid, to an eighth (on the 64-pixel grid, which suits
    every family, Kandinsky too). Other sizes stay as written: a size the graph may not use is still
    reported by validation, not hidden by the rewrite."""
    notes = []
    for node_id in list(graph):
        for name in SIZE_INPUTS:
            value = graph.inputs_of(node_id).get(name)
            definition = registry.get(graph.type_of(node_id))
            spec = definition.inputs.get(name) if definition else None
            if type(value) is int and 512 <= value <= (spec.max if spec and spec.max else value) and value % 8 == 0:
                small = 64 * round(value / 8 / 64)
                graph.set_input(node_id, name, small)
                notes.append(f"{node_id}.{name}: {value} -> {small}")
    return notes


def _swap_models(graph, node_id: str, name: str, text: str, label: str, builtins_of: dict[str, str]) -> list[str]:
    """Swap a literal holding one model per line, if every line is one; otherwise leave it."""
    lines = text.split("\n")
    swapped = [stand_in(line, builtins_of) if line.strip() else line for line in lines]
    if None in swapped or swapped == lines:
        return []
    graph.set_input(node_id, name, "\n".join(swapped))
    return [f"{label}: {old.strip()} -> {new}" for old, new in zip(lines, swapped) if old.strip() != new]
