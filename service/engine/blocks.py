"""The sparse blocks: each level cut into blocks of columns, and the weight matrix of each
block, whole (a view of theta) or gathered from the weights feeding it.

A block of gathered columns holds a dense matrix over every source column that feeds any of
its columns, with zeros where no weight runs: one matrix product per block then does the
work of many weights. Levels are split so that those zeros stay a bounded share.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.engine.plan import Block, Columns, UnitInfo, WeightGroup, WeightInfo

Array = np.ndarray

#: a block of gathered columns may hold at most this many times the elements of its real
#: weights (or MIN_BLOCK): past that a level is split, so sparse graphs stay cheap.
DENSITY = 4
MIN_BLOCK = 4096


@dataclass(frozen=True)
class Edges:
    """The weights, in the listed order: endpoints, shapes, and values back to back."""

    src: list[int]  # unit index of each weight's source
    tgt: list[int]
    rows: list[int]  # its shape: [source.size, target.size]
    cols: list[int]
    #: the weights' elements, row-major, weight after weight, in arrays that follow one another
    #: (one for all, or one per weight); none once compiled (a plan keeps no request's arrays)
    values: tuple[Array, ...]


def as_slice(cols: Array) -> Columns:
    """A sorted column set as a slice when it is contiguous (a view, not a copy)."""
    if len(cols) and cols[-1] - cols[0] + 1 == len(cols):
        return slice(int(cols[0]), int(cols[-1]) + 1)
    return cols


class _Arrays(NamedTuple):
    """What gathering needs as arrays: per unit its first column, and that column numbered
    across x then the tables (so inputs sort first); per weight its ends, columns and offset."""

    col_start: Array
    key_start: Array
    src: Array
    tgt: Array
    cols: Array
    offset: Array


class _Elements(NamedTuple):
    """Weight elements, sorted by `col`: the table column each adds into, the source column's
    key (as in _Arrays.key_start, plus its row) and its position in theta."""

    col: Array
    key: Array
    param: Array


class SparseBlocks:
    """The laid-out units and weights, from which level blocks and weight groups are cut."""

    def __init__(
        self, info: list[UnitInfo], edges: Edges, counts: list[int], offsets: list[int], n_inputs: int
    ) -> None:
        self.info, self.edges, self.n_inputs = info, edges, n_inputs
        self.counts, self.offsets = counts, offsets  # per weight: its elements, where they start
        self.sizes = [u.size for u in info]
        self.incoming: list[list[int]] = [[] for _ in info]
        for k, b in enumerate(edges.tgt):
            self.incoming[b].append(k)

    def weight_infos(self) -> tuple[WeightInfo, ...]:
        ids, e = [u.id for u in self.info], self.edges
        sources, targets = [ids[a] for a in e.src], [ids[b] for b in e.tgt]
        shapes = zip(e.rows, e.cols, strict=True)
        return tuple(map(WeightInfo._make, zip(sources, targets, shapes, self.offsets, strict=True)))

    @functools.cached_property
    def arrays(self) -> _Arrays:
        col_start = np.array([u.cols.start for u in self.info], dtype=np.intp)
        is_input = np.array([u.role == "input" for u in self.info])
        e = self.edges
        src, tgt, cols, offset = (np.array(v, dtype=np.intp) for v in (e.src, e.tgt, e.cols, self.offsets))
        return _Arrays(col_start, col_start + np.where(is_input, 0, self.n_inputs), src, tgt, cols, offset)

    def blocks(self, levels: list[list[int]]) -> list[tuple[Block, ...]]:
        """Each level's blocks: levels are split into chunks of columns, then every gathered
        block of every level is built at once, by array operations over all their elements."""
        chunks = [list(self._chunks(members)) for members in levels]
        built = iter(self._gathered([tgt for level in chunks for tgt, k in level if k < 0]))
        return [tuple(self._whole(tgt, k) if k >= 0 else next(built) for tgt, k in level) for level in chunks]

    def _chunks(self, members: list[int]) -> Iterator[tuple[slice, int]]:
        """Split a level into chunks of columns, greedily, keeping each gathered block mostly
        real weights: (its columns, the one weight feeding it whole or -1 when gathered)."""
        incoming = [self.incoming[i] for i in members]
        if not any(incoming):
            return  # level 0: units without incoming weights; s is the bias
        src, counts, info, sizes = self.edges.src, self.counts, self.info, self.sizes

        def chunk(start: int, stop: int) -> tuple[slice, int]:
            tgt = slice(info[members[start]].cols.start, info[members[stop - 1]].cols.stop)
            whole = stop - start == 1 and len(incoming[start]) == 1
            return tgt, incoming[start][0] if whole else -1

        span = info[members[-1]].cols.stop - info[members[0]].cols.start
        everything = [k for ks in incoming for k in ks]
        feeding = set(map(src.__getitem__, everything))
        real = sum(map(counts.__getitem__, everything))
        if sum(map(sizes.__getitem__, feeding)) * span <= max(DENSITY * real, MIN_BLOCK):
            yield chunk(0, len(members))  # dense enough whole: no split to look for
            return
        start, feeding, feeding_size, real = 0, set(), 0, 0
        for m, ks in enumerate(incoming):
            unit_feeding = {src[k] for k in ks}
            unit_real = sum(counts[k] for k in ks)
            new = unit_feeding - feeding
            new_size = sum(map(sizes.__getitem__, new))
            width = (feeding_size + new_size) * (info[members[m]].cols.stop - info[members[start]].cols.start)
            if m > start and width > max(DENSITY * (real + unit_real), MIN_BLOCK):
                yield chunk(start, m)
                start, feeding, real = m, unit_feeding, 0
                feeding_size = sum(map(sizes.__getitem__, unit_feeding))
            else:
                feeding |= new
                feeding_size += new_size
            real += unit_real
        yield chunk(start, len(members))

    def _whole(self, tgt: slice, k: int) -> Block:
        """A chunk fed by one whole weight: its matrix is a view of theta."""
        e = self.edges
        source, shape = self.info[e.src[k]], (e.rows[k], tgt.stop - tgt.start)
        params = slice(self.offsets[k], self.offsets[k] + shape[0] * shape[1])
        if source.role == "input":
            return Block(source.cols, None, shape[0], tgt, params, shape)
        return Block(None, source.cols, 0, tgt, params, shape)

    def _gathered(self, tgts: list[slice]) -> list[Block]:
        """Gathered blocks for chunks of columns: each block's rows are the distinct source
        columns (keys) of its elements, inputs first, and its matrix says where in theta each
        (row, column) lives (-1 where no weight does)."""
        if not tgts:
            return []
        el = self.elements
        first = np.array([t.start for t in tgts], dtype=np.intp)
        widths = np.array([t.stop for t in tgts], dtype=np.intp) - first
        lo, hi = np.searchsorted(el.col, first), np.searchsorted(el.col, first + widths)
        n_el = hi - lo  # a chunk's elements are a slice of them (sorted by column)
        el_first = np.cumsum(n_el) - n_el  # each block's first element among those gathered
        block = np.repeat(np.arange(len(tgts)), n_el)
        idx = np.arange(len(block)) + np.repeat(lo - el_first, n_el)
        span = sum(self.sizes) + 1  # past any key (inputs' columns, then the tables')
        keys, row = np.unique(block * span + el.key[idx], return_inverse=True)
        key_block = keys // span
        keys -= key_block * span
        n_keys = np.bincount(key_block, minlength=len(tgts))
        splits = np.bincount(key_block[keys < self.n_inputs], minlength=len(tgts))
        key_first = np.cumsum(n_keys) - n_keys
        row -= key_first[block]
        sizes = n_keys * widths
        base = np.cumsum(sizes) - sizes
        pos = base[block] + row * widths[block] + el.col[idx] - first[block]
        flat = np.full(int(sizes.sum()), -1, dtype=np.intp)  # -1: the zero appended to theta
        flat[pos] = el.param[idx]
        order = np.argsort(pos)  # by block, then by place in it
        cells, cell_params = pos[order] - base[block[order]], el.param[idx[order]]
        rows = zip(key_first.tolist(), n_keys.tolist(), splits.tolist(), widths.tolist(), strict=True)
        at = zip(base.tolist(), el_first.tolist(), n_el.tolist(), strict=True)
        blocks = []
        for tgt, (k0, nk, split, width), (b0, e0, ne) in zip(tgts, rows, at, strict=True):
            mine = keys[k0 : k0 + nk]
            blocks.append(
                Block(
                    as_slice(mine[:split]) if split else None,
                    as_slice(mine[split:] - self.n_inputs) if split < nk else None,
                    split,
                    tgt,
                    flat[b0 : b0 + nk * width].reshape(nk, width),
                    (nk, width),
                    cells[e0 : e0 + ne],
                    cell_params[e0 : e0 + ne],
                )
            )
        return blocks

    @functools.cached_property
    def elements(self) -> _Elements:
        """Every element of every weight, ordered by the table column it lands in: a block's
        elements are then one slice (its columns are contiguous), found by two searches."""
        a = self.arrays
        counts = np.array(self.counts, dtype=np.intp)
        which = np.repeat(np.arange(len(counts)), counts)
        local = np.arange(len(which)) - np.repeat(a.offset, counts)
        row, col = np.divmod(local, a.cols[which])
        col += a.col_start[a.tgt[which]]
        order = np.argsort(col)  # element i of all is theta[i]
        return _Elements(col[order], (a.key_start[a.src[which]] + row)[order], order)

    def weight_groups(self) -> tuple[WeightGroup, ...]:
        """Weights grouped by shape and kind of source, in the order each kind first appears."""
        e, info = self.edges, self.info
        by_kind: dict[tuple[int, int, bool], list[int]] = {}
        for k, kind in enumerate(zip(e.rows, e.cols, [info[a].role == "input" for a in e.src], strict=True)):
            by_kind.setdefault(kind, []).append(k)
        groups = []
        for (m, n, from_inputs), ks in by_kind.items():
            if len(ks) == 1:
                k = ks[0]
                params = slice(self.offsets[k], self.offsets[k] + m * n)
                groups.append(
                    WeightGroup((m, n), (k,), from_inputs, info[e.src[k]].cols, info[e.tgt[k]].cols, params)
                )
                continue
            a, index = self.arrays, np.array(ks, dtype=np.intp)
            groups.append(
                WeightGroup(
                    (m, n),
                    tuple(ks),
                    from_inputs,
                    a.col_start[a.src[index]][:, None] + np.arange(m),
                    a.col_start[a.tgt[index]][:, None] + np.arange(n),
                    a.offset[index][:, None] + np.arange(m * n),
                )
            )
        return tuple(groups)
