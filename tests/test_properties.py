"""Properties over random graphs: ordering, incremental re-runs, deduplication, and a loader
and validator that never crash, whatever they are given."""

import json

import networkx as nx
from hypothesis import HealthCheck, given, settings, strategies as st

from nodegraph import fileformat
from nodegraph.errors import GraphFileError, ValidationError
from nodegraph.executor import Executor
from nodegraph.graph import Graph, Link
from nodegraph.validation import validate
from toy_nodes import registry

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dags(draw, max_nodes=20):
    """Random DAGs of Const and Add nodes, every sink read by a Show; node ids in random order."""
    n = draw(st.integers(1, max_nodes))
    ids = draw(st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))
    small = st.integers(0, 3)  # small values make identical subgraphs likely
    graph = Graph()
    for i, node_id in enumerate(ids):
        if i == 0 or draw(st.booleans()):
            graph.add("Const", id=node_id, value=draw(small))
            continue
        a = Link(ids[draw(st.integers(0, i - 1))], "value")
        b = draw(st.one_of(small, st.integers(0, i - 1).map(lambda j: Link(ids[j], "value"))))
        graph.add("Add", id=node_id, a=a, b=b)
    for node_id in [n for n in ids if graph.nx.out_degree(n) == 0]:
        graph.add("Show", id=f"show-{node_id}", value=Link(node_id, "value"))
    return graph


@SETTINGS
@given(dags())
def test_execution_order_respects_every_edge(graph):
    started = []
    Executor(registry).run(graph, on_event=lambda e: e.kind == "node_start" and started.append(e.node))
    position = {node_id: i for i, node_id in enumerate(started)}
    for producer, consumer in graph.nx.edges:
        if consumer in position:
            assert producer not in position or position[producer] < position[consumer]


@SETTINGS
@given(dags())
def test_identical_subgraphs_execute_once(graph):
    executor = Executor(registry)
    result = executor.run(graph)
    keys = executor.plan(graph).keys
    assert len(result.executed) == len({keys[n] for n in graph})
    assert len({keys[n] for n in result.executed}) == len(result.executed)


@SETTINGS
@given(dags(), st.data())
def test_a_literal_change_reruns_exactly_that_node_and_its_descendants(graph, data):
    executor = Executor(registry)
    executor.run(graph)
    literal_nodes = sorted(n for n in graph if graph.type_of(n) in ("Const", "Add"))
    changed = data.draw(st.sampled_from(literal_nodes))
    name = "value" if graph.type_of(changed) == "Const" else "b"
    graph.set_input(changed, name, 50 + data.draw(st.integers(0, 50)))  # a value no node had
    result = executor.run(graph)
    keys = executor.plan(graph).keys
    reached = {changed} | nx.descendants(graph.nx, changed)
    assert set(result.executed) <= reached
    assert {keys[n] for n in result.executed} == {keys[n] for n in reached}
    fresh = Executor(registry).run(graph)
    assert result.outputs == fresh.outputs  # incremental and from-scratch runs agree


@SETTINGS
@given(dags())
def test_json_round_trips(graph):
    again = fileformat.loads(fileformat.dumps(graph))
    assert again == graph
    assert fileformat.dumps(again) == fileformat.dumps(graph)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
node_specs = st.fixed_dictionaries(
    {"type": st.sampled_from(["Const", "Add", "Show", "Nope", "Decode", "MakeLatent"]) | json_values},
    optional={"inputs": st.dictionaries(st.sampled_from(["a", "b", "value", "space", "latent", "vae", "x"]),
                                        json_values | st.fixed_dictionaries({"from": st.text("abc", max_size=2),
                                                                             "output": st.sampled_from(["value", "latent", "vae", "y"])}),
                                        max_size=3)},
)
graph_documents = st.fixed_dictionaries(
    {"nodegraph": st.sampled_from([1, 1, 1, 2, "1"]), "nodes": st.dictionaries(st.text("abc", max_size=2), node_specs, max_size=6)},
    optional={"ui": json_values},
)


@SETTINGS
@given(st.binary(max_size=200))
def test_loader_raises_only_its_own_error_on_any_bytes(data):
    try:
        fileformat.loads(data)
    except GraphFileError as error:
        assert error.problems and all(p.code and p.message for p in error.problems)


@SETTINGS
@given(json_values | graph_documents)
def test_loader_raises_only_its_own_error_on_any_json(document):
    try:
        fileformat.loads(json.dumps(document))
    except GraphFileError as error:
        assert error.problems


@SETTINGS
@given(graph_documents)
def test_validator_and_executor_never_crash_on_random_graphs(document):
    try:
        graph = fileformat.loads(json.dumps(document))
    except GraphFileError:
        return
    problems = validate(graph, registry).problems
    for problem in problems:
        assert problem.code and problem.message
        assert problem.node is None or problem.node in graph or problem.code == "graph.cycle"
    try:
        Executor(registry).run(graph)
    except ValidationError as error:
        assert problems and error.problems
    else:
        assert not problems
