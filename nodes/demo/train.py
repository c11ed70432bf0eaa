"""Train the demo model from scratch: `python -m nodes.demo.train [--out DIR] [--minutes N] [--resume]`.

First the VAE, then the scaling factor is measured on its latents, then the text
encoder and UNet together; the result is written as an fp16 diffusers folder, then
measured (report.json and contact_sheet.png, see nodes.demo.report).

--minutes is a budget on this machine's 2 CPU cores: it is turned into fixed step
counts with the throughput measured here (CPU_*_SAMPLES_PER_S), so a run is a pure
function of its arguments, and on a GPU the same steps simply take less time.
Checkpoints go to --work; --resume continues from them (with the same arguments).

Run it niced on a quiet machine: OMP_NUM_THREADS=2 nice -n 19 python -m nodes.demo.train
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import shutil
import time
import types

from . import loop, model, unet_training, vae_training

SEED = 0
DEFAULT_MINUTES = 57  # training; measuring and writing take the rest of an hour
VAE_SHARE = 0.2  # of the minutes; the UNet gets the rest (the VAE passes its targets in a fifth)
# Training throughput on this machine's 2 CPU cores (OMP_NUM_THREADS=2, nothing else running).
CPU_VAE_SAMPLES_PER_S = 40
CPU_UNET_SAMPLES_PER_S = 70

DEFAULT_OUT = pathlib.Path(__file__).parent / "demo-sd"


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    import torch

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    work = pathlib.Path(args.work)
    if not args.resume:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    vae_steps, unet_steps = step_counts(args.minutes, args.vae_share)
    started = time.monotonic()

    parts = build_parts(device)
    vae_log = loop.run(_vae_phase(parts, vae_steps, device), work, device, SEED)
    parts.scaling_factor = vae_training.scaling_factor(parts.vae, device, SEED)
    parts.vae.register_to_config(scaling_factor=parts.scaling_factor)
    parts.vae.requires_grad_(False)
    unet_log = loop.run(_unet_phase(parts, unet_steps, device), work, device, SEED)
    training_minutes = (time.monotonic() - started) / 60

    out = pathlib.Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save(out, parts.vae, parts.text_encoder, parts.unet, dtype=torch.float16)
    from . import report

    summary = {"vae_steps": vae_steps, "unet_steps": unet_steps, "scaling_factor": parts.scaling_factor,
               "training_minutes_this_session": round(training_minutes, 1), "device": str(device),
               "last_vae_log": vae_log[-1:], "last_unet_log": unet_log[-1:], "folder_bytes": folder_bytes(out)}
    result = report.write(out, work / "report", device, extra={"training": summary})
    print({name: check["measured"] for name, check in result["acceptance"].items()})


def step_counts(minutes: float, vae_share: float) -> tuple[int, int]:
    vae = minutes * 60 * vae_share * CPU_VAE_SAMPLES_PER_S / vae_training.BATCH
    unet = minutes * 60 * (1 - vae_share) * CPU_UNET_SAMPLES_PER_S / unet_training.BATCH
    return max(1, round(vae)), max(1, round(unet))


def build_parts(device) -> types.SimpleNamespace:
    """Fresh models, each initialised from its own seed."""
    tokenizer = model.tokenizer()
    _seed("vae")
    vae = model.vae().to(device)
    _seed("text_encoder")
    text_encoder = model.text_encoder(len(tokenizer)).to(device)
    _seed("unet")
    unet = model.unet().to(device)
    return types.SimpleNamespace(vae=vae, text_encoder=text_encoder, unet=unet, tokenizer=tokenizer,
                                 scheduler=model.scheduler(), scaling_factor=1.0)


def folder_bytes(folder: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _vae_phase(parts, steps: int, device) -> loop.Phase:
    return loop.Phase("vae", {"vae": parts.vae}, steps, vae_training.BATCH, vae_training.LEARNING_RATE,
                      lambda step, generator: vae_training.loss(parts.vae, step, generator, device))


def _unet_phase(parts, steps: int, device) -> loop.Phase:
    return loop.Phase("unet", {"unet": parts.unet, "text_encoder": parts.text_encoder}, steps,
                      unet_training.BATCH, unet_training.LEARNING_RATE,
                      lambda step, generator: unet_training.loss(parts, step, generator, device))


def _seed(role: str) -> None:
    import torch

    torch.manual_seed(int.from_bytes(hashlib.sha256(f"{SEED}/{role}".encode()).digest()[:4], "big"))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nodes.demo.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="the diffusers folder to write (default: %(default)s)")
    parser.add_argument("--work", default="demo-train-work",
                        help="checkpoints, log.jsonl and the report (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help="training budget on this machine's 2 CPU cores, fixed as step counts (default: %(default)s)")
    parser.add_argument("--vae-share", type=float, default=VAE_SHARE, help="share of the minutes for the VAE")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoints in --work")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    main()
