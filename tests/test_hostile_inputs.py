"""Files and arguments we did not write, as a hostile user would give them, through the command line:
each gets a clear error that names the node and the input (or the file), exit code 1 for a bad graph,
2 for bad usage, 3 for a failed run, and never a traceback; nothing is lost, nothing leaks."""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
import nodegraph
from nodegraph import fileformat
from nodegraph.cli import main
from nodes.tiny_models import builtin_path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from nodegraph.cli import main; sys.exit(main())"]


def cli(*argv) -> tuple[int, str, str]:
    """Run `nodegraph ARGV` in this process; (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit:  # argparse's usage errors
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def no_traceback(*texts: str) -> bool:
    return not any("Traceback" in text for text in texts)


def write_graph(path: Path, specs: dict) -> Path:
    path.write_text(json.dumps({"nodegraph": 1, "nodes": specs}))
    return path


def link(node: str, output: str) -> dict:
    return {"from": node, "output": output}


def image_file(path: Path, size=(16, 16), color=(200, 40, 40)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def copy_graph(tmp_path: Path, source: Path) -> Path:
    return write_graph(tmp_path / "graph.json", json.loads(source.read_text())["nodes"])


def sampler_graph(path: Path, model: str = "builtin:tiny-sd", **t2i) -> Path:
    """Text2Img -> Img2Img -> Decode -> Save on a tiny model, 64x64, 2 steps."""
    return write_graph(path, {
        "load": {"type": "LoadModel", "inputs": {"model": model}},
        "t2i": {"type": "Text2Img", "inputs": {"model": link("load", "model"), "prompt": "a red barn",
                                               "num_inference_steps": 2, "height": 64, "width": 64, **t2i}},
        "i2i": {"type": "Img2Img", "inputs": {"model": link("load", "model"), "image": link("t2i", "latent"),
                                              "prompt": "a blue lake", "num_inference_steps": 2}},
        "dec": {"type": "Decode", "inputs": {"latent": link("i2i", "latent"), "vae": link("load", "vae")}},
        "save": {"type": "Save", "inputs": {"image": link("dec", "image"), "prefix": "barn"}},
    })


def copy_graph_with_image(tmp_path: Path, picture: Path, **save) -> Path:
    return write_graph(tmp_path / "copy.json", {
        "photo": {"type": "LoadImage", "inputs": {"path": str(picture)}},
        "save": {"type": "Save", "inputs": {"image": link("photo", "image"), "prefix": "copy", **save}},
    })


# ---- 1. Save has side effects ---------------------------------------------------------------------


def test_a_deleted_output_is_written_again_and_an_intact_one_is_not(tmp_path):
    graph = nodegraph.load(copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png")))
    executor, options = nodegraph.Executor(), nodegraph.RunOptions(output_dir=tmp_path / "out")
    [written] = executor.run(graph, options=options).outputs["save"]["files"]
    again = executor.run(graph, options=options)
    assert again.executed == [] and again.cached == ["save"]
    assert os.listdir(tmp_path / "out") == [Path(written).name]  # nothing written twice
    os.remove(written)
    third = executor.run(graph, options=options)
    assert third.executed == ["save"] and Path(written).is_file()


def test_two_equal_saves_each_write_their_file(tmp_path):
    graph = nodegraph.load(copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png")))
    graph.add("Save", id="twin", image=nodegraph.Link("photo", "image"), prefix="copy")
    result = nodegraph.Executor().run(graph, options=nodegraph.RunOptions(output_dir=tmp_path / "out"))
    assert {"save", "twin"} <= set(result.executed)
    assert sorted(os.listdir(tmp_path / "out")) == ["copy-1.png", "copy.png"]


def test_another_output_folder_gets_its_own_file(tmp_path):
    graph = nodegraph.load(copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png")))
    executor = nodegraph.Executor()
    executor.run(graph, options=nodegraph.RunOptions(output_dir=tmp_path / "a"))
    result = executor.run(graph, options=nodegraph.RunOptions(output_dir=str(tmp_path / "b")))
    assert result.executed == ["save"] and result.cached == ["photo"]
    assert os.listdir(tmp_path / "b") == ["copy.png"]


# ---- 2. what a PNG reveals -------------------------------------------------------------------------


def png_chunks(path) -> dict[str, str]:
    with Image.open(path) as image:
        return dict(image.text)


def test_a_png_holds_no_file_contents_and_no_outside_paths(tmp_path, monkeypatch):
    model = shutil.copytree(builtin_path("tiny-sd"), tmp_path / "models" / "my-model")
    (model / "credentials.json").write_text('{"token": "hf_SECRET_TOKEN"}')
    (model / "vae" / "notes.json").write_text('{"owner": "SECRET_OWNER"}')
    (tmp_path / "private").mkdir()
    picture = image_file(tmp_path / "private" / "photo.png")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    graph = sampler_graph(work / "graph.json", model=str(model))
    code, out, err = cli("run", graph, "--out", "out", "--set", "save.prefix=barn")
    assert code == 0, err
    [path] = out.split()
    chunks = png_chunks(path)
    assert set(chunks) == {"nodegraph", "prompt", "nodegraph-identities", "nodegraph-versions"}
    everything = "".join(chunks.values())
    assert "SECRET" not in everything and str(tmp_path) not in everything
    assert json.loads(chunks["nodegraph"])["nodes"]["load"]["inputs"]["model"] == "my-model"
    assert json.loads(chunks["nodegraph-identities"])["load"].startswith("weights:")
    assert all(len(text) < 4096 for text in chunks.values())
    # An image file outside the working directory: only its name is recorded, unless asked.
    copy = copy_graph_with_image(work, picture)
    code, out, _ = cli("run", copy, "--out", "out")
    assert json.loads(png_chunks(out.strip())["nodegraph"])["nodes"]["photo"]["inputs"]["path"] == "photo.png"
    code, out, _ = cli("run", copy, "--out", "out", "--set", "save.record_paths=true")
    assert json.loads(png_chunks(out.strip())["nodegraph"])["nodes"]["photo"]["inputs"]["path"] == str(picture)


def test_paths_inside_the_working_directory_are_recorded_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    picture = image_file(tmp_path / "photo.png")
    code, out, _ = cli("run", copy_graph_with_image(tmp_path, picture.resolve()), "--out", "out")
    assert code == 0
    saved = fileformat.load(out.strip())
    assert saved.inputs_of("photo")["path"] == "photo.png"
    assert cli("run", out.strip(), "--out", "again")[0] == 0  # the PNG runs again from here


# ---- 3, 4. bytes that are not UTF-8, and deep nesting -------------------------------------------------


def test_a_latin1_graph_file_is_reported_with_its_position(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": "un café crème"}}}}'
                     .encode("latin-1"))
    code, out, err = cli("validate", path)
    assert code == 1 and "byte 0xe9 at line 1, column" in out and "UTF-8" in out and no_traceback(out, err)
    raw = tmp_path / "surrogate.json"
    raw.write_bytes(b'{"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": "\xed\xa0\x80"}}}}')
    assert cli("validate", raw)[0] == 1


def test_a_lone_surrogate_in_text_is_a_graph_file_error():
    with pytest.raises(nodegraph.GraphFileError, match="lone surrogate"):
        nodegraph.loads('{"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": "\ud800"}}}}')


@pytest.mark.parametrize("target", ["t2i.prompt", "save.prefix"])
def test_set_with_bytes_that_are_not_utf8_names_the_input(tmp_path, target):
    code, out, err = cli("run", sampler_graph(tmp_path / "g.json"), "--set", f"{target}=caf\udce9",
                         "--out", tmp_path / "out")
    assert code == 1 and out.startswith(f"{target}: expected text in valid Unicode") and no_traceback(out, err)
    assert "\\udce9" in out  # shown escaped, not as a broken byte
    assert not (tmp_path / "out").exists()


def test_a_file_name_that_is_not_utf8_does_not_stop_the_batch(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image_file(folder / "ok.png")
    image_file(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.png")), color=(0, 90, 200))
    graph = write_graph(tmp_path / "batch.json", {
        "images": {"type": "LoadImages", "inputs": {"folder": str(folder)}},
        "save": {"type": "Save", "inputs": {"image": link("images", "image"), "prefix": "b"}},
    })
    code, out, err = cli("run", graph, "--out", tmp_path / "out")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["b_caf.png", "b_ok.png"]


def deeply_nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("levels", [100, 1000, 100_000])
def test_deep_nesting_in_a_graph_file_is_a_clear_error(tmp_path, levels):
    path = tmp_path / "deep.json"
    path.write_text('{"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": %s}}}}'
                    % deeply_nested(levels))
    code, out, err = cli("validate", path)
    assert code == 1 and "json.too_deep" in out and no_traceback(out, err)


def test_deep_nesting_in_a_pngs_graph_chunk_is_a_clear_error(tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("nodegraph", '{"nodegraph": 1, "nodes": {}, "ui": %s}' % deeply_nested(1000))
    Image.new("RGB", (4, 4)).save(tmp_path / "deep.png", pnginfo=info)
    code, out, err = cli("validate", tmp_path / "deep.png")
    assert code == 1 and "json.too_deep" in out and no_traceback(out, err)


# ---- 5. ComfyUI prompts of every shape ---------------------------------------------------------------


@pytest.mark.parametrize("inputs", [[1, 2], "text", 3, True, 2.5])
def test_comfy_inputs_that_are_not_an_object_name_the_node(tmp_path, inputs):
    path = tmp_path / "comfy.json"
    path.write_text(json.dumps({"7": {"class_type": "Save", "inputs": inputs}}))
    code, out, err = cli("validate", path)
    assert code == 1 and out.startswith("7: a ComfyUI node is") and no_traceback(out, err)


def test_a_comfy_input_named_id_is_an_unknown_input(tmp_path):
    path = tmp_path / "comfy.json"
    path.write_text(json.dumps({"7": {"class_type": "Save", "inputs": {"id": 1}}}))
    code, out, _ = cli("validate", path)
    assert code == 1 and "7.id: Save has no input 'id'" in out


# ---- 6. LoadImages patterns stay inside the folder -------------------------------------------------------


@pytest.mark.parametrize("pattern, says", [
    ("", "empty"), ("/etc/*", "outside the folder"), ("../d/*.png", "outside the folder"),
    ("sub/../../*.png", "outside the folder"), ("x" * 300, "at most 255 characters"),
])
def test_a_pattern_that_leaves_the_folder_or_cannot_be_listed_is_refused(tmp_path, pattern, says):
    (tmp_path / "in").mkdir()
    (tmp_path / "d").mkdir()
    image_file(tmp_path / "d" / "outside.png")
    graph = write_graph(tmp_path / "g.json", {
        "images": {"type": "LoadImages", "inputs": {"folder": str(tmp_path / "in"), "pattern": pattern}},
        "save": {"type": "Save", "inputs": {"image": link("images", "image")}},
    })
    code, out, err = cli("run", graph, "--out", tmp_path / "out")
    assert code == 1 and out.startswith("images.pattern: ") and says in out and no_traceback(out, err)
    assert not (tmp_path / "out").exists()


# ---- 7, 10, 18. model folders and checkpoints that are broken or hostile -------------------------------------


def model_folder(tmp_path: Path) -> Path:
    return shutil.copytree(builtin_path("tiny-sd"), tmp_path / "model")


def test_a_config_that_is_not_utf8_names_the_model_input(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "vae" / "config.json").write_bytes('{"name": "café"}'.encode("latin-1"))
    code, out, err = cli("validate", sampler_graph(tmp_path / "g.json", model=str(folder)))
    assert code == 1 and out.startswith("load.model: cannot read config.json") and no_traceback(out, err)


def test_a_model_index_cannot_make_nodegraph_import_a_module(tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["this", "x"]}))
    graph = sampler_graph(tmp_path / "g.json", model=str(folder))
    for command in (["validate"], ["run", "--out", str(tmp_path / "out")]):
        done = subprocess.run([*CLI, *command, str(graph)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 1 and "model.unsafe_component" in done.stdout
        assert "Beautiful is better than ugly" not in done.stdout + done.stderr  # `import this` never ran


def fake_safetensors(path: Path, header: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


@pytest.mark.parametrize("make, says", [
    (lambda p: fake_safetensors(p / "list.safetensors", b"[1, 2]"), "not a JSON object"),
    (lambda p: fake_safetensors(p / "number.safetensors", b"7"), "not a JSON object"),
    (lambda p: fake_safetensors(p / "shapes.safetensors", json.dumps(
        {"model.diffusion_model.input_blocks.0.0.weight": {"shape": [], "dtype": "F16"}}).encode()),
     "not 4 dimensions"),
    (lambda p: (p / "m").mkdir() or (p / "m" / "model_index.json").write_text("[1, 2]") and p / "m",
     "not a JSON object of components"),
    (lambda p: "x" * 5000, "File name too long"),
    (lambda p: "/", "not a diffusers model folder"),
    (lambda p: "/usr", "not a diffusers model folder"),
])
def test_broken_model_files_are_user_errors_not_node_bugs(tmp_path, make, says):
    model = make(tmp_path)
    code, out, err = cli("validate", sampler_graph(tmp_path / "g.json", model=str(model)))
    assert code == 1 and out.startswith("load.model: ") and says in out and no_traceback(out, err)
    assert "bug in the node" not in out


@pytest.mark.parametrize("path, says", [
    ("", "no path given"), ("/dev/zero", "not a regular file"), ("fifo", "not a regular file"),
])
def test_an_image_path_that_is_not_a_regular_file_says_so(tmp_path, path, says):
    if path == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    graph = copy_graph_with_image(tmp_path, path)
    code, out, err = cli("validate", graph)
    assert code == 1 and out.startswith("photo.path: ") and says in out and no_traceback(out, err)


def test_an_unreadable_png_is_described_without_python_internals(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 5, b"tEXt") + b"nokey")
    code, out, _ = cli("validate", path)
    assert code == 1 and "png.unreadable" in out and "<_io" not in out and "object at 0x" not in out


def test_a_bad_seed_reads_well(tmp_path):
    code, out, _ = cli("validate", sampler_graph(tmp_path / "g.json", seed=-1))
    assert "t2i.seed: expected a seed: an integer from 0 to" in out and code == 1


# ---- 8, 9. broken pipes and Ctrl-C -----------------------------------------------------------------------


@pytest.mark.parametrize("command", [["nodes", "--json"], ["schema"], ["validate", "--json", "BAD"]])
def test_a_reader_that_goes_away_gets_no_traceback(tmp_path, command):
    bad = write_graph(tmp_path / "bad.json", {f"n{i}": {"type": "Nope"} for i in range(2000)})
    argv = [str(bad) if part == "BAD" else part for part in command]
    process = subprocess.Popen([*CLI, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and no_traceback(stderr)


def test_ctrl_c_while_validating_exits_130_without_a_traceback(tmp_path, capsys):
    chain = {"n0": {"type": "LoadImage", "inputs": {"path": "x.png"}}}
    for i in range(1, 60_000):
        chain[f"n{i}"] = {"type": "Resize", "inputs": {"image": link(f"n{i - 1}", "image"), "width": 8}}
    graph = write_graph(tmp_path / "big.json", chain)
    timer = threading.Timer(0.3, _thread.interrupt_main)  # Ctrl-C, as the main thread receives it
    # as Python sets it up on a terminal (a shell's background job starts with Ctrl-C ignored)
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer.start()
    try:
        code = main(["validate", str(graph)])
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, ignored)
    out, err = capsys.readouterr()
    assert code == 130 and err.strip() == "interrupted" and no_traceback(out, err)


# ---- 11. decompression bombs and endless reads --------------------------------------------------------------


def bomb(path: Path, side: int = 12_000) -> Path:
    """A PNG of side x side black pixels in a small file, made without allocating them."""
    row = b"\0" + b"\0" * side
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    picture = bomb(tmp_path / "bomb.png")
    assert picture.stat().st_size < 200_000
    graph = copy_graph_with_image(tmp_path, picture)
    code, err, peak_mb = run_measured([*CLI, "run", str(graph), "--out", str(tmp_path / "out")], tmp_path / "err")
    assert code == 3 and "photo.path" in err and "12000x12000" in err
    assert "--max-image-pixels" in err and no_traceback(err)
    assert peak_mb < 1500  # decoding would take 144 MB of pixels, times float32 RGB: over 1.7 GB
    # ... and as a graph file, only its text chunks are read
    code, out, _ = cli("validate", picture)
    assert code == 1 and "png.no_graph" in out


def run_measured(argv: list[str], stderr_file: Path) -> tuple[int, str, float]:
    """(exit code, stderr, peak RSS in MB) of one process, measured for it alone (RUSAGE_CHILDREN
    would give the largest of every child this test process ever had)."""
    with open(stderr_file, "w+") as err:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, text=True)
        deadline = threading.Timer(120, process.kill)
        deadline.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            deadline.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        err.seek(0)
        return process.returncode, err.read(), usage.ru_maxrss / 1024


def test_a_raised_pixel_limit_lets_a_large_image_through(tmp_path):
    picture = image_file(tmp_path / "wide.png", size=(300, 10))
    graph = copy_graph_with_image(tmp_path, picture)
    assert cli("run", graph, "--out", tmp_path / "a", "--max-image-pixels", 2000)[0] == 3
    assert cli("run", graph, "--out", tmp_path / "b", "--max-image-pixels", 3000)[0] == 0


def test_a_graph_file_that_never_ends_or_is_no_file_is_refused(tmp_path):
    for path in ("/dev/zero", tmp_path):
        code, out, _ = cli("validate", path)
        assert code == 1 and "not a regular file" in out


# ---- 12. terminal injection ----------------------------------------------------------------------------------


def test_control_characters_from_a_file_are_escaped(tmp_path):
    path = write_graph(tmp_path / "g.json", {"a\x1b[31m\nfake.input: all good [ok]\u202e": {"type": "Save"}})
    code, out, _ = cli("validate", path)
    assert code == 1 and "\x1b" not in out and "\u202e" not in out
    assert len(out.strip().splitlines()) == 1 and "\\x1b[31m\\nfake.input" in out


# ---- 13. NaN and infinity ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ["t2i.guidance_scale=nan", "i2i.strength=nan", "i2i.strength=inf",
                                        "t2i.guidance_scale=-inf"])
def test_nan_and_infinity_are_refused_naming_the_input(tmp_path, assignment):
    code, out, err = cli("run", sampler_graph(tmp_path / "g.json"), "--set", assignment, "--out", tmp_path / "out")
    node_input = assignment.split("=")[0]
    assert code == 1 and out.startswith(f"{node_input}: expected a finite number") and no_traceback(out, err)


def test_nan_from_the_python_api_is_a_validation_problem(tmp_path):
    graph = nodegraph.load(sampler_graph(tmp_path / "g.json"))
    graph.set_input("t2i", "guidance_scale", float("nan"))
    [problem] = nodegraph.validate(graph).problems
    assert (problem.node, problem.input, problem.code) == ("t2i", "guidance_scale", "value.wrong_type")


# ---- 14. --tiny validates the graph as written ---------------------------------------------------------------------


def test_tiny_does_not_hide_a_size_the_model_cannot_use(tmp_path):
    graph = sampler_graph(tmp_path / "g.json", model="runwayml/stable-diffusion-v1-5")
    code, out, _ = cli("validate", graph, "--tiny", "--set", "t2i.width=100")
    assert code == 1 and out.startswith("t2i.width: expected a multiple of 8 pixels, got 100")
    code, _, err = cli("validate", graph, "--tiny", "--set", "t2i.width=8")
    assert code == 0 and "t2i.width" not in err  # a small size is kept as written


# ---- 15. the output folder is checked first ------------------------------------------------------------------------


def test_an_output_folder_that_is_a_file_fails_before_anything_runs(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code, out, err = cli("run", sampler_graph(tmp_path / "g.json"), "--out", blocker / "sub")
    assert code == 1 and out.startswith("save: cannot write to the output folder") and "(LoadModel)" not in err
    assert blocker.read_text() == "keep me"


# ---- 16, 17. repeated names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [
    ('{"nodegraph": 1, "nodes": {"a": {"type": "Save"}, "a": {"type": "Resize"}}}', "a: node id 'a' appears twice"),
    ('{"nodegraph": 1, "nodes": {"a": {"type": "Save"}}, "nodes": {"b": {"type": "Save"}}}', "'nodes' appears twice"),
    ('{"nodegraph": 1, "nodes": {"a": {"type": "Save", "inputs": {"prefix": "x", "prefix": "y"}}}}',
     "'prefix' appears twice"),
    ('{"1": {"class_type": "Save", "inputs": {}}, "1": {"class_type": "Save", "inputs": {}}}', "'1' appears twice"),
])
def test_repeated_keys_are_refused_not_dropped(tmp_path, text, says):
    path = tmp_path / "g.json"
    path.write_text(text)
    code, out, _ = cli("validate", path)
    assert code == 1 and says in out and "json.duplicate_key" in out


def test_files_that_differ_only_in_extension_are_distinct_items(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image_file(folder / "cat.png", color=(255, 0, 0))
    image_file(folder / "cat.jpg", color=(0, 0, 255))
    graph = write_graph(tmp_path / "batch.json", {
        "images": {"type": "LoadImages", "inputs": {"folder": str(folder)}},
        "name": {"type": "ItemName", "inputs": {"image": link("images", "image")}},
        "save": {"type": "Save", "inputs": {"image": link("images", "image"), "prefix": "b"}},
    })
    code, out, err = cli("run", graph, "--out", tmp_path / "out")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["b_cat_jpg.png", "b_cat_png.png"]
    assert "[cat.jpg]" in err and "[cat.png]" in err


# ---- 19. an interrupted run says what is true ---------------------------------------------------------------------------


def test_ctrl_c_during_a_run_says_what_was_kept(tmp_path):
    graph = sampler_graph(tmp_path / "g.json", num_inference_steps=500)
    process = subprocess.Popen([*CLI, "run", str(graph), "--out", str(tmp_path / "out")], stderr=subprocess.PIPE,
                               text=True)
    for line in process.stderr:
        if line.startswith("t2i (Text2Img)"):
            time.sleep(0.5)
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 3
    assert "interrupted at t2i" in rest and "kept" not in rest and no_traceback(rest)
    assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")


# ---- 20. the Python API ---------------------------------------------------------------------------------------------------


def test_python_api_misuse_raises_nodegraph_errors_that_say_what_to_do(tmp_path):
    graph = nodegraph.Graph()
    with pytest.raises(nodegraph.UsageError, match="node id is a non-empty string"):
        graph.add("Save", id=5)
    with pytest.raises(nodegraph.UsageError, match="names a node id and an output name"):
        graph.add("Save", image=nodegraph.Link(None, None))
    with pytest.raises(nodegraph.UsageError, match="already in the graph"):
        graph.add("Save", id="a") and graph.add("Save", id="a")
    with pytest.raises(nodegraph.UsageError, match=r'e\.g\. \["save"\]'):
        nodegraph.Executor().run(graph, "save")
    with pytest.raises(nodegraph.GraphFileError, match="NUL"):
        nodegraph.load("a\0b")
    with pytest.raises(nodegraph.GraphFileError, match="cannot write") as caught:
        nodegraph.save(graph, tmp_path / "missing" / "g.json")
    assert ".tmp" not in str(caught.value) and "missing" in str(caught.value)
    with pytest.raises(nodegraph.UsageError, match="there is no node 'nope'"):
        graph.set_input("nope", "x", 1)


# ---- 21. file names Windows refuses --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix, name", [("CON", "_CON.png"), ("aux", "_aux.png"), ("NUL.txt", "_NUL.txt.png"),
                                          ("com1", "_com1.png"), ("console", "console.png")])
def test_prefixes_windows_reserves_are_made_safe(tmp_path, prefix, name):
    graph = copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png"), prefix=prefix)
    code, out, err = cli("run", graph, "--out", tmp_path / "out")
    assert code == 0, err
    assert os.listdir(tmp_path / "out") == [name]


# ---- a second round: what a re-probe found ------------------------------------------------------------


def test_an_output_folder_that_is_not_unicode_or_a_broken_link_fails_first(tmp_path):
    graph = copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png"))
    code, _, err = cli("run", graph, "--out", tmp_path / "o\udce9")
    assert code == 2 and "valid Unicode" in err and no_traceback(err)
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    code, out, err = cli("run", graph, "--out", tmp_path / "dangling")
    assert code == 1 and "a link that leads nowhere" in out and "(LoadImage)" not in err
    code, out, _ = cli("run", graph, "--out", tmp_path / ("o" * 300))
    assert code == 1 and "File name too long" in out


@pytest.mark.parametrize("call, says", [
    (lambda: nodegraph.load(None), "path of a graph file"),
    (lambda: nodegraph.loads({"nodegraph": 1}), "text or bytes"),
    (lambda: nodegraph.save({"a": 1}, "x.json"), "nodegraph.Graph and a path"),
    (lambda: nodegraph.RunOptions(output_dir=None), "output folder"),
    (lambda: nodegraph.RunOptions(max_image_pixels=0), "max_image_pixels"),
    (lambda: nodegraph.RunOptions(device="tpu"), "device is one of"),
    (lambda: nodegraph.Executor(registry=5), "registry"),
    (lambda: nodegraph.Executor().run(nodegraph.Graph(), options={"device": "cpu"}), "RunOptions"),
])
def test_the_python_api_refuses_wrong_arguments_with_nodegraph_errors(call, says):
    with pytest.raises(nodegraph.UsageError, match=says):
        call()


def test_numbers_of_other_types_than_python_s_are_problems_not_crashes(tmp_path):
    import numpy as np

    graph = nodegraph.load(sampler_graph(tmp_path / "g.json"))
    graph.set_input("t2i", "guidance_scale", np.float64(5.0))
    [problem] = nodegraph.validate(graph).problems
    assert (problem.node, problem.input, problem.code) == ("t2i", "guidance_scale", "value.wrong_type")


def test_paths_in_a_pick_list_and_in_the_ui_block_are_withheld(tmp_path, monkeypatch):
    outside = tmp_path / "private"
    outside.mkdir()
    picture = image_file(outside / "photo.png")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_graph(work / "g.json", {
        "pick": {"type": "PickString", "inputs": {"options": f"{picture}\nnot a path"}},
        "photo": {"type": "LoadImage", "inputs": {"path": link("pick", "value")}},
        "save": {"type": "Save", "inputs": {"image": link("photo", "image")}},
    })
    document = json.loads(path.read_text())
    document["ui"] = {"last_folder": str(outside)}
    path.write_text(json.dumps(document))
    code, out, err = cli("run", path, "--out", "out")
    assert code == 0, err
    chunks = png_chunks(out.strip())
    assert str(tmp_path) not in "".join(chunks.values())
    embedded = json.loads(chunks["nodegraph"])
    assert embedded["nodes"]["pick"]["inputs"]["options"] == "photo.png\nnot a path"
    assert embedded["ui"] == {"last_folder": "private"}


def test_load_images_does_not_follow_links_out_of_its_folder(tmp_path):
    folder, outside = tmp_path / "in", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    image_file(folder / "mine.png")
    image_file(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "link.png")
    os.symlink(outside, folder / "dirlink")
    graph = write_graph(tmp_path / "g.json", {
        "images": {"type": "LoadImages", "inputs": {"folder": str(folder), "recursive": True}},
        "save": {"type": "Save", "inputs": {"image": link("images", "image"), "prefix": "b"}},
    })
    code, _, err = cli("run", graph, "--out", tmp_path / "out")
    assert code == 0, err
    assert os.listdir(tmp_path / "out") == ["b_mine.png"]


def test_a_pattern_naming_the_folder_itself_is_refused_clearly(tmp_path):
    (tmp_path / "in").mkdir()
    graph = write_graph(tmp_path / "g.json", {
        "images": {"type": "LoadImages", "inputs": {"folder": str(tmp_path / "in"), "pattern": "."}},
        "save": {"type": "Save", "inputs": {"image": link("images", "image")}},
    })
    code, out, err = cli("run", graph, "--out", tmp_path / "out")
    assert code in (1, 3) and "images.pattern" in out + err and no_traceback(out, err)
    assert "internal error" not in err


def test_a_model_index_naming_a_whole_pipeline_as_a_component_is_refused(tmp_path):
    folder = model_folder(tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["diffusers", "StableDiffusionPipeline"]
    (folder / "model_index.json").write_text(json.dumps(index))
    code, out, _ = cli("validate", sampler_graph(tmp_path / "g.json", model=str(folder)))
    assert code == 1 and "model.unsafe_component" in out and "whole pipeline" in out


def test_a_damaged_hash_index_is_only_a_lost_cache(tmp_path, monkeypatch):
    from nodes import weights

    monkeypatch.setenv("NODEGRAPH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "weight-sha256.json").write_text("[]")
    monkeypatch.setattr(weights, "_hash_cache", None)
    folder = model_folder(tmp_path)
    code, out, err = cli("validate", sampler_graph(tmp_path / "g.json", model=str(folder)))
    assert code == 0, out + err


def test_a_saved_file_cut_short_is_written_again(tmp_path):
    graph = nodegraph.load(copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png")))
    graph.add("Save", id="both", image=graph.add("ImageGrid", image1=nodegraph.Link("photo", "image"),
                                                 image2=nodegraph.Link("photo", "image"), cols=1).image)
    executor, options = nodegraph.Executor(), nodegraph.RunOptions(output_dir=tmp_path / "out")
    [path] = executor.run(graph, options=options).outputs["save"]["files"]
    open(path, "wb").close()  # emptied: it is the user's file now, so it stays, and a new one is written
    result = executor.run(graph, options=options)
    [again] = result.outputs["save"]["files"]
    assert result.executed == ["save"] and again != path and os.path.getsize(again) > 0


def test_a_batch_with_one_file_deleted_writes_it_again(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b"):
        image_file(folder / f"{name}.png")
    graph = nodegraph.Graph()
    graph.add("Save", id="save", image=graph.add("LoadImages", folder=str(folder)).image, prefix="b")
    executor, options = nodegraph.Executor(), nodegraph.RunOptions(output_dir=tmp_path / "out")
    first = executor.run(graph, options=options)
    os.remove(first.outputs["save"][1]["files"][0])
    events = []
    executor.run(graph, options=options, on_event=events.append)
    assert [(e.node, e.label) for e in events if e.kind == "node_start"] == [("save", "b")]
    assert sorted(os.listdir(tmp_path / "out")) == ["b_a.png", "b_b.png"]


def test_a_graph_too_large_for_plain_text_chunks_still_round_trips(tmp_path):
    prompt = "a red barn " * 200_000  # 2.2 MB: stored compressed
    graph = copy_graph_with_image(tmp_path, image_file(tmp_path / "in.png"), prefix=prompt[:40])
    document = json.loads(graph.read_text())
    document["ui"] = {"note": prompt}
    graph.write_text(json.dumps(document))
    code, out, _ = cli("run", graph, "--out", tmp_path / "out")
    assert code == 0
    assert nodegraph.load(out.strip()).ui == {"note": prompt}


def test_utf8_in_a_text_chunk_is_read_as_utf8(tmp_path):
    import zlib as _zlib

    text = json.dumps({"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": "café 日本"}}}},
                      ensure_ascii=False).encode()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", _zlib.crc32(kind + body))

    path = tmp_path / "utf8.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"tEXt", b"nodegraph\0" + text) + chunk(b"IEND", b""))
    assert nodegraph.load(path).inputs_of("s")["prefix"] == "café 日本"


def test_the_size_limits_on_graph_files_and_png_text_hold(tmp_path, monkeypatch):
    from nodegraph import fileformat as files, pngtext

    monkeypatch.setattr(files, "MAX_GRAPH_BYTES", 100)
    big = write_graph(tmp_path / "big.json", {f"n{i}": {"type": "Save"} for i in range(10)})
    with pytest.raises(nodegraph.GraphFileError, match="larger than"):
        nodegraph.load(big)
    monkeypatch.setattr(pngtext, "MAX_TEXT_BYTES", 100)
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("one", "x" * 60)
    info.add_text("two", "y" * 60)  # each fits, not both
    Image.new("RGB", (2, 2)).save(tmp_path / "two.png", pnginfo=info)
    with pytest.raises(nodegraph.GraphFileError, match="more than"):
        nodegraph.loads((tmp_path / "two.png").read_bytes())


@pytest.mark.parametrize("side, says", [("width", 1004), ("height", 8200)])
def test_tiny_leaves_a_written_size_it_cannot_use_for_validation(tmp_path, side, says):
    graph = sampler_graph(tmp_path / "g.json", model="runwayml/stable-diffusion-v1-5", **{side: says})
    code, out, _ = cli("validate", graph, "--tiny")
    expected = "expected a multiple of 8 pixels, got 1004" if side == "width" else "8200 is out of range"
    assert code == 1 and out.startswith(f"t2i.{side}: {expected}")


def test_set_applies_before_tiny(tmp_path):
    graph = sampler_graph(tmp_path / "g.json")
    code, _, err = cli("validate", graph, "--tiny", "--set", "load.model=runwayml/stable-diffusion-v1-5")
    assert code == 0 and "load: runwayml/stable-diffusion-v1-5 -> builtin:tiny-sd" in err


def test_labels_of_names_that_differ_only_in_bytes_that_are_not_utf8_differ(tmp_path):
    from nodes.images import item_labels

    files = [Path(os.fsdecode(bytes(tmp_path) + name)) for name in (b"/a\xff.png", b"/a\xfe.png")]
    labels = item_labels(tmp_path, files)
    assert len(set(labels)) == 2 and all(label.startswith("a") for label in labels)


def test_an_image_file_is_checked_from_its_header_at_validation(tmp_path):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as file:
        file.truncate(1 << 30)  # a gigabyte of nothing, which must not be hashed before it is refused
    code, out, _ = cli("validate", copy_graph_with_image(tmp_path, sparse))
    assert code == 1 and out.startswith("photo.path: ") and "not a readable image" in out


@pytest.mark.parametrize("model, says", [("~nosuchuser/x", "cannot be a model path"),
                                         ("/dev/zero", "neither a model folder nor a checkpoint")])
def test_model_paths_that_cannot_be_a_model_say_why(tmp_path, model, says):
    code, out, _ = cli("validate", sampler_graph(tmp_path / "g.json", model=model))
    assert code == 1 and out.startswith("load.model: ") and says in out and "bug" not in out


@pytest.mark.parametrize("text, says", [
    ('\ufeff{"nodegraph": 1, "nodes": {"s": {"type": "Save"}}}', "save.image: required input"),
    ('{"nodegraph": 2, "nodes": {}}', "format version 2"),
    ('{"nodegraph": 1, "nodes": {"s": {"type": "Save", "inputs": {"prefix": 1e999999}}}}', "too large"),
])
def test_graph_file_oddities_read_well(tmp_path, text, says):
    path = tmp_path / "g.json"
    path.write_text(text.replace("save.image", "s.image"))
    code, out, _ = cli("validate", path)
    assert code == 1 and says.replace("save.image", "s.image") in out


def test_a_random_seed_may_be_written_in_capitals(tmp_path):
    code, out, err = cli("validate", sampler_graph(tmp_path / "g.json"), "--set", "t2i.seed=RANDOM")
    assert code == 0, out + err


@pytest.mark.parametrize("options", [{"disable": None}, {"disable": 5}, {"disable": [["merge"]]},
                                     {"disable": {1, "merge"}}, {"model_memory": 6e9}, {"model_memory": -1},
                                     {"optimize": "no"}])
def test_run_options_of_the_wrong_type_are_usage_errors_that_show_the_right_form(options):
    with pytest.raises(nodegraph.UsageError, match=r"e\.g\. (disable=\{'decode_encode'\}|model_memory=6_000)"):
        nodegraph.RunOptions(**options)
