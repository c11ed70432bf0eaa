"""What `nodegraph explain` shows: the graph as written and as optimised, each rewrite with its
pass, the order of execution, when each model loads and is released, and the model memory this
takes against the budget; and the one line `nodegraph run` prints about the optimiser."""

from __future__ import annotations

import re

import msgspec

from . import fileformat
from .context import RunOptions
from .graph import Graph
from .optimize import Optimized, Rewrite, disabled_passes, optimize
from .optimize.lifetimes import Schedule
from .plan import plan, run_targets
from .registry import registry as default_registry


def explain(graph: Graph, options: RunOptions | None = None, outputs: list[str] | None = None,
            registry=None) -> Optimized:
    """Plan and optimise the graph as `run` would, without running it."""
    options = options or RunOptions()
    disabled = disabled_passes(options)
    current = plan(graph, registry or default_registry, options)
    return optimize(graph, current, run_targets(current, outputs), disabled, options.model_memory, registry)


def to_json(graph: Graph, optimized: Optimized) -> dict:
    schedule = optimized.schedule
    return {"before": msgspec.to_builtins(fileformat.to_document(graph)),
            "after": msgspec.to_builtins(fileformat.to_document(optimized.graph)),
            "rewrites": [r.to_json() for r in optimized.rewrites],
            "order": sorted(optimized.plan.order, key=optimized.plan.index.__getitem__),
            "schedule": schedule.to_json() if schedule else None}


def lines(graph: Graph, optimized: Optimized) -> list[str]:
    """The explanation, for people."""
    current = optimized.plan
    order = sorted(current.order, key=current.index.__getitem__)
    out = [f"{len(graph)} nodes as written, {len(order)} after optimising; "
           f"{len(current.outputs)} output node(s)"]
    out += ["rewrites:"] + [f"  {r}" for r in optimized.rewrites] if optimized.rewrites else ["rewrites: none"]
    steps = {step.node: step for step in optimized.schedule.steps} if optimized.schedule else {}
    out.append("order of execution:")
    for position, node_id in enumerate(order, 1):
        outputs = current.typed.output_types[node_id]
        produced = ", ".join(f"{name}: {t}" for name, t in outputs.items()) or "output node"
        notes = [f"per item of {current.stream_of[node_id]}"] if node_id in current.stream_of else []
        notes += [f"random seed {name}" for name in current.seeds.get(node_id, {})]
        step = steps.get(node_id)
        notes += [f"loads {', '.join(step.loads)}"] if step and step.loads else []
        notes += [f"then releases {', '.join(step.releases)}"] if step and step.releases else []
        suffix = f"  [{'; '.join(notes)}]" if notes else ""
        out.append(f"{position:4}. {node_id} ({graph.type_of(node_id)}) -> {produced}  "
                   f"key {current.keys[node_id].hex()[:12]}{suffix}")
    if optimized.schedule and optimized.schedule.resources:
        out += _memory_lines(optimized.schedule)
    return out


def _memory_lines(schedule: Schedule) -> list[str]:
    out = ["models:"]
    for label, components in schedule.resources.items():
        parts = ", ".join(f"{name} {_size(c.nbytes)}" for name, c in components.items()) or "not known before it loads"
        out.append(f"  {label}: {parts}")
    if not any(schedule.resources.values()):
        return [*out, f"model memory: not known before loading; budget {_size(schedule.budget_bytes)}"]
    at_least = "at least " if not all(schedule.resources.values()) else ""
    out.append(f"model memory: peak {at_least}{_size(schedule.peak_bytes)} (every model loaded at once: {at_least}"
               f"{_size(schedule.all_loaded_bytes)}), budget {_size(schedule.budget_bytes)} (estimated before loading)")
    return out + [line for line in [over_budget(schedule.peak_bytes, schedule.budget_bytes)] if line]


def over_budget(peak_bytes: int, budget_bytes: int) -> str | None:
    """A warning when models take more than the model-memory budget: the budget is a target, which
    what one node needs at once may exceed (it loads anyway), and the user should hear of it."""
    if peak_bytes <= budget_bytes:
        return None
    return (f"warning: models take {_size(peak_bytes)} at the peak, more than the model-memory budget of "
            f"{_size(budget_bytes)}: what one node needs at once does not fit in it, and loads anyway "
            "(hint: raise --model-memory, RunOptions.model_memory)")


def summary(rewrites: list[Rewrite], schedule: Schedule | None) -> str | None:
    """One line on what the optimiser did, e.g. "optimised: 1 decode→encode removed, ...".
    Both sides of "peak models" are the plan's estimates, so they compare like with like."""
    counts: dict[str, int] = {}
    for rewrite in rewrites:  # merges count the nodes merged away; other passes their rewrites
        counts[rewrite.pass_name] = counts.get(rewrite.pass_name, 0) + (
            len(rewrite.nodes) - 1 if rewrite.pass_name == "merge" else 1)
    parts = [f"{counts[name]} {what}" for name, what in (
        ("decode_encode", "decode→encode removed"), ("merge", "duplicate node(s) merged"),
        ("share_models", "model(s) or component(s) shared"), ("dead_nodes", "unneeded node group(s) dropped"))
        if name in counts]
    if schedule and schedule.peak_bytes < schedule.all_loaded_bytes:
        parts.append(f"peak models {_size(schedule.all_loaded_bytes)} → {_size(schedule.peak_bytes)}")
    return "optimised: " + ", ".join(parts) if parts else None


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"


def parse_size(text: str) -> int:
    """"800MB", "4 GB", "1.5GiB" or plain bytes -> bytes; raises ValueError."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?i?b?)\s*", text.lower())
    if not match or match.group(2) in ("i", "ib") or (match.group(2).endswith("i")):
        raise ValueError(f"{text!r} is not a size (e.g. 800MB, 4GB, 1.5GiB)")
    number, unit = float(match.group(1)), match.group(2).rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    return int(number * base ** " kmgt".index(unit[:1] or " "))
