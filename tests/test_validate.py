import pytest

from nodegraph.graph import Graph, Link
from nodegraph.plan import plan
from nodegraph.errors import ValidationError
from nodegraph.validation import validate
from toy_nodes import registry


def problems(graph):
    return [(p.node, p.input, p.code) for p in validate(graph, registry).problems]


def test_a_valid_graph_has_no_problems():
    g = Graph()
    c = g.add("Const", value=1)
    g.add("Show", value=g.add("Add", a=c.value, b=2).value)
    assert problems(g) == []


def test_every_problem_is_collected_at_once():
    g = Graph()
    g.add("Cnst", id="typo", value=1)
    g.add("Add", id="add", a=Link("nowhere", "value"), b=500, c=1)
    g.add("Show", id="show", value=Link("add", "valeu"))
    g.add("Pick", id="pick", mode="middle")
    g.add("Show", id="text", value="three")
    found = problems(g)
    assert ("typo", None, "node.unknown_type") in found
    assert ("add", "a", "link.missing_node") in found
    assert ("add", "b", "value.out_of_range") in found
    assert ("add", "c", "input.unknown") in found
    assert ("show", "value", "link.missing_output") in found
    assert ("pick", "mode", "value.not_a_choice") in found
    assert ("text", "value", "value.wrong_type") in found


def test_hints_suggest_the_fix():
    g = Graph()
    g.add("Cnst", id="typo")
    g.add("Show", id="show", value=Link("typo2", "value"))
    by_code = {p.code: p for p in validate(g, registry).problems}
    assert "Const" in by_code["node.unknown_type"].hint
    assert "typo" in by_code["link.missing_node"].hint


def test_missing_required_input():
    g = Graph()
    g.add("Show", id="show", value=g.add("Add", id="add", b=1).value)
    assert problems(g) == [("add", "a", "input.missing")]


def test_latent_spaces_are_types():
    g = Graph()
    a = g.add("MakeLatent", id="a", space="a")
    b = g.add("MakeLatent", id="b", space="b")
    g.add("Preview", id="ok", image=g.add("Decode", id="dec_ok", latent=a.latent, vae=a.vae).image)
    g.add("Preview", id="bad", image=g.add("Decode", id="dec_bad", latent=a.latent, vae=b.vae).image)
    g.add("Upscale", id="up", image=a.latent)
    found = validate(g, registry).problems
    assert [(p.node, p.input, p.code) for p in found] == [("dec_bad", "latent", "type.mismatch"), ("up", "image", "type.mismatch")]
    mismatch = found[0]
    assert "expected LATENT[b], got LATENT[a] from a.latent" in mismatch.message
    assert "Decode with the a VAE" in mismatch.hint
    assert "insert a Decode node" in found[1].hint


def test_node_checks_report_against_their_input():
    g = Graph()
    g.add("Preview", image=g.add("Decode", latent=Link("m", "latent"), vae=Link("m", "vae")).image)
    g.add("MakeLatent", id="m", space="zzz")
    assert problems(g) == [("m", "space", "space.unknown")]


def test_cycles_name_their_nodes():
    g = Graph()
    g.add("Add", id="x", a=Link("y", "value"))
    g.add("Add", id="y", a=Link("x", "value"))
    g.add("Show", id="show", value=Link("y", "value"))
    found = validate(g, registry).problems
    assert [(p.node, p.code) for p in found] == [("x", "graph.cycle")]
    assert "x -> y -> x" in found[0].message


def test_nothing_to_run():
    g = Graph()
    g.add("Const", value=1)
    assert problems(g) == [(None, None, "graph.no_outputs")]
    assert problems(Graph()) == [(None, None, "graph.no_outputs")]


def test_plan_raises_with_every_problem():
    g = Graph()
    g.add("Show", id="a", value="x")
    g.add("Show", id="b", value="y")
    with pytest.raises(ValidationError) as caught:
        plan(g, registry)
    assert [p.node for p in caught.value.problems] == ["a", "b"]
    assert "a.value: expected a literal of INT or FLOAT, got 'x'" in str(caught.value)


def test_a_broken_node_hook_is_a_problem_not_a_crash():
    from nodegraph import types as T
    from nodegraph.node import Input, Output
    from nodegraph.registry import Registry

    broken = Registry()

    @broken.node("Broken", inputs={"x": Input(T.INT, default=0)}, outputs={"y": Output(T.INT)},
                 infer=lambda view: 1 / 0)
    def broken_node(x):
        return x

    @broken.node("Out", inputs={"y": Input(T.INT)}, output_node=True)
    def out(y):
        return y

    g = Graph()
    g.add("Out", y=g.add("Broken", id="b").y)
    found = validate(g, broken).problems
    assert [(p.node, p.code) for p in found] == [("b", "node.check_failed")]
    assert "ZeroDivisionError" in found[0].message


def test_validate_applies_every_rule_the_planner_and_runner_do(tmp_path):
    """nodegraph.validate and `nodegraph validate` (which plans) agree: streams, fingerprints, targets."""
    import shutil

    import nodes  # noqa: F401
    from nodegraph.plan import plan
    from nodegraph.registry import registry as builtin
    from nodes.tiny_models import builtin_path

    graph = Graph()
    a = graph.add("LoadImages", id="a", folder=str(tmp_path))
    b = graph.add("LoadImages", id="b", folder=str(tmp_path))
    graph.add("Save", id="save", image=graph.add("ImageGrid", id="grid", image1=a.image, image2=b.image).image)
    model = shutil.copytree(builtin_path("tiny-sd"), tmp_path / "model")
    (model / "vae" / "config.json").write_bytes(b'{"x": "\xe9"}')  # read only by the fingerprint
    graph.add("LoadModel", id="load", model=str(model))
    found = {(p.node, p.code) for p in validate(graph, builtin).problems}
    assert {("grid", "stream.multiple"), ("save", "stream.multiple"), ("load", "model.unreadable")} <= found
    with pytest.raises(ValidationError) as caught:
        plan(graph, builtin)
    assert {(p.node, p.code) for p in caught.value.problems} == found
    assert [p.code for p in validate(graph, builtin, outputs=["nope"]).problems if p.node == "nope"] == \
        ["run.unknown_output"]
