"""What a pass did, as `nodegraph explain` shows it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rewrite:
    pass_name: str
    nodes: tuple[str, ...]  # the user's node ids it concerns
    note: str
    changes_results: bool = False  # True where results differ a little, on purpose (decode_encode)
    into: str | None = None  # for merges: the node the others became

    def __str__(self) -> str:
        return f"{self.pass_name}: {self.note}" + (" (changes results slightly, on purpose)" if self.changes_results
                                                     else "")

    def to_json(self) -> dict:
        return {"pass": self.pass_name, "nodes": list(self.nodes), "note": self.note,
                "changes_results": self.changes_results, "into": self.into}
