"""List nodes: pick one string (a prompt, a model id) out of several, by index or at random.

A random pick is seeded: the engine resolves a "random" seed to a number when the
run starts and records it in the saved graph, so the same pick can be made again. The
pick is option number N mod the number of options, where N is the first 8 bytes, big-endian,
of SHA-256("nodegraph.PickString:<seed>") (or "...:<seed>:<vary_with>" with vary_with set).
"""

from __future__ import annotations

import hashlib

from nodegraph import types as T
from nodegraph.errors import InputError
from nodegraph.node import Input, Output
from nodegraph.registry import node

PICK_MODES = ("index", "random")


def split_options(options: str) -> list[str]:
    """One option per line; blank lines and surrounding spaces are ignored."""
    return [line.strip() for line in options.splitlines() if line.strip()]


def pick(options: str, mode: str, index: int, seed: int, vary_with: str | None = None) -> str:
    """The chosen option; raises InputError if there is none to choose."""
    choices = split_options(options)
    if not choices:
        raise InputError("options", "expected at least one option (one per line), got none", code="options.empty")
    if mode == "random":
        return choices[seeded_index(seed, len(choices), vary_with)]
    if index >= len(choices):
        raise InputError("index", f"index {index} is out of range: there are {len(choices)} options "
                         f"(0 to {len(choices) - 1})", code="value.out_of_range")
    return choices[index]


def seeded_index(seed: int, count: int, vary_with: str | None = None) -> int:
    # A hash, not the random module, so the pick is the same on every Python version.
    salt = "" if vary_with is None else f":{vary_with}"
    digest = hashlib.sha256(f"nodegraph.PickString:{seed}{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def _check_literals(view) -> dict:
    """infer hook: catch an empty list or a bad index at validation time, when they are literals."""
    options, mode, index = view.value("options"), view.value("mode"), view.value("index")
    if options is not None and mode is not None and (mode == "random" or index is not None):
        pick(options, mode, index or 0, 0)
    return {}


@node(
    "PickString",
    category="lists",
    inputs={
        "options": Input(T.STRING, "The options, one per line (prompts, model ids, ...)"),
        "mode": Input(T.Choice(*PICK_MODES), "Take the option at `index`, or one at random", default="index"),
        "index": Input(T.INT, "Which option (0 = the first line) in index mode", default=0, min=0),
        "seed": Input(T.SEED, "Seed of the random pick; \"random\" is drawn and recorded when the run starts",
                      default=0),
        "vary_with": Input(T.STRING, "Pick anew for each value of this (e.g. each image of a folder, "
                                     "from ItemName); the same value always gets the same pick", optional=True),
    },
    outputs={"value": Output(T.STRING, "The chosen option")},
    infer=_check_literals,
)
def pick_string(options, mode, index, seed, vary_with):
    """Pick one line of a list: by index, or at random with a recorded seed."""
    return pick(options, mode, index, seed, vary_with)
