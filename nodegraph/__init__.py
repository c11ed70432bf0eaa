"""nodegraph: typed node graphs of diffusion pipelines, checked before they run and cached as they run.

    import nodegraph
    graph = nodegraph.load("graphs/text2img2img.json")
    result = nodegraph.Executor().run(graph, on_event=print)
"""

from .context import NodeContext, RunOptions
from .errors import (GraphFileError, InputError, Interrupted, NodeExecutionError, NodegraphError, Problem, UsageError,
                     ValidationError)
from .executor import Executor, RunResult
from .fileformat import dumps, load, loads, save
from .graph import Graph, Link
from .node import Input, Output, StreamItem
from .registry import node, registry, rewrite
from .validate import validate

__version__ = "0.1.0"

__all__ = [
    "Executor", "Graph", "GraphFileError", "Input", "InputError", "Interrupted", "Link", "NodeContext",
    "NodeExecutionError", "NodegraphError", "Output", "Problem", "RunOptions", "RunResult", "StreamItem",
    "UsageError", "ValidationError", "dumps", "load", "loads", "node", "registry", "rewrite", "save", "validate",
]
