"""The handler registry: the compute endpoints, one row each. A row holds everything particular
to its endpoint that the pipeline and the routes need: what the wire says of it
(`service.wire.ENDPOINTS`), the function that computes it, the one that estimates its cost,
whether it may be computed inline or streamed, its own limit checks, its hints for asking less,
how many times its body may hold the network's parameters, and its query variants. The HTTP
routes, the dispatch, the refusal policy and the OpenAPI description read the rows and never
test an endpoint's name: a new compute endpoint is an entry in `wire.ENDPOINTS`, a row here,
and its module in `service.endpoints` (tests/test_one_place.py shows it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from service import wire
from service.convert import progress
from service.endpoints import compute, explain, gradcheck, hvp, render
from service.endpoints.render import Document
from service.pipeline import costs
from service.pipeline.refusal import limit
from service.problems import InvalidRequestError
from service.settings import Limits

#: a compute endpoint's function: the validated request, computed
Run = Callable[[Any, Limits], dict[str, Any] | Document]
#: a request's query parameters, each one of its values (`wire.Endpoint.query`)
Query = Mapping[str, str]


def no_checks(request: Any, shape: costs.Shape, limits: Limits) -> None:
    """An endpoint with no limits of its own beyond every request's."""


@dataclass(frozen=True)
class Handler:
    """What runs a compute endpoint, keyed in `HANDLERS` by its name."""

    wire: wire.Endpoint
    run: Run
    cost: costs.Estimator  # its cost, estimated from the request before anything is computed
    inline: bool = False  # may be computed on the server's event loop when its estimate is small
    # `run` reporting its progress as it goes (service.convert.progress), for a streamed answer
    streamed: Callable[[Any, Limits, progress.Report], dict[str, Any]] | None = None
    #: its own limits, checked after every request's (units, weights, batch): refusal.limit each
    checks: Callable[[Any, costs.Shape, Limits], None] = no_checks
    #: the ways to ask it for a smaller answer, named in a 413 past max_answer_bytes (None: a
    #: smaller network); array_encoding is suggested beside them where the request uses lists
    ask_for_less: tuple[str, ...] | None = None
    #: what makes its work large, named in a 413 past max_work (after "ask for less: ...")
    work_hint: Callable[[costs.Shape], str] | None = None
    #: how many times its body may hold the network's parameters, and what they are (the scan
    #: before parsing bounds the body's numbers by it: service.pipeline.scan.check_body)
    copies: int = 1
    copies_are: str = ""
    #: its other answers, by the query that asks for them: `variant` reads a request's query
    #: parameters (`wire.query`'s, each one of its values) into one of `variants`' keys ("" for
    #: `run`), refusing a combination it does not answer
    variant: Callable[[Query], str] | None = None
    variants: Mapping[str, Run] = field(default_factory=dict)

    def key(self, query_string: bytes) -> str:
        """The dispatch's key for a request with this query (the transport carries it to
        `run_of`): the endpoint's name, and `?<variant>` for another of its answers."""
        if not self.wire.query:
            return self.wire.name
        values = query_values(self.wire, query_string)
        chosen = self.variant(values) if self.variant is not None else ""
        return f"{self.wire.name}?{chosen}" if chosen else self.wire.name


def query_values(endpoint: wire.Endpoint, query_string: bytes) -> dict[str, str]:
    """The endpoint's query parameters in a request's query: the last value given of each
    (its default when none is), refused (422) when not one of its values. Others are ignored."""
    given = parse_qs(query_string.decode("latin-1"))
    values = {}
    for p in endpoint.query:
        value = given.get(p.name, [p.default])[-1]
        if value not in p.values:
            quoted = [repr(v) for v in p.values]
            listed = ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
            raise InvalidRequestError(f"{p.name}: Input should be {listed}, not {value[:40]!r}")
        values[p.name] = value
    return values


def run_of(key: str) -> tuple[Handler, Run]:
    """The row and the function that a dispatch key (`Handler.key`) names."""
    name, _, chosen = key.partition("?")
    handler = HANDLERS[name]
    return handler, handler.variants[chosen] if chosen else handler.run


# ---------------------------------------------------------------- the endpoints' own limits


def _gradients_checks(req: wire.GradientsRequest, s: costs.Shape, limits: Limits) -> None:
    if req.per_sample:
        limit(limits, "max_per_sample_elements", s.params * s.batch, "batch x parameters")


def _sgd_checks(req: wire.SgdRequest, s: costs.Shape, limits: Limits) -> None:
    limit(limits, "max_epochs", req.epochs, "epochs")
    limit(limits, "max_steps", costs.sgd_steps(req, s.batch), "the number of SGD steps")


def _render_checks(req: wire.RenderRequest, s: costs.Shape, limits: Limits) -> None:
    limit(limits, "max_render_units", s.units, "the number of units to draw")


def _check_work(s: costs.Shape) -> str:
    return f"checking {s.params:,} parameters runs the network twice for each"


# ---------------------------------------------------------------- the rows

_W = wire.ENDPOINTS

#: every compute endpoint's row, by its name
HANDLERS: dict[str, Handler] = {
    h.wire.name: h
    for h in (
        Handler(
            _W["forward"], compute.forward, costs.forward, inline=True, ask_for_less=("a smaller batch",)
        ),
        Handler(
            _W["gradients"],
            compute.gradients,
            costs.gradients,
            inline=True,
            checks=_gradients_checks,
            ask_for_less=("include_units false", "per_sample false", "a smaller batch"),
        ),
        Handler(
            _W["sgd"],
            compute.sgd,
            costs.sgd,
            inline=True,
            streamed=compute.sgd,
            checks=_sgd_checks,
            copies=1 + costs.MAX_BUFFERS,
            copies_are=f"up to {1 + costs.MAX_BUFFERS} times (the network's and a state's buffers)",
        ),
        Handler(
            _W["hvp"],
            hvp.hvp,
            costs.hvp,
            inline=True,
            copies=2,
            copies_are="twice (the network's and the vector)",
        ),
        Handler(
            _W["explain"],
            explain.explain,
            costs.explain,
            ask_for_less=("fewer paths (max_paths)", "a smaller network"),
        ),
        Handler(
            _W["check"],
            gradcheck.check,
            costs.check,
            work_hint=_check_work,
            copies=2,
            copies_are="twice (the network's and the claimed gradients)",
        ),
        Handler(
            _W["render"],
            render.as_svg,
            costs.render,
            checks=_render_checks,
            variant=render.variant,
            variants=render.VARIANTS,
        ),
    )
}

#: the compute routes, by path
ROUTES: dict[str, wire.Endpoint] = {h.wire.path: h.wire for h in HANDLERS.values()}
