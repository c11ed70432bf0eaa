"""Resources: output values that hold loaded weights, and the model memory they live in.

A resource (a loaded model, a VAE) is made of components, each loaded and freed as one
piece and known by the identity of its weights, so two resources that share a component
(two checkpoints with one VAE) hold it once. Node packs describe a node's resources before
anything loads (`NodeDef.resources`), so plans can share them, order the work on each
together, and say when each loads and is released; while running, the executor loads each
resource just before a node reads it and releases it after its last reader.

Model memory has a budget of its own, apart from the result cache's. When a load would go
over it, the resident resource whose next use is furthest away is released first (Belady's
rule, which the plan can follow because it knows every future use).
"""

from __future__ import annotations

import os
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
    """Bytes of memory the machine has free now: the default model-memory budget."""
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
    """

    def __init__(self, budget_bytes: int | None = None):
        self.budget_bytes = budget_bytes if budget_bytes is not None else available_memory()
        self._resident: dict[int, Any] = {}  # id(resource) -> resource
        self.loads = 0  # resources loaded (or reloaded) so far
        self.peak_bytes = 0

    def resident(self) -> list[Any]:
        return list(self._resident.values())

    def resident_bytes(self, extra: Iterable[Any] = ()) -> int:
        """Bytes of the resident resources (and `extra` ones), each shared component counted once."""
        sizes: dict[str, int] = {}
        for resource in [*self._resident.values(), *extra]:
            for component in resource.components().values():
                sizes[component.identity] = component.nbytes
        return sum(sizes.values())

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
            resource.load()
            self._resident[id(resource)] = resource
            self.loads += 1
        self.peak_bytes = max(self.peak_bytes, self.resident_bytes())

    def done(self, resources: Iterable[Any], next_use, keep: frozenset[str] = frozenset()) -> None:
        """Release those of `resources` that have no use left."""
        for resource in resources:
            if id(resource) in self._resident and next_use(resource) is None:
                self._release(resource, keep)

    def release_all(self) -> None:
        for resource in list(self._resident.values()):
            self._release(resource, frozenset())

    def _release(self, resource: Any, keep: frozenset[str]) -> None:
        del self._resident[id(resource)]
        resident = frozenset(c.identity for r in self._resident.values() for c in r.components().values())
        resource.unload(keep | resident)


def _distance(next_use: int | None) -> float:
    return float("inf") if next_use is None else next_use
