"""/v1/explain: why each gradient has the value it has, in the terms of its derivation.

For one sample: every unit's s, z, f'(s) and delta, with the terms delta is made of (one per
successor: the multiple-outputs rule, and the loss's own term at an output); every weight's
gradient as z_source x delta_target; and, for a weight between single units, the paths from
its target to an output, each a product of factors ((yhat - y), then per step back a weight and
an f'(s), and z_source), which add up to the gradient.
Paths are counted first, so a graph with astronomically many of them costs no more than
`max_paths` listed ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from service import engine, wire
from service.endpoints import compute
from service.engine import Plan, UnitInfo
from service.problems import InvalidRequestError, LimitExceededError, NonFiniteResultError, echoed, issue
from service.settings import Limits

#: a JSON object of the answer, its arrays still NumPy (service.convert.encoding.dumps writes it)
JsonObject = dict[str, Any]

LATEX_SHOWN_PATHS = 8


@dataclass(frozen=True)
class Factor:
    name: str  # plain text, as in the response
    latex: str
    value: float


@dataclass(frozen=True)
class Sample:
    """One sample's values, laid out by unit."""

    plan: Plan
    s: np.ndarray  # [n_cols]
    z: np.ndarray
    x: np.ndarray  # [n_inputs]
    delta: np.ndarray
    loss_term: np.ndarray  # dE/dz, or dE/ds for a fused loss (cross-entropy), 0 off the outputs
    theta: np.ndarray
    scale: np.ndarray | None = None  # what multiplies each column's weighted sum (None: 1)

    def sent(self, unit: UnitInfo) -> np.ndarray:
        """dE/d(the unit's weighted sum): its delta times its response (over its connections,
        for a mean); what its weights' gradients and its predecessors see."""
        delta = self.delta[unit.cols]
        return delta if self.scale is None else self.scale[unit.cols] * delta

    def z_of(self, unit: UnitInfo) -> np.ndarray:
        return (self.x if unit.role == "input" else self.z)[unit.cols]

    def weight(self, k: int) -> np.ndarray:
        w = self.plan.weights[k]
        return self.theta[w.params].reshape(w.shape)


def explain(req: wire.ExplainRequest, limits: Limits) -> JsonObject:
    plan, batch = compute.prepare(req.network, req.samples, need_targets=True)
    if req.sample >= batch.size:
        msg = (
            f"sample {echoed(req.sample)} is out of range: the batch has {batch.size} sample(s), "
            "numbered from 0"
        )
        raise InvalidRequestError(msg, [issue(["sample"], msg)])
    one = batch.rows(slice(req.sample, req.sample + 1))
    assert one.y is not None
    values = engine.forward(plan, plan.theta, one.x)
    delta = engine.backward(plan, plan.theta, values, one.y)
    compute.check_values(plan, values, delta)
    # the same refusal, naming the same weight, as /v1/gradients for this one sample
    compute.check_params(plan, engine.gradient(plan, values, delta, 1.0), "gradient")
    loss_term = np.zeros(plan.n_cols)
    loss_term[plan.out_cols] = engine.loss_gradient(plan, values, one.y)[0]
    sample = Sample(
        plan, values.s[:, 0], values.z[:, 0], values.x[0], delta[:, 0], loss_term, plan.theta, values.scale
    )
    finder = PathFinder(sample, limits.max_explain_factors)
    loss = compute.finite_loss(float(engine.sample_losses(plan, values, one.y)[0]))
    body = {
        "sample": req.sample,
        "loss": loss,
        "units": {u.id: _unit(sample, finder, u) for u in plan.units},
        "weights": [_weight(sample, finder, k, req.max_paths) for k in range(len(plan.weights))],
    }
    # Every number above is checked where it is made: s, z and delta (check_values), the
    # gradients, each delta term and path value (by name), and the loss; the rest are finite
    # by construction (f'(s) of a finite s; a loss term overflows only where delta does; the
    # factors are weights and those checked values). A walk over the whole answer would cost
    # more than building it.
    return body


# ---------------------------------------------------------------- units


def _rule(plan: Plan, unit: UnitInfo) -> str:
    rule = engine.resolve(unit.activation, unit.slope).delta_rule
    if unit.role == "output" and plan.objective.fused:  # the loss's term is dE/ds already
        return "delta = loss_term + " + rule.format(g="the sum of delta_terms' values")
    if unit.role == "output":
        return "delta = " + rule.format(g="loss_term + the sum of delta_terms' values")
    return "delta = " + rule.format(g="the sum of delta_terms' values")


def _unit(sample: Sample, finder: PathFinder, unit: UnitInfo) -> JsonObject:
    if unit.role == "input":
        return {"z": sample.z_of(unit)}
    plan, cols = sample.plan, unit.cols
    terms = []
    for target, k in finder.successors[unit.id]:
        successor = finder.units[target]
        weight, delta = sample.weight(k), sample.delta[successor.cols]
        term: JsonObject = {"successor": target, "weight": weight, "delta": delta}
        if sample.scale is not None:  # value = weight @ (scale * delta)
            term["scale"] = sample.scale[successor.cols]
        value = weight @ sample.sent(successor)
        if not np.isfinite(value).all():
            raise NonFiniteResultError(
                f"the delta term {unit.id} <- {target} (weight @ delta) is not finite: the numbers "
                "overflowed float64; scale the weights or inputs down"
            )
        terms.append({**term, "value": value})
    body: JsonObject = {
        "s": sample.s[cols],
        "z": sample.z[cols],
        "derivative": engine.derivative(unit.activation, sample.s[cols], sample.z[cols], unit.slope),
        "delta": sample.delta[cols],
        "delta_terms": terms,
        "rule": _rule(plan, unit),
    }
    if unit.role == "output":
        body["loss_term"] = sample.loss_term[cols]
    return body


# ---------------------------------------------------------------- weights and paths


def _tex_id(uid: str) -> str:
    return r"\mathrm{" + uid.replace("_", r"\_") + "}" if len(uid) > 1 else uid


class PathFinder:
    """The paths from a unit to the outputs, over single units with elementwise activations."""

    def __init__(self, sample: Sample, max_factors: int) -> None:
        self.sample = sample
        self.limit = self.left = max_factors  # factors the answer may still list
        self.derivatives: dict[str, list[Factor]] = {}
        plan = sample.plan
        self.units = {u.id: u for u in plan.units}
        self.successors: dict[str, list[tuple[str, int]]] = {u.id: [] for u in plan.units}
        for k, w in enumerate(plan.weights):
            self.successors[w.source].append((w.target, k))
        outputs = [u for u in plan.units if u.role == "output"]
        self.error_name = "(yhat - y)" if len(outputs) == 1 else "(yhat_{o} - y_{o})"
        self.count: dict[str, int] = {}  # paths from each unit to an output
        self.scalar: dict[str, bool] = {}  # whether those paths run through single elementwise units only
        for u in sorted(plan.units, key=lambda u: -u.level):  # successors first
            if u.role == "input":
                continue
            onward = [t for t, _ in self.successors[u.id] if self.count[t]]
            self.count[u.id] = (u.role == "output") + sum(self.count[t] for t in onward)
            self.scalar[u.id] = (
                u.size == 1
                and not engine.resolve(u.activation, u.slope).segmented
                and all(self.scalar[t] for t in onward)
            )

    def _derivative(self, uid: str) -> list[Factor]:
        if uid not in self.derivatives:  # a unit is passed by many paths: computed once
            self.derivatives[uid] = self._compute_derivative(uid)
        return self.derivatives[uid]

    def _compute_derivative(self, uid: str) -> list[Factor]:
        u = self.units[uid]
        activation = engine.resolve(u.activation, u.slope)
        if activation.text is None or activation.latex is None:  # f' = 1: left out
            return []
        col = u.cols.start
        value = float(activation.derivative(self.sample.s[col : col + 1], self.sample.z[col : col + 1])[0])
        return [Factor(f"{activation.text}(s_{uid})", f"{activation.latex}(s_{{{_tex_id(uid)}}})", value)]

    def _scale(self, uid: str) -> list[Factor]:
        """The factor a weight into this unit carries beside its delta: the unit's response,
        over its incoming connections when it takes the mean; none when both are 1 by default."""
        plan, u = self.sample.plan, self.units[uid]
        if self.sample.scale is None:
            return []
        mean = plan.mean_scale is not None and plan.mean_scale[u.cols.start] != 1.0
        if not (plan.has_responses or mean):
            return []
        tex_id = _tex_id(uid)
        name = (f"r_{uid}" if plan.has_responses else "1") + (f"/n_{uid}" if mean else "")
        tex = (f"r_{{{tex_id}}}" if plan.has_responses else "") + (
            rf"\tfrac{{1}}{{n_{{{tex_id}}}}}" if mean else ""
        )
        return [Factor(name, tex, float(self.sample.scale[u.cols.start]))]

    def _output_factors(self, uid: str) -> list[Factor]:
        """The factors at the end of a path: the loss's term, then f'(s_o) unless it is folded in."""
        u, plan = self.units[uid], self.sample.plan
        name = self.error_name.replace("{o}", uid)
        tex = (
            r"(\hat{y}-y)"
            if "{o}" not in self.error_name
            else rf"(\hat{{y}}_{{{_tex_id(uid)}}}-y_{{{_tex_id(uid)}}})"
        )
        loss = plan.objective
        name, tex = loss.coefficient + name, loss.coefficient + tex
        if loss.term is not None:  # dE/dz is not a multiple of (yhat - y): named as what it is
            name, tex = (
                loss.term[0].replace("{o}", uid),
                loss.term[1].replace("{o}", "{" + _tex_id(uid) + "}"),
            )
        factors = [Factor(name, tex, float(self.sample.loss_term[u.cols.start]))]
        if not loss.fused:  # a fused loss's term is already dE/ds
            factors += self._derivative(uid)
        return factors

    def paths(self, source: str, target: str, limit: int) -> Iterator[tuple[list[str], list[Factor]]]:
        """Up to `limit` paths from `target` to an output, each with its factors from the
        output back: depth first, one path kept and extended or cut back, so the work is the paths'
        length (every unit it reaches leads on to an output)."""
        if limit <= 0:  # (max_paths 0: the paths are only counted)
            return
        z = float(self.sample.z_of(self.units[source])[0])
        z_factor = Factor(f"z_{source}", f"z_{{{_tex_id(source)}}}", z)
        units, back, steps = [target], list[Factor](), list[int]()  # back: per step, f' and w
        onward = [iter(self._onward(target))]
        found = 0

        def reached() -> tuple[list[str], list[Factor]]:
            here = units[-1]
            # walking forward gathered f'(s_u), w_(u->next) per step: reversed, they run from
            # the output back, as the derivation writes them
            factors = [*self._output_factors(here), *reversed(back), *self._scale(target), z_factor]
            self._spend(len(factors))
            return list(units), factors

        if self.units[target].role == "output":
            found += 1
            yield reached()
        while onward and found < limit:
            engine.checkpoint()
            step = next(onward[-1], None)
            if step is None:  # every path on from here is listed: back up one unit
                onward.pop()
                units.pop()
                if steps:
                    del back[len(back) - steps.pop() :]
                continue
            t, k = step
            here = units[-1]
            weight = float(self.sample.weight(k)[0, 0])
            w = Factor(f"w_{here}->{t}", rf"(w_{{{_tex_id(here)}\to {_tex_id(t)}}})", weight)
            added = [*self._derivative(here), w, *self._scale(t)]
            back += added
            steps.append(len(added))
            units.append(t)
            onward.append(iter(self._onward(t)))
            if self.units[t].role == "output":
                found += 1
                yield reached()

    def _onward(self, uid: str) -> list[tuple[str, int]]:
        """The successors (unit, weight index) through which a path goes on to an output."""
        return [(t, k) for t, k in self.successors[uid] if self.count[t]]

    def _spend(self, factors: int) -> None:
        """Count factors listed against the limit: paths multiply (a few layers of single units
        have millions) and grow with depth, so max_paths alone does not bound an answer."""
        self.left -= factors
        if self.left < 0:
            raise LimitExceededError(
                f"the paths to list hold over {self.limit:,} factors, the limit max_explain_factors "
                "(set by GRADSERVE_MAX_EXPLAIN_FACTORS); ask for fewer paths a weight (max_paths) "
                "or explain a smaller network"
            )


def _weight(sample: Sample, finder: PathFinder, k: int, max_paths: int) -> JsonObject:
    plan = sample.plan
    w = plan.weights[k]
    source, target = plan.units[plan.unit_index[w.source]], plan.units[plan.unit_index[w.target]]
    z_source, delta_target = sample.z_of(source), sample.delta[target.cols]
    gradient = np.outer(z_source, sample.sent(target))
    body: JsonObject = {
        "source": w.source,
        "target": w.target,
        "gradient": compute.scalar_or(gradient),
        "z_source": z_source,
        "delta_target": delta_target,
        "paths": [],
        "paths_total": None,
        "paths_total_log10": None,
        "paths_truncated": False,
    }
    lhs = rf"\frac{{\partial E}}{{\partial w_{{{_tex_id(w.source)}\to {_tex_id(w.target)}}}}}"
    if w.shape != (1, 1) or not finder.scalar[w.target]:
        delta_tex = rf"\delta_{{{_tex_id(w.target)}}}"
        if sample.scale is not None:  # the target's response (and 1/n of a mean) scales its delta
            delta_tex = rf"(c_{{{_tex_id(w.target)}}} \odot {delta_tex})"
        body["latex"] = lhs.replace("w_", "W_") + rf" = z_{{{_tex_id(w.source)}}}\,{delta_tex}^\top"
        return body
    found = list(finder.paths(w.source, w.target, max_paths))
    total = finder.count[w.target]
    body.update(
        paths=[
            {
                "units": units,
                "factors": [{"name": f.name, "value": f.value} for f in factors],
                "value": _product((f.value for f in factors), f"path {' -> '.join([w.source, *units])}"),
            }
            for units, factors in found
        ],
        paths_total=_count(total),
        paths_total_log10=math.log10(total) if total else None,  # (exact for any int, however large)
        paths_truncated=total > len(found),
        latex=_latex(
            lhs, [factors for _, factors in found[:LATEX_SHOWN_PATHS]], total, float(gradient[0, 0])
        ),
    )
    return body


#: the largest count of paths answered exactly: every JSON reader holds integers up to 2**53
EXACT_COUNT = 2**53


def _count(total: int) -> int | float | None:
    """paths_total: exact up to 2**53, then a float (rounded), then past the largest float None
    (paths_total_log10 says how many there are)."""
    if total <= EXACT_COUNT:
        return total
    return float(total) if total.bit_length() <= 1023 else None


def _product(values: Iterable[float], what: str) -> float:
    """The product of finite numbers without overflow in between: the mantissas multiply as
    floats would, the exponents add as ints; a product past float64 is refused by name."""
    mantissa, exponent = 1.0, 0
    for value in values:
        m, e = math.frexp(mantissa * value)
        mantissa, exponent = m, exponent + e
    try:
        return math.ldexp(mantissa, exponent)
    except OverflowError:
        raise NonFiniteResultError(
            f"the value of {what} is not finite: the product of its factors overflowed float64"
        ) from None


def _number(value: float, factor: bool = True) -> str:
    """A value in LaTeX; a negative factor of a product in parentheses, a result bare."""
    text = f"{value:.4g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = rf"{mantissa}\times 10^{{{int(exponent)}}}"
    return f"({text})" if value < 0 and factor else text


def _latex(lhs: str, paths: list[list[Factor]], total: int, gradient: float) -> str:
    if total == 0:
        return lhs + r" = 0 \quad\text{(no path to an output)}"
    if not paths:  # (max_paths 0)
        return rf"{lhs} = \dots = {_number(gradient, factor=False)}"
    more = r" + \dots" if total > len(paths) else ""
    symbolic = " + ".join(r"\,".join(f.latex for f in factors) for factors in paths) + more
    numeric = " + ".join(r" \cdot ".join(_number(f.value) for f in factors) for factors in paths) + more
    return f"{lhs} = {symbolic} = {numeric} = {_number(gradient, factor=False)}"
