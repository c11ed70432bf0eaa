"""The Graph operations the optimiser's passes use: copies that do not leak edits, consumers, redirects."""

from nodegraph.graph import Graph, Link
from nodegraph.plan import plan
from toy_nodes import registry


def small_graph() -> Graph:
    g = Graph()
    c = g.add("Const", id="c", value=1)
    a = g.add("Add", id="a", a=c.value, b=c.value)
    g.add("Show", id="show", value=a.value)
    g.add("Show", id="show2", value=c.value)
    return g


def test_a_copy_equals_its_graph_and_edits_do_not_leak_either_way():
    g = small_graph()
    copy = g.copy()
    assert copy == g and list(copy.nx.edges(data=True)) == list(g.nx.edges(data=True))
    copy.set_input("a", "b", 5)
    copy.remove("show2")
    g.set_input("c", "value", 9)
    assert g.inputs_of("a")["b"] == Link("c", "value") and "show2" in g
    assert copy.inputs_of("c")["value"] == 1 and g.nx.edges["c", "a"]["inputs"] == {"a", "b"}
    assert copy.nx.edges["c", "a"]["inputs"] == {"a"}


def test_a_copy_replans_incrementally_from_its_graphs_plan():
    g = small_graph()
    copy = g.copy()
    assert plan(copy, registry).keys == plan(g, registry).keys
    assert copy.changes_since(g.revision) == set()
    copy.set_input("c", "value", 5)
    assert copy.changes_since(g.revision) == {"c"}


def test_consumers_and_redirect():
    g = small_graph()
    assert g.consumers("c", "value") == [("a", "a"), ("a", "b"), ("show2", "value")]
    g.add("Const", id="d", value=2)
    moved = g.redirect(Link("c", "value"), Link("d", "value"))
    assert moved == [("a", "a"), ("a", "b"), ("show2", "value")]
    assert g.consumers("c", "value") == [] and len(g.consumers("d", "value")) == 3
    assert plan(g, registry).keys  # still a valid graph


def test_a_literal_replacing_a_link_is_a_structural_edit():
    g = small_graph()
    revision = g.revision
    g.set_input("a", "b", 5)  # the link c -> a.b goes
    assert g.changes_since(revision) is None
    revision = g.revision
    g.set_input("a", "b", 6)  # literal to literal
    assert g.changes_since(revision) == {"a"}
