"""Binding samples to a plan: each unit's array checked and laid out in the plan's column order."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from service.engine.errors import Problem, SamplesError, enough, raise_collected
from service.engine.plan import Plan, UnitInfo

Array = np.ndarray


@dataclass(frozen=True)
class Batch:
    """Samples laid out for a plan: inputs [batch, n_inputs], targets [batch, n_outputs] or None."""

    x: Array
    y: Array | None

    @property
    def size(self) -> int:
        return int(self.x.shape[0])

    def rows(self, index: slice | Array) -> Batch:
        return Batch(self.x[index], None if self.y is None else self.y[index])


def bind_samples(
    plan: Plan, inputs: Mapping[str, Array], targets: Mapping[str, Array], need_targets: bool
) -> Batch:
    """Check the samples against the network and lay them out in its column order.

    `inputs` and `targets` map unit ids to arrays [batch, size] ([batch] for a single unit);
    an array is read only once its key is known to be wanted. Raises SamplesError with the
    problems located as ("inputs" or "targets", unit id).
    """
    problems: list[Problem] = []
    batch: int | None = None
    first: str = ""

    def gather(kind: str, given: Mapping[str, Array], wanted: list[UnitInfo]) -> Array | None:
        nonlocal batch, first
        wanted_ids = {u.id for u in wanted}
        for uid in given:
            if enough(problems):
                break
            if uid not in wanted_ids:
                role = plan.units[plan.unit_index[uid]].role if uid in plan.unit_index else None
                why = f"is a {role} unit" if role else "is not a unit of the network"
                problems.append(Problem((kind, uid), f"{kind}[{uid!r}]: {uid!r} {why}"))
        parts = []
        for u in wanted:
            if enough(problems):
                break
            loc = (kind, u.id)
            if u.id not in given:
                problems.append(Problem((kind,), f"{kind} has no entry for {u.role} unit {u.id!r}"))
                continue
            a = np.asarray(given[u.id], dtype=np.float64)
            if a.ndim == 1 and u.size == 1:
                a = a.reshape(-1, 1)
            if a.ndim != 2 or a.shape[1] != u.size or a.shape[0] < 1:
                problems.append(
                    Problem(loc, f"{kind}[{u.id!r}] has shape {list(a.shape)}, expected [batch, {u.size}]")
                )
                continue
            if batch is None:
                batch, first = a.shape[0], f"{kind}[{u.id!r}]"
            elif a.shape[0] != batch:
                problems.append(
                    Problem(loc, f"{kind}[{u.id!r}] has batch {a.shape[0]} but {first} has batch {batch}")
                )
                continue
            parts.append(a)
        if problems:
            return None
        # one entry is used as given (no copy of a large binary array, a view of the body)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    x = gather("inputs", inputs, [u for u in plan.units if u.role == "input"])
    y = None
    if targets or need_targets:
        y = gather("targets", targets, [plan.units[i] for i in plan.outputs])
    raise_collected(SamplesError, problems)
    assert x is not None
    loss = plan.objective
    if y is not None and loss.targets is not None:
        low, high = loss.targets
        if ((y < low) | (y > high)).any():
            raise SamplesError(f"{loss.name} needs every target in [{low:g}, {high:g}]")
    return Batch(x, y)
