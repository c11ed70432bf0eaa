"""Files a worker wrote for one item, given their final names in the output folder by the driver.

A worker runs each item with an empty staging folder as its output folder, so what it writes
there has the name a writer asks for (Save: `stem.png`), or `stem-1.png` where the item's own
earlier file took that name. The driver then gives each file the first free name in the output
folder, as a local run's writer would have, with the same atomic, never-overwriting writer: so
an item is published once, by one process, after it has finished.
"""

from __future__ import annotations

import itertools
from pathlib import Path, PurePosixPath
from typing import Any

from ..atomic import counted_names, move_file, write_file


def publish(staged: dict[str, bytes | str], folder: Path) -> dict[str, str]:
    """Publish an item's staged files, in the order they were written: staged name (relative to
    the staging folder) -> its bytes (the driver writes them) or its path on storage the driver
    shares (moved). Returns staged name -> the path it got."""
    published: dict[str, str] = {}
    for relative, content in staged.items():
        name = PurePosixPath(relative)
        target = folder / name.parent
        target.mkdir(parents=True, exist_ok=True)
        names = counted_names(target, _asked_stem(name, published), name.suffix)
        path = write_file(content, names) if isinstance(content, bytes) else move_file(Path(content), names)
        published[relative] = str(path)
    return published


def _asked_stem(name: PurePosixPath, earlier: dict[str, str]) -> str:
    """The stem the writer asked for: `name`'s, less a counter `-N` it got because the item's own
    earlier files had taken `stem`, `stem-1`, ... `stem-(N-1)`."""
    base, dash, count = name.stem.rpartition("-")
    if dash and count.isdigit() and int(count) > 0:
        taken = itertools.islice(counted_names(name.parent, base, name.suffix), int(count))
        if all(str(PurePosixPath(path)) in earlier for path in taken):
            return base
    return name.stem


def summary_files(summary: Any) -> list[str]:
    """The files an output node's summary names (Save's {"files": [...]}), if any."""
    files = summary.get("files") if isinstance(summary, dict) else None
    return files if isinstance(files, list) and all(isinstance(f, str) for f in files) else []


def renamed_files(summary: Any, rename) -> Any:
    """An output node's summary ({"files": [...]}) with each file named `rename(file)` instead."""
    if not summary_files(summary):
        return summary
    return {**summary, "files": [rename(f) for f in summary["files"]]}
