"""Where a model runs: the device, and the torch dtype its weights load in.

torch is imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

from nodegraph.errors import InputError


def resolve_device(requested: str = "auto") -> str:
    """The device to run on: "auto" picks cuda, else mps, else cpu; an explicit one must be there."""
    import torch

    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if requested == "auto":
        return next(device for device in ("cuda", "mps", "cpu") if available[device])
    if not available.get(requested, False):
        raise InputError(None, f"device {requested!r} was asked for, but this machine has no such device",
                         code="device.unavailable", hint="run with device auto or cpu")
    return requested


def resolve_dtype(requested: str, device: str):
    """The torch dtype: "auto" is float16 on CUDA, float32 elsewhere (half precision gives black images on MPS
    and crawls on the CPU)."""
    import torch

    if requested == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return getattr(torch, requested)
