"""Resources: output values that hold loaded weights, and the model memory they live in.

A resource (a loaded model, a VAE) is made of components, each loaded and freed as one
piece and known by the identity of its weights, so two resources that share a component
(two checkpoints with one VAE) hold it once. Node packs describe a node's resources before
anything loads (`NodeDef.resources`), so plans can share them, order the work on each
together, and say when each loads and is released; while running, the executor loads each
resource just before a node reads it and releases it after its last reader.

Model memory has a budget of its own, apart from the result cache's. When a load would go
over it, the resident resource whose next use is furthest away is released first (Belady's
rule, which the plan can follow because it knows every future use). Where resources run on
a device with memory of its own (a CUDA GPU) and can `offload()`, releasing one moves it to
the host's memory while that allows (fast to bring back); otherwise it is dropped.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, runtime_checkable


@dataclass(frozen=True)
class Component:
    """A piece of a resource loaded and freed as one (a UNet, a VAE): its weights' identity, and
    the bytes it takes once loaded (an estimate until it has loaded)."""

    identity: str
    nbytes: int


@runtime_checkable
class Resource(Protocol):
    """An output value holding loaded weights. Loading is idempotent; `unload(keep)` lets go of
    every component whose identity is not in `keep`, and a later use loads them again."""

    def components(self) -> dict[str, Component]: ...

    def load(self) -> None: ...

    def unload(self, keep: frozenset[str] = frozenset()) -> None: ...


def is_resource(value: Any) -> bool:
    return isinstance(value, Resource) and not isinstance(value, type)


def available_memory() -> int:
    """Bytes free where models run now: a CUDA GPU's, where torch has one, else the machine's."""
    gpu = cuda_memory()
    return gpu[0] if gpu is not None else host_memory()


def cuda_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the CUDA GPU, if torch is loaded and has one; torch is never imported
    here (a graph without models has no torch), nor read while another thread is importing it."""
    torch = sys.modules.get("torch")
    if torch is None or getattr(getattr(torch, "__spec__", None), "_initializing", False):
        return None
    try:
        return torch.cuda.mem_get_info() if torch.cuda.is_available() else None
    except AttributeError:  # torch is still being imported
        return None


def host_memory() -> int:
    """Bytes of the machine's own memory free now."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not every system says
        return 1 << 62


class ModelMemory:
    """The resources loaded now, within a budget of bytes.

    `use(resources, next_use, keep)` makes them resident before a node runs; `done(resources,
    next_use, keep)` releases those with no use left. `next_use(resource)` tells how far away a
    resident resource's next use is (None: never), which picks what to release when memory is
    short; `keep` names the component identities that work still to come needs, which a
    released resource then keeps (a VAE that the next model shares stays loaded).

    With `keep_warm` (a server, whose next run likely needs the same models), a resource with no
    use left stays loaded until memory is short or `release_all()`, and the memory serves run
    after run (`start_run`): a later run that makes a resource from the same inputs gets the one
    kept (see `made`), not one more.
    """

    def __init__(self, budget_bytes: int | None = None, host_budget_bytes: int | None = None, keep_warm: bool = False):
        self.budget_bytes = budget_bytes if budget_bytes is not None else available_memory()
        self.host_budget_bytes = host_budget_bytes if host_budget_bytes is not None else host_memory()
        self.keep_warm = keep_warm
        self._resident: dict[int, Any] = {}  # id(resource) -> resource
        self._offloaded: dict[int, Any] = {}  # released to host memory, still loaded there
        self.loads = 0  # resources loaded (or reloaded) so far
        self.peak_bytes = 0
        # Resources made so far, shared by value (see nodegraph.residency): for one run, or, kept
        # warm, for every run until release_all.
        self.made: dict[bytes, Any] = {}  # value key of a resource node's inputs -> its outputs
        self.made_with: dict[int, bytes] = {}  # id(resource) -> the value key it was made with

    def start_run(self, budget_bytes: int | None) -> None:
        """Serve one more run, within `budget_bytes` (None: what is free now, and what the resources
        still loaded from earlier runs take)."""
        self.budget_bytes = budget_bytes if budget_bytes is not None else available_memory() + self.resident_bytes()
        self.peak_bytes = self.resident_bytes()

    def resident(self) -> list[Any]:
        return list(self._resident.values())

    def resident_bytes(self, extra: Iterable[Any] = ()) -> int:
        """Bytes of the resident resources (and `extra` ones), each shared component counted once."""
        return _bytes([*self._resident.values(), *extra])

    def use(self, resources: list[Any], next_use, keep: frozenset[str] = frozenset()) -> None:
        """Make `resources` resident, releasing others (furthest next use first) to stay in budget."""
        wanted = [r for r in resources if id(r) not in self._resident]
        if not wanted:
            return
        while self.resident_bytes(wanted) > self.budget_bytes:
            others = [r for r in self._resident.values() if all(r is not w for w in resources)]
            if not others:
                break  # it does not fit even alone: load it anyway, the budget is a target
            furthest = max(others, key=lambda r: _distance(next_use(r)))
            self._release(furthest, frozenset())  # memory is short: what is needed later loads again
        for resource in wanted:
            self.loads += id(resource) not in self._offloaded  # from the host is no load
            self._offloaded.pop(id(resource), None)
            resource.load()
            self._resident[id(resource)] = resource
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes())

    def done(self, resources: Iterable[Any], next_use, keep: frozenset[str] = frozenset()) -> None:
        """Release those of `resources` that have no use left (unless kept warm)."""
        if self.keep_warm:
            return
        for resource in resources:
            if id(resource) in self._resident and next_use(resource) is None:
                self._release(resource, keep)

    def release_all(self) -> None:
        self.made.clear()
        self.made_with.clear()
        for resource in [*self._resident.values(), *self._offloaded.values()]:
            self._resident.pop(id(resource), None)
            self._offloaded.pop(id(resource), None)
            resource.unload(frozenset())

    def _release(self, resource: Any, keep: frozenset[str]) -> None:
        del self._resident[id(resource)]
        keep = keep | frozenset(c.identity for r in self._resident.values() for c in r.components().values())
        if getattr(resource, "offloads", False) and self._host_fits(resource):
            resource.offload(keep)
            self._offloaded[id(resource)] = resource
        else:
            resource.unload(keep)

    def _host_fits(self, resource: Any) -> bool:
        """Whether host memory takes the resource too; if not, what waits there longest goes first."""
        while self._offloaded and _bytes([*self._offloaded.values(), resource]) > self.host_budget_bytes:
            oldest = next(iter(self._offloaded.values()))
            del self._offloaded[id(oldest)]
            oldest.unload(frozenset())
        return _bytes([*self._offloaded.values(), resource]) <= self.host_budget_bytes


def _bytes(resources: Iterable[Any]) -> int:
    """Bytes of several resources, each shared component counted once."""
    return unique_bytes(c for resource in resources for c in resource.components().values())


def unique_bytes(components: Iterable[Component]) -> int:
    """Bytes of components, each identity counted once."""
    return sum({c.identity: c.nbytes for c in components}.values())


def _distance(next_use: int | None) -> float:
    return float("inf") if next_use is None else next_use
