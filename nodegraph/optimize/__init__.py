"""The optimiser: small passes over a copy of the user's graph, and a schedule for its models.

Each pass is a pure function `(graph, plan, targets) -> (graph, [Rewrite])`: it returns the
same graph object when it has nothing to do, else an edited copy, and records what it did.
They run in turn until none has anything left to do (one pass can expose work for another:
merging two Decodes may make a decode→encode pair visible). Then `lifetimes` orders the
work so that each model's nodes run together. When each model loads and goes is planned with the
optimiser off too: loading at first use and releasing after last use is memory management, not an
optimisation a user would switch off.

The user's graph is never edited: the executor runs the optimised copy, and reports results,
events and provenance under the user's node ids. Passes that do not change results
(dead_nodes, merge, share_models, lifetimes) give bit-identical outputs; decode_encode skips a
lossy VAE round trip on purpose, and its records say so.

What a pass needs to know about node types, node packs declare: which outputs are resources
and what they hold (`Output.resource`, `NodeDef.resources`), which nodes encode and decode
(`NodeDef.codec`), which inputs encode an image with a model's VAE (`Input.encoded_by`), which
inputs are paths to content (`Input.path`), and which nodes have side effects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import UsageError
from ..graph import Graph
from ..plan import Plan, derive
from . import dead_nodes, decode_encode, merge, share_models
from .lifetimes import Schedule, schedule
from .rewrite import Rewrite

Pass = Callable[[Graph, Plan, list[str]], tuple[Graph, list[Rewrite]]]
PASSES: dict[str, Pass] = {
    "dead_nodes": dead_nodes.run,
    "merge": merge.run,
    "share_models": share_models.run,
    "decode_encode": decode_encode.run,
}
ALL = (*PASSES, "lifetimes")
_ROUNDS = 8  # a bound, far above what real graphs need


@dataclass
class Optimized:
    graph: Graph
    plan: Plan
    rewrites: list[Rewrite] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)  # user's node id -> the node computing it now
    schedule: Schedule | None = None


def disabled_passes(options) -> frozenset[str]:
    """The passes `options` (a RunOptions) switch off: every one with `optimize=False`."""
    check_pass_names(options.disable)
    return frozenset(ALL) if not options.optimize else frozenset(options.disable)


def check_pass_names(names) -> None:
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        raise UsageError(f"there is no optimiser pass {', '.join(map(repr, unknown))}; passes: {', '.join(ALL)}")


def optimize(graph: Graph, plan: Plan, targets: list[str], disabled=frozenset(), budget_bytes: int | None = None,
             registry=None) -> Optimized:
    """Run every pass not `disabled` on a copy of `graph` (planned as `plan`), to run `targets`."""
    check_pass_names(disabled)
    current, rewrites = Optimized(graph, plan), []
    for _ in range(_ROUNDS):
        progressed = False
        for name, run in PASSES.items():
            if name in disabled:
                continue
            rewritten, done = run(current.graph, current.plan, targets)
            rewrites += [r for r in done if r not in rewrites]
            if rewritten is not current.graph:
                current.plan = derive(current.plan, current.graph, rewritten, registry)
                current.graph, progressed = rewritten, True
        if not progressed:
            break
    current.rewrites = rewrites
    current.aliases = _aliases(rewrites)
    current.schedule = schedule(current.graph, current.plan, budget_bytes, regroup="lifetimes" not in disabled)
    return current


def _aliases(rewrites: list[Rewrite]) -> dict[str, str]:
    """Each merged node -> the node it was merged into, following chains of merges."""
    into = {node: r.into for r in rewrites if r.into for node in r.nodes if node != r.into}
    for node in into:
        while into[node] in into:
            into[node] = into[into[node]]
    return into
