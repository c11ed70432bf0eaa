"""Chained pipelines: naive diffusers code beside nodegraph, side by side, interleaved, in fresh processes.

    python benchmarks/chains.py [--size tiny|mid|all] [--chain NAME]... [--repeat 3] [--json benchmarks/results/chains.json]

The naive side is written the way the seed tutorials write it: each stage `from_pretrained`s its
pipeline into the same variable, and PIL images pass between stages. nodegraph runs each chain as a
hand-written latent graph ("ng latent") and as the naive code's graph, decoding after every stage
and encoding again ("ng naive"), where the optimiser's decode→encode elimination and model lifetimes
have to recover what the hand-written graph does. "by hand" is what an expert writes straight
against diffusers: each component loaded once and shared between stages, latents between them, each
UNet dropped before the next loads. It is the optimiser's plan written by hand, so it shows how much
of a target planning can reach at all. Every contender gets the same models from local disk, seeds
and steps, and runs in a process of its own with OMP_NUM_THREADS=1 (the machines are shared: one
thread each keeps the comparison fair). Reported per contender, median of the repeats (ratios: the
median of each round's, as the contenders of a round run one after the other): cold one-shot time
(from the process's start, imports included), time to the first denoising step, a warm re-run with a
new seed on the first stage, an incremental re-run with only the last prompt changed (the naive code
runs it all again), model memory (peak RSS less the RSS after importing torch and diffusers),
component loads, and VAE encodes and decodes. Beside them, the model memory of one pipeline: the
naive code's last (largest) stage alone, in a process of its own, which the issue's target measures
against ("the largest single pipeline").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
HERE = Path(__file__).resolve().parent
CONTENDERS = ("naive", "by hand", "ng latent", "ng naive")
ONE_STAGE = "one stage"  # the naive code's last, largest, pipeline alone: the model memory one pipeline takes
CHAINS = {"tiny": ("img2img2img", "text2img2inpaint", "img2latent_upscale2x4"),
          "mid": ("img2img2img", "text2img2inpaint")}
STEPS = {"tiny": 4, "mid": 8}
PROMPTS = ("a castle on a hill", "a comic drawing of a castle", "pixel art of a castle")


# ---- the parent: interleaved fresh processes, and the table ------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=["tiny", "mid", "all"], default="all")
    parser.add_argument("--chain", action="append", choices=CHAINS["tiny"], help="only these chains (repeatable)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "chains.json")
    parser.add_argument("--child", nargs=3, metavar=("CONTENDER", "CHAIN", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return
    from chain_models import models

    root = Path(os.environ.get("NODEGRAPH_CACHE", Path.home() / ".cache" / "nodegraph")) / "bench-models"
    results = []
    for size in ("tiny", "mid") if args.size == "all" else (args.size,):
        models(root, size)  # built once, outside the timings
        for chain in (chain for chain in CHAINS[size] if not args.chain or chain in args.chain):
            runs = {contender: [] for contender in (*CONTENDERS, ONE_STAGE)}
            for repeat in range(args.repeat):
                for contender in (*CONTENDERS, ONE_STAGE)[::1 if repeat % 2 == 0 else -1]:
                    runs[contender].append(_run_child(contender, chain, size, root))
            results.append({"size": size, "chain": chain, "runs": runs})
            _print_table(size, chain, runs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwritten: {args.json}")


def _run_child(contender: str, chain: str, size: str, root: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "BENCH_MODELS": str(root), "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, str(Path(__file__)), "--child", contender, chain, size], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"{contender} on {chain} ({size}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


MEASURES = [("cold_s", "cold one-shot (s)"), ("first_step_s", "to the first step (s)"), ("warm_s", "warm, new seed (s)"),
            ("incremental_s", "last prompt changed (s)"), ("model_mb", "model memory (MB)"),
            ("loads", "component loads"), ("vae_encodes", "VAE encodes"), ("vae_decodes", "VAE decodes")]


def _print_table(size: str, chain: str, runs: dict[str, list[dict]]) -> None:
    print(f"\n{chain}, {size} (median of {len(runs['naive'])}; ratio: naive / contender, the median of each round's)")
    print(f"{'':26}" + "".join(f"{c:>12}" for c in CONTENDERS) + "".join(f"{c:>11}" for c in CONTENDERS[1:]))
    for key, label in MEASURES:
        medians = {c: statistics.median(run[key] for run in runs[c]) for c in CONTENDERS}
        print(f"{label:26}" + "".join(f"{medians[c]:12.2f}" for c in CONTENDERS)
              + "".join(f"{_paired_ratio(runs, key, 'naive', c):10.2f}x" for c in CONTENDERS[1:]))
    print(f"{'ng latent against by hand':44} " + ", ".join(
        f"{label} {_paired_ratio(runs, key, 'by hand', 'ng latent'):.2f}x"
        for key, label in (("cold_s", "cold"), ("warm_s", "warm"), ("model_mb", "model memory"))))
    warm_full = statistics.median(run["warm_s"] for run in runs["ng latent"])
    incremental = statistics.median(run["incremental_s"] for run in runs["ng latent"])
    print(f"{'ng latent: warm full / last prompt changed':44} {warm_full / incremental:.2f}x")
    one_stage = statistics.median(run["model_mb"] for run in runs[ONE_STAGE])
    print(f"{'model memory of one pipeline (MB)':44} {one_stage:.2f}; against it: " + ", ".join(
        f"{c} {statistics.median(run['model_mb'] for run in runs[c]) / one_stage:.2f}x" for c in CONTENDERS))


def _paired_ratio(runs: dict[str, list[dict]], key: str, over: str, under: str) -> float:
    """The median, over the rounds, of over/under within each round: contenders of one round run one
    after the other, so a slow minute on a shared machine slows both sides of each ratio alike."""
    ratios = [a[key] / b[key] for a, b in zip(runs[over], runs[under]) if b[key]]
    return statistics.median(ratios) if ratios else float("nan")


# ---- a child: one contender, cold, warm and incremental -------------------------------------------------


def _child(contender: str, chain: str, size: str) -> dict:
    import resource

    import torch  # noqa: F401  (both sides pay for these; the model memory is measured from here)
    import diffusers  # noqa: F401

    from chain_models import models

    counts = _count_loads_and_vae_calls()
    after_imports = _rss_mb()
    paths = models(Path(os.environ["BENCH_MODELS"]), size)
    steps = STEPS[size]
    if contender == ONE_STAGE:
        _naive(chain, paths, size, steps, seed=0, prompts=PROMPTS, on_step=lambda: None, last_stage_only=True)
        return {"model_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - after_imports}
    runner = {"naive": _naive, "by hand": _by_hand}.get(contender) or _Nodegraph(contender == "ng naive")
    first_step = {}

    def on_step():
        first_step.setdefault("at", time.perf_counter() - STARTED)

    runner(chain, paths, size, steps, seed=0, prompts=PROMPTS, on_step=on_step)
    cold = time.perf_counter() - STARTED
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = dict(counts)
    started = time.perf_counter()
    runner(chain, paths, size, steps, seed=1, prompts=PROMPTS, on_step=lambda: None)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    runner(chain, paths, size, steps, seed=1, prompts=(*PROMPTS[:-1], "pixel art of a castle at night"),
           on_step=lambda: None)
    incremental = time.perf_counter() - started
    return {"cold_s": cold, "first_step_s": first_step["at"], "warm_s": warm, "incremental_s": incremental,
            "model_mb": peak - after_imports, "peak_rss_mb": peak, "rss_after_imports_mb": after_imports,
            "loads": measured["loads"], "vae_encodes": measured["encode"], "vae_decodes": measured["decode"]}


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _count_loads_and_vae_calls() -> dict[str, int]:
    """Count, on both sides alike, every module read from disk and every VAE encode and decode
    (the real methods run; they are only counted)."""
    from diffusers import AutoencoderKL, ModelMixin
    from transformers import PreTrainedModel

    counts = {"loads": 0, "encode": 0, "decode": 0}
    for owner in (ModelMixin, PreTrainedModel):
        loader = owner.from_pretrained.__func__

        def counted(cls, *args, _loader=loader, **kwargs):
            counts["loads"] += 1
            return _loader(cls, *args, **kwargs)

        owner.from_pretrained = classmethod(counted)
    for name in ("encode", "decode"):
        method = getattr(AutoencoderKL, name)

        def counted_call(self, *args, _method=method, _name=name, **kwargs):
            counts[_name] += 1
            return _method(self, *args, **kwargs)

        setattr(AutoencoderKL, name, counted_call)
    return counts


def _init_image(size: str):
    from PIL import Image

    side = 64 if size == "tiny" else 256
    return Image.new("RGB", (side, side), (180, 90, 40))


def _mask_image(size: str):
    from PIL import Image

    side = 64 if size == "tiny" else 256
    mask = Image.new("L", (side, side), 0)
    mask.paste(255, (side // 4, side // 4, 3 * side // 4, 3 * side // 4))
    return mask


def _calling(on_step):
    """diffusers' `callback_on_step_end`, calling `on_step` at each step."""
    def step(pipe, i, t, tensors):
        on_step()
        return {}

    return step


def _naive(chain: str, paths: dict, size: str, steps: int, seed: int, prompts: tuple, on_step,
           last_stage_only: bool = False) -> None:
    """The seed tutorials' way: a pipeline per stage into one variable, PIL images between them.
    `last_stage_only`: the chain's last (and largest) pipeline alone, on the starting image."""
    import torch
    from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline,
                           StableDiffusionLatentUpscalePipeline, StableDiffusionPipeline,
                           StableDiffusionUpscalePipeline)

    from nodes.tiny_models import builtin_path

    generator = torch.Generator("cpu").manual_seed(seed)
    common = {"num_inference_steps": steps, "generator": generator, "callback_on_step_end": _calling(on_step)}
    side = 64 if size == "tiny" else 256
    image = _init_image(size)
    if chain == "img2img2img":
        stages = list(zip(("base", "comic", "pixel"), prompts))
        for name, prompt in stages[-1:] if last_stage_only else stages:
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(paths[name], safety_checker=None)
            image = pipe(prompt, image=image, strength=0.6, **common).images[0]
    elif chain == "text2img2inpaint":
        if not last_stage_only:
            pipe = StableDiffusionPipeline.from_pretrained(paths["base"], safety_checker=None)
            image = pipe(prompts[0], height=side, width=side, **common).images[0]
        pipe = StableDiffusionInpaintPipeline.from_pretrained(paths["inpaint"], safety_checker=None)
        image = pipe(prompts[-1], image=image, mask_image=_mask_image(size), height=side, width=side,
                     **common).images[0]
    else:
        if not last_stage_only:
            pipe = StableDiffusionImg2ImgPipeline.from_pretrained(paths["base"], safety_checker=None)
            latents = pipe(prompts[0], image=image, strength=0.6, output_type="latent", **common).images
            pipe = StableDiffusionLatentUpscalePipeline.from_pretrained(builtin_path("tiny-latent-upscaler"))
            image = pipe(prompts[0], image=latents, num_inference_steps=steps, generator=generator).images[0]
        pipe = StableDiffusionUpscalePipeline.from_pretrained(builtin_path("tiny-x4-upscaler"))
        image = pipe(prompts[-1], image=image.resize((2 * side, 2 * side)) if last_stage_only else image,
                     num_inference_steps=steps, generator=generator, callback=lambda *a: on_step()).images[0]


def _by_hand(chain: str, paths: dict, size: str, steps: int, seed: int, prompts: tuple, on_step) -> None:
    """An expert's script: the checkpoints' shared VAE and text encoder load once, latents pass between
    stages, and each stage's UNet is dropped before the next one loads. (In the upscaler chain the
    naive code already passes latents, and its models share nothing.)"""
    import torch
    from diffusers import (StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)

    if chain == "img2latent_upscale2x4":
        return _naive(chain, paths, size, steps, seed, prompts, on_step)

    def next_stage(pipeline_class, pipe, name: str):
        """A `pipeline_class` with `pipe`'s components, but the UNet of `name`, loaded once `pipe`'s is gone."""
        pipe.register_modules(unet=None)
        unet = UNet2DConditionModel.from_pretrained(paths[name], subfolder="unet")
        return pipeline_class(**{**pipe.components, "unet": unet}, requires_safety_checker=False)

    common = {"num_inference_steps": steps, "generator": torch.Generator("cpu").manual_seed(seed),
              "callback_on_step_end": _calling(on_step)}
    side = 64 if size == "tiny" else 256
    if chain == "img2img2img":
        pipe = StableDiffusionImg2ImgPipeline.from_pretrained(paths["base"], safety_checker=None)
        latents = pipe(prompts[0], image=_init_image(size), strength=0.6, output_type="latent", **common).images
        for name, prompt in zip(("comic", "pixel"), prompts[1:]):
            pipe = next_stage(StableDiffusionImg2ImgPipeline, pipe, name)
            latents = pipe(prompt, image=latents, strength=0.6, output_type="latent", **common).images
        with torch.no_grad():
            pixels = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        pipe.image_processor.postprocess(pixels)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(paths["base"], safety_checker=None)
        image = pipe(prompts[0], height=side, width=side, **common).images[0]
        pipe = next_stage(StableDiffusionInpaintPipeline, pipe, "inpaint")
        pipe(prompts[-1], image=image, mask_image=_mask_image(size), height=side, width=side, **common)


class _Nodegraph:
    """One executor for the cold, warm and incremental runs, as a library user keeps it."""

    def __init__(self, written_naively: bool):
        from nodegraph import Executor

        self.executor, self.naively = Executor(), written_naively
        self.out = Path(os.environ.get("TMPDIR", "/tmp")) / f"chains-bench-{os.getpid()}"
        self.graph = None

    def __call__(self, chain: str, paths: dict, size: str, steps: int, seed: int, prompts: tuple, on_step) -> None:
        from nodegraph import RunOptions

        if self.graph is None:
            self.graph = _graph(chain, paths, size, steps, self.naively, self.out)
        self.graph.set_input("first", "seed", seed)
        self.graph.set_input("last", "prompt", prompts[-1])
        self.executor.run(self.graph, on_event=lambda e: e.kind == "progress" and on_step(),
                          options=RunOptions(device="cpu", output_dir=self.out))


def _graph(chain: str, paths: dict, size: str, steps: int, naively: bool, out: Path):
    """The chain as a graph: passing latents, or (naively) decoding after each stage."""
    from nodegraph import Graph

    side = 64 if size == "tiny" else 256
    out.mkdir(parents=True, exist_ok=True)
    _init_image(size).save(out / "init.png")
    _mask_image(size).save(out / "mask.png")
    g = Graph()
    common = {"num_inference_steps": steps, "seed": 0}

    def handed_on(latent, load):
        return g.add("Decode", latent=latent, vae=load.vae).image if naively else latent

    if chain == "img2img2img":
        image = g.add("LoadImage", path=str(out / "init.png")).image
        for i, (name, prompt) in enumerate(zip(("base", "comic", "pixel"), PROMPTS)):
            load = g.add("LoadModel", model=paths[name])
            node_id = "first" if i == 0 else "last" if i == 2 else None
            latent = g.add("Img2Img", id=node_id, model=load.model, image=image, prompt=prompt, strength=0.6,
                           **common).latent
            image = handed_on(latent, load) if i < 2 else latent
        final = g.add("Decode", latent=image, vae=load.vae).image
    elif chain == "text2img2inpaint":
        base, inpaint = g.add("LoadModel", model=paths["base"]), g.add("LoadModel", model=paths["inpaint"])
        latent = g.add("Text2Img", id="first", model=base.model, prompt=PROMPTS[0], height=side, width=side,
                       **common).latent
        mask = g.add("LoadMask", path=str(out / "mask.png")).mask
        inpainted = g.add("Inpaint", id="last", model=inpaint.model, image=handed_on(latent, base), mask_image=mask,
                          prompt=PROMPTS[-1], **common).latent
        final = g.add("Decode", latent=inpainted, vae=inpaint.vae).image
    else:
        base = g.add("LoadModel", model=paths["base"])
        upscaler = g.add("LoadModel", model="builtin:tiny-latent-upscaler")
        latent = g.add("Img2Img", id="first", model=base.model, image=g.add("LoadImage", path=str(out / "init.png")).image,
                       prompt=PROMPTS[0], strength=0.6, **common).latent
        doubled = g.add("LatentUpscale", model=upscaler.model, latent=latent, prompt=PROMPTS[0], **common).latent
        x4 = g.add("LoadModel", model="builtin:tiny-x4-upscaler")
        final = g.add("Upscale", id="last", model=x4.model, image=g.add("Decode", latent=doubled, vae=upscaler.vae).image,
                      prompt=PROMPTS[-1], **common).image
    g.add("Save", image=final, prefix=chain)
    return g


if __name__ == "__main__":
    main()
