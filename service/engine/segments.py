"""Segments of a [batch, size] array's columns, one per unit entry: what a segmented activation
(softmax) and the losses after it normalise over."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Segments:
    """Consecutive segments of the columns of a [batch, size] array, one per unit entry: what
    a segmented activation (softmax) normalises over."""

    starts: Array
    sizes: Array

    def sum(self, x: Array) -> Array:
        return np.add.reduceat(x, self.starts, axis=1)

    def max(self, x: Array) -> Array:
        return np.maximum.reduceat(x, self.starts, axis=1)

    def spread(self, per_segment: Array) -> Array:
        return np.repeat(per_segment, self.sizes, axis=1)

    def shifted(self, s: Array) -> tuple[Array, Array]:
        """(s minus its segment's max, the max): every entry <= 0, so exp cannot overflow."""
        m = self.max(s)
        with np.errstate(over="ignore"):  # s - m can only reach -inf, whose exp is an exact 0
            return s - self.spread(m), m

    def logsumexp(self, s: Array) -> Array:
        shifted, m = self.shifted(s)
        return m + np.log(self.sum(np.exp(shifted)))


def segments(sizes: list[int]) -> Segments:
    """The segments of units of these sizes, laid side by side."""
    sizes_arr = np.asarray(sizes, dtype=np.intp)
    return Segments(starts=np.concatenate([[0], np.cumsum(sizes_arr)[:-1]]).astype(np.intp), sizes=sizes_arr)
