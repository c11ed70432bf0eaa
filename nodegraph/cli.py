"""The `nodegraph` command: run, validate and explain graph files; list nodes; print the schema.

Exit codes: 0 success, 1 invalid graph, 2 usage error, 3 run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from . import fileformat
from .assignments import prepare
from .context import DEVICES, MAX_IMAGE_PIXELS, RunOptions
from .errors import GraphFileError, Interrupted, NodeExecutionError, UsageError, ValidationError
from .events import Event, NodeDone, NodeFailed, NodeStart, Progress
from .graph import Graph
from .node import REQUIRED
from .optimize import ALL as ALL_PASSES
from .registry import registry

OK, INVALID, USAGE, FAILED = 0, 1, 2, 3
INTERRUPTED, BROKEN_PIPE = 130, 141  # as a shell reports death by SIGINT and SIGPIPE


def main(argv: list[str] | None = None) -> int:
    try:
        # Library chatter (deprecations inside diffusers, optional-backend notes) is not for CLI users.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        warnings.simplefilter("ignore", FutureWarning)
        parser = _parser()
        args = parser.parse_args(argv)
        return _command(args)
    except KeyboardInterrupt:  # Ctrl-C while starting or validating; a run handles its own
        _say("interrupted", err=True)
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (`nodegraph nodes --json | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's exit flush must not fail too
        return BROKEN_PIPE
    except _OutputFailed as failure:
        print(f"cannot write the output: {failure}", file=sys.stderr)
        return FAILED


def _command(args) -> int:
    try:
        return args.command(args)
    except UsageError as error:
        args.parser.error(printable(str(error)))  # exits with USAGE
    except (GraphFileError, ValidationError) as error:
        _print_problems(error.problems, as_json=getattr(args, "json", False))
        return INVALID
    except (KeyboardInterrupt, BrokenPipeError, _OutputFailed):
        raise
    except Exception as error:  # a bug, in nodegraph or a node pack: say so, briefly
        if args.traceback:
            _say(traceback.format_exc(), err=True, raw=True)
        _say(f"internal error: {type(error).__name__}: {error} (this is a bug: please report it, with the output "
             "of the same command run with --traceback)", err=True)
        return FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nodegraph", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, function, help: str, graph: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(command=function, parser=sub)  # a usage error shows this command's usage
        sub.add_argument("--traceback", action="store_true", help="print the full traceback when something fails")
        if graph:
            sub.add_argument("file", type=Path, help="graph file (JSON, ComfyUI API prompt, or a PNG Save wrote)")
            sub.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                             help="set a literal input, parsed with the input's declared type (repeatable)")
            for rewrite in registry.rewrites.values():
                sub.add_argument(f"--{rewrite.name}", action="store_true", help=rewrite.help)
        return sub

    def optimiser_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--output", action="append", metavar="NODE",
                         help="run only what this output node needs (repeatable)")
        sub.add_argument("--no-optimize", dest="optimize", action="store_false", help="switch the optimiser off")
        sub.add_argument("--disable", action="append", default=[], metavar="PASS",
                         help=f"switch one optimiser pass off (repeatable): {', '.join(ALL_PASSES)}")
        sub.add_argument("--model-memory", type=_size, metavar="SIZE",
                         help="memory loaded models may take, e.g. 6GB (default: what the machine has free)")

    run = command("run", _run, "run a graph")
    run.add_argument("--out", type=Path, default=Path("outputs"), help="folder for saved outputs (default: outputs)")
    run.add_argument("--device", choices=DEVICES, default="auto")
    run.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, metavar="N",
                     help=f"refuse to decode larger images (default: {MAX_IMAGE_PIXELS}, 8192x8192)")
    optimiser_options(run)
    on_ray = run.add_argument_group("on a Ray cluster (pip install 'nodegraph[ray]')")
    on_ray.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                        help="share the stream's items out among workers on a Ray cluster: 'auto' (the one `ray start` "
                             "made), an address, or none to start one on this machine")
    on_ray.add_argument("--workers", type=int, metavar="N", help="Ray workers (default: as many as the cluster has "
                                                                 "room for)")
    on_ray.add_argument("--gpus-per-worker", type=float, metavar="G",
                        help="GPUs each worker takes (default: 1 where the cluster has GPUs, else 0: on CPU)")
    on_ray.add_argument("--resume", action="store_true",
                        help="do only the items the output folder's run journal does not have (after a crash)")
    validate = command("validate", _validate, "check a graph without running it")
    validate.add_argument("--json", action="store_true", help="print the problems as a JSON array")
    explain = command("explain", _explain, "show the plan: what the optimiser rewrites, the order, and when each "
                                           "model loads and is released")
    explain.add_argument("--json", action="store_true", help="print it as JSON")
    optimiser_options(explain)
    nodes = command("nodes", _nodes, "list the node types", graph=False)
    nodes.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    command("schema", _schema, "print the JSON Schema of graph files", graph=False)
    serve = command("serve", _serve, "serve the HTTP API (ComfyUI's and nodegraph's) and, with --editor, "
                                     "ComfyUI's web editor", graph=False)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                           "only)")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--editor", action="store_true", help="serve ComfyUI's editor at / (pip install "
                                                            "'nodegraph[editor]')")
    serve.add_argument("--input-dir", type=Path, default=Path("input"), help="uploads, and the images graphs may read")
    serve.add_argument("--output-dir", type=Path, default=Path("outputs"), help="where Save writes")
    serve.add_argument("--user-dir", type=Path, default=Path("user"), help="the editor's settings and workflows")
    serve.add_argument("--models-dir", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder of models LoadModel offers, e.g. ComfyUI/models/checkpoints (repeatable)")
    serve.add_argument("--device", choices=DEVICES, default="auto")
    serve.add_argument("--token", help="require this token from every client (Authorization: Bearer TOKEN)")
    serve.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                       help="a host name the server answers to besides localhost (repeatable)")
    serve.add_argument("--max-upload-size", type=_size, default=64 << 20, metavar="SIZE", help="default: 64MB")
    serve.add_argument("--max-image-pixels", type=int, default=MAX_IMAGE_PIXELS, metavar="N")
    serve.add_argument("--max-queue", type=int, default=256, metavar="N", help="runs that may wait (default: 256)")
    return parser


# ---- commands ------------------------------------------------------------------------------


def _validate(args) -> int:
    from .plan import plan

    graph = _load(args)
    plan(graph)
    _say("[]" if args.json else f"{args.file}: valid ({len(graph)} nodes)")
    return OK


def _explain(args) -> int:
    from .explain import explain, lines, to_json

    graph = _load(args)
    optimized = explain(graph, _options(args), args.output)
    if args.json:
        _say(json.dumps(to_json(graph, optimized), indent=2), raw=True)
    else:
        for line in lines(graph, optimized):
            _say(line)
    return OK


def _options(args, **run_only) -> RunOptions:
    return RunOptions(optimize=args.optimize, disable=frozenset(args.disable), model_memory=args.model_memory,
                      **run_only)


def _size(text: str) -> int:
    from .explain import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run(args) -> int:
    from .executor import Executor

    graph = _load(args)
    options = _options(args, device=args.device, output_dir=args.out, max_image_pixels=args.max_image_pixels)
    if args.ray is not None:
        return _run_on_ray(args, graph, options)
    for flag in ("workers", "gpus_per_worker", "resume"):
        if getattr(args, flag) not in (None, False):
            raise UsageError(f"--{flag.replace('_', '-')} is for runs on Ray: add --ray")
    executor = Executor()
    progress = _Progress()
    previous = signal.signal(signal.SIGINT, lambda *_: executor.cancel())
    try:
        result = executor.run(graph, args.output, on_event=progress, options=options)
    except NodeExecutionError as error:
        progress.close()
        return _failed(args, error)
    except Interrupted as stop:
        progress.close()
        _say(f"interrupted{' at ' + stop.node if stop.node else ''}: files saved before it are complete; "
             "nothing after it was written", err=True)
        if stop.result is not None:
            _print_files(stop.result)
        return FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
    progress.close()
    _print_summary(result)
    return FAILED if result.failures else OK


def _run_on_ray(args, graph: Graph, options: RunOptions) -> int:
    try:
        from . import ray as on_ray
    except ImportError as missing:
        raise UsageError(f"--ray needs {missing.name}: pip install 'nodegraph[ray]'") from None
    try:
        result = on_ray.run(graph, args.output, address=args.ray or None, workers=args.workers,
                            gpus_per_worker=args.gpus_per_worker, options=options, resume=args.resume, progress=True)
    except NodeExecutionError as error:
        return _failed(args, error)
    except KeyboardInterrupt:
        _say(f"interrupted: the items finished so far are saved in {args.out}; run again with --resume to do the rest",
             err=True)
        return INTERRUPTED
    if result.resumed:
        _say(f"resumed: {result.resumed} item(s) were done before", err=True)
    if result.retried:
        _say(f"{result.retried} item(s) ran again after their worker died", err=True)
    _print_summary(result)
    return FAILED if result.failures else OK


def _failed(args, error: NodeExecutionError) -> int:
    """Report a node's failure (its traceback only if asked for)."""
    if args.traceback:
        _say(error.traceback, err=True, raw=True)
    _say(f"error: {error}", err=True)
    return FAILED


def _nodes(args) -> int:
    definitions = list(registry)
    if args.json:
        _say(json.dumps([d.to_json() for d in definitions], indent=2), raw=True)
        return OK
    category = None
    for number, definition in enumerate(definitions):
        if number == 0 or definition.category != category:
            category = definition.category
            _say(("" if number == 0 else "\n") + f"[{category or 'other'}]", raw=True)
        outputs = ", ".join(f"{n}: {o.type}" for n, o in definition.outputs.items()) or "(output node)"
        _say(f"  {definition.name} -> {outputs}")
        for name, spec in definition.inputs.items():
            default = "" if spec.required else " (optional)" if spec.default in (None, REQUIRED) else f" = {spec.default!r}"
            _say(f"      {name}: {spec.type}{default}")
    for pack, error in registry.plugin_errors.items():
        _say(f"\nnode pack {pack} failed to load:\n{error}", err=True, raw=True)
    return OK


def _serve(args) -> int:
    try:
        from .server import ServerConfig, serve
    except ImportError as missing:
        raise UsageError(f"the server needs {missing.name}: pip install 'nodegraph[server]'") from None
    serve(ServerConfig(host=args.host, port=args.port, editor=args.editor, input_dir=args.input_dir,
                       output_dir=args.output_dir, user_dir=args.user_dir, models_dirs=tuple(args.models_dir),
                       device=args.device, token=args.token, allowed_hosts=tuple(args.allow_host),
                       max_upload_bytes=args.max_upload_size, max_image_pixels=args.max_image_pixels,
                       max_queue=args.max_queue))
    return OK


def _schema(args) -> int:
    _say(json.dumps(fileformat.json_schema(), indent=2), raw=True)
    return OK


# ---- helpers --------------------------------------------------------------------------------


def _load(args) -> Graph:
    """The graph file with its --set assignments, then the rewrites asked for (--tiny)."""
    wanted = [name for name in registry.rewrites if getattr(args, name.replace("-", "_"), False)]
    graph, done = prepare(fileformat.load(args.file), args.set, wanted)
    for rewrite in done:
        _say(str(rewrite), err=True)
    return graph


def _print_problems(problems, as_json: bool) -> None:
    if as_json:
        _say(json.dumps([p.to_json() for p in problems], indent=2), raw=True)  # JSON escapes control characters
    else:
        for problem in problems:
            _say(str(problem))


def _print_summary(result) -> None:
    from .explain import over_budget, summary

    _say(f"done in {result.duration:.2f} s: {len(result.executed)} node run(s), {len(result.cached)} cached", err=True)
    for line in (summary(result.rewrites, result.schedule),
                 result.schedule and over_budget(result.peak_model_bytes, result.schedule.budget_bytes)):
        if line:
            _say(line, err=True)
    for node_id, seeds in result.seeds.items():
        for name, value in seeds.items():
            _say(f"  {node_id}.{name}: random seed {value}", err=True)
    for failure in result.failures:
        _say(f"  failed: item {failure.item} ({failure.label}): {failure.error}", err=True)
    _print_files(result)


def _print_files(result) -> None:
    """The files the run saved, one per line on stdout (for scripts)."""
    for node_id, value in result.outputs.items():
        for summary in value if isinstance(value, list) else [value]:
            for path in (summary or {}).get("files", []) if isinstance(summary, dict) else []:
                _say(path)


# Characters a terminal acts on (escape sequences, line breaks that fake extra lines, bidirectional
# overrides) and lone surrogates (bytes that were not UTF-8); anything read from a file may hold them.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` on one line, with every character a terminal would act on written as an escape."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape", "backslashreplace").decode(), text)


class _OutputFailed(Exception):
    """stdout or stderr cannot be written (a full disk): not a bug, and nothing to retry."""


def _say(text: str, err: bool = False, raw: bool = False) -> None:
    """Print one line (or, `raw`, text nodegraph made itself) to stdout, or stderr with `err`."""
    try:
        print(text if raw else printable(text), file=sys.stderr if err else sys.stdout, flush=True)
    except BrokenPipeError:
        raise
    except OSError as error:
        raise _OutputFailed(error.strerror or str(error)) from None


class _Progress:
    """Events to progress bars on stderr: one bar per node that reports steps."""

    def __init__(self):
        self._bar: Any = None
        self._node: str | None = None

    def __call__(self, event: Event) -> None:
        item = f"[{event.label}] " if event.label is not None else ""
        if isinstance(event, NodeStart):
            self.close()
            _say(f"{item}{event.node} ({event.type})", err=True)
        elif isinstance(event, Progress):
            if self._bar is None or self._node != event.node:
                from tqdm import tqdm

                self.close()
                # disable=None: bars only on a terminal, not in logs
                self._bar = tqdm(total=event.max, desc=printable(f"{item}{event.node}"), leave=False,
                                 file=sys.stderr, disable=None)
                self._node = event.node
            self._bar.total = event.max
            self._bar.n = event.value
            self._bar.refresh()
        elif isinstance(event, NodeFailed) and event.item is not None:
            self.close()
            _say(f"{item}error: {event.message}", err=True)
        elif isinstance(event, NodeDone):
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
