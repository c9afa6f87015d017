"""The cost model: what a request will cost, estimated before anything is computed: its time
and its answer's size.

Everything is read from the validated request (and the body's counts, `service.pipeline.scan`),
never from a compiled plan, so the estimate decides before any of the work it estimates is spent:
whether a request may run on the server's event loop (`GRADSERVE_INLINE_MS`), and whether it is
refused outright (`service.pipeline.refusal`: 413 past `max_work` or `max_answer_bytes`). Each
endpoint has its own estimator (its handler row names it), counting what that endpoint does: its
passes over the batch (elementwise work over units x batch, matrix work over weight elements x
batch, a fixed cost per level visited), its Python work per unit and per weight, and its answer,
built and serialised (a number in a JSON list costs more than in base64).

The constants are per-element times on one core, calibrated with `python -m bench.calibrate`
(its figures are in bench/RESULTS.md); an activation's and a loss's own are in their registry
entries (`forward_ns`, `backward_ns`, `output_ns`). An estimate is meant to be within a small
factor of the time taken, not exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from service import wire
from service.engine.activations import ACTIVATIONS
from service.engine.compile import longest_paths
from service.engine.losses import LOSSES
from service.engine.optimizers import OPTIMIZERS, resolved
from service.pipeline.scan import BodyCounts
from service.settings import Limits

# ---------------------------------------------------------------- calibrated constants (ns)

#: `max_work` counts multiply-adds of a weight element by a sample; everything else is counted
#: as the multiply-adds it takes as long as, at this many a millisecond
WORK_PER_MS = 1e7
MAC_NS = 1e6 / WORK_PER_MS

# (per unit, counted with its size, and sample: a forward pass (s, then z = f(s)) and a
# backward pass (delta from dE/dz) cost each activation's own `forward_ns` and `backward_ns`,
# and each output entry its loss's `output_ns` (E_n and its gradient): in their registries)
#: per unit (with its size) and sample, in each of the forward and backward passes, where a
#: response or a mean scales the weighted sums
SCALE_NS = 3.0
#: ...and the gradient's sums
GRADIENT_NS = 5.0
#: per level visited by a forward, backward and gradient pass, whatever its batch
LEVEL_FORWARD_NS, LEVEL_BACKWARD_NS, LEVEL_GRADIENT_NS = 15_000.0, 10_000.0, 3_000.0
#: compiling: per unit or weight entry, and per level laid out
COMPILE_ENTRY_NS, COMPILE_LEVEL_NS = 1_000.0, 16_000.0
#: any request: routing, validating a tiny body, the answer's envelope
REQUEST_NS = 100_000.0
#: the answer: per number, as JSON lists, as base64 or as binary sections (copied at most
#: once, never converted); per entry (a unit's or a weight's object)
LIST_NUMBER_NS, BASE64_NUMBER_NS, BINARY_NUMBER_NS, ENTRY_NS = 30.0, 17.0, 2.0, 3_000.0
#: the answer's size: a number in a JSON list at its longest (17 significant digits, a sign, an
#: exponent and a comma), in base64 (8 bytes as 32/3 characters) or binary (its 8 bytes); an
#: entry's keys and ids (a binary reference's JSON fits in them)
LIST_NUMBER_BYTES, BASE64_NUMBER_BYTES, BINARY_NUMBER_BYTES, ENTRY_BYTES = 25.0, 32 / 3, 8.0, 64
#: per-sample gradients and SGD's update: per parameter (and sample)
PARAM_NS = 10.0
#: a learning-rate schedule's rate for one epoch (a few float operations in Python)
RATE_NS = 300.0
#: explain: per unit and per weight explained (small arrays and dicts), per path factor listed
EXPLAIN_ENTRY_NS, FACTOR_NS, FACTOR_BYTES = 30_000.0, 3_000.0, 64
#: render: per unit and per edge drawn (laid out in layers, long edges routed, labels placed
#: clear of each other), and their bytes of SVG or DOT
DRAW_NS, DRAW_BYTES = 500_000.0, 700


# ---------------------------------------------------------------- what a request asks for


@dataclass(frozen=True)
class Shape:
    """What a request's cost depends on, read from the wire without compiling anything."""

    units: int  # unit entries
    input_neurons: int  # input units counted with their sizes: columns of x
    neurons: int  # the others: columns of the value tables (and biases)
    output_neurons: int
    weights: int  # weight entries
    weight_elements: int
    single_weights: int  # weights between single units (explain lists their paths)
    levels: int
    batch: int
    forward_ns: float  # one sample's elementwise forward work, each unit at its activation's cost
    backward_ns: float
    loss_ns: float  # one sample's loss and its gradient at the outputs, at the loss's cost
    responses: bool = False  # a unit gives a response: every unit's is a parameter

    @property
    def params(self) -> int:
        return self.weight_elements + self.neurons * (2 if self.responses else 1)

    def row_ns(self, backward: bool = False) -> float:
        """One sample's share of a pass: forward, or forward, backward and gradient."""
        ns = self.weight_elements * MAC_NS + self.forward_ns
        if backward:
            ns += 2 * self.weight_elements * MAC_NS + self.backward_ns + self.neurons * GRADIENT_NS
        return ns

    def sweep_ns(self, backward: bool = False) -> float:
        """A pass's fixed cost, whatever its batch: a step per level."""
        per_level = LEVEL_FORWARD_NS + (LEVEL_BACKWARD_NS + LEVEL_GRADIENT_NS if backward else 0.0)
        return self.levels * per_level

    def compile_ns(self) -> float:
        return (self.units + self.weights) * COMPILE_ENTRY_NS + self.levels * COMPILE_LEVEL_NS


def shape_of(net: wire.Network, samples: wire.Samples | None) -> Shape:
    size = {u.id: u.size for u in net.units}
    inputs = sum(u.size for u in net.units if u.role == "input")
    outputs = sum(u.size for u in net.units if u.role == "output")
    forward = backward = 0.0
    responses = any(u.response is not None for u in net.units)
    scaled = responses or any(u.aggregation == "mean" for u in net.units)
    for u in net.units:
        if u.role != "input":
            activation = ACTIVATIONS[u.resolved_activation]
            forward += u.size * (activation.forward_ns + (SCALE_NS if scaled else 0.0))
            backward += u.size * (activation.backward_ns + (SCALE_NS if scaled else 0.0))
    given = net.weights
    if isinstance(given, wire.WeightColumns):
        sources, targets = given.source, given.target
        elements = single = len(sources)
    else:
        sources, targets = [w.source for w in given], [w.target for w in given]
        rows, cols = [size.get(a, 1) for a in sources], [size.get(b, 1) for b in targets]
        elements = sum(map(int.__mul__, rows, cols))
        single = sum(1 for m, n in zip(rows, cols, strict=True) if m == n == 1)
    return Shape(
        units=len(net.units),
        input_neurons=inputs,
        neurons=sum(size.values()) - inputs,
        output_neurons=outputs,
        weights=len(sources),
        weight_elements=elements,
        single_weights=single,
        levels=levels(list(size), sources, targets),
        batch=max(1, batch_rows(samples)) if samples is not None else 0,
        forward_ns=forward,
        backward_ns=backward,
        loss_ns=outputs * LOSSES[net.loss].output_ns,
        responses=responses,
    )


def batch_rows(samples: wire.Samples) -> int:
    """The batch size as sent, read from the first array that has one (0 when none does)."""
    for value in (*samples.inputs.values(), *samples.targets.values()):
        if isinstance(value, list):
            return len(value)
        if isinstance(value, wire.EncodedArray) and value.shape:
            # a shape is only a claim: the rows are at most the numbers its data holds
            held = len(value.data) * 3 // 4 // (8 if value.dtype == "float64" else 4)
            return min(value.shape[0], max(1, held))
        if isinstance(value, wire.BinaryReference) and value.shape:
            return value.shape[0]  # (the framing checked its bytes are in the body)
    return 0


def levels(ids: list[str], sources: Sequence[str], targets: Sequence[str]) -> int:
    """The number of levels the engine will sort the units into (the longest path, plus one);
    weights naming unknown units are left out, and a graph with a cycle counts every unit (the
    engine refuses both, after the estimate)."""
    index = {uid: i for i, uid in enumerate(ids)}
    pairs = zip(sources, targets, strict=False)
    known = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    level, left = longest_paths(len(ids), [a for a, _ in known], [b for _, b in known])
    return len(ids) if any(left) else max(level, default=0) + 1


#: the most buffers an optimizer keeps (adam with amsgrad, rmsprop centered with momentum)
MAX_BUFFERS = max(
    len(o.buffers({**o.hyper, "amsgrad": True, "centered": True, "momentum": 0.5}))
    for o in OPTIMIZERS.values()
)


# ---------------------------------------------------------------- the answer


def numbers_ns(count: float, encoding: wire.ArrayEncoding) -> float:
    return count * {"base64": BASE64_NUMBER_NS, "binary": BINARY_NUMBER_NS}.get(encoding, LIST_NUMBER_NS)


def numbers_bytes(count: float, encoding: wire.ArrayEncoding) -> float:
    return count * {"base64": BASE64_NUMBER_BYTES, "binary": BINARY_NUMBER_BYTES}.get(
        encoding, LIST_NUMBER_BYTES
    )


@dataclass(frozen=True)
class Answer:
    """What an answer holds: numbers (in arrays), entries (a unit's or a weight's object) and
    other bytes (text, paths)."""

    numbers: float
    entries: int
    rows: float = 0  # rows of 2-D arrays: brackets in JSON lists
    other_bytes: float = 0
    other_ns: float = 0

    def ns(self, encoding: wire.ArrayEncoding) -> float:
        return numbers_ns(self.numbers, encoding) + self.entries * ENTRY_NS + self.other_ns

    def size(self, encoding: wire.ArrayEncoding) -> float:
        brackets = 2 * self.rows if encoding == "list" else 0
        numbers = numbers_bytes(self.numbers, encoding)
        return numbers + self.entries * ENTRY_BYTES + brackets + self.other_bytes


# ---------------------------------------------------------------- per endpoint


@dataclass(frozen=True)
class Estimate:
    """A request's estimated time on one core (parse, compile, compute, serialise), the part of
    it that `max_work` limits, and its answer's size."""

    ms: float
    work: int  # the passes over its data, as multiply-adds
    answer_bytes: int
    shape: Shape


@dataclass(frozen=True)
class Computation:
    """What an endpoint computes: work over its data (units x batch, weight elements x batch,
    parameters: what `max_work` limits), its Python steps (per level visited, per entry
    explained or drawn: small, but many in deep graphs), and its answer."""

    data_ns: float
    steps_ns: float
    answer: Answer


#: an endpoint's estimate of what it computes (one per endpoint, below; service.pipeline.handlers)
Estimator = Callable[[Any, Shape, Limits], Computation]


def _unit_tables(s: Shape, tables: int) -> Answer:
    """Every unit's values for the batch: z of the inputs, `tables` tables ([batch, size]) of the others."""
    numbers = s.batch * (s.input_neurons + tables * s.neurons)
    return Answer(numbers, s.units, rows=s.batch * s.units * tables)


def _gradient_tables(s: Shape, rows: int = 1) -> Answer:
    return Answer(rows * s.params, s.weights + s.units, rows=(rows - 1) * (s.weights + s.units))


def forward(req: wire.ForwardRequest, s: Shape, limits: Limits) -> Computation:
    units = _unit_tables(s, 2)  # and the outputs' z again
    answer = Answer(units.numbers + s.batch * s.output_neurons, units.entries, units.rows)
    return Computation(s.batch * s.row_ns(), s.sweep_ns(), answer)


def gradients(req: wire.GradientsRequest, s: Shape, limits: Limits) -> Computation:
    data = s.batch * (s.row_ns(backward=True) + s.loss_ns)
    parts = [_gradient_tables(s)]
    if req.include_units:
        parts.append(_unit_tables(s, 3))
    if req.per_sample:
        data += s.batch * s.params * PARAM_NS
        parts.append(_gradient_tables(s, s.batch))
    if req.wrt_inputs:  # what flows back into the inputs, and dE/dx (twice, with per_sample)
        data += s.batch * (s.weight_elements * MAC_NS + s.input_neurons * GRADIENT_NS)
        tables = 2 if req.per_sample else 1
        parts.append(
            Answer(tables * s.batch * s.input_neurons, tables * s.units, rows=tables * s.batch * s.units)
        )
    answer = Answer(
        sum(p.numbers for p in parts), sum(p.entries for p in parts), rows=sum(p.rows for p in parts)
    )
    return Computation(data, s.sweep_ns(backward=True), answer)


def sgd(req: wire.SgdRequest, s: Shape, limits: Limits) -> Computation:
    rows = s.batch
    steps = sgd_steps(req, rows)
    # each epoch: forward and backward over every sample, a step (a pass over the levels and an
    # update of every parameter) per minibatch, then a forward of the whole batch for the
    # history; and one forward before
    data = req.epochs * rows * s.row_ns(backward=True) + steps * s.params * PARAM_NS
    data += (req.epochs + 1) * rows * s.row_ns()
    sweeps = steps * s.sweep_ns(backward=True) + (req.epochs + 1) * s.sweep_ns()
    # the optimizer's buffers: updated at each step, and in the answer's state as the network's
    # arrays are; a schedule resumed at state.epoch replays the rates of the epochs before
    buffers = len(_buffers(req))
    data += steps * buffers * s.params * PARAM_NS
    if req.schedule is not None:  # (counted as work: a state's epoch count is the client's to set)
        data += (req.epochs + (0 if req.state is None else req.state.epoch)) * RATE_NS
    answer = Answer(
        s.params * (1 + buffers),
        (s.units + s.weights) * (1 + buffers),
        other_bytes=(40 if req.schedule is None else 70) * req.epochs,
        other_ns=s.units * ENTRY_NS,
    )
    return Computation(data, sweeps, answer)


def sgd_steps(req: wire.SgdRequest, rows: int) -> int:
    """The optimizer's steps: one per minibatch of each epoch."""
    size = rows if req.batch_size is None else max(1, min(req.batch_size, rows))
    return req.epochs * -(-rows // size)


def hvp(req: wire.HvpRequest, s: Shape, limits: Limits) -> Computation:
    # the R-operator takes about three gradient passes: the forward and backward it follows,
    # then the R-forward and R-backward, each of them about twice the matrix work of its pass
    data = 3 * s.batch * (s.row_ns(backward=True) + s.loss_ns)
    answer = Answer(2 * s.params + 1, 2 * (s.weights + s.units))  # the gradients, H v and v.Hv
    return Computation(data, 3 * s.sweep_ns(backward=True), answer)


def _buffers(req: wire.SgdRequest) -> tuple[str, ...]:
    """The buffers the request's optimizer keeps (none when its hyper-parameters are refused)."""
    optimizer = OPTIMIZERS[req.optimizer]
    given = req.hyper_parameters()
    if not set(given) <= set(optimizer.hyper):
        return ()
    return optimizer.buffers(resolved(optimizer, given))


def explain(req: wire.ExplainRequest, s: Shape, limits: Limits) -> Computation:
    # paths: at most max_paths a weight between single units, each at most as long as the graph
    # is deep, and never more factors than max_explain_factors
    factors = min(limits.max_explain_factors, s.single_weights * req.max_paths * (2 * s.levels + 2))
    steps = s.sweep_ns(backward=True) + (s.units + s.weights) * EXPLAIN_ENTRY_NS + factors * FACTOR_NS
    # a unit: s, z, f'(s), delta and its loss term; a weight: its gradient and what makes it,
    # twice (its delta term at its source, its own entry)
    numbers = s.input_neurons + 5 * s.neurons + 2 * s.weight_elements + 4 * s.weights
    answer = Answer(numbers, 2 * (s.units + s.weights), other_bytes=factors * FACTOR_BYTES + s.weights * 256)
    return Computation(s.row_ns(backward=True), steps, answer)


def check(req: wire.CheckRequest, s: Shape, limits: Limits) -> Computation:
    rows, params = s.batch, s.params
    # central differences: every parameter pushed up and down, each a replica of the batch run
    # forward (every level finding the replicas it offsets); the replicas go in chunks of
    # max_activation_elements, each chunk a pass over the levels
    replicas = 2 * params * rows
    per_replica = s.weight_elements * MAC_NS + s.forward_ns + s.loss_ns + s.levels * MAC_NS
    data = rows * s.row_ns(backward=True) + replicas * per_replica + params * rows * PARAM_NS
    per_chunk = max(1, limits.max_activation_elements // max(1, 2 * rows * s.neurons))
    chunks = -(-params // per_chunk)
    steps = s.sweep_ns(backward=True) + chunks * s.levels * LEVEL_FORWARD_NS
    return Computation(data, steps, Answer(2 * params, s.units + s.weights, other_bytes=8 * params))


def render(req: wire.RenderRequest, s: Shape, limits: Limits) -> Computation:
    drawn = min(s.units, limits.max_render_units) + s.weights
    data, steps = 0.0, drawn * DRAW_NS
    if req.samples is not None:
        gradients = req.show == "gradients"
        data = (s.batch if gradients else 1) * s.row_ns(backward=gradients)
        steps += s.sweep_ns(backward=gradients)
    return Computation(data, steps, Answer(0, 0, other_bytes=drawn * DRAW_BYTES))


def estimate(
    computation: Estimator, request: Any, limits: Limits, counts: BodyCounts | None = None
) -> Estimate:
    """The request's whole estimated cost: the parse (when its body's counts are given), the
    compile, the `computation` (its endpoint's estimator) and its answer."""
    shape = shape_of(request.network, request.samples)
    done = computation(request, shape, limits)
    encoding: wire.ArrayEncoding = getattr(request, "array_encoding", "list")
    ns = (
        REQUEST_NS
        + (counts.parse_ns() if counts is not None else 0.0)
        + shape.compile_ns()
        + done.data_ns
        + done.steps_ns
        + done.answer.ns(encoding)
    )
    work = math.ceil(done.data_ns * WORK_PER_MS / 1e6)
    return Estimate(ns / 1e6, work, math.ceil(done.answer.size(encoding)), shape)
