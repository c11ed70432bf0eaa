"""The `nodegraph` command: run, validate and explain graph files; list nodes; print the schema.

Exit codes: 0 success, 1 invalid graph, 2 usage error, 3 run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from . import fileformat
from . import types as T
from .context import RunOptions
from .errors import GraphFileError, Interrupted, NodeExecutionError, ValidationError
from .graph import Graph
from .node import REQUIRED
from .registry import registry

OK, INVALID, USAGE, FAILED = 0, 1, 2, 3


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    # Library chatter (deprecations inside diffusers, optional-backend notes) is not for CLI users.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.simplefilter("ignore", FutureWarning)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except UsageError as error:
        parser.error(str(error))  # exits with USAGE
    except (GraphFileError, ValidationError) as error:
        _print_problems(error.problems, as_json=getattr(args, "json", False))
        return INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodegraph", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, function, help: str, graph: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=function)
        if graph:
            sub.add_argument("file", type=Path, help="graph file (JSON, ComfyUI API prompt, or a PNG Save wrote)")
            sub.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                             help="set a literal input, parsed with the input's declared type (repeatable)")
            for rewrite in registry.rewrites.values():
                sub.add_argument(f"--{rewrite.name}", action="store_true", help=rewrite.help)
        return sub

    run = command("run", _run, "run a graph")
    run.add_argument("--out", type=Path, default=Path("outputs"), help="folder for saved outputs (default: outputs)")
    run.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    run.add_argument("--output", action="append", metavar="NODE", help="run only what this output node needs (repeatable)")
    run.add_argument("--traceback", action="store_true", help="print the full traceback when a node fails")
    validate = command("validate", _validate, "check a graph without running it")
    validate.add_argument("--json", action="store_true", help="print the problems as a JSON array")
    command("explain", _explain, "print the execution plan")
    nodes = command("nodes", _nodes, "list the node types", graph=False)
    nodes.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    command("schema", _schema, "print the JSON Schema of graph files", graph=False)
    return parser


# ---- commands ------------------------------------------------------------------------------


def _validate(args) -> int:
    from .plan import plan

    graph = _load(args)
    plan(graph)
    print("[]" if args.json else f"{args.file}: valid ({len(graph)} nodes)")
    return OK


def _explain(args) -> int:
    from .plan import plan

    graph = _load(args)
    current = plan(graph)
    targets = set(current.outputs)
    print(f"{len(current.order)} nodes, {len(targets)} output node(s); order of execution:")
    for position, node_id in enumerate(current.order, 1):
        outputs = current.checked.output_types[node_id]
        produced = ", ".join(f"{name}: {t}" for name, t in outputs.items()) or "output node"
        notes = [f"per item of {current.stream_of[node_id]}"] if node_id in current.stream_of else []
        notes += [f"random seed {name}" for (n, name) in current.seeds if n == node_id]
        suffix = f"  [{'; '.join(notes)}]" if notes else ""
        print(f"{position:4}. {node_id} ({graph.type_of(node_id)}) -> {produced}  key {current.keys[node_id].hex()[:12]}{suffix}")
    return OK


def _run(args) -> int:
    from .executor import Executor

    graph = _load(args)
    executor = Executor()
    progress = _Progress()
    options = RunOptions(device=args.device, output_dir=args.out)
    previous = signal.signal(signal.SIGINT, lambda *_: executor.cancel())
    try:
        result = executor.run(graph, args.output, on_event=progress, options=options)
    except NodeExecutionError as error:
        progress.close()
        if args.traceback:
            print(error.traceback, file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return FAILED
    except Interrupted as stop:
        progress.close()
        print(f"interrupted{' at ' + stop.node if stop.node else ''}; results so far were kept", file=sys.stderr)
        return FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
    progress.close()
    _print_summary(result)
    return FAILED if result.failures else OK


def _nodes(args) -> int:
    definitions = list(registry)
    if args.json:
        print(json.dumps([d.to_json() for d in definitions], indent=2))
        return OK
    category = None
    for definition in definitions:
        if definition.category != category:
            category = definition.category
            print(f"\n[{category or 'other'}]")
        outputs = ", ".join(f"{n}: {o.type}" for n, o in definition.outputs.items()) or "(output node)"
        print(f"  {definition.name} -> {outputs}")
        for name, spec in definition.inputs.items():
            default = "" if spec.required else " (optional)" if spec.default in (None, REQUIRED) else f" = {spec.default!r}"
            print(f"      {name}: {spec.type}{default}")
    for pack, error in registry.plugin_errors.items():
        print(f"\nnode pack {pack} failed to load:\n{error}", file=sys.stderr)
    return OK


def _schema(args) -> int:
    print(json.dumps(fileformat.json_schema(), indent=2))
    return OK


# ---- helpers --------------------------------------------------------------------------------


def _load(args) -> Graph:
    graph = fileformat.load(args.file)
    for name in registry.rewrites:
        if getattr(args, name.replace("-", "_"), False):
            for note in registry.apply_rewrite(name, graph):
                print(f"{name}: {note}", file=sys.stderr)
    for assignment in args.set:
        _apply_set(graph, assignment)
    return graph


def _apply_set(graph: Graph, assignment: str) -> None:
    target, equals, text = assignment.partition("=")
    node_id, dot, name = target.rpartition(".")
    if not equals or not dot:
        raise UsageError(f"--set {assignment!r}: expected NODE.INPUT=VALUE")
    if node_id not in graph:
        raise UsageError(f"--set {assignment!r}: there is no node {node_id!r} (nodes: {', '.join(graph)})")
    definition = registry.get(graph.type_of(node_id))
    spec = definition.inputs.get(name) if definition else None
    if spec is None:
        known = ", ".join(definition.inputs) if definition else "unknown node type"
        raise UsageError(f"--set {assignment!r}: {node_id} has no input {name!r} (inputs: {known})")
    try:
        value = T.parse_literal(spec.type, text)
    except ValueError as error:
        raise UsageError(f"--set {assignment!r}: {node_id}.{name} takes {spec.type}: {error}") from None
    graph.set_input(node_id, name, value)


def _print_problems(problems, as_json: bool) -> None:
    if as_json:
        print(json.dumps([p.to_json() for p in problems], indent=2))
    else:
        for problem in problems:
            print(problem)


def _print_summary(result) -> None:
    print(f"done in {result.duration:.2f} s: {len(result.executed)} node run(s), {len(result.cached)} cached", file=sys.stderr)
    for node_id, seeds in result.seeds.items():
        for name, value in seeds.items():
            print(f"  {node_id}.{name}: random seed {value}", file=sys.stderr)
    for failure in result.failures:
        print(f"  failed: item {failure.item} ({failure.label}): {failure.error}", file=sys.stderr)
    for node_id, value in result.outputs.items():
        for summary in value if isinstance(value, list) else [value]:
            for path in (summary or {}).get("files", []) if isinstance(summary, dict) else []:
                print(path)


class _Progress:
    """Events to progress bars on stderr: one bar per node that reports steps."""

    def __init__(self):
        self._bar: Any = None
        self._node: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind, node_id = event["event"], event["node"]
        item = f"[{event['label']}] " if "label" in event else ""
        if kind == "node_start":
            self.close()
            print(f"{item}{node_id} ({event['type']})", file=sys.stderr)
        elif kind == "progress":
            if self._bar is None or self._node != node_id:
                from tqdm import tqdm

                self.close()
                # disable=None: bars only on a terminal, not in logs
                self._bar = tqdm(total=event["max"], desc=f"{item}{node_id}", leave=False, file=sys.stderr, disable=None)
                self._node = node_id
            self._bar.total = event["max"]
            self._bar.n = event["value"]
            self._bar.refresh()
        elif kind == "error" and "item" in event:
            self.close()
            print(f"{item}error: {event['message']}", file=sys.stderr)
        elif kind == "node_done":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
