"""Writing files so that nothing is lost: readers never see half a file, and an existing
file is never replaced unless asked."""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


def counted_names(folder: Path, stem: str, suffix: str) -> Iterator[Path]:
    """`folder/stem.suffix`, then `stem-1.suffix`, `stem-2.suffix`, ...: the names a new file tries."""
    for n in itertools.count():
        yield folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}")


def write_file(data: bytes, names: Iterable[Path], *, overwrite: bool = False) -> Path:
    """Write `data` under the first of `names` that is free, and return that name.

    The bytes go to a temporary file beside the names, which then gets its final name in
    one step that fails if the name exists, so two writers racing for one name never
    overwrite each other. With `overwrite`, the first name is replaced instead. Raises
    FileExistsError when every name is taken.
    """
    names = iter(names)
    first = next(names)
    fd, temporary = tempfile.mkstemp(prefix=f".{first.name[:40]}.", suffix=".tmp", dir=first.parent)
    try:
        os.chmod(temporary, 0o644)  # mkstemp makes it private; outputs are for sharing
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, first)
            return first
        return _publish_first_free(temporary, itertools.chain([first], names))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def move_file(source: Path, names: Iterable[Path]) -> Path:
    """Give the complete file `source` the first of `names` that is free, on the same file system,
    and return that name; as write_file, never over an existing file. `source` is gone after."""
    try:
        return _publish_first_free(str(source), names)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(source)


def _publish_first_free(temporary: str, names: Iterable[Path]) -> Path:
    tried = None
    for path in names:
        tried = tried or path
        if _publish(temporary, path):
            return path
    raise FileExistsError(f"{tried} already exists")


def _publish(temporary: str, path: Path) -> bool:
    """Give the finished temporary file the name `path` unless that name is taken."""
    try:
        os.link(temporary, path)  # atomic, and fails if `path` exists
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system (FAT, some shares): claim the name, then fill it
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return False
        os.replace(temporary, path)
        return True
