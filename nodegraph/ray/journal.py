"""The run journal: a file in the output folder with one line per finished item, so that a
resumed run (`--resume`) does only what is missing.

An item is known by a key made of its content (the stream item's identity: an image's hash
and name) and the graph it ran in (random seeds resolved, and the outputs asked for). The
journal also records the seeds each run drew, so a resumed run draws none: it uses those of
the run it resumes, and its items get the same keys.

    {"run": "<id>", "graph": "<digest of the graph as given>", "seeds": {"node": {"seed": 7}}}
    {"item": "<key>", "label": "cat", "outputs": {"save": {"files": ["cat_....png"], "bytes": [5120]}}}

Lines are appended and flushed to disk one at a time; a line cut short by a crash is skipped.
File paths are relative to the output folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .. import fileformat
from ..graph import Graph
from .publish import renamed_files, summary_files

JOURNAL_NAME = "nodegraph-journal.jsonl"


def graph_digest(graph: Graph, outputs: list[str] | None) -> str:
    """Identity of a graph (as its file) and of the outputs asked of it."""
    return hashlib.sha256(f"{fileformat.dumps(graph)}\n{json.dumps(outputs)}".encode()).hexdigest()


def item_key(run_digest: str, content: str) -> str:
    """The journal key of one item (its stream identity, or "" for the part outside streams)."""
    return hashlib.sha256(f"{run_digest}\n{content}".encode()).hexdigest()


class Journal:
    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / JOURNAL_NAME

    def seeds_of(self, digest: str) -> dict[str, dict[str, int]] | None:
        """The seeds the last run of the graph with this digest drew, if a run of it is recorded."""
        runs = [line for line in self._lines() if line.get("graph") == digest and isinstance(line.get("seeds"), dict)]
        return runs[-1]["seeds"] if runs else None

    def finished(self) -> dict[str, dict[str, Any]]:
        """Item key -> its outputs (file paths absolute), for the items whose files are all still there."""
        found = {}
        for line in self._lines():
            outputs = line.get("outputs")
            if isinstance(line.get("item"), str) and isinstance(outputs, dict):
                absolute = {target: renamed_files(summary, lambda f: str(self.folder / f)) for target, summary in outputs.items()}
                if all(os.path.isfile(f) for summary in absolute.values() for f in summary_files(summary)):
                    found[line["item"]] = absolute
        return found

    def start(self, run_id: str, digest: str, seeds: dict[str, dict[str, int]]) -> None:
        self._append({"run": run_id, "graph": digest, "seeds": seeds})

    def finish(self, key: str, label: str, outputs: dict[str, Any]) -> None:
        relative = {target: renamed_files(summary, lambda f: os.path.relpath(f, self.folder)) for target, summary in outputs.items()}
        self._append({"item": key, "label": label, "outputs": relative})

    def _append(self, line: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(line, default=str) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def _lines(self) -> list[dict]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines = []
        for row in text.splitlines():
            try:
                line = json.loads(row)
            except ValueError:
                continue  # cut short by a crash
            if isinstance(line, dict):
                lines.append(line)
        return lines
