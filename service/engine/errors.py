"""The engine's own errors: what is wrong, located in the engine's network description.

A location is a path into the description the engine was given: ("units", 3, "bias") is the
bias of the fourth unit, ("weights", 7) the eighth weight of a weight list, ("weights",
"source", 7) its source in weight columns, ("inputs", "x") the inputs of unit x. A caller
that received the network in another form maps these paths onto its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

#: collecting stops once more problems than this are found: a network wrong in each of a
#: million items is not described by a million problems
MAX_PROBLEMS = 100


class Problem(NamedTuple):
    """One thing wrong, and where."""

    loc: tuple[str | int, ...]
    msg: str


def enough(problems: Sequence[Problem]) -> bool:
    """Whether more problems were found than are collected: stop looking for others."""
    return len(problems) > MAX_PROBLEMS


class EngineError(Exception):
    """A network or samples the engine cannot compute with.

    `detail` sums the error up when it says more than its problems (a cycle's path); None
    when the problems, in order, say it all.
    """

    def __init__(self, detail: str | None, problems: Sequence[Problem] = ()) -> None:
        self.detail = detail
        self.problems = tuple(problems)
        super().__init__(detail if detail is not None else "; ".join(p.msg for p in self.problems[:5]))


class GraphError(EngineError):
    """The network is not a graph the engine computes: unknown ids, shapes, cycles, a loss
    paired with an activation it does not accept."""


class SamplesError(EngineError):
    """The samples do not fit the network: missing or unknown units, shapes, batch sizes."""


def raise_collected(cls: type[EngineError], problems: Sequence[Problem]) -> None:
    """Raise `cls` for the problems collected, if any."""
    if problems:
        raise cls(None, problems[: MAX_PROBLEMS + 1])


class DeadlineExceeded(Exception):  # noqa: N818 (a condition, like TimeoutError's kin)
    """The passes ran past the time limit they were given."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the computation ran past its time limit of {seconds:g} s")
