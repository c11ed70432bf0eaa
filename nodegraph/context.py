"""What a running node sees of the run: its id, the run options, progress and interrupts."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
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
    # Whether a node may unpickle a file it was told to trust (LoadModel's allow_pickle); a server
    # says no, since unpickling runs whatever code the file holds.
    unpickle: bool = True

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UsageError(f"device is one of {', '.join(DEVICES)}, got {self.device!r}")
        if not isinstance(self.output_dir, (str, os.PathLike)) or not is_unicode(os.fspath(self.output_dir)) \
                or "\0" in os.fspath(self.output_dir):
            raise UsageError(f"the output folder is a path in valid Unicode, got {self.output_dir!r}")
        for name in ("max_image_pixels", "model_memory"):
            value = getattr(self, name)
            if not (value is None and name == "model_memory") and not (type(value) is int and value > 0):
                raise UsageError(f"{name} is a whole number of {'pixels' if 'pixels' in name else 'bytes'} above "
                                 f"0, e.g. {name}=6_000_000_000, got {value!r}")
        if type(self.unpickle) is not bool:
            raise UsageError(f"unpickle is True or False, got {self.unpickle!r}")
        if type(self.optimize) is not bool or not isinstance(self.disable, (set, frozenset, list, tuple)) or \
                not all(isinstance(name, str) for name in self.disable):
            raise UsageError(f"optimize is True or False, and disable a set of pass names, e.g. "
                             f"disable={{'decode_encode'}}; got optimize={self.optimize!r}, disable={self.disable!r}")
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        object.__setattr__(self, "disable", frozenset(self.disable))


@dataclass(frozen=True)
class ItemInfo:
    """Which stream item a node is running for (see `nodegraph.node.StreamItem`)."""

    index: int
    label: str


@dataclass
class RunState:
    """What one run shares with every node it runs (see NodeContext)."""

    options: RunOptions = field(default_factory=RunOptions)
    run_id: str = ""
    emit: Callable[[Any], None] = lambda event: None  # takes nodegraph.events records
    cancelled: threading.Event = field(default_factory=threading.Event)
    workflow: Callable[[], str] = lambda: ""  # the graph as it runs, as graph-file JSON
    identities: dict[str, str | None] = field(default_factory=dict)  # node -> what it read from outside
    # (node id, input name, item) -> the value that input had in this run: a literal, or a plain
    # value (a string, a number) its producer gave; None where the run does not know it
    input_value: Callable[[str, str, ItemInfo | None], Any] = lambda node, name, item: None


class NodeContext:
    """Passed to node functions that declare a `ctx` parameter."""

    def __init__(self, node_id: str, run: RunState, item: ItemInfo | None = None):
        self.node_id = node_id
        self.item = item
        self._run = run

    @property
    def options(self) -> RunOptions:
        return self._run.options

    @property
    def run_id(self) -> str:
        return self._run.run_id

    @property
    def workflow(self) -> str:
        """The graph as it runs (as the user wrote it, random seeds resolved), as graph-file JSON."""
        return self._run.workflow()

    @property
    def identities(self) -> dict[str, str | None]:
        """node id -> identity of what it reads from outside the graph (its fingerprint)."""
        return self._run.identities

    def input_value(self, node_id: str, name: str) -> Any:
        """The value input `name` of node `node_id` had in this run (for this item): its literal, or
        the plain value (a string, a number) its producer gave; None where that is not known."""
        return self._run.input_value(node_id, name, self.item)

    def check_interrupted(self) -> None:
        """Raise `Interrupted` if the run was cancelled; call it between steps."""
        if self._run.cancelled.is_set():
            raise Interrupted(self.node_id)

    def progress(self, value: int, max: int, preview: Any = None) -> None:
        """Report step progress, then honour a pending interrupt."""
        from .events import Progress

        item = {"item": self.item.index, "label": self.item.label} if self.item is not None else {}
        self._run.emit(Progress(run_id=self._run.run_id, node=self.node_id, value=value, max=max, preview=preview,
                                **item))
        self.check_interrupted()
