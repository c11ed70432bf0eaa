"""Hostile graphs through every entry point, on the built-in node pack: `loads`, `validate` and `plan`
raise nothing but nodegraph errors, and the command line never prints a traceback.

The budget is hypothesis' default number of examples per test; `pytest --slow` runs 50 times as many.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, assume, given, settings, strategies as st

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph import fileformat
from nodegraph.cli import main
from nodegraph.errors import GraphFileError, NodegraphError, ValidationError
from nodegraph.graph import Graph, Link
from nodegraph.plan import plan
from nodegraph.registry import registry
from nodegraph.validation import validate

REPO = Path(__file__).resolve().parent.parent
SHIPPED = {path.stem: json.loads(path.read_text()) for path in sorted((REPO / "graphs").glob("*.json"))}
NODE_TYPES = sorted(definition.name for definition in registry)
INPUT_NAMES = sorted({name for definition in registry for name in definition.inputs})
OUTPUT_NAMES = sorted({name for definition in registry for name in definition.outputs})
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))

# ---- values ------------------------------------------------------------------------------------------------

texts = st.text(max_size=12) | st.sampled_from([
    "", "builtin:tiny-sd", "builtin:nope", "random", "runwayml/stable-diffusion-v1-5", "/", "/dev/zero",
    "graphs/inputs/img2img-init.png", "graphs/inputs", "*.png", "../*", "x" * 300, "caf\udce9", "\ud800",
    "a\x1b[31m\nb", "nan", "index", "stretch", "float16", "DDIM",
])
numbers = (st.integers() | st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, 2**64, -1, 0, 8, 64, 0.5])
           | st.integers(-(2**70), 2**70))
scalars = st.none() | st.booleans() | numbers | texts


class Deep(list):
    """Lists nested `depth` levels deep; graph files get them as text, since json.dumps recurses."""

    def __init__(self, depth: int):
        value: list = []
        for _ in range(depth - 1):
            value = [value]
        super().__init__([value])
        self.depth = depth

    @property
    def marker(self) -> str:
        return f"@deep{self.depth}@"


def to_json(document) -> bytes:
    text = json.dumps(document, ensure_ascii=False)
    for depth in set(int(d) for d in re.findall(r'"@deep(\d+)@"', text)):
        text = text.replace(f'"@deep{depth}@"', "[" * depth + "]" * depth)
    return text.encode("utf-8", "surrogatepass")


values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8) | st.integers(60, 3000).map(Deep)
node_ids = st.text(max_size=6) | st.sampled_from(["load", "t2i", "save", "a\x1bb", "caf\udce9", " "])
links = st.builds(Link, node_ids, st.sampled_from(OUTPUT_NAMES) | st.text(max_size=5))


@st.composite
def graphs(draw) -> Graph:
    """Graphs of the built-in node types, with declared and undeclared inputs, any values and links."""
    graph = Graph()
    for node_id in draw(st.lists(node_ids.filter(bool), max_size=6, unique=True)):
        node_type = draw(st.sampled_from(NODE_TYPES) | st.text(max_size=8))
        names = st.sampled_from(sorted(registry[node_type].inputs)) if node_type in registry else st.nothing()
        inputs = draw(st.dictionaries(names | st.sampled_from(INPUT_NAMES), values | links, max_size=5))
        graph.add(node_type, id=node_id, **inputs)
    return graph


def json_safe(value):
    """The value as JSON can carry it (NaN and infinity cannot be written in JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Deep):
        return value.marker
    if isinstance(value, Link):
        return {"from": value.node, "output": value.output}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def document_of(graph: Graph) -> bytes:
    specs = {n: {"type": graph.type_of(n), "inputs": json_safe(graph.inputs_of(n))} for n in graph}
    return to_json({"nodegraph": 1, "nodes": specs})


@st.composite
def mutated_shipped_graphs(draw) -> bytes:
    """A shipped graph with a few of its nodes, inputs or links changed, removed or renamed."""
    document = json.loads(json.dumps(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))]))
    specs = document["nodes"]
    for _ in range(draw(st.integers(1, 4))):
        node_id = draw(st.sampled_from(sorted(specs)))
        action = draw(st.sampled_from(["set", "drop_input", "drop_node", "retype", "relink", "rename"]))
        inputs = specs[node_id].setdefault("inputs", {})
        if action == "set":
            inputs[draw(st.sampled_from(sorted(inputs) or ["x"]) | st.sampled_from(INPUT_NAMES))] = json_safe(draw(values))
        elif action == "drop_input" and inputs:
            inputs.pop(draw(st.sampled_from(sorted(inputs))))
        elif action == "drop_node" and len(specs) > 1:
            specs.pop(node_id)
        elif action == "retype":
            specs[node_id]["type"] = draw(st.sampled_from(NODE_TYPES) | st.text(max_size=6))
        elif action == "relink":
            inputs[draw(st.sampled_from(INPUT_NAMES))] = {"from": draw(st.sampled_from(sorted(specs)) | node_ids),
                                                          "output": draw(st.sampled_from(OUTPUT_NAMES))}
        else:
            specs[draw(node_ids) or "n"] = specs.pop(node_id)
    return to_json(document)


comfy_links = st.tuples(node_ids | st.integers(-2, 9), st.integers(-2, 5) | st.booleans() | texts).map(list)
comfy_nodes = st.fixed_dictionaries(
    {"class_type": st.sampled_from(NODE_TYPES) | values},
    optional={"inputs": st.dictionaries(st.sampled_from(INPUT_NAMES) | st.just("id") | texts, values | comfy_links,
                                        max_size=4) | values, "_meta": values})
comfy_prompts = st.dictionaries(node_ids | st.integers(0, 20).map(str), comfy_nodes | values, min_size=1, max_size=5)


def corrupted(data: bytes, draw) -> bytes:
    """Bytes that are not UTF-8 (Latin-1, lone surrogates, noise) spliced into a document."""
    spliced = draw(st.sampled_from([b"\xe9", b"\xed\xa0\x80", b"\xff\xfe", b"\x00", b"\xc3"]) | st.binary(max_size=4))
    at = draw(st.integers(0, len(data)))
    return data[:at] + spliced + data[at:]


# ---- the property ---------------------------------------------------------------------------------------


def only_nodegraph_errors(data: bytes | str) -> None:
    """loads -> validate -> plan, as `nodegraph validate` does: nothing but nodegraph errors escape."""
    try:
        graph = fileformat.loads(data)
    except GraphFileError as error:
        assert error.problems and all(p.code and p.message for p in error.problems)
        return
    checked_against_plan(graph)


def checked_against_plan(graph: Graph) -> None:
    problems = validate(graph).problems
    assert all(p.code and p.message for p in problems)
    try:
        plan(graph)
    except ValidationError as error:
        assert error.problems
    except NodegraphError:
        pass


@FUZZ
@given(graphs())
def test_graphs_built_in_python_raise_only_nodegraph_errors(graph):
    checked_against_plan(graph)


@FUZZ
@given(graphs())
def test_graph_files_raise_only_nodegraph_errors(graph):
    only_nodegraph_errors(document_of(graph))


@FUZZ
@given(mutated_shipped_graphs())
def test_mutated_shipped_graphs_raise_only_nodegraph_errors(data):
    only_nodegraph_errors(data)


@FUZZ
@given(comfy_prompts, st.booleans())
def test_comfy_prompts_of_every_shape_raise_only_nodegraph_errors(prompt, wrapped):
    body = {"prompt": prompt, "client_id": "x"} if wrapped else prompt
    only_nodegraph_errors(to_json(json_safe(body)))


@FUZZ
@given(mutated_shipped_graphs(), st.data())
def test_bytes_that_are_not_utf8_raise_only_nodegraph_errors(data, draw):
    only_nodegraph_errors(corrupted(data, draw.draw))


@FUZZ
@given(st.binary(max_size=300) | st.text(max_size=100))
def test_any_bytes_or_text_raise_only_nodegraph_errors(data):
    only_nodegraph_errors(data)


@FUZZ
@given(mutated_shipped_graphs() | graphs().map(document_of) | st.binary(max_size=100),
       st.lists(st.text(max_size=30), max_size=2), st.sampled_from(["validate", "explain", "run"]))
def test_the_command_line_never_prints_a_traceback(data, assignments, command):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "graph.json"
        path.write_bytes(data)
        argv = [command, str(path), *(f"--set={a}" for a in assignments)]
        if command == "run":
            assume(not _valid(data))  # what is valid runs real models: that is for the other tests
            argv += ["--out", str(Path(folder) / "out")]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit:  # argparse's usage errors
                code = exit.code
    assert code in (0, 1, 2, 3), (code, err.getvalue())
    assert "Traceback" not in out.getvalue() + err.getvalue()
    assert "internal error" not in err.getvalue(), err.getvalue()


def _valid(data: bytes) -> bool:
    try:
        plan(fileformat.loads(data))
    except NodegraphError:
        return False
    return True
