"""Image nodes: load images and masks from files and folders, resize, and lay out grids.

Values follow the pack's conventions: an IMAGE is a float32 tensor [B,3,H,W] in [0,1],
a MASK a float32 tensor [B,1,H,W] in [0,1] where 1 means "repaint". Pillow, numpy and
torch are imported inside the functions, so importing this module stays instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import stat
import warnings
from collections import Counter
from pathlib import Path

from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.node import IMAGE_FILE, IMAGE_FOLDER, Input, Output, StreamItem
from nodegraph.registry import node

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
MASK_CHANNELS = ("luminance", "alpha", "red", "green", "blue")
RESIZE_MODES = ("stretch", "fit", "fill")
RESAMPLE_METHODS = ("bicubic", "bilinear", "area", "nearest")
MAX_SIDE = 16384
MAX_PATTERN_LENGTH = 255


# ---- files ---------------------------------------------------------------------------


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: the content identity the cache keys on."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(input_name: str, path: str) -> Path:
    """The path as a regular file that exists, or an InputError saying what is there instead."""
    mode = _mode(input_name, path, "an image file")
    path = os.path.expanduser(path)
    if stat.S_ISDIR(mode):
        raise InputError(input_name, f"{path} is a folder, not an image file", code="file.not_a_file",
                         hint="use LoadImages to read every image in a folder")
    if not stat.S_ISREG(mode):  # a pipe would block a read, a device never end it
        raise InputError(input_name, f"{path} is not a regular file (a device, pipe or socket)",
                         code="file.not_a_file", hint="give the path of an image file")
    return Path(path)


def check_folder(input_name: str, path: str) -> Path:
    if not stat.S_ISDIR(_mode(input_name, path, "a folder", missing="folder.not_found")):
        raise InputError(input_name, f"{path} is a file, not a folder", code="folder.not_found",
                         hint="give the folder that holds the images; LoadImage reads a single file")
    return Path(path).expanduser()


def _mode(input_name: str, path: str, what: str, missing: str = "file.not_found") -> int:
    """The file mode of `path`, or an InputError (code `missing` if nothing is there) if there is
    nothing readable there."""
    if not path:
        raise InputError(input_name, f"no path given: expected {what}", code=missing, hint=f"give the path of {what}")
    try:
        return os.stat(os.path.expanduser(path)).st_mode
    except FileNotFoundError:
        raise InputError(input_name, f"{path} does not exist", code=missing,
                         hint=f"relative paths are read from the current directory ({os.getcwd()})") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL character in the path
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(input_name, f"cannot read {path[:200]}: {reason}", code="file.unreadable",
                         hint=f"give the path of {what}") from None


def read_image(input_name: str, path: str | os.PathLike, max_pixels: int):
    """Decode an image file into a loaded PIL image, EXIF orientation applied. Images larger than
    `max_pixels` are refused from their header, before their pixels are decoded."""
    from PIL import Image, ImageOps

    file = check_file(input_name, str(path))
    try:
        with _pillow_checks_off(), Image.open(file) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise _too_large(input_name, path, f"{width}x{height} pixels ({width * height / 1e6:.0f} megapixels)",
                                 max_pixels)
            opened.load()
            return ImageOps.exif_transpose(opened)
    except InputError:
        raise
    except PermissionError:
        raise InputError(input_name, f"cannot read {path}: permission denied", code="file.unreadable") from None
    except Exception as error:  # pillow's decoders raise many types (SyntaxError, ValueError, ...)
        raise _unreadable(input_name, path, error) from None


def _too_large(input_name: str, path, size: str, max_pixels: int) -> InputError:
    return InputError(input_name, f"{path} is {size}, more than the {max_pixels / 1e6:.1f} megapixels a run may "
                      "decode", code="image.too_large", hint="shrink the image, or raise the limit "
                      "(--max-image-pixels, RunOptions.max_image_pixels) if you trust the file")


@contextlib.contextmanager
def _pillow_checks_off():
    """Pillow's own decompression-bomb check, and its warning, off while opening: ours follows at once,
    from the header, at the run's limit (Pillow's default would refuse what the user allowed)."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def _unreadable(input_name: str, path, error: Exception) -> InputError:
    return InputError(input_name, f"{path} is not a readable image: {error}", code="image.unreadable",
                      hint="re-export the file as PNG or JPEG, or remove it")


def _path_exists(view, input_name: str) -> dict:
    """infer hook: report a missing file, or one that is no image, at validation time, before anything
    runs (only its header is read)."""
    path = view.value(input_name)
    if path is not None:
        file = check_file(input_name, path)
        from PIL import Image, UnidentifiedImageError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                Image.open(file).close()
        except Image.DecompressionBombError:
            pass  # refused, against the run's pixel limit, when the node runs
        except (OSError, UnidentifiedImageError) as error:
            raise _unreadable(input_name, path, error) from None
    return {}


def _literal_file_hash(literals: dict, input_name: str) -> str | None:
    """fingerprint: the file's content hash; None (unknown until it runs) for a path from a link."""
    path = literals.get(input_name)
    return None if path is None else file_hash(check_file(input_name, path))


# ---- PIL <-> tensor --------------------------------------------------------------------


def pil_to_image(picture):
    """A PIL image as an IMAGE tensor [1,3,H,W]; 16-bit grayscale keeps its full range."""
    import numpy as np
    import torch

    if picture.mode.startswith("I"):
        gray = np.asarray(picture, dtype=np.float32) / 65535.0
        pixels = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).clamp(0, 1).contiguous()


def pil_to_mask(picture, channel: str):
    """One channel of a PIL image as a MASK [1,1,H,W]. For "alpha", transparent means repaint
    (as in ComfyUI); for the others, white means repaint (as in diffusers' mask_image)."""
    import numpy as np
    import torch

    if channel == "alpha":
        alpha = _alpha(picture)
        values = np.zeros(picture.size[::-1], np.float32) if alpha is None else 1.0 - alpha
    elif channel == "luminance":
        values = np.asarray(picture.convert("L"), dtype=np.float32) / 255.0
    else:
        values = np.asarray(picture.convert("RGB").getchannel(channel[0].upper()), dtype=np.float32) / 255.0
    return torch.from_numpy(values)[None, None]


def _alpha(picture):
    """The alpha channel in [0,1] as a numpy array, or None if the image has no transparency."""
    import numpy as np

    if "A" not in picture.getbands() and "transparency" not in picture.info:  # palette images keep it in info
        return None
    return np.asarray(picture.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0


def image_to_pils(image) -> list:
    """An IMAGE tensor as a list of 8-bit RGB PIL images, rounded as diffusers rounds."""
    from PIL import Image

    import torch

    pixels = (image.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return [Image.fromarray(one.numpy(), "RGB") for one in pixels]


# ---- loading -----------------------------------------------------------------------------


@node(
    "LoadImage",
    category="image",
    inputs={"path": Input(T.STRING, "Image file to load (PNG, JPEG, WebP, ...)", path=IMAGE_FILE)},
    outputs={
        "image": Output(T.IMAGE, "The image, EXIF orientation applied"),
        "mask": Output(T.MASK, "From the alpha channel: transparent = 1 = repaint; all zeros without alpha"),
    },
    infer=lambda view: _path_exists(view, "path"),
    fingerprint=lambda literals: _literal_file_hash(literals, "path"),
)
def load_image(path, ctx):
    """Load an image file; its alpha channel, if any, becomes the mask."""
    picture = read_image("path", path, ctx.options.max_image_pixels)
    return pil_to_image(picture), pil_to_mask(picture, "alpha")


@node(
    "LoadMask",
    category="image",
    inputs={
        "path": Input(T.STRING, "Image file holding the mask", path=IMAGE_FILE),
        "channel": Input(T.Choice(*MASK_CHANNELS), "Which channel is the mask: white (or transparent, "
                         "for alpha) = repaint", default="luminance"),
        "invert": Input(T.BOOL, "Swap what is repainted and what is kept", default=False),
    },
    outputs={"mask": Output(T.MASK, "1 = repaint, 0 = keep")},
    infer=lambda view: _path_exists(view, "path"),
    fingerprint=lambda literals: _literal_file_hash(literals, "path"),
)
def load_mask(path, channel, invert, ctx):
    """Load a mask from one channel of an image file."""
    mask = pil_to_mask(read_image("path", path, ctx.options.max_image_pixels), channel)
    return 1.0 - mask if invert else mask


def _check_folder_and_pattern(view) -> dict:
    folder, pattern = view.value("folder"), view.value("pattern")
    if folder is not None:
        check_folder("folder", folder)
    if pattern is not None:
        check_pattern(pattern)
    return {}


def check_pattern(pattern: str) -> None:
    """A glob pattern must name files inside the folder: no absolute path, no way up."""
    if not pattern:
        raise InputError("pattern", "expected a glob pattern such as *.png, got an empty one", code="pattern.invalid",
                         hint="use * to read every image")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise InputError("pattern", f"expected a glob pattern of at most {MAX_PATTERN_LENGTH} characters, got "
                         f"{len(pattern)}", code="pattern.invalid", hint="use a shorter pattern, such as *.png")
    parts = pattern.replace("\\", "/").split("/")
    if pattern.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", pattern) or ".." in parts:
        raise InputError("pattern", f"the pattern {pattern!r} leads outside the folder", code="pattern.outside_folder",
                         hint="set `folder` to the folder to read, and `pattern` to file names in it, e.g. *.png")


def _folder_listing(literals: dict) -> str | None:
    """fingerprint: names, sizes and modification times, so added or changed files re-run."""
    folder = literals.get("folder")
    if folder is None:
        return None
    root = check_folder("folder", folder)
    digest = hashlib.sha256()
    for file in image_files(root, literals.get("pattern", "*"), literals.get("recursive", False)):
        status = file.stat()  # ctime too: rewriting a file changes it even where the mtime is set back
        digest.update(os.fsencode(file.relative_to(root))
                      + f"\0{status.st_size}\0{status.st_mtime_ns}\0{status.st_ctime_ns}\n".encode())
    return digest.hexdigest()


@node(
    "LoadImages",
    category="image",
    inputs={
        "folder": Input(T.STRING, "Folder of images", path=IMAGE_FOLDER),
        "pattern": Input(T.STRING, "Glob pattern of the file names to read, e.g. *.png; it stays inside the folder",
                         default="*"),
        "recursive": Input(T.BOOL, "Also read the folder's subfolders", default=False),
    },
    outputs={"image": Output(T.IMAGE, "One image at a time, in sorted file-name order", stream=True)},
    infer=_check_folder_and_pattern,
    fingerprint=_folder_listing,
)
def load_images(folder, pattern, recursive, ctx):
    """Stream every image of a folder: what follows runs once per image, and an
    unreadable file fails only its own item."""
    files = image_files(check_folder("folder", folder), pattern, recursive)
    if not files:
        raise InputError("folder", f"no image files match {pattern!r} in {folder}", code="folder.empty",
                         hint="image files end in " + ", ".join(sorted(IMAGE_SUFFIXES)))
    labels = item_labels(Path(folder), files)
    return (_stream_item(file, label, ctx.options.max_image_pixels) for file, label in zip(files, labels))


@node(
    "ItemName",
    category="image",
    inputs={"image": Input(T.IMAGE, "An image of a stream (e.g. from LoadImages)", identity_only=True)},
    outputs={"name": Output(T.STRING, "Its name: the file name without extension; empty outside a stream")},
)
def item_name(image, ctx):
    """The name of the stream item an image belongs to, to vary choices per image (PickString.vary_with)."""
    return ctx.item.label if ctx.item is not None else ""


def image_files(folder: Path, pattern: str, recursive: bool) -> list[Path]:
    """Image files (by suffix) matching the pattern, sorted by their path within the folder."""
    check_pattern(pattern)
    try:
        matches = list(folder.rglob(pattern) if recursive else folder.glob(pattern))
    except (OSError, ValueError, NotImplementedError, IndexError) as error:
        raise InputError("pattern", f"cannot list {pattern!r} in {folder}: {error or 'not a file pattern'}",
                         code="pattern.invalid", hint="use a plain glob pattern such as *.png") from None
    inside = os.path.realpath(folder)
    # A link in the folder may lead anywhere: only what really lies inside the folder is read.
    files = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
             and os.path.commonpath([inside, os.path.realpath(p)]) == inside]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def item_labels(folder: Path, files: list[Path]) -> list[str]:
    """One distinct, printable label per file: its path in the folder without the extension
    (`cat`, `sub-cat`), with it where two files would share a label (`cat.png`, `cat.jpg`)."""
    relative = [file.relative_to(folder) for file in files]
    stems = [_printable("-".join(path.with_suffix("").parts)) for path in relative]
    shared = {stem for stem, count in Counter(stems).items() if count > 1}
    labels = [_printable("-".join(path.parts)) if stem in shared else stem for stem, path in zip(stems, relative)]
    seen: Counter = Counter()  # names that differ only in bytes that are not UTF-8
    for index, label in enumerate(labels):
        seen[label] += 1
        if seen[label] > 1:
            labels[index] = f"{label}~{seen[label]}"
    return labels


def _printable(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _stream_item(file: Path, label: str, max_pixels: int) -> StreamItem:
    try:
        content = file_hash(file)
    except OSError as error:  # the item fails when loaded; the listing goes on
        content = f"unreadable:{error.strerror}"
    # The label is part of the key so that two files with the same contents are still two
    # items, each with its own outputs (a cache hit would skip the second one's Save).
    return StreamItem(key=f"{content}:{label}", label=label,
                      load=lambda: pil_to_image(read_image("folder", file, max_pixels)))


# ---- resizing ----------------------------------------------------------------------------


def _resize_inputs(value_type: T.Type, what: str, resample_default: str) -> dict[str, Input]:
    return {
        what: Input(value_type, f"The {what} batch to resize"),
        "width": Input(T.INT, "Target width in pixels; 0 keeps the aspect ratio", default=0, min=0, max=MAX_SIDE),
        "height": Input(T.INT, "Target height in pixels; 0 keeps the aspect ratio", default=0, min=0, max=MAX_SIDE),
        "mode": Input(T.Choice(*RESIZE_MODES), "stretch to the size, fit inside it keeping the aspect ratio, "
                      "or fill it keeping the aspect ratio and crop the overflow (centred)", default="stretch"),
        "resample": Input(T.Choice(*RESAMPLE_METHODS), "Interpolation method", default=resample_default),
        "size_of": Input(T.IMAGE, "Take width and height from this image instead", optional=True),
    }


@node("Resize", category="image", inputs=_resize_inputs(T.IMAGE, "image", "bicubic"),
      outputs={"image": Output(T.IMAGE, "The resized images")})
def resize(image, width, height, mode, resample, size_of):
    """Resize images to a width and height (or to another image's size)."""
    return resize_tensor(image, *_target(width, height, size_of), mode, resample)


@node("ResizeMask", category="image", inputs=_resize_inputs(T.MASK, "mask", "nearest"),
      outputs={"mask": Output(T.MASK, "The resized masks")})
def resize_mask(mask, width, height, mode, resample, size_of):
    """Resize masks to a width and height, e.g. to the size of the image they paint over."""
    return resize_tensor(mask, *_target(width, height, size_of), mode, resample)


def _target(width: int, height: int, size_of) -> tuple[int, int]:
    if size_of is None:
        return width, height
    return size_of.shape[-1], size_of.shape[-2]


def resize_tensor(pixels, width: int, height: int, mode: str, resample: str):
    """Resize a [B,C,H,W] tensor: see the Resize node for what the modes do."""
    import torch.nn.functional as F

    old_height, old_width = pixels.shape[-2:]
    scaled_height, scaled_width = scaled_size(old_width, old_height, width, height, mode)
    if (scaled_height, scaled_width) != (old_height, old_width):
        antialias = resample in ("bilinear", "bicubic")
        method = "nearest-exact" if resample == "nearest" else resample
        pixels = F.interpolate(pixels, size=(scaled_height, scaled_width), mode=method,
                               antialias=antialias).clamp(0, 1)  # bicubic overshoots
    if mode == "fill" and width and height:
        top, left = (scaled_height - height) // 2, (scaled_width - width) // 2
        pixels = pixels[..., top: top + height, left: left + width]
    return pixels.contiguous()


def scaled_size(old_width: int, old_height: int, width: int, height: int, mode: str) -> tuple[int, int]:
    """(height, width) to scale to, before a "fill" crop."""
    if not width and not height:
        return old_height, old_width
    if not width or not height:  # one side given: keep the aspect ratio
        scale = width / old_width if width else height / old_height
    elif mode == "stretch":
        return height, width
    elif mode == "fit":
        scale = min(width / old_width, height / old_height)
    else:  # fill
        scale = max(width / old_width, height / old_height)
    return max(1, round(old_height * scale)), max(1, round(old_width * scale))


# ---- grids -----------------------------------------------------------------------------------


@node(
    "ImageGrid",
    category="image",
    inputs={
        "image1": Input(T.IMAGE, "First image (batch); every image is resized to its size"),
        "image2": Input(T.IMAGE, "More images", optional=True),
        "image3": Input(T.IMAGE, "More images", optional=True),
        "image4": Input(T.IMAGE, "More images", optional=True),
        "rows": Input(T.INT, "Rows; 0 = as many as needed", default=0, min=0, max=64),
        "cols": Input(T.INT, "Columns; 0 = as many as needed (one row if rows is 0 too)", default=0, min=0, max=64),
    },
    outputs={"image": Output(T.IMAGE, "One image: the inputs side by side, row by row")},
)
def image_grid(image1, image2, image3, image4, rows, cols):
    """Lay images out in a grid, like diffusers.utils.make_image_grid."""
    import torch

    images = [one for batch in (image1, image2, image3, image4) if batch is not None for one in batch]
    rows, cols = grid_shape(len(images), rows, cols)
    channels, height, width = images[0].shape
    grid = torch.zeros(channels, rows * height, cols * width, dtype=images[0].dtype)
    for index, picture in enumerate(images):
        if picture.shape[-2:] != (height, width):
            picture = resize_tensor(picture[None], width, height, "stretch", "bicubic")[0]
        row, col = divmod(index, cols)
        grid[:, row * height: (row + 1) * height, col * width: (col + 1) * width] = picture
    return grid[None]


def grid_shape(count: int, rows: int, cols: int) -> tuple[int, int]:
    """(rows, cols) of a grid of `count` images, filling in the sides given as 0."""
    if not rows and not cols:
        rows, cols = 1, count
    elif not cols:
        cols = math.ceil(count / rows)
    elif not rows:
        rows = math.ceil(count / cols)
    if rows * cols < count:
        raise InputError("rows", f"a {rows}x{cols} grid holds {rows * cols} images, got {count}",
                         code="grid.too_small", hint="raise rows or cols, or set one of them to 0")
    return rows, cols
