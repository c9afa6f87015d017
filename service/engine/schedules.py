"""The learning-rate schedules: one registry entry each, torch.optim.lr_scheduler's class of
that kind stepped once at each epoch's end.

torch computes each epoch's rate from the previous one (its "chainable" `get_lr`), not from a
closed form, and the two differ in the last bits; so the rate of epoch e is found here the
way torch finds it, by stepping from the base rate e times. A resumed training replays the
steps before its first epoch (a loop over numbers), so it gets the rates one long call would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from service.engine.deadline import checkpoint

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Schedule:
    """A schedule: `params` its parameters (torch's, lower-cased) and `next` torch's `get_lr`
    at `last_epoch` = epoch >= 1, given the rate of the epoch before and the base rate."""

    kind: str
    params: tuple[str, ...]
    next: Callable[[float, int, float, Params], float]


def _step(lr: float, epoch: int, base: float, p: Params) -> float:
    return lr * p["gamma"] if epoch % p["step_size"] == 0 else lr


def _exponential(lr: float, epoch: int, base: float, p: Params) -> float:
    return lr * p["gamma"]


def _cosine(lr: float, epoch: int, base: float, p: Params) -> float:
    t_max, eta_min = p["t_max"], p["eta_min"]
    if (epoch - 1 - t_max) % (2 * t_max) == 0:  # past the trough: torch climbs back by this
        return lr + (base - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
    return (1 + math.cos(math.pi * epoch / t_max)) / (1 + math.cos(math.pi * (epoch - 1) / t_max)) * (
        lr - eta_min
    ) + eta_min


#: every schedule, by its `kind`
SCHEDULES: dict[str, Schedule] = {
    s.kind: s
    for s in (
        Schedule("step", ("step_size", "gamma"), _step),
        Schedule("exponential", ("gamma",), _exponential),
        Schedule("cosine", ("t_max", "eta_min"), _cosine),
    )
}


def rates(kind: str | None, params: Params, base: float, first: int, epochs: int) -> list[float]:
    """The learning rate used during each of epochs first, ..., first + epochs - 1 (constant
    without a schedule)."""
    if kind is None:
        return [base] * epochs
    schedule = SCHEDULES[kind]
    lr, out = base, []
    for epoch in range(first + epochs):
        if not epoch & 0xFFFF:
            checkpoint()  # a state from far along replays many epochs
        if epoch:
            lr = schedule.next(lr, epoch, base, params)
        if epoch >= first:
            out.append(lr)
    return out
