"""The README's Python examples, run as written (on the tiny builtins, which they ask for)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.DOTALL)


def test_the_incremental_example_reruns_only_what_the_edit_reaches(tmp_path, monkeypatch, capsys):
    shutil.copytree(REPO / "graphs", tmp_path / "graphs")
    monkeypatch.chdir(tmp_path)
    example = next(block for block in python_blocks() if "set_input" in block)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    graph, first, again = namespace["graph"], namespace["result"], namespace["again"]
    reached = {"img2img"} | nx.descendants(graph.nx, "img2img")
    assert sorted(first.executed) == sorted(graph)  # all of it, once
    assert sorted(again.executed) == sorted(reached)
    assert set(again.cached) >= {"text2img_decode"} and not set(again.cached) & reached
    saved = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert len(saved) == 4  # two Saves, each run twice: the edit changed every image they save
    assert "['img2img', 'img2img_decode', 'grid', 'save', 'save_grid']" in capsys.readouterr().out


def test_the_graph_building_example_writes_a_graph_that_validates(tmp_path, monkeypatch):
    import nodegraph

    monkeypatch.chdir(tmp_path)
    example = next(block for block in python_blocks() if "g = nodegraph.Graph()" in block)
    exec(compile(example, "README.md", "exec"), {"nodegraph": nodegraph})  # it follows the block that imports it
    graph = nodegraph.load(tmp_path / "astronaut.json")
    assert nodegraph.validate(graph).problems == []
