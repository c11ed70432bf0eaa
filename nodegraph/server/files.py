"""Files the server reads and writes, each confined to one of its folders.

A name from a request (`..`, an absolute path, a link that leads out, an encoded separator
decoded by the router, a NUL) resolves inside its folder or is refused: `inside` is the one
gate every route that takes a name goes through. Uploads are decoded, within a pixel limit,
before they are kept; writes are atomic and never replace a file unless asked.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ..atomic import write_file
from .replies import refusal

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
MAX_LISTED = 5000  # files listed per folder, for a widget or the editor's sidebar
MIME_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
              ".bmp": "image/bmp", ".gif": "image/gif", ".json": "application/json"}


def inside(root: Path, *parts: str) -> Path:
    """`root/parts...` (each a '/'-separated relative path, or empty) with links followed, if that
    stays inside `root`; else a 403 refusal."""
    for part in parts:
        if not isinstance(part, str) or "\0" in part or "\\" in part or PurePosixPath(part).is_absolute():
            raise _outside(parts)
    root = root.resolve()
    path = root.joinpath(*(p for p in parts if p)).resolve()
    if path != root and not path.is_relative_to(root):
        raise _outside(parts)
    return path


def _outside(parts) -> Exception:
    shown = "/".join(str(p) for p in parts)[:200]
    return refusal(403, "path_outside", f"{shown!r} leads outside the server's folders",
                   "give a name inside the folder, without '..', a leading '/' or a link that leads out")


def relative_name(root: Path, path: Path) -> tuple[str, str] | None:
    """(subfolder, file name) of `path` inside `root`, as /view takes them; None if it is not inside."""
    try:
        relative = Path(path).resolve().relative_to(root.resolve())
    except ValueError:
        return None
    parent = relative.parent.as_posix()
    return ("" if parent == "." else parent), relative.name


def listing(root: Path, suffixes: frozenset[str] | None = None, folders: bool = False) -> list[str]:
    """Files (with one of `suffixes`), or folders, under `root`, as sorted '/'-separated relative
    names; hidden names and links that lead out are left out."""
    found: list[str] = []
    if not root.is_dir():
        return found
    resolved_root = root.resolve()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        base = Path(folder)
        names = subfolders if folders else [f for f in files if suffixes is None or Path(f).suffix.lower() in suffixes]
        for name in sorted(names):
            if name.startswith(".") or not (base / name).resolve().is_relative_to(resolved_root):
                continue
            found.append((base / name).relative_to(root).as_posix())
            if len(found) >= MAX_LISTED:
                return found
    return found


def annotated(name: str) -> tuple[str, str | None]:
    """ComfyUI's "name.png [output]" as ("name.png", "output"); a plain name as (name, None)."""
    for kind in ("input", "output", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, None


# ---- uploads -------------------------------------------------------------------------------------


def check_image(data: bytes, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an uploaded image, decoded to be sure it is one; larger images than
    `max_pixels` are refused from their header, before their pixels are decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise _too_large(width, height, max_pixels)
            image.load()
            return width, height
    except Image.DecompressionBombError:  # larger still than Pillow's own limit
        raise _too_large(0, 0, max_pixels) from None
    except Exception as error:
        if getattr(error, "status", None):
            raise
        raise refusal(400, "image_unreadable", f"the upload is not a readable image: {error}",
                      "upload a PNG, JPEG or WebP file") from None


def _too_large(width: int, height: int, max_pixels: int) -> Exception:
    size = f"{width}x{height} pixels" if width else "larger than the decoder allows"
    return refusal(413, "image_too_large", f"the image is {size}, more than the {max_pixels / 1e6:.1f} megapixels "
                   "the server decodes", "shrink the image, or start the server with a higher --max-image-pixels")


def upload_name(filename: str | None) -> str:
    """The file name an upload is kept under: the last part of what the client sent."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if not name or name.startswith(".") or "\0" in name or len(name.encode()) > 200:
        raise refusal(400, "bad_filename", f"{str(filename)[:100]!r} is not a file name an upload can have",
                      "name the file, e.g. photo.png (no leading dot, at most 200 bytes)")
    return name


def keep(data: bytes, folder: Path, name: str, overwrite: bool) -> Path:
    """Write `data` as `folder/name`, atomically; if taken (and not `overwrite`), as "name (1).png", ..."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = os.path.splitext(name)
    names = [folder / name, *(folder / f"{stem} ({n}){suffix}" for n in range(1, 1000))]
    try:
        return write_file(data, iter(names), overwrite=overwrite)
    except FileExistsError:
        raise refusal(409, "file_exists", f"{name} and 999 variants of it exist already",
                      "delete some files, or upload under another name") from None


def composite_mask(original: Path, mask_data: bytes, max_pixels: int) -> bytes:
    """The original image with the mask's alpha as its own (ComfyUI's /upload/mask), as PNG bytes."""
    from PIL import Image

    check_image(mask_data, max_pixels)
    check_image(original.read_bytes(), max_pixels)
    with Image.open(original) as image, Image.open(io.BytesIO(mask_data)) as mask:
        combined = image.convert("RGBA")
        alpha = mask.convert("RGBA").getchannel("A").resize(combined.size)
        combined.putalpha(alpha)
        buffer = io.BytesIO()
        combined.save(buffer, format="PNG")
        return buffer.getvalue()


# ---- the editor's user files ---------------------------------------------------------------------


class UserFiles:
    """Settings and saved workflows, under one user folder (single-user, as ComfyUI's default user)."""

    def __init__(self, user_dir: Path, seeded: dict[str, Any]):
        self.root = user_dir / "default"
        self.seeded = seeded  # settings that hold until the user changes them

    def settings(self) -> dict[str, Any]:
        return {**self.seeded, **self._stored_settings()}

    def set_settings(self, values: dict[str, Any]) -> None:
        data = json.dumps({**self._stored_settings(), **values}, indent=2).encode()
        self.root.mkdir(parents=True, exist_ok=True)
        write_file(data, [self.root / "comfy.settings.json"], overwrite=True)

    def _stored_settings(self) -> dict[str, Any]:
        try:
            stored = json.loads((self.root / "comfy.settings.json").read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def path(self, name: str) -> Path:
        path = inside(self.root, name)
        if path == self.root.resolve():
            raise refusal(400, "bad_filename", "name a file inside the user folder", "e.g. workflows/my flow.json")
        return path

    def list(self, folder: str, full_info: bool) -> list:
        root = inside(self.root, folder.rstrip("/"))
        if not root.is_dir():
            raise refusal(404, "not_found", f"no folder {folder!r}", "")
        names = listing(root)
        if not full_info:
            return names
        entries = []
        for name in names:
            info = (root / name).stat()
            entries.append({"path": name, "size": info.st_size, "modified": info.st_mtime, "created": info.st_ctime})
        return entries

    def write(self, name: str, data: bytes, overwrite: bool) -> dict:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_file(data, [path], overwrite=overwrite)
        except FileExistsError:
            raise refusal(409, "file_exists", f"{name} exists", "save under another name, or overwrite it") from None
        return self.info(name)

    def info(self, name: str) -> dict:
        stat = self.path(name).stat()
        return {"path": name, "size": stat.st_size, "modified": stat.st_mtime}

    def move(self, source: str, destination: str, overwrite: bool) -> dict:
        origin, target = self.path(source), self.path(destination)
        if not origin.is_file():
            raise refusal(404, "not_found", f"no file {source!r}", "")
        if target.exists() and not overwrite:
            raise refusal(409, "file_exists", f"{destination} exists", "choose another name, or overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(origin, target)
        return self.info(destination)
