"""What a running node sees of the run: its id, the run options, progress and interrupts."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import Interrupted, UsageError
from .types import is_unicode

MAX_IMAGE_PIXELS = 8192 * 8192
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunOptions:
    """Settings of one run that are not part of the graph. A node whose result depends on
    one declares it (`reads_options`), and only that node's key includes it."""

    device: str = "auto"  # auto | cpu | cuda | mps
    output_dir: Path = Path("outputs")  # a str is taken as a Path
    # Larger images are refused before they are decoded: a small file can hold a huge image.
    max_image_pixels: int = MAX_IMAGE_PIXELS
    optimize: bool = True  # run the optimiser's passes (see nodegraph.optimize)
    disable: frozenset[str] = frozenset()  # ... but these
    model_memory: int | None = None  # bytes that loaded models may take; None: what the machine has free

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UsageError(f"device is one of {', '.join(DEVICES)}, got {self.device!r}")
        if not isinstance(self.output_dir, (str, os.PathLike)) or not is_unicode(os.fspath(self.output_dir)) \
                or "\0" in os.fspath(self.output_dir):
            raise UsageError(f"the output folder is a path in valid Unicode, got {self.output_dir!r}")
        for name in ("max_image_pixels", "model_memory"):
            value = getattr(self, name)
            if not (value is None and name == "model_memory") and not (type(value) is int and value > 0):
                raise UsageError(f"{name} is a number of {'pixels' if 'pixels' in name else 'bytes'} above 0, "
                                 f"got {value!r}")
        if type(self.optimize) is not bool or isinstance(self.disable, str):
            raise UsageError("optimize is True or False, and disable a set of pass names")
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "disable", frozenset(self.disable))


@dataclass(frozen=True)
class ItemInfo:
    """Which stream item a node is running for (see `nodegraph.node.StreamItem`)."""

    index: int
    label: str


class NodeContext:
    """Passed to node functions that declare a `ctx` parameter."""

    def __init__(
        self,
        node_id: str,
        options: RunOptions,
        emit: Callable[[dict], None],
        cancelled: threading.Event,
        workflow: Callable[[], str],
        item: ItemInfo | None = None,
        identities: dict[str, str] | None = None,
    ):
        self.node_id = node_id
        self.options = options
        self.item = item
        # node id -> identity of what it reads from outside the graph (its fingerprint)
        self.identities = identities or {}
        self._emit = emit
        self._cancelled = cancelled
        self._workflow = workflow

    @property
    def workflow(self) -> str:
        """The graph as it runs (rewrites applied, random seeds resolved), as graph-file JSON."""
        return self._workflow()

    def check_interrupted(self) -> None:
        """Raise `Interrupted` if the run was cancelled; call it between steps."""
        if self._cancelled.is_set():
            raise Interrupted(self.node_id)

    def progress(self, value: int, max: int, preview: Any = None) -> None:
        """Report step progress, then honour a pending interrupt."""
        event: dict[str, Any] = {"event": "progress", "node": self.node_id, "value": value, "max": max}
        if preview is not None:
            event["preview"] = preview
        if self.item is not None:
            event["item"] = self.item.index
        self._emit(event)
        self.check_interrupted()
