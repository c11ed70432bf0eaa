"""A resumable training loop: a fixed number of steps, checkpointed to a work folder.

Runs are deterministic on CPU for a given thread count: the data of step k is drawn
by index and its noise from a generator seeded by (phase, k), so a resumed run
repeats exactly what an uninterrupted one does. Checkpoints hold the weights, the
optimiser and the step; they are written every CHECKPOINT_SECONDS and at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import pathlib
import time
from typing import Callable

CHECKPOINT_SECONDS = 120
LOG_EVERY = 25  # steps
WARMUP_STEPS = 100
FINAL_LR_FRACTION = 0.1


@dataclasses.dataclass
class Phase:
    name: str  # also the checkpoint's file name
    modules: dict  # name -> torch module being trained
    steps: int
    batch: int
    learning_rate: float
    loss: Callable  # (step, generator) -> (loss tensor, {metric: float})


def run(phase: Phase, work: pathlib.Path, device, seed: int) -> list[dict]:
    """Train `phase` to its last step, resuming from its checkpoint in `work`; returns its log."""
    import torch

    parameters = [p for module in phase.modules.values() for p in module.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=phase.learning_rate, weight_decay=0.0)
    step, log = _restore(phase, optimizer, work)
    for module in phase.modules.values():
        module.train()
    saved_at = started = time.monotonic()
    first_step = step
    while step < phase.steps:
        for group in optimizer.param_groups:
            group["lr"] = phase.learning_rate * learning_rate_factor(step, phase.steps)
        generator = torch.Generator(device).manual_seed(step_seed(seed, phase.name, step))
        loss, metrics = phase.loss(step, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        if step % LOG_EVERY == 0 or step == phase.steps:
            rate = (step - first_step) * phase.batch / (time.monotonic() - started)
            log.append(_log_line(phase, work, step, float(loss), metrics, rate))
        if time.monotonic() - saved_at > CHECKPOINT_SECONDS or step == phase.steps:
            _save(phase, optimizer, step, log, work)
            saved_at = time.monotonic()
    for module in phase.modules.values():
        module.eval()
    return log


def learning_rate_factor(step: int, steps: int) -> float:
    """Linear warm-up, then a cosine down to FINAL_LR_FRACTION."""
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, phase: str, step: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{phase}/{step}".encode()).digest()[:8], "big") >> 1


def checkpoint_path(work: pathlib.Path, name: str) -> pathlib.Path:
    return work / f"{name}.pt"


def _restore(phase: Phase, optimizer, work: pathlib.Path) -> tuple[int, list[dict]]:
    import torch

    path = checkpoint_path(work, phase.name)
    if not path.exists():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, module in phase.modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], json.loads(state["log"])


def _save(phase: Phase, optimizer, step: int, log: list[dict], work: pathlib.Path) -> None:
    import torch

    state = {
        "modules": {name: module.state_dict() for name, module in phase.modules.items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "log": json.dumps(log),
    }
    path = checkpoint_path(work, phase.name)
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # a run killed mid-write leaves the last checkpoint whole


def _log_line(phase: Phase, work: pathlib.Path, step: int, loss: float, metrics: dict, rate: float) -> dict:
    line = {"phase": phase.name, "step": step, "of": phase.steps, "loss": round(loss, 5),
            **{k: round(v, 4) for k, v in metrics.items()}, "samples_per_s": round(rate, 1)}
    print(json.dumps(line), flush=True)
    with open(work / "log.jsonl", "a") as file:
        file.write(json.dumps(line) + "\n")
    return line
