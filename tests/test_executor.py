import gc
import json
import weakref

import pytest

from nodegraph import types as T
from nodegraph.errors import Interrupted, NodeExecutionError
from nodegraph.executor import Executor
from nodegraph.graph import Graph
from nodegraph.node import Input, Output
from nodegraph.registry import Registry
from toy_nodes import calls, registry


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()


def chain_graph():
    g = Graph()
    c = g.add("Const", id="c", value=1)
    a = g.add("Add", id="a", a=c.value, b=2)
    b = g.add("Add", id="b", a=a.value, b=3)
    g.add("Show", id="show", value=b.value)
    return g


def executed_types():
    return [name for name, _ in calls]


def test_runs_in_order_and_returns_outputs():
    result = Executor(registry).run(chain_graph())
    assert result.outputs == {"show": {"shown": 6, "label": ""}}
    assert result.executed == ["c", "a", "b", "show"]


def test_second_run_reruns_only_what_a_change_reaches():
    g, executor = chain_graph(), Executor(registry)
    executor.run(g)
    result = executor.run(g)
    assert result.executed == [] and result.cached == ["show"]
    g.set_input("b", "b", 10)
    result = executor.run(g)
    assert result.executed == ["b", "show"]
    assert result.outputs["show"]["shown"] == 13
    g.set_input("b", "b", 3)  # back to a known state: everything cached
    assert executor.run(g).executed == []


def test_cache_survives_structural_edits_by_content():
    g, executor = chain_graph(), Executor(registry)
    executor.run(g)
    g.add("Show", id="show2", value=g.add("Add", id="a2", a=g.add("Const", id="c2", value=1).value, b=2).value)
    result = executor.run(g)
    assert result.executed == ["show2"]  # c2 and a2 equal c and a: same keys, no id in them


def test_identical_subgraphs_run_once():
    g = Graph()
    for i in range(3):
        g.add("Show", id=f"show{i}", value=g.add("Add", id=f"add{i}", a=g.add("Const", id=f"c{i}", value=7).value).value)
    result = Executor(registry).run(g)
    assert executed_types() == ["Const", "Add", "Show"]
    assert {o["shown"] for o in result.outputs.values()} == {7}


def test_runs_only_the_requested_outputs():
    g = chain_graph()
    g.add("Show", id="other", value=g.add("Const", id="c9", value=9).value)
    result = Executor(registry).run(g, outputs=["other"])
    assert result.executed == ["c9", "other"]
    assert list(result.outputs) == ["other"]


def test_frees_intermediate_results_after_their_last_consumer():
    blobs = Registry()

    class Blob:
        pass

    refs = {}

    @blobs.node("Make", inputs={"n": Input(T.INT)}, outputs={"blob": Output(T.IMAGE)})
    def make(n):
        blob = Blob()
        refs[n] = weakref.ref(blob)
        return blob

    @blobs.node("Pass", inputs={"blob": Input(T.IMAGE), "n": Input(T.INT)}, outputs={"blob": Output(T.IMAGE)})
    def pass_on(blob, n):
        return make(n)

    alive_at_end = []

    @blobs.node("End", inputs={"blob": Input(T.IMAGE)}, output_node=True)
    def end(blob):
        gc.collect()
        alive_at_end.extend(n for n, ref in refs.items() if ref() is not None)

    g = Graph()
    g.add("End", blob=g.add("Pass", n=2, blob=g.add("Pass", n=1, blob=g.add("Make", n=0).blob).blob).blob)
    Executor(blobs, cache_bytes=0).run(g)
    assert alive_at_end == [2]  # only the value End reads is still held


def test_lru_cache_respects_its_byte_budget():
    executor = Executor(registry, cache_bytes=1000)
    g = Graph()
    for i in range(20):
        g.add("Show", value=g.add("Const", value=i).value)
    executor.run(g)
    assert executor.cache.used_bytes <= 1000
    assert 0 < len(executor.cache) < 40


def test_events():
    events = []
    g = chain_graph()
    g.set_input("b", "a", g.add("Steps", id="steps", value=g.inputs_of("b")["a"], steps=2).value)
    Executor(registry).run(g, on_event=events.append)
    assert {e.run_id for e in events} == {events[0].run_id} and events[0].run_id
    kinds = [(e.kind, e.node) for e in events]
    assert kinds[0] == ("run_start", None) and kinds[-1] == ("run_done", None)
    assert ("progress", "steps") in kinds
    progress = [(e.value, e.max) for e in events if e.kind == "progress"]
    assert progress == [(1, 2), (2, 2)]
    done = [e for e in events if e.kind == "node_done"]
    assert [e.node for e in done] == ["c", "a", "steps", "b", "show"]
    assert all(e.duration >= 0 for e in done)
    second = []
    Executor_ = Executor(registry)
    Executor_.run(g)
    Executor_.run(g, on_event=second.append)
    assert [(e.kind, e.node) for e in second] == [("run_start", None), ("node_cached", "show"), ("run_done", None)]


def test_node_errors_name_node_and_input_and_keep_earlier_results():
    events = []
    g = chain_graph()
    g.add("Show", id="bad_show", value=g.add("Fail", id="bad", value=g.inputs_of("b")["a"]).value)
    executor = Executor(registry)
    with pytest.raises(NodeExecutionError) as caught:
        executor.run(g, on_event=events.append)
    error = caught.value
    assert (error.node, error.input) == ("bad", "value")
    assert "expected an even number, got 3" in str(error) and "add one" in str(error)
    [failed] = [e for e in events if e.kind == "error"]
    assert (failed.node, failed.input, failed.message, failed.hint) == ("bad", "value", str(error), "add one")
    assert [e.node for e in events if e.kind == "node_done"] == ["c", "a", "b"]  # b ran before bad failed
    g.remove("bad_show")
    g.remove("bad")
    result = executor.run(g)
    assert (result.executed, result.cached) == (["show"], ["b"])  # what finished before the failure is kept


def test_cancel_from_a_node_done_event_stops_before_the_next_node():
    g, executor, started = chain_graph(), Executor(registry), []

    def on_event(event):
        if event.kind == "node_start":
            started.append(event.node)
        if event.kind == "node_done" and event.node == "a":
            executor.cancel()

    with pytest.raises(Interrupted) as caught:
        executor.run(g, on_event=on_event)
    assert started == ["c", "a"] and caught.value.node == "b"
    assert executor.run(g).executed == ["b", "show"]


def test_cancel_interrupts_between_steps_and_keeps_results():
    g = chain_graph()
    g.set_input("b", "a", g.add("Steps", id="steps", value=g.inputs_of("b")["a"], steps=5).value)
    executor = Executor(registry)
    events = []

    def on_event(event):
        events.append(event)
        if event.kind == "progress" and event.value == 2:
            executor.cancel()

    with pytest.raises(Interrupted) as caught:
        executor.run(g, on_event=on_event)
    assert caught.value.node == "steps"
    assert (events[-1].kind, events[-1].node) == ("interrupted", "steps")
    assert max(e.value for e in events if e.kind == "progress") == 2
    result = executor.run(g)  # the cancel does not stick; finished nodes are cached
    assert result.executed == ["steps", "b", "show"]


def test_random_seeds_are_resolved_and_recorded():
    g = Graph()
    g.add("Show", id="show", value=g.add("Seeded", id="s", seed="random").value)
    executor = Executor(registry)
    first = executor.run(g)
    seed = first.seeds["s"]["seed"]
    assert isinstance(seed, int)
    ((called_with, workflow),) = [arguments for name, arguments in calls if name == "Seeded"]
    assert called_with == seed
    assert json.loads(workflow)["nodes"]["s"]["inputs"]["seed"] == seed  # what Save would embed
    second = executor.run(g)
    assert second.executed == ["s", "show"]  # a new random seed, never a surprise cache hit
    assert second.seeds["s"]["seed"] != seed
    g.set_input("s", "seed", seed)
    assert executor.run(g).executed == []  # the recorded seed reproduces the first run


def numbers_graph(values: str) -> Graph:
    g = Graph()
    numbers = g.add("Numbers", id="numbers", values=values)
    g.add("Show", id="show", value=g.add("Add", id="add", a=numbers.value, b=g.add("Const", id="ten", value=10).value).value)
    return g


def test_streams_run_per_item_and_isolate_failures():
    g = numbers_graph("1,2,x,4")
    events = []
    executor = Executor(registry)
    result = executor.run(g, on_event=events.append)
    assert [o and o["shown"] for o in result.outputs["show"]] == [11, 12, None, 14]
    (failure,) = result.failures
    assert (failure.node, failure.item, failure.label) == ("numbers", 2, "n2")  # the item failed to load
    assert "invalid literal" in str(failure.error)
    assert executed_types().count("Const") == 1  # shared work runs once, not per item
    assert any(e.kind == "error" and e.item == 2 for e in events)
    calls.clear()
    g.set_input("numbers", "values", "1,2,5,4")
    result = executor.run(g)
    assert [o["shown"] for o in result.outputs["show"]] == [11, 12, 15, 14]
    assert calls == [("load", ("5",)), ("Add", (5, 10)), ("Show", (15, ""))]  # cached items are never loaded


def test_a_survey_lists_the_items_and_another_executor_runs_only_those_it_is_handed():
    g = numbers_graph("1,2,x,4")
    items = Executor(registry).survey(g)
    assert [(i.stream, i.index, i.item.label, i.models) for i in items] == [
        ("numbers", n, f"n{n}", frozenset()) for n in range(4)]
    assert calls == []  # listed, and no item loaded
    result = Executor(registry).run(g, items=[items[1], items[3]])
    assert [o["shown"] for o in result.outputs["show"]] == [12, 14]  # one entry per item handed in
    assert "numbers" not in result.executed  # the stream node did not run
    assert [c for c in calls if c[0] == "load"] == [("load", ("2",)), ("load", ("4",))]
    failed = Executor(registry).run(g, items=[items[2]])
    assert failed.outputs["show"] == [None] and [(f.item, f.label) for f in failed.failures] == [(2, "n2")]


def test_a_survey_refuses_random_seeds_whose_draw_would_decide_the_items():
    from nodegraph.errors import UsageError

    g = numbers_graph("1,2")
    g.add("Show", id="seeded", value=g.add("Seeded", id="s", seed="random").value)
    with pytest.raises(UsageError, match="random seeds of s"):
        Executor(registry).survey(g)


def test_a_run_that_does_not_recheck_files_takes_them_as_the_last_run_found_them(tmp_path):
    from pathlib import Path

    files = Registry()

    @files.node("Read", inputs={"path": Input(T.STRING)}, outputs={"text": Output(T.STRING)},
                fingerprint=lambda literals: Path(literals["path"]).read_text())
    def read(path):
        return Path(path).read_text()

    @files.node("Show", inputs={"text": Input(T.STRING)}, output_node=True)
    def show(text):
        return text

    note = tmp_path / "note.txt"
    note.write_text("one")
    g = Graph()
    g.add("Show", id="show", text=g.add("Read", id="read", path=str(note)).text)
    executor = Executor(files)
    assert executor.run(g).outputs["show"] == "one"
    note.write_text("two")
    assert executor.run(g, recheck_files=False).outputs["show"] == "one"  # as the last run found it
    assert executor.run(g).outputs["show"] == "two"


def test_a_node_failure_crosses_a_process_boundary_as_data():
    import pickle

    from nodegraph.errors import InputError

    for cause in (InputError("value", "expected an even number", code="value.odd", hint="add one"),
                  MemoryError("out of memory")):  # any cause, picklable or not, travels as its text
        error = NodeExecutionError("add", "Add", cause, "Traceback ...")
        copy = pickle.loads(pickle.dumps(error))
        assert (str(copy), copy.node, copy.input, copy.hint, copy.traceback) == (
            str(error), "add", error.input, error.hint, "Traceback ...")


# ---- runs by id, one at a time -----------------------------------------------------------------------


def slow_graph(steps: int = 50) -> Graph:
    g = chain_graph()
    g.set_input("b", "a", g.add("Steps", id="steps", value=g.inputs_of("b")["a"], steps=steps).value)
    return g


def test_a_run_cancelled_before_it_starts_stops_before_its_first_node():
    executor, events = Executor(registry), []
    executor.cancel("later")
    with pytest.raises(Interrupted):
        executor.run(chain_graph(), run_id="later", on_event=events.append)
    assert [e.kind for e in events] == ["run_start", "interrupted"] and events[0].run_id == "later"
    assert executor.run(chain_graph(), run_id="after").executed  # the cancel was for that run only


def test_cancelling_another_run_leaves_this_one_alone():
    executor = Executor(registry)

    def on_event(event):
        if event.kind == "progress" and event.value == 1:
            executor.cancel("someone-else")

    result = executor.run(slow_graph(steps=3), run_id="mine", on_event=on_event)
    assert "steps" in result.executed


def test_a_second_run_on_a_busy_executor_is_refused_not_mixed_in():
    import threading

    from nodegraph.errors import UsageError

    executor, started, release = Executor(registry), threading.Event(), threading.Event()

    def on_event(event):
        if event.kind == "progress" and event.value == 1:
            started.set()
            release.wait(30)

    thread = threading.Thread(target=lambda: executor.run(slow_graph(steps=2), run_id="first", on_event=on_event))
    thread.start()
    assert started.wait(30)
    with pytest.raises(UsageError, match="running first"):
        executor.run(chain_graph())
    release.set()
    thread.join(30)
    assert executor.run(chain_graph()).cached  # free again


def test_two_threads_validating_in_a_fresh_process_both_see_the_node_packs():
    import subprocess
    import sys

    script = (
        "import threading, nodegraph\n"
        "from nodegraph.graph import Graph\n"
        "results = []\n"
        "def check():\n"
        "    g = Graph(); g.add('LoadModel', model='builtin:tiny-sd')\n"
        "    results.append([p.code for p in nodegraph.validate(g).problems])\n"
        "threads = [threading.Thread(target=check) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(results)\n"
    )
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "node.unknown_type" not in done.stdout and done.stdout.count("graph.no_outputs") == 8
