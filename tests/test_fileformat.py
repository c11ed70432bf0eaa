import json

import pytest

from nodegraph import fileformat
from nodegraph.errors import GraphFileError
from nodegraph.graph import Graph, Link
from toy_nodes import registry

GRAPH = {
    "nodegraph": 1,
    "nodes": {
        "c": {"type": "Const", "inputs": {"value": 2}},
        "add": {"type": "Add", "inputs": {"a": {"from": "c", "output": "value"}, "b": 3}},
        "show": {"type": "Show", "inputs": {"value": {"from": "add", "output": "value"}}},
    },
    "ui": {"c": {"pos": [0, 0]}},
}


def test_links_and_literals():
    graph = fileformat.loads(json.dumps(GRAPH))
    assert graph.inputs_of("add") == {"a": Link("c", "value"), "b": 3}
    assert graph.nx.has_edge("c", "add") and graph.nx.has_edge("add", "show")
    assert graph.ui == {"c": {"pos": [0, 0]}}


def test_load_save_load_gives_an_equal_graph(tmp_path):
    graph = fileformat.loads(json.dumps(GRAPH))
    path = fileformat.save(graph, tmp_path / "g.json")
    again = fileformat.load(path)
    assert again == graph
    assert json.loads(path.read_text()) == GRAPH


def test_save_never_overwrites_silently(tmp_path):
    graph = fileformat.loads(json.dumps(GRAPH))
    path = fileformat.save(graph, tmp_path / "g.json")
    graph.set_input("add", "b", 4)
    with pytest.raises(GraphFileError, match="already exists"):
        fileformat.save(graph, path)
    assert json.loads(path.read_text())["nodes"]["add"]["inputs"]["b"] == 3
    fileformat.save(graph, path, overwrite=True)
    assert json.loads(path.read_text())["nodes"]["add"]["inputs"]["b"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]  # no temporary files left


def test_builder_and_file_agree():
    graph = Graph(ui={"c": {"pos": [0, 0]}})
    c = graph.add("Const", id="c", value=2)
    add = graph.add("Add", id="add", a=c.value, b=3)
    graph.add("Show", id="show", value=add.value)
    assert graph == fileformat.loads(json.dumps(GRAPH))


def test_malformed_json_gives_line_and_column():
    with pytest.raises(GraphFileError) as caught:
        fileformat.loads('{"nodegraph": 1,\n  "nodes": {"a": }}')
    (problem,) = caught.value.problems
    assert problem.code == "json.malformed"
    assert "line 2, column 18" in problem.message


@pytest.mark.parametrize("document, code, node, input", [
    ({"nodegraph": 2, "nodes": {}}, "format.version", None, None),
    ({"nodegraph": 1}, "format.invalid", None, None),
    ({"nodegraph": 1, "nodes": {}, "extra": 1}, "format.invalid", None, None),
    ({"nodegraph": 1, "nodes": {"a": {"type": 3}}}, "format.invalid", "a", None),
    ({"nodegraph": 1, "nodes": {"a": {"type": "Add", "input": {}}}}, "format.invalid", "a", None),
    ({"nodegraph": 1, "nodes": {"a": {"type": "Add", "inputs": {"a": {"from": "b"}}}}}, "link.malformed", "a", "a"),
    ({"nodegraph": 1, "nodes": {"a": {"type": "Add", "inputs": {"a": {"from": 1, "output": "x"}}}}},
     "link.malformed", "a", "a"),
])
def test_structure_errors_name_the_node(document, code, node, input):
    with pytest.raises(GraphFileError) as caught:
        fileformat.loads(json.dumps(document))
    problem = caught.value.problems[0]
    assert (problem.code, problem.node, problem.input) == (code, node, input)


def test_missing_file_is_a_graph_file_error(tmp_path):
    with pytest.raises(GraphFileError) as caught:
        fileformat.load(tmp_path / "nope.json")
    assert caught.value.problems[0].code == "file.unreadable"


def test_comfyui_api_prompt_import():
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 5}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    graph = fileformat.from_comfy(prompt, registry)
    assert graph.inputs_of("2") == {"a": Link("1", "value"), "b": 1}
    assert fileformat.to_comfy(graph, registry) == prompt
    wrapped = fileformat.loads(json.dumps({"prompt": prompt}))  # the body of ComfyUI's POST /prompt
    assert list(wrapped) == ["1", "2", "3"]


def test_graph_embedded_in_a_png(tmp_path):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(fileformat.PNG_GRAPH_KEY, json.dumps(GRAPH))
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png", pnginfo=info)
    assert fileformat.load(tmp_path / "a.png") == fileformat.loads(json.dumps(GRAPH))
    Image.new("RGB", (4, 4)).save(tmp_path / "b.png")
    with pytest.raises(GraphFileError) as caught:
        fileformat.load(tmp_path / "b.png")
    assert caught.value.problems[0].code == "png.no_graph"


def test_schema_describes_each_node_type():
    schema = fileformat.json_schema(registry)
    assert schema["required"] == ["nodegraph", "nodes"]
    node_types = {variant["title"]: variant for variant in schema["$defs"]["NodeJSON"]["oneOf"]}
    add = node_types["Add"]["properties"]["inputs"]
    assert add["required"] == ["a"]
    assert add["additionalProperties"] is False
    assert {"$ref": "#/$defs/LinkJSON"} in add["properties"]["b"]["anyOf"]
    assert node_types["Pick"]["properties"]["inputs"]["properties"]["mode"]["anyOf"][1] == {"enum": ["low", "high"]}
    assert schema["$defs"]["LinkJSON"]["required"] == ["from", "output"]
