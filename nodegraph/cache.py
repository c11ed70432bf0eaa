"""The result cache: node outputs by Merkle key, least recently used first out, within a byte budget."""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()


def sizeof(value: Any) -> int:
    """Bytes a value holds, without importing torch, numpy or PIL.

    Values may say it themselves with an `nbytes` attribute (numpy arrays do; handles
    to weights owned elsewhere say 0).
    """
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if hasattr(value, "element_size") and hasattr(value, "nelement"):  # a torch tensor
        return value.element_size() * value.nelement()
    if hasattr(value, "getbands") and hasattr(value, "size"):  # a PIL image
        width, height = value.size
        return width * height * len(value.getbands())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(sizeof(item) for item in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(item) for item in value.values())
    return sys.getsizeof(value)


class ResultCache:
    """Node results by key. A result larger than the whole budget is not kept."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> Any:
        """The cached value (now most recently used), or MISSING."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, value: Any) -> None:
        size = sizeof(value)
        if key in self._entries:
            self.used_bytes -= self._entries.pop(key)[1]
        if size > self.budget_bytes:
            return
        self._entries[key] = (value, size)
        self.used_bytes += size
        while self.used_bytes > self.budget_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.used_bytes -= evicted

    def clear(self) -> None:
        self._entries.clear()
        self.used_bytes = 0
