"""The compute endpoints, one row each: what the wire says of it (`service.wire.ENDPOINTS`),
the function that computes it, the function that estimates its cost, and whether it may be
computed inline. The HTTP routes, the dispatch, the costs and the OpenAPI description all
read this table: a new compute endpoint is an entry in `wire.ENDPOINTS`, a row here, and its
tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service import wire
from service.convert import progress
from service.endpoints import compute, explain, gradcheck, hvp, render
from service.pipeline import costs
from service.endpoints.render import Document
from service.settings import Limits


@dataclass(frozen=True)
class Handler:
    """What runs a compute endpoint, keyed in `HANDLERS` by the name the dispatch knows it by."""

    wire: wire.Endpoint
    run: Callable[[Any, Limits], dict[str, Any] | Document]  # the validated request, computed
    cost: costs.Estimator  # its cost, estimated from the request before anything is computed
    inline: bool = False  # may be computed on the server's event loop when its estimate is small
    # `run` reporting its progress as it goes (service.convert.progress), for a streamed answer
    streamed: Callable[[Any, Limits, progress.Report], dict[str, Any]] | None = None


_W = wire.ENDPOINTS

#: by the dispatch's name: an endpoint's own, or `<name>.<format>` for another of its answers
HANDLERS: dict[str, Handler] = {
    "forward": Handler(_W["forward"], compute.forward, costs.forward, inline=True),
    "gradients": Handler(_W["gradients"], compute.gradients, costs.gradients, inline=True),
    "sgd": Handler(_W["sgd"], compute.sgd, costs.sgd, inline=True, streamed=compute.sgd),
    "hvp": Handler(_W["hvp"], hvp.hvp, costs.hvp, inline=True),
    "explain": Handler(_W["explain"], explain.explain, costs.explain),
    "check": Handler(_W["check"], gradcheck.check, costs.check),
    "render": Handler(_W["render"], functools.partial(render.render, fmt="svg"), costs.render),
    "render.dot": Handler(_W["render"], functools.partial(render.render, fmt="dot"), costs.render),
    "render.layout": Handler(_W["render"], functools.partial(render.render, fmt="layout"), costs.render),
    "render.layout.vertical": Handler(
        _W["render"], functools.partial(render.render, fmt="layout", vertical=True), costs.render
    ),
}

#: the compute routes, by path
ROUTES: dict[str, wire.Endpoint] = {h.wire.path: h.wire for h in HANDLERS.values()}
