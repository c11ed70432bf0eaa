"""Image nodes: loading files and folders, masks from alpha, resizing, grids, and their errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import nodes  # noqa: F401  (registers the built-in nodes)
from nodegraph.context import NodeContext, RunOptions, RunState
from nodegraph.errors import InputError, NodeExecutionError, ValidationError
from nodegraph.executor import Executor
from nodegraph.graph import Graph
from nodegraph.registry import registry
from nodegraph.validation import validate
from nodes.images import image_grid, load_image, load_images, load_mask, resize, resize_mask

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def write_png(path, size=(8, 8), color=RED, mode="RGB"):
    Image.new(mode, size, color).save(path)
    return str(path)


def solid(color, width=8, height=8):
    return torch.tensor(color, dtype=torch.float32).div(255).view(1, 3, 1, 1).expand(1, 3, height, width).clone()


CTX = NodeContext("test", RunState())  # for calling nodes directly


def fingerprint(node_type, **literals):
    return registry[node_type].fingerprint(literals)


# ---- LoadImage ------------------------------------------------------------------------------


def test_load_image_gives_a_float_batch_and_an_empty_mask_without_alpha(tmp_path):
    image, mask = load_image(write_png(tmp_path / "red.png", size=(6, 4)), CTX)
    assert image.shape == (1, 3, 4, 6) and image.dtype == torch.float32
    assert torch.equal(image, solid(RED, 6, 4))
    assert mask.shape == (1, 1, 4, 6) and not mask.any()


def test_transparent_pixels_become_the_mask(tmp_path):
    picture = Image.new("RGBA", (4, 4), (0, 0, 255, 255))
    picture.putpixel((1, 2), (0, 0, 255, 0))  # fully transparent: repaint
    picture.putpixel((3, 0), (0, 0, 255, 128))  # half transparent
    picture.save(tmp_path / "cutout.png")
    image, mask = load_image(str(tmp_path / "cutout.png"), CTX)
    assert image.shape == (1, 3, 4, 4)
    assert mask[0, 0, 2, 1] == 1.0 and mask[0, 0, 0, 3] == pytest.approx(1 - 128 / 255)
    assert mask.sum() == pytest.approx(1 + (1 - 128 / 255))


def test_a_palette_images_transparent_colour_becomes_the_mask(tmp_path):
    picture = Image.new("P", (3, 1), 0)
    picture.putpalette([255, 0, 0, 0, 255, 0])
    picture.putpixel((2, 0), 1)
    picture.save(tmp_path / "palette.png", transparency=1)
    image, mask = load_image(str(tmp_path / "palette.png"), CTX)
    assert mask.flatten().tolist() == [0.0, 0.0, 1.0]
    assert image[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_exif_orientation_is_applied(tmp_path):
    picture = Image.new("RGB", (6, 2), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    picture.save(tmp_path / "rotated.jpg", exif=exif)
    image, _ = load_image(str(tmp_path / "rotated.jpg"), CTX)
    assert image.shape == (1, 3, 6, 2)


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path):
    Image.new("I;16", (2, 2), 65535).save(tmp_path / "white16.png")
    image, _ = load_image(str(tmp_path / "white16.png"), CTX)
    assert torch.allclose(image, torch.ones(1, 3, 2, 2))


def test_a_corrupt_image_fails_naming_the_node_and_input(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    graph = Graph()
    graph.add("Save", id="save", image=graph.add("LoadImage", id="photo", path=str(bad)).image)
    with pytest.raises(ValidationError) as caught:  # its header is read before anything runs
        Executor().run(graph, options=RunOptions(output_dir=tmp_path / "out"))
    [problem] = caught.value.problems
    assert (problem.node, problem.input) == ("photo", "path")
    assert f"{bad} is not a readable image" in problem.message
    cut_short = tmp_path / "cut.png"
    Image.effect_noise((32, 32), 40).save(cut_short)
    cut_short.write_bytes(cut_short.read_bytes()[:150])  # a sound header, pixels cut short
    graph.set_input("photo", "path", str(cut_short))
    with pytest.raises(NodeExecutionError) as caught:
        Executor().run(graph, options=RunOptions(output_dir=tmp_path / "out"))
    assert (caught.value.node, caught.value.input) == ("photo", "path")
    assert f"{cut_short} is not a readable image" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_missing_file_is_a_validation_error_before_anything_runs(tmp_path):
    graph = Graph()
    graph.add("Save", image=graph.add("LoadImage", id="photo", path=str(tmp_path / "nowhere.png")).image)
    problems = validate(graph).problems
    assert [(p.node, p.input, p.code) for p in problems] == [("photo", "path", "file.not_found")]
    assert "nowhere.png does not exist" in problems[0].message
    with pytest.raises(ValidationError):
        Executor().run(graph, options=RunOptions(output_dir=tmp_path))


def test_a_folder_is_not_an_image_file(tmp_path):
    with pytest.raises(InputError) as caught:
        load_image(str(tmp_path), CTX)
    assert caught.value.code == "file.not_a_file" and "LoadImages" in caught.value.hint


def test_the_fingerprint_follows_the_file_contents(tmp_path):
    path = write_png(tmp_path / "a.png", color=RED)
    before = fingerprint("LoadImage", path=path)
    assert fingerprint("LoadImage", path=path) == before
    write_png(tmp_path / "a.png", color=BLUE)
    assert fingerprint("LoadImage", path=path) != before


def test_a_changed_file_reruns_only_what_reads_it(tmp_path):
    path = write_png(tmp_path / "a.png", color=RED)
    graph = Graph()
    graph.add("Save", id="save", image=graph.add("LoadImage", id="photo", path=path).image)
    executor = Executor()
    options = RunOptions(output_dir=tmp_path / "out")
    executor.run(graph, options=options)
    assert executor.run(graph, options=options).cached == ["save"]
    write_png(tmp_path / "a.png", color=BLUE)
    rerun = executor.run(graph, options=options)
    assert {"photo", "save"} <= set(rerun.executed)


# ---- LoadMask -------------------------------------------------------------------------------


def test_load_mask_reads_white_as_repaint_and_can_invert(tmp_path):
    picture = Image.new("L", (4, 4), 0)
    picture.putpixel((0, 0), 255)
    picture.save(tmp_path / "mask.png")
    mask = load_mask(str(tmp_path / "mask.png"), "luminance", False, CTX)
    assert mask.shape == (1, 1, 4, 4) and mask.sum() == 1 and mask[0, 0, 0, 0] == 1
    inverted = load_mask(str(tmp_path / "mask.png"), "luminance", True, CTX)
    assert inverted.sum() == 15 and inverted[0, 0, 0, 0] == 0


def test_load_mask_reads_one_colour_channel_or_the_alpha(tmp_path):
    picture = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    picture.putpixel((1, 0), (0, 0, 255, 0))
    picture.save(tmp_path / "channels.png")
    path = str(tmp_path / "channels.png")
    assert load_mask(path, "red", False, CTX).flatten().tolist() == [1.0, 0.0]
    assert load_mask(path, "blue", False, CTX).flatten().tolist() == [0.0, 1.0]
    assert load_mask(path, "alpha", False, CTX).flatten().tolist() == [0.0, 1.0]


# ---- LoadImages ---------------------------------------------------------------------------------


def make_folder(folder):
    folder.mkdir()
    write_png(folder / "b.png", color=GREEN)
    write_png(folder / "a.png", color=RED)
    Image.new("RGB", (8, 8), BLUE).save(folder / "c.jpg", quality=100)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_load_images_streams_the_images_in_sorted_order(tmp_path):
    folder = make_folder(tmp_path / "in")
    items = list(load_images(str(folder), "*", False, CTX))
    assert [item.label for item in items] == ["a", "b", "c"]
    assert len({item.key for item in items}) == 3
    assert torch.equal(items[0].load(), solid(RED)) and torch.equal(items[1].load(), solid(GREEN))


def test_load_images_pattern_and_recursion(tmp_path):
    folder = make_folder(tmp_path / "in")
    (folder / "sub").mkdir()
    write_png(folder / "sub" / "a.png", color=BLUE)
    assert [i.label for i in load_images(str(folder), "*.png", False, CTX)] == ["a", "b"]
    assert [i.label for i in load_images(str(folder), "*.png", True, CTX)] == ["a", "b", "sub-a"]


def test_item_keys_follow_the_contents_and_the_name(tmp_path):
    folder = make_folder(tmp_path / "in")
    key_of_a = next(iter(load_images(str(folder), "a.png", False, CTX))).key
    write_png(folder / "a.png", color=BLUE)
    assert next(iter(load_images(str(folder), "a.png", False, CTX))).key != key_of_a
    write_png(folder / "twin.png", color=BLUE)
    keys = {item.label: item.key for item in load_images(str(folder), "*.png", False, CTX)}
    assert keys["a"] != keys["twin"]


def test_files_with_the_same_contents_each_get_saved(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "one.png")
    write_png(folder / "two.png")
    graph = Graph()
    graph.add("Save", id="save", image=graph.add("LoadImages", folder=str(folder)).image, prefix="copy")
    Executor().run(graph, options=RunOptions(output_dir=tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy_one.png", "copy_two.png"]


def test_a_corrupt_file_fails_only_its_own_item(tmp_path):
    folder = make_folder(tmp_path / "in")
    (folder / "bad.png").write_bytes(b"garbage")
    items = {item.label: item for item in load_images(str(folder), "*", False, CTX)}
    assert sorted(items) == ["a", "b", "bad", "c"]
    with pytest.raises(InputError, match="bad.png is not a readable image"):
        items["bad"].load()
    assert items["c"].load().shape == (1, 3, 8, 8)


def test_a_stream_runs_every_good_item_and_reports_the_bad_one(tmp_path):
    folder = make_folder(tmp_path / "in")
    (folder / "bad.png").write_bytes(b"garbage")
    graph = Graph()
    images = graph.add("LoadImages", id="folder", folder=str(folder))
    graph.add("Save", id="save", image=graph.add("Resize", id="small", image=images.image, width=4, height=4).image,
              prefix="batch")
    result = Executor().run(graph, options=RunOptions(output_dir=tmp_path / "out"))
    assert [(f.item, f.label) for f in result.failures] == [(2, "bad")]
    assert "bad.png is not a readable image" in str(result.failures[0].error)
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == ["batch_a.png", "batch_b.png", "batch_c.png"]


def test_the_folder_fingerprint_sees_new_files(tmp_path):
    folder = make_folder(tmp_path / "in")
    before = fingerprint("LoadImages", folder=str(folder), pattern="*", recursive=False)
    write_png(folder / "d.png")
    assert fingerprint("LoadImages", folder=str(folder), pattern="*", recursive=False) != before


def test_a_missing_or_empty_folder_is_reported(tmp_path):
    graph = Graph()
    graph.add("Save", image=graph.add("LoadImages", id="folder", folder=str(tmp_path / "nowhere")).image)
    assert [(p.node, p.input, p.code) for p in validate(graph).problems] == [("folder", "folder", "folder.not_found")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError) as caught:
        load_images(str(tmp_path / "empty"), "*", False, CTX)
    assert caught.value.code == "folder.empty"


# ---- Resize -----------------------------------------------------------------------------------------


def striped(width=64, height=32):
    """Red, green, blue vertical bands of widths 1/4, 1/2, 1/4."""
    image = solid(GREEN, width, height)
    image[..., : width // 4] = solid(RED, width // 4, height)
    image[..., width - width // 4:] = solid(BLUE, width // 4, height)
    return image


@pytest.mark.parametrize("width, height, mode, expected", [
    (32, 16, "stretch", (16, 32)),
    (20, 20, "stretch", (20, 20)),
    (32, 32, "fit", (16, 32)),
    (32, 32, "fill", (32, 32)),
    (32, 0, "stretch", (16, 32)),
    (0, 64, "fit", (64, 128)),
    (0, 0, "fill", (32, 64)),
])
def test_resize_sizes(width, height, mode, expected):
    assert resize(striped(), width, height, mode, "bilinear", None).shape[-2:] == expected


def test_fill_crops_the_centre():
    filled = resize(striped(), 32, 32, "fill", "nearest", None)
    assert torch.equal(filled, solid(GREEN, 32, 32))


def test_resize_to_the_size_of_another_image():
    assert resize(striped(), 0, 0, "stretch", "bicubic", solid(RED, 24, 40)).shape == (1, 3, 40, 24)


def test_resized_values_stay_in_range_and_masks_stay_binary():
    image = resize(striped(), 100, 37, "stretch", "bicubic", None)
    assert image.min() >= 0 and image.max() <= 1
    mask = (torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    resized = resize_mask(mask, 50, 50, "stretch", "nearest", None)
    assert resized.shape == (1, 1, 50, 50) and set(resized.unique().tolist()) <= {0.0, 1.0}


# ---- ImageGrid -----------------------------------------------------------------------------------------


def test_grid_lays_images_out_row_by_row():
    grid = image_grid(solid(RED), solid(GREEN), solid(BLUE), None, 0, 2)
    assert grid.shape == (1, 3, 16, 16)
    assert torch.equal(grid[..., :8, :8], solid(RED)) and torch.equal(grid[..., :8, 8:], solid(GREEN))
    assert torch.equal(grid[..., 8:, :8], solid(BLUE)) and not grid[..., 8:, 8:].any()  # empty cell


def test_grid_defaults_to_one_row_of_every_image_in_every_batch():
    grid = image_grid(torch.cat([solid(RED), solid(GREEN)]), solid(BLUE, 4, 4), None, None, 0, 0)
    assert grid.shape == (1, 3, 8, 24)
    assert torch.allclose(grid[..., 16:], solid(BLUE))  # resized to the first image's size


def test_a_grid_too_small_for_its_images_is_an_input_error():
    with pytest.raises(InputError) as caught:
        image_grid(solid(RED), solid(GREEN), solid(BLUE), None, 1, 2)
    assert caught.value.input == "rows" and "holds 2 images, got 3" in str(caught.value)
