"""The refusal policy: a request over a limit is refused (413) before anything is computed, with
the limit it passed, the setting that sets it, and how to ask for less.

First what a request asks for (units, weights, batch: its own counts, exact for any network that
compiles), then what its endpoint's own checks count (its handler row's), then the estimated work and answer
size that follow from them (`service.pipeline.costs`). Nothing later checks a limit. What is
particular to an endpoint is read from its row (`service.pipeline.handlers.Handler`), never from
its name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.pipeline.costs import Estimate
from service.problems import LimitExceededError, echoed
from service.settings import Limits

if TYPE_CHECKING:
    from service.pipeline.handlers import Handler

#: how to ask for a smaller answer when an endpoint's row says nothing more particular
SMALLER_NETWORK = ("a smaller network",)
#: beside the other ways, where an endpoint answers arrays and the request has them as JSON lists
ENCODING_HINT = "array_encoding 'binary' or 'base64' (a third or less than half the bytes)"


def limit(limits: Limits, name: str, value: int, what: str) -> None:
    """Refuse `what`, counted `value`, when over the limit `name`."""
    allowed = getattr(limits, name)
    if value > allowed:
        raise LimitExceededError(
            f"{what} is {echoed(value)}, over the limit {name} = {allowed:,} "
            f"(set by GRADSERVE_{name.upper()})"
        )


def admit(handler: Handler, request: Any, cost: Estimate, limits: Limits) -> None:
    """Refuse (413) a request to `handler`'s endpoint over a limit, or let it through."""
    s = cost.shape
    limit(limits, "max_units", s.units, "the number of unit entries")
    limit(limits, "max_neurons", s.input_neurons + s.neurons, "the number of units counted with their sizes")
    limit(limits, "max_weight_elements", s.weights, "the number of weights")  # each has one or more
    limit(limits, "max_weight_elements", s.weight_elements, "the number of weight elements")
    limit(limits, "max_batch", s.batch, "the batch size")
    limit(limits, "max_activation_elements", (s.input_neurons + s.neurons) * s.batch, "units x batch")
    handler.checks(request, s, limits)
    if cost.work > limits.max_work:
        why = handler.work_hint(s) if handler.work_hint is not None else ""
        raise LimitExceededError(
            f"the estimated work is {cost.work:,} (the whole request: about {cost.ms / 1000:,.3g} s on "
            f"one core), over the limit max_work = {limits.max_work:,} (set by GRADSERVE_MAX_WORK); "
            "ask for less: a smaller batch, fewer epochs, a smaller network" + (f"; {why}" if why else "")
        )
    if cost.answer_bytes > limits.max_answer_bytes:
        ways = list(handler.ask_for_less or SMALLER_NETWORK)
        if getattr(request, "array_encoding", None) == "list":
            ways.insert(-1, ENCODING_HINT)
        raise LimitExceededError(
            f"the answer could take up to {cost.answer_bytes:,} bytes, over the limit max_answer_bytes = "
            f"{limits.max_answer_bytes:,} (set by GRADSERVE_MAX_ANSWER_BYTES; numbers in JSON lists "
            "are counted at their longest); ask for less: " + ", ".join(ways)
        )
