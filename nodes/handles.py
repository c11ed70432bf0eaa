"""The values of MODEL and VAE sockets: what a loaded model is, and how it runs.

A `ModelHandle` is what LoadModel outputs: a model's family, where its diffusers
folders are, the options it was loaded with, and its components, which it takes
from the process-wide component cache (see nodes.weights).

`handle.pipeline(task)` assembles the diffusers pipeline for a task from those
modules with `PipelineClass(**components)`: nothing is copied and nothing is cast,
so every module keeps the dtype it was loaded in (diffusers' `from_pipe` casts the
modules it shares to its dtype argument, float32 when left out: diffusers#12754).
The NSFW safety checker is never loaded: the samplers ask for latents, for which
diffusers skips it anyway.

torch and diffusers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodegraph.errors import InputError
from nodegraph.resources import Component

from .devices import resolve_device, resolve_dtype
from .parts import PartSpec, describe, load_component, load_single_file, local_folder, quiet_progress_bars
from .spaces import IMG2IMG, INPAINT, KANDINSKY_FAMILY, LATENT_UPSCALE, SDXL, TEXT2IMG, UPSCALE, space_of
from .weights import combined_identity, read_json

log = logging.getLogger(__name__)

KANDINSKY_PRIOR, KANDINSKY_DECODER, KANDINSKY_INPAINT_DECODER = "prior", "decoder", "decoder-inpaint"
MAIN = "main"  # the one diffusers folder (or checkpoint file) of every family but Kandinsky

# family -> task -> diffusers pipeline class. A family's first pipeline is the one a
# single-file checkpoint of that family is loaded as.
TASK_PIPELINES: dict[str, dict[str, str]] = {
    "sd": {TEXT2IMG: "StableDiffusionPipeline", IMG2IMG: "StableDiffusionImg2ImgPipeline",
           INPAINT: "StableDiffusionInpaintPipeline"},
    "sd-inpaint": {INPAINT: "StableDiffusionInpaintPipeline"},
    "sdxl": {TEXT2IMG: "StableDiffusionXLPipeline", IMG2IMG: "StableDiffusionXLImg2ImgPipeline",
             INPAINT: "StableDiffusionXLInpaintPipeline"},
    "sdxl-refiner": {IMG2IMG: "StableDiffusionXLImg2ImgPipeline", INPAINT: "StableDiffusionXLInpaintPipeline"},
    "sdxl-inpaint": {INPAINT: "StableDiffusionXLInpaintPipeline"},
    # Kandinsky's combined pipelines run the prior (text -> image embedding), then the decoder.
    KANDINSKY_FAMILY: {TEXT2IMG: "KandinskyV22CombinedPipeline", IMG2IMG: "KandinskyV22Img2ImgCombinedPipeline",
                INPAINT: "KandinskyV22InpaintCombinedPipeline"},
    "latent-upscaler": {LATENT_UPSCALE: "StableDiffusionLatentUpscalePipeline"},
    "x4-upscaler": {UPSCALE: "StableDiffusionUpscalePipeline"},
}

# LoadModel's scheduler choices -> diffusers classes, built from the model's own scheduler config
SCHEDULERS: dict[str, str] = {
    "DPMSolverMultistep": "DPMSolverMultistepScheduler",
    "Euler": "EulerDiscreteScheduler",
    "EulerAncestral": "EulerAncestralDiscreteScheduler",
    "DDIM": "DDIMScheduler",
    "PNDM": "PNDMScheduler",
    "LMS": "LMSDiscreteScheduler",
    "UniPC": "UniPCMultistepScheduler",
}
DEFAULT_SCHEDULER = "default"
ATTENTION_MODES = ("sdpa", "xformers", "sliced")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LoadOptions:
    """How to load and run a model: LoadModel's inputs other than the model itself."""

    dtype: str = "auto"
    scheduler: str = DEFAULT_SCHEDULER
    attention: str = "sdpa"
    vae_tiling: bool = False
    vae_slicing: bool = False
    cpu_offload: bool = False
    allow_pickle: bool = False


class ModelHandle:
    """A loaded diffusion model: the value of a MODEL socket.

    `family` and `space` say what it is (see nodes.spaces), `identity` which weights
    it has (a hash of its components' weight identities), `device` (str) and `dtype`
    (torch.dtype) where and how it runs. `pipeline(task)` gives the diffusers pipeline
    for a task (spaces.TEXT2IMG, IMG2IMG, INPAINT, LATENT_UPSCALE, UPSCALE), built once
    per task from the shared components, with the scheduler and memory options
    applied; call it each time before running, as options are re-applied to modules
    that other handles may share. `vae` is the model's VaeHandle.

    Kandinsky 2.2 is three diffusers folders: the prior, the decoder and the
    inpainting decoder (`sources` names them "prior", "decoder" and "decoder-inpaint").
    Its pipelines are diffusers' combined ones (KandinskyV22CombinedPipeline,
    ...Img2ImgCombinedPipeline, ...InpaintCombinedPipeline): called like the SD ones
    with `prompt`, `negative_prompt`, `image`, `mask_image`, ..., plus the prior's
    `prior_num_inference_steps`, `prior_guidance_scale` and `prior_callback_on_step_end`;
    they have `prior_pipe` and `decoder_pipe`. The inpainting decoder loads when
    inpainting first runs, the other decoder when text2img or img2img first runs.

    A handle is a resource (see nodegraph.resources): made, it has loaded nothing; its
    components load one by one as they are first used (or all at once with `load()`), and
    `unload(keep)` lets go of those not kept, to be loaded again if used again. Weights
    belong to the component cache and the model memory, not to the result cache: `nbytes` is 0.
    """

    nbytes = 0

    def __init__(self, family: str, sources: dict[str, str], options: LoadOptions = LoadOptions(),
                 device: str = "auto", load_now: tuple[str, ...] = (MAIN,)):
        self.family = family
        self.options = options
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self._sources = dict(sources)
        self._offload = self._use_offload()
        self._placement = f"offload:{self.device}" if self._offload else self.device
        self.scheduler = self._usable_scheduler()
        self.attention = self._usable_attention()
        self._vae_role = next(role for role in load_now if role != KANDINSKY_PRIOR)
        self._specs: dict[str, PartSpec] = {role: self._describe(role) for role in load_now}
        vae_source = self._specs[self._vae_role].source
        self.space = space_of(family, None if vae_source.is_file() else
                              read_json(vae_source / vae_name(family) / "config.json"))
        self._loaded: dict[str, dict[str, Any]] = {}  # role -> component -> what was loaded
        self._on_host: set[tuple[str, str]] = set()  # (role, component) offloaded to the host's memory
        self._pipelines: dict[str, Any] = {}
        self.identity = combined_identity({role: combined_identity(spec.identities) for role, spec in self._specs.items()})
        self.vae = VaeHandle(self)

    def __repr__(self) -> str:
        return f"<ModelHandle {self.family} {self.identity[:12]} on {self.device} as {self.dtype}>"

    def pipeline(self, task: str):
        """The diffusers pipeline for `task`, ready to call."""
        if task not in TASK_PIPELINES[self.family]:
            can = ", ".join(TASK_PIPELINES[self.family])
            raise InputError("model", f"a {self.family} model cannot do {task}; it can do {can}",
                             code="model.wrong_task", hint=f"load a model that can do {task}")
        if task not in self._pipelines:
            self._pipelines[task] = self._assemble(task)
        pipeline = self._pipelines[task]
        self._apply_runtime_options(pipeline)
        return pipeline

    # ---- as a resource ------------------------------------------------------------------------

    def components(self) -> dict[str, Component]:
        """Every component with weights of the parts described so far, by name ("role/name" for Kandinsky)."""
        return {component_name(role, name): Component(self._held(role, name), self._size(role, name))
                for role, spec in self._specs.items() for name in spec.identities}

    def load(self) -> None:
        """Load every component of the model's parts (its inpainting decoder waits for an inpaint)."""
        for role in self._specs:
            self._part(role)

    def unload(self, keep: frozenset[str] = frozenset()) -> None:
        """Let go of the modules whose identity is not in `keep`; modules no one else holds are freed."""
        self._pipelines.clear()  # they hold the modules too
        for role, name in self._modules_but(keep):
            del self._loaded[role][name]
            self._on_host.discard((role, name))

    @property
    def offloads(self) -> bool:
        """Whether releasing may move the weights to the host's memory: where they run on a GPU."""
        return self.device != "cpu"

    def offload(self, keep: frozenset[str] = frozenset()) -> None:
        """Move the modules whose identity is not in `keep` to the host's memory, to come back at load()."""
        for role, name in self._modules_but(keep):
            self._loaded[role][name].to("cpu")
            self._on_host.add((role, name))

    def _modules_but(self, keep: frozenset[str]) -> list[tuple[str, str]]:
        return [(role, name) for role, loaded in self._loaded.items() for name in list(loaded)
                if name in self._specs[role].identities and self._held(role, name) not in keep]

    def _held(self, role: str, name: str) -> str:
        return held_identity(self._specs[role].identities[name], self.options.dtype)

    def _from_host(self, role: str, name: str) -> None:
        if (role, name) in self._on_host:
            self._on_host.discard((role, name))
            self._loaded[role][name].to(self.device)

    def _size(self, role: str, name: str) -> int:
        """Bytes the component takes: measured once loaded, estimated from its files before."""
        module = self._loaded.get(role, {}).get(name)
        if module is not None and hasattr(module, "parameters"):
            return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
        return self._specs[role].nbytes.get(name, 0)

    # ---- assembling pipelines ---------------------------------------------------------------

    def _describe(self, role: str) -> PartSpec:
        source = self._sources.get(role)
        if source is None:
            raise InputError("model", f"this {self.family} model has no {role} (it was loaded from "
                             f"{', '.join(self._sources.values())})", code="model.missing_part",
                             hint="load kandinsky-community/kandinsky-2-2-decoder-inpaint to inpaint"
                             if role == KANDINSKY_INPAINT_DECODER else None)
        path = Path(source) if Path(source).is_file() else local_folder(source, self.options.allow_pickle)
        return describe(path, self.dtype.itemsize, self.options.allow_pickle)

    def _part(self, role: str) -> dict[str, Any]:
        """Every component of a part, loading those that are not loaded."""
        if role not in self._specs:
            self._specs[role] = self._describe(role)
        spec = self._specs[role]
        loaded = self._loaded.setdefault(role, {})
        names = [n for n in spec.classes if n not in loaded] if not spec.single_file else \
            ([] if set(spec.identities) <= set(loaded) else ["*"])
        with quiet_progress_bars():
            for name in names:
                if spec.single_file:
                    pipeline_name = next(iter(TASK_PIPELINES[self.family].values()))
                    loaded.update(load_single_file(spec, self.family, pipeline_name, self.dtype, self._placement))
                else:
                    loaded[name] = load_component(spec, name, self.dtype, self._placement, self.options.allow_pickle)
        for name in list(loaded):
            self._from_host(role, name)
        return loaded

    def _module(self, role: str, name: str):
        """One component, loading only it (a single-file part loads whole)."""
        loaded = self._loaded.setdefault(role, {})
        if name not in loaded:
            spec = self._specs[role]
            if spec.single_file:
                return self._part(role)[name]
            with quiet_progress_bars():
                loaded[name] = load_component(spec, name, self.dtype, self._placement, self.options.allow_pickle)
        self._from_host(role, name)
        return loaded[name]

    def _assemble(self, task: str):
        import diffusers

        pipeline_class = getattr(diffusers, TASK_PIPELINES[self.family][task])
        if self.family == KANDINSKY_FAMILY:
            available = self._kandinsky_components(task)
        else:
            available = {**self._specs[MAIN].config, **self._part(MAIN)}
        available["scheduler"] = self._fresh_scheduler(available["scheduler"])
        pipeline = _construct(pipeline_class, available)
        pipeline.set_progress_bar_config(disable=True)  # steps reach the user as nodegraph progress events
        if self.family == KANDINSKY_FAMILY and task == IMG2IMG:
            # Kandinsky's img2img decoder resizes its image, to 512x512 unless told, and (diffusers 0.42)
            # with height and width swapped: the image keeps its own size instead, as SD's img2img does.
            processor = pipeline.decoder_pipe.image_processor
            pipeline.decoder_pipe.image_processor = type(processor).from_config(processor.config, do_resize=False)
        return pipeline

    def _kandinsky_components(self, task: str) -> dict[str, Any]:
        decoder = self._part(KANDINSKY_INPAINT_DECODER if task == INPAINT else KANDINSKY_DECODER)
        prior = self._part(KANDINSKY_PRIOR)
        return {**decoder, **{f"prior_{name}": c for name, c in prior.items()}}

    def _fresh_scheduler(self, base):
        """Schedulers keep state between steps, so each pipeline gets its own."""
        import diffusers

        if self.scheduler == DEFAULT_SCHEDULER:
            return type(base).from_config(base.config)
        # PNDM's warm-up (PRK) steps break short schedules; every SD config skips them
        overrides = {"skip_prk_steps": True} if self.scheduler == "PNDM" else {}
        return getattr(diffusers, SCHEDULERS[self.scheduler]).from_config(base.config, **overrides)

    # ---- options ----------------------------------------------------------------------------

    def _use_offload(self) -> bool:
        if self.options.cpu_offload and self.device != "cuda":
            log.warning("cpu_offload ignored: it moves weights between CPU and a CUDA GPU, and this runs on %s",
                        self.device)
            return False
        return self.options.cpu_offload

    def _usable_scheduler(self) -> str:
        name = self.options.scheduler
        if name == DEFAULT_SCHEDULER:
            return name
        require_scheduler(name)
        problem = _scheduler_problem(self.family, name)
        if problem:
            log.warning("scheduler %s ignored for this %s model (%s); using its own", name, self.family, problem)
            return DEFAULT_SCHEDULER
        return name

    def _usable_attention(self) -> str:
        requested = self.options.attention
        if requested != "xformers":
            return requested
        if self.device != "cuda":
            log.warning("xformers attention ignored: it needs a CUDA GPU, and this runs on %s; using sdpa", self.device)
            return "sdpa"
        if importlib.util.find_spec("xformers") is None:
            log.warning("xformers attention ignored: xformers is not installed; using sdpa")
            return "sdpa"
        return requested

    def _note_unsupported_vae_options(self, vae) -> None:
        for option, attribute in (("vae_tiling", "use_tiling"), ("vae_slicing", "use_slicing")):
            if getattr(self.options, option) and not hasattr(vae, attribute):
                log.warning("%s ignored: %s does not support it", option, type(vae).__name__)

    def _apply_runtime_options(self, pipeline) -> None:
        try:
            _set_attention(pipeline, self.attention)
        except Exception as error:
            if self.attention != "xformers":
                raise
            # installed, but not working with this torch or GPU (diffusers tries it out first)
            log.warning("xformers attention does not work here (%s); using sdpa", error)
            self.attention = "sdpa"
            _set_attention(pipeline, self.attention)
        set_vae_memory_options(pipeline.movq if self.family == KANDINSKY_FAMILY else pipeline.vae, self.options)
        if self._offload:
            # Re-armed at every use: another pipeline sharing these modules may have hooked them since.
            pipeline.enable_model_cpu_offload(device=self.device)

    # ---- what the VaeHandle reads -----------------------------------------------------------

    def vae_module(self):
        """The model's VAE (Kandinsky: its MoVQ) module, loading only it if it is not loaded."""
        first = self._vae_name not in self._loaded.get(self._vae_role, {})
        vae = self._module(self._vae_role, self._vae_name)
        if first:
            self._note_unsupported_vae_options(vae)
        return vae

    def vae_component(self) -> Component:
        return Component(self._held(self._vae_role, self._vae_name), self._size(self._vae_role, self._vae_name))

    def unload_vae(self, keep: frozenset[str], to_host: bool = False) -> None:
        if self.vae_component().identity in keep or self._vae_name not in self._loaded.get(self._vae_role, {}):
            return
        if to_host:
            self._loaded[self._vae_role][self._vae_name].to("cpu")
            self._on_host.add((self._vae_role, self._vae_name))
        else:
            self._pipelines.clear()
            self._loaded[self._vae_role].pop(self._vae_name)
            self._on_host.discard((self._vae_role, self._vae_name))

    @property
    def _vae_name(self) -> str:
        return vae_name(self.family)

    @property
    def offloaded(self) -> bool:
        return self._offload


def held_identity(weights_identity: str, dtype: str) -> str:
    """A component's identity as a resource holds it: the same weights asked for in two precisions
    ("auto", "float32", ...) are two modules in memory, never one shared."""
    return f"{weights_identity}/{dtype}"


def component_name(role: str, name: str) -> str:
    """How a handle names a component of one of its parts: "unet"; Kandinsky's "prior/unet"."""
    return name if role == MAIN else f"{role}/{name}"


def vae_name(family: str) -> str:
    return "movq" if family == KANDINSKY_FAMILY else "vae"


def _construct(pipeline_class, available: dict[str, Any]):
    """`pipeline_class(**components)`: what it takes of `available`, None for components the model lacks."""
    parameters = inspect.signature(pipeline_class.__init__).parameters
    arguments = {}
    for name, parameter in parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in available:
            arguments[name] = available[name]
        elif parameter.default is parameter.empty:
            arguments[name] = None  # e.g. the refiner's missing first text encoder, the skipped safety checker
    if "requires_safety_checker" in parameters:
        arguments["requires_safety_checker"] = False  # not loaded on purpose (see the module docstring)
    return pipeline_class(**arguments)


def require_scheduler(name: str) -> None:
    """Refuse a scheduler choice whose dependencies are missing."""
    if name == "LMS" and importlib.util.find_spec("scipy") is None:
        raise InputError("scheduler", "the LMS scheduler needs scipy, which is not installed",
                         code="scheduler.unavailable", hint="pip install scipy, or choose another scheduler")


def _scheduler_problem(family: str, name: str) -> str | None:
    """Why scheduler `name` cannot drive this family's pipelines, or None if it can."""
    import diffusers

    if family == "latent-upscaler" and name != "Euler":
        return "the latent upscaler's pipeline is written for Euler sigmas and sample prediction"
    step = getattr(diffusers, SCHEDULERS[name]).step
    if family == KANDINSKY_FAMILY and "generator" not in inspect.signature(step).parameters:
        return "Kandinsky's decoder passes a generator to the scheduler's step"
    return None


_LOADED_PROCESSORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> processors as loaded
_ATTENTION_MODE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> mode set; absent: sdpa


def _set_attention(pipeline, mode: str) -> None:
    """Put every attention layer of the pipeline on `mode`; shared modules may have been set otherwise."""
    modules = [m for m in pipeline.components.values() if hasattr(m, "set_attn_processor")]
    if all(_ATTENTION_MODE.get(m, "sdpa") == mode for m in modules):
        return
    for module in modules:
        if module not in _LOADED_PROCESSORS:
            _LOADED_PROCESSORS[module] = dict(module.attn_processors)
    if mode == "sliced":
        pipeline.enable_attention_slicing()
    elif mode == "xformers":
        pipeline.enable_xformers_memory_efficient_attention()
    else:
        # diffusers' "disable" would give Kandinsky's added-KV layers the wrong processor; restore instead
        for module in modules:
            module.set_attn_processor(dict(_LOADED_PROCESSORS[module]))  # it empties the dict it is given
    for module in modules:
        _ATTENTION_MODE[module] = mode


def set_vae_memory_options(vae, options: LoadOptions) -> None:
    """VAE tiling and slicing, where the VAE has them (Kandinsky's MoVQ has neither)."""
    if hasattr(vae, "use_tiling"):
        vae.enable_tiling() if options.vae_tiling else vae.disable_tiling()
    if hasattr(vae, "use_slicing"):
        vae.enable_slicing() if options.vae_slicing else vae.disable_slicing()


class VaeHandle:
    """A model's VAE: the value of a VAE socket. It turns IMAGEs into LATENTs of its `space` and back.

    IMAGE: float32 [B,3,H,W] in [0,1] on the CPU. LATENT: float32 [B,C,h,w] on the CPU,
    as the model's pipelines make and take them: SD, SDXL and the x4 upscaler's latents
    are scaled by the VAE's scaling factor; Kandinsky's MoVQ latents are the encoder's
    output before quantisation, unscaled, and decode with quantisation skipped, as
    diffusers' Kandinsky pipelines do.
    """

    nbytes = 0

    def __init__(self, model: ModelHandle):
        self._model = model
        self.space = model.space
        self.identity = model.vae_component().identity

    # as a resource (see nodegraph.resources): the model's VAE alone
    def components(self) -> dict[str, Component]:
        return {"vae": self._model.vae_component()}

    def load(self) -> None:
        self._model.vae_module()

    def unload(self, keep: frozenset[str] = frozenset()) -> None:
        self._model.unload_vae(keep)

    @property
    def offloads(self) -> bool:
        return self._model.offloads

    def offload(self, keep: frozenset[str] = frozenset()) -> None:
        self._model.unload_vae(keep, to_host=True)

    def __repr__(self) -> str:
        return f"<VaeHandle {self.space} {self.identity[-12:]}>"

    def encode(self, image, seed: int | None = None):
        """Latents of `image`; SD-like VAEs give their distribution's mean, or a sample drawn with `seed`."""
        import torch

        vae = self._model.vae_module()
        _check_image(image, self.scale_factor(vae))
        with torch.no_grad(), _vae_ready(vae, self._model) as dtype:
            pixels = (image * 2 - 1).to(self._model.device, dtype)
            if self._is_movq():
                return vae.encode(pixels).latents.to("cpu", torch.float32)
            distribution = vae.encode(pixels).latent_dist
            if seed is None:
                latents = distribution.mode()
            else:
                latents = distribution.sample(torch.Generator("cpu").manual_seed(seed))
            return (latents * vae.config.scaling_factor).to("cpu", torch.float32)

    def decode(self, latent):
        """The images `latent` decodes to."""
        import torch

        vae = self._model.vae_module()
        if latent.ndim != 4 or latent.shape[1] != self.space.channels:
            raise InputError("latent", f"expected a latent of shape [batch, {self.space.channels}, height, width], "
                             f"got {list(latent.shape)}", code="latent.wrong_shape")
        with torch.no_grad(), _vae_ready(vae, self._model) as dtype:
            latents = latent.to(self._model.device, dtype)
            if self._is_movq():
                pixels = vae.decode(latents, force_not_quantize=True).sample
            else:
                pixels = vae.decode(latents / vae.config.scaling_factor).sample
        return (pixels / 2 + 0.5).clamp(0, 1).to("cpu", torch.float32)

    @staticmethod
    def scale_factor(vae) -> int:
        """Pixels per latent cell: each encoder block but the last halves the image."""
        return 2 ** (len(vae.config.block_out_channels) - 1)

    def _is_movq(self) -> bool:
        return self._model.family == KANDINSKY_FAMILY


@contextlib.contextmanager
def _vae_ready(vae, model: ModelHandle):
    """Ready a VAE for one call: memory options, device (if offloaded), float32 where float16 overflows.

    Yields the dtype to feed it.
    """
    import torch

    set_vae_memory_options(vae, model.options)
    # SDXL's VAE overflows in float16; its pipelines decode in float32, and so does this.
    upcast = model.space == SDXL and vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    if model.offloaded:
        vae.to(model.device)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
        if model.offloaded:
            vae.to("cpu")


def _check_image(image, multiple: int) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError("image", f"expected an RGB image batch [batch, 3, height, width], got {list(image.shape)}",
                         code="image.wrong_shape")
    height, width = image.shape[-2:]
    if height % multiple or width % multiple:
        raise InputError("image", f"this VAE needs sides that are multiples of {multiple} pixels, got {width}x{height}",
                         code="value.not_multiple", hint=f"Resize the image to multiples of {multiple} first")
