"""Events: what a run reports as it goes, as typed records. The CLI's progress bars, a Python
callback and the server's websocket all read these.

Every event names the run it belongs to (`run_id`), and the node (and stream item) it is about.
As JSON (`to_json`), the kind is the "event" field: {"event": "node_start", ...}.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, tag_field="event", kw_only=True, frozen=True):
    run_id: str
    node: str | None = None
    item: int | None = None  # which item of a stream, for nodes run per item
    label: str | None = None  # that item's name

    @property
    def kind(self) -> str:
        """"run_start", "node_start", "node_cached", "progress", "node_done", "error", "interrupted", "run_done"."""
        return self.__struct_config__.tag


class RunStart(Event, tag="run_start", frozen=True):
    targets: list[str]


class NodeStart(Event, tag="node_start", frozen=True):
    type: str


class NodeCached(Event, tag="node_cached", frozen=True):
    pass


class Progress(Event, tag="progress", frozen=True):
    value: int
    max: int
    # Where the node gives one: a function returning the image so far as a small RGB PIL image,
    # made cheaply (a projection of the latent, not a VAE decode); call it only to show it.
    preview: Any = None


class NodeDone(Event, tag="node_done", frozen=True):
    duration: float
    result: Any = None  # what an output node returned (Save: the files it wrote); None for other nodes


class NodeFailed(Event, tag="error", frozen=True):
    input: str | None
    message: str
    hint: str | None


class RunInterrupted(Event, tag="interrupted", frozen=True):
    pass


class RunDone(Event, tag="run_done", frozen=True):
    duration: float
    executed: int
    cached: int
    failed: int



def to_json(event: Event) -> bytes:
    """The event as JSON: a preview is left out (it is a function, shown on request), and values
    JSON has no type for (paths) are written as text."""
    return msgspec.json.encode(event, enc_hook=_as_text)


def _as_text(value: Any) -> str | None:
    return None if callable(value) else str(value)
