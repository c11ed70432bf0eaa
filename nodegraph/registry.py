"""Where node types are registered, and how node packs are found.

Node packs (the built-in `nodes` package included) register through the
`nodegraph.nodes` entry point group: the entry point names a module, and
importing it registers its nodes. Importing a pack by hand works too.
"""

from __future__ import annotations

import difflib
import threading
import traceback
from importlib.metadata import entry_points
from typing import Any, Callable, Iterator, NamedTuple

from .node import NodeDef, define

ENTRY_POINT_GROUP = "nodegraph.nodes"


class NamedRewrite(NamedTuple):
    """A rewrite the user asks for by name (the CLI's `--NAME`): a function `(graph) -> (graph,
    [Rewrite])` like an optimiser pass, which returns an edited copy and records what it changed."""

    name: str
    help: str
    function: Callable[[Any], tuple[Any, list]]


class Registry:
    """A set of node types by name."""

    def __init__(self, entry_point_group: str | None = None):
        self._defs: dict[str, NodeDef] = {}
        self._rewrites: dict[str, NamedRewrite] = {}
        self._value_types: dict[Any, None] = {}  # an ordered set
        self._warm_ups: list[Callable[[], None]] = []
        self._entry_point_group = entry_point_group
        self._plugins_loaded = entry_point_group is None
        self._loading = threading.RLock()
        self._loader: int | None = None  # the thread loading the packs
        self.plugin_errors: dict[str, str] = {}
        self.revision = 0  # counts registrations: a plan made before one may be out of date

    def add(self, definition: NodeDef) -> NodeDef:
        existing = self._defs.get(definition.name)
        if existing and existing.function.__qualname__ != definition.function.__qualname__:
            raise ValueError(
                f"node type {definition.name!r} is already registered by "
                f"{existing.function.__module__}.{existing.function.__qualname__}"
            )
        self._defs[definition.name] = definition
        self.revision += 1
        return definition

    def node(self, name: str, **declaration: Any) -> Callable[[Callable], Callable]:
        """Decorator: declare and register a node type backed by the function."""

        def register(function: Callable) -> Callable:
            function.node_def = self.add(define(name, function, **declaration))
            return function

        return register

    def rewrite(self, name: str, help: str) -> Callable[[Callable], Callable]:
        """Decorator: register a named graph rewrite, offered by the CLI as `--NAME` (see NamedRewrite)."""

        def register(function: Callable) -> Callable:
            self._rewrites[name] = NamedRewrite(name, help, function)
            return function

        return register

    def declare_types(self, *types: Any) -> None:
        """Declare the concrete types that values of generic sockets take at run time (the latent
        spaces and model families a pack knows: LATENT[sd], MODEL[sdxl], ...). An editor that
        matches socket types by name offers them wherever a socket takes any LATENT or MODEL."""
        self._value_types.update(dict.fromkeys(types))

    def add_warm_up(self, function: Callable[[], None]) -> None:
        """Register what makes a pack's first run fast (importing torch and diffusers), for `warm_up`."""
        self._warm_ups.append(function)

    def warm_up(self) -> None:
        """Do now what the packs' nodes would do on their first run: a server does it before it
        listens, so that no request waits while a run imports a large library."""
        self._load_plugins()
        for function in self._warm_ups:
            function()

    @property
    def value_types(self) -> list[Any]:
        self._load_plugins()
        return list(self._value_types)

    @property
    def rewrites(self) -> dict[str, NamedRewrite]:
        self._load_plugins()
        return dict(self._rewrites)

    def apply_rewrite(self, name: str, graph: Any) -> tuple[Any, list]:
        """The graph rewritten by the registered rewrite `name` (e.g. "tiny"), and what it changed;
        `graph` itself stays as it was."""
        return self.rewrites[name].function(graph)

    def get(self, name: str) -> NodeDef | None:
        self._load_plugins()
        return self._defs.get(name)

    def __getitem__(self, name: str) -> NodeDef:
        definition = self.get(name)
        if definition is None:
            raise KeyError(name)
        return definition

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._defs

    def __iter__(self) -> Iterator[NodeDef]:
        self._load_plugins()
        return iter(sorted(self._defs.values(), key=lambda d: (d.category, d.name)))

    def closest(self, name: str, n: int = 3) -> list[str]:
        """Registered names that look like `name`, for "did you mean" hints."""
        self._load_plugins()
        by_lower = {known.lower(): known for known in self._defs}
        matches = difflib.get_close_matches(name.lower(), by_lower, n=n, cutoff=0.5)
        return [by_lower[m] for m in matches]

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        # Another thread waits here until every pack has loaded; this thread, loading a pack
        # that looks itself up, passes through (the lock is re-entrant, the flag set below).
        with self._loading:
            if self._plugins_loaded or self._loader == threading.get_ident():
                return
            self._loader = threading.get_ident()
            for entry_point in entry_points(group=self._entry_point_group):
                try:
                    entry_point.load()
                except Exception:  # one broken pack must not take the others down
                    self.plugin_errors[entry_point.value] = traceback.format_exc()
            self._plugins_loaded = True


registry = Registry(ENTRY_POINT_GROUP)
node = registry.node
rewrite = registry.rewrite
