"""Errors are data: every problem names its node and input, a stable code, and a hint.

A node's failure pickles as that data (its cause as the cause's text), so it crosses a process
boundary, such as from a Ray worker to the driver, whatever the cause was.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph, as validation reports it."""

    node: str | None
    input: str | None
    code: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = self.node if self.node is not None else "<graph>"
        if self.input:
            where += f".{self.input}"
        text = f"{where}: {self.message} [{self.code}]"
        return f"{text} (hint: {self.hint})" if self.hint else text

    def to_json(self) -> dict:
        return asdict(self)


class NodegraphError(Exception):
    """Base of every error this library raises on purpose."""


class UsageError(NodegraphError):
    """The library (or the command line) was called in a way it cannot serve; the message says
    what to do instead."""


class GraphFileError(NodegraphError):
    """A graph file (or bytes claiming to be one) could not be read, or a graph file not written."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))

    def __reduce__(self):
        return GraphFileError, (self.problems,)


class ValidationError(NodegraphError):
    """A graph failed validation; `problems` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) in the graph:\n" + "\n".join(map(str, problems)))

    def __reduce__(self):
        return ValidationError, (self.problems,)


class InputError(NodegraphError):
    """Raised by a node (while checking or running) about one of its inputs."""

    def __init__(self, input: str | None, message: str, *, code: str = "input.invalid", hint: str | None = None):
        self.input, self.code, self.hint = input, code, hint
        super().__init__(message)

    def __reduce__(self):
        return _input_error, (self.input, str(self), self.code, self.hint)


def _input_error(input: str | None, message: str, code: str, hint: str | None) -> InputError:
    return InputError(input, message, code=code, hint=hint)


class NodeExecutionError(NodegraphError):
    """A node failed while running."""

    def __init__(self, node: str, node_type: str, cause: BaseException, traceback: str):
        self.node, self.node_type, self.cause, self.traceback = node, node_type, cause, traceback
        self.input = getattr(cause, "input", None)
        self.hint = getattr(cause, "hint", None)
        where = f"{node}.{self.input}" if self.input else node
        message = f"{where} ({node_type}) failed: {cause}"
        super().__init__(f"{message} (hint: {self.hint})" if self.hint else message)

    def __reduce__(self):
        cause = InputError(self.input, str(self.cause), code=getattr(self.cause, "code", "node.failed"), hint=self.hint)
        return NodeExecutionError, (self.node, self.node_type, cause, self.traceback)


class Interrupted(NodegraphError):
    """The run was cancelled; results computed so far stay cached."""

    def __init__(self, node: str | None = None):
        self.node = node
        self.result = None  # the run's RunResult so far: what finished before the interrupt
        super().__init__(f"interrupted at {node}" if node else "interrupted")
