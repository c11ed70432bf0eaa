"""nodegraph: typed node graphs of diffusion pipelines, checked before they run and cached as they run.

    import nodegraph
    graph = nodegraph.load("graphs/text2img2img.json")
    result = nodegraph.Executor().run(graph, on_event=print)

The names below are imported on first use, so that `import nodegraph` (and the command line's
start) costs next to nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Named like their modules (nodegraph/registry.py, nodegraph/node.py): imported now, or the modules,
# once imported by anything, would stand where these names are looked up. The import is cheap.
from .registry import node, registry, rewrite  # noqa: F401

__version__ = "0.1.0"

_HOMES = {
    "context": ("NodeContext", "RunOptions"),
    "errors": ("GraphFileError", "InputError", "Interrupted", "NodeExecutionError", "NodegraphError", "Problem",
               "UsageError", "ValidationError"),
    "executor": ("Executor", "RunResult"),
    "fileformat": ("dumps", "load", "loads", "save"),
    "graph": ("Graph", "Link"),
    "node": ("Input", "Output", "StreamItem"),
    "validation": ("validate",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted([*_HOME_OF, "node", "registry", "rewrite"])


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'nodegraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from .context import NodeContext, RunOptions  # noqa: F401
    from .errors import (GraphFileError, InputError, Interrupted, NodeExecutionError, NodegraphError,  # noqa: F401
                         Problem, UsageError, ValidationError)
    from .executor import Executor, RunResult  # noqa: F401
    from .fileformat import dumps, load, loads, save  # noqa: F401
    from .graph import Graph, Link  # noqa: F401
    from .node import Input, Output, StreamItem  # noqa: F401
    from .validation import validate  # noqa: F401
