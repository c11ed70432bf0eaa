"""The command line, on graphs of image nodes (no models needed)."""

import json

import pytest
from PIL import Image

from nodegraph.cli import main


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGB", (32, 24), (200, 30, 30)).save(path)
    return path


def graph_file(tmp_path, nodes):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps({"nodegraph": 1, "nodes": nodes}))
    return str(path)


def resize_graph(tmp_path, picture):
    return graph_file(tmp_path, {
        "load": {"type": "LoadImage", "inputs": {"path": str(picture)}},
        "small": {"type": "Resize", "inputs": {"image": {"from": "load", "output": "image"}, "width": 16}},
        "save": {"type": "Save", "inputs": {"image": {"from": "small", "output": "image"}, "prefix": "small"}},
    })


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's usage errors
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_outputs_and_summarises(tmp_path, picture, capsys):
    code, out, err = run(["run", resize_graph(tmp_path, picture), "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    (written,) = (tmp_path / "out").iterdir()
    assert out.strip() == str(written)
    assert Image.open(written).size == (16, 12)
    assert "3 node run(s)" in err


def test_set_parses_values_with_the_declared_type(tmp_path, picture, capsys):
    code, _, err = run(["run", resize_graph(tmp_path, picture), "--out", str(tmp_path / "out"),
                        "--set", "small.width=8"], capsys)
    assert code == 0, err
    (written,) = (tmp_path / "out").iterdir()
    assert Image.open(written).size == (8, 6)


@pytest.mark.parametrize("assignment, message", [
    ("small.width=wide", "small.width takes INT"),
    ("nowhere.width=8", "there is no node 'nowhere'"),
    ("small.depth=8", "small has no input 'depth'"),
    ("small=8", "expected NODE.INPUT=VALUE"),
])
def test_bad_set_is_a_usage_error(tmp_path, picture, capsys, assignment, message):
    code, _, err = run(["run", resize_graph(tmp_path, picture), "--set", assignment], capsys)
    assert code == 2
    assert message in err


def test_validate(tmp_path, picture, capsys):
    assert run(["validate", resize_graph(tmp_path, picture)], capsys)[0] == 0
    bad = graph_file(tmp_path, {
        "load": {"type": "LoadImag", "inputs": {"path": str(picture)}},
        "small": {"type": "Resize", "inputs": {"image": {"from": "load", "output": "image"}, "width": -3}},
    })
    code, out, _ = run(["validate", bad], capsys)
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[0].startswith("load: unknown node type 'LoadImag'") and "LoadImage" in lines[0]
    assert lines[1].startswith("small.width: -3 is out of range")
    code, out, _ = run(["validate", bad, "--json"], capsys)
    problems = json.loads(out)
    assert code == 1
    assert [p["code"] for p in problems] == ["node.unknown_type", "value.out_of_range"]
    assert set(problems[0]) == {"node", "input", "code", "message", "hint"}


def test_validate_reports_malformed_json_with_position(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{"nodegraph": 1,\n "nodes": {\n  "a": {"type": "Save",}\n }}')
    code, out, _ = run(["validate", str(path)], capsys)
    assert code == 1
    assert "line 3, column 24" in out and "json.malformed" in out


def test_a_file_that_is_no_image_is_refused_before_anything_runs(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, _ = run(["run", resize_graph(tmp_path, corrupt), "--out", str(tmp_path / "out")], capsys)
    assert code == 1
    assert out.startswith("load.path: ") and "corrupt.png is not a readable image" in out


def test_a_failing_node_exits_3_naming_node_and_input(tmp_path, picture, capsys):
    truncated = tmp_path / "truncated.png"
    Image.effect_noise((64, 64), 50).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])  # the header is fine; the pixels are cut short
    code, _, err = run(["run", resize_graph(tmp_path, truncated), "--out", str(tmp_path / "out")], capsys)
    assert code == 3
    assert "load.path" in err and "truncated.png" in err


def test_explain_prints_the_plan(tmp_path, picture, capsys):
    code, out, _ = run(["explain", resize_graph(tmp_path, picture)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "3 nodes as written, 3 after optimising; 1 output node(s)"
    assert lines[1:3] == ["rewrites: none", "order of execution:"]
    assert [line.split()[1] for line in lines[3:]] == ["load", "small", "save"]


def test_catalogue_and_schema(capsys):
    code, out, _ = run(["nodes", "--json"], capsys)
    catalogue = {entry["name"]: entry for entry in json.loads(out)}
    assert code == 0
    assert {"LoadModel", "Text2Img", "Img2Img", "Inpaint", "Encode", "Decode", "LatentUpscale", "Upscale",
            "LoadImage", "LoadImages", "Save"} <= set(catalogue)
    assert catalogue["Save"]["output_node"] is True
    code, out, _ = run(["schema"], capsys)
    schema = json.loads(out)
    assert code == 0
    titles = {variant["title"] for variant in schema["$defs"]["NodeJSON"]["oneOf"]}
    assert set(catalogue) == titles


def test_usage_errors_exit_2(capsys):
    assert run([], capsys)[0] == 2
    assert run(["run"], capsys)[0] == 2
    assert run(["run", "x.json", "--device", "tpu"], capsys)[0] == 2


def test_ray_is_imported_only_for_ray_runs_and_its_absence_is_a_usage_error(tmp_path, picture):
    import subprocess
    import sys

    graph = resize_graph(tmp_path, picture)
    script = (
        "import sys\n"
        "from nodegraph.cli import main\n"
        f"assert main(['run', {graph!r}, '--out', {str(tmp_path / 'out')!r}]) == 0\n"
        "assert 'ray' not in sys.modules  # the engine and a local run never import it\n"
        "sys.modules['ray'] = None  # as where ray is not installed\n"
        f"main(['run', {graph!r}, '--ray'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--ray needs ray: pip install 'nodegraph[ray]'" in done.stderr and "Traceback" not in done.stderr


def test_a_ray_address_where_no_cluster_answers_is_a_usage_error(tmp_path, picture, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    if Path("/tmp/ray/ray_current_cluster").exists():
        pytest.skip("a Ray cluster runs on this machine: --ray auto would find it")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    graph = graph_file(tmp_path, {
        "load": {"type": "LoadImages", "inputs": {"folder": str(picture.parent)}},
        "save": {"type": "Save", "inputs": {"image": {"from": "load", "output": "image"}, "prefix": "x"}},
    })
    done = subprocess.run([sys.executable, "-m", "nodegraph", "run", graph, "--ray", "auto", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no Ray cluster answers at 'auto'" in done.stderr and "ray start --head" in done.stderr
    assert "bug" not in done.stderr and "Traceback" not in done.stderr


def test_a_usage_error_in_a_command_names_that_command(tmp_path, picture, capsys):
    code, _, err = run(["run", resize_graph(tmp_path, picture), "--set", "nope.width=3"], capsys)
    assert code == 2 and "usage: nodegraph run" in err
    assert "nodegraph run: error: --set 'nope.width=3': there is no node 'nope'" in err


def test_ray_options_without_ray_are_usage_errors(tmp_path, picture, capsys):
    code, _, err = run(["run", resize_graph(tmp_path, picture), "--workers", "2"], capsys)
    assert code == 2 and "--workers is for runs on Ray: add --ray" in err
