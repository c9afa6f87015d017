"""The body's bytes, scanned before they are parsed: what they can hold, counted in a few fast
passes, and refused (413) when it is more than the limits allow or would take too long to parse.

Parsing cannot be stopped once it runs, and pydantic builds every item of a list before any
limit can count them, at hundreds of bytes each: so what a parse would build is bounded here,
from the bytes alone. The constants are per-element times on one core, calibrated with
`python -m bench.calibrate` (bench/RESULTS.md, "parse of nested lists").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.problems import LimitExceededError
from service.settings import Limits

#: parsing: per byte, per JSON object (a model built), per string (an id checked), per list item
PARSE_BYTE_NS, PARSE_OBJECT_NS, PARSE_STRING_NS, PARSE_ITEM_NS = 6.0, 2_000.0, 150.0, 5.0
#: per list (`[`): built by the parser whatever it holds, an empty one too: many small lists
#: cost far more than their bytes ("[]," is 3 bytes); lists nested in lists, as pydantic
#: validates them into an Array, cost the most (bench/RESULTS.md, "parse of nested lists")
PARSE_LIST_NS = 1_200.0
#: a binary body's JSON document is also parsed into Python objects and walked for its
#: references (service.wire.framing): per list or object in it
WALK_CONTAINER_NS = 3_000.0
#: a body whose parse is estimated within this is read whatever the time limit (check_body)
MIN_PARSE_BOUND_S = 1.0
#: a binary body's sections, per byte: checked finite, and copied where FP32 or unaligned
BINARY_BYTE_NS = 0.5


@dataclass(frozen=True)
class BodyCounts:
    """A body's bytes and what they can hold, counted without parsing it (a few fast scans)."""

    size: int  # of the JSON (a binary body's JSON document)
    objects: int  # `{`: no id, activation, base64 or number holds one
    strings: int  # pairs of `"`: no id or base64 holds one
    items: int  # `,`: separators of list items and of object members
    binary: int = 0  # bytes of a binary body's sections (not JSON: never scanned)
    lists: int = 0  # `[` (no id, activation or base64 holds one)
    framed: bool = False  # a binary body: its document is walked for references too

    @classmethod
    def of(cls, body: bytes, binary: int | None = None) -> BodyCounts:
        """The counts of a JSON body, or of a binary body's JSON document and `binary` bytes of sections."""
        return cls(
            len(body),
            body.count(b"{"),
            body.count(b'"') // 2,
            body.count(b","),
            binary or 0,
            body.count(b"["),
            binary is not None,
        )

    def parse_ns(self) -> float:
        """The parse's time, counted before it runs (so before any of it is spent on the event
        loop): linear in the body's bytes whatever its shape."""
        walk = (self.objects + self.lists) * WALK_CONTAINER_NS if self.framed else 0.0
        return (
            self.size * PARSE_BYTE_NS
            + self.objects * PARSE_OBJECT_NS
            + self.strings * PARSE_STRING_NS
            + self.items * PARSE_ITEM_NS
            + self.lists * PARSE_LIST_NS
            + self.binary * BINARY_BYTE_NS
            + walk
        )


#: keys whose count bounds what pydantic would build: every unit object has one "id" (as may one
#: entry of inputs, targets and biases, for a unit named "id"), every weight object one "source"
#: (as do the columns); no id, activation name or base64 holds a quote
BOUNDED_KEYS = (
    (b'"id"', "max_units", "unit entries", 3),
    (b'"source"', "max_weight_elements", "weight objects (each has at least one element)", 2),
)


def check_body(
    body: bytes, counts: BodyCounts, limits: Limits, copies: int = 1, copies_are: str = ""
) -> None:
    """Refuse a body holding more units or weight objects than the limits allow, before they are
    built: pydantic builds every item of a list before any limit can count them, at hundreds of
    bytes each, many times the bytes of the body. And refuse a body whose parse alone would
    take over half the time limit: a parse cannot be stopped once it runs (the time limit
    starts after it), and the estimate is good to about 2x; a parse of a second or less is
    never refused so (a time limit set that short is for the computation).

    `copies`: how many times the endpoint's body may hold the network's parameters (its
    handler row's), `copies_are` what they are, for the refusal's words."""
    parse_s = counts.parse_ns() / 1e9
    if parse_s > max(limits.timeout_s / 2, MIN_PARSE_BOUND_S):
        raise LimitExceededError(
            f"reading this body would take about {parse_s:,.0f} s ({counts.lists:,} lists and "
            f"{counts.objects:,} objects in {counts.size:,} bytes), over half of timeout_s = "
            f"{limits.timeout_s:g} s (set by GRADSERVE_TIMEOUT_S), or 1 s; refused before it was parsed"
        )
    for key, name, what, spare in BOUNDED_KEYS:
        allowed = getattr(limits, name) + spare
        # each is in an object, and is a quoted key or value: bounds that cost a scan or none
        if counts.objects <= allowed or body.count(key) <= allowed:
            continue
        found = body.count(key + b":")  # compact JSON; else whitespace may come before the colon
        if found <= allowed:
            pattern = re.compile(re.escape(key) + rb"\s*:")
            found = sum(1 for _ in pattern.finditer(body))
        if found > allowed:
            raise LimitExceededError(
                f"the body holds {found:,} {what}, over the limit {name} = {allowed - spare:,} "
                f"(set by GRADSERVE_{name.upper()}); refused before it was parsed"
            )
    # Numbers in lists: a comma after anything but a string, an object or a list follows a number
    # (or a member's value, a few per object). However they are given, a request's numbers are
    # its inputs and targets (batch x their units, within max_activation_elements), weight
    # elements and biases (and the copies its endpoint takes: /v1/check's claimed gradients...).
    allowed = numbers_allowed(limits, copies) + 8 * counts.objects + 64
    least = counts.binary // 8  # numbers in binary sections: at least one per 8 bytes
    if counts.items + least <= allowed:
        return
    numbers = least + counts.items - body.count(b'",') - body.count(b"},") - body.count(b"],")
    if numbers > allowed:
        raise LimitExceededError(
            f"the body holds about {numbers:,} numbers in lists"
            + (" and binary sections" if least else "")
            + ", more than the limits allow: "
            f"max_activation_elements ({limits.max_activation_elements:,}) of inputs and targets, "
            f"max_weight_elements ({limits.max_weight_elements:,}) and max_neurons "
            f"({limits.max_neurons:,}) of weights, biases and responses"
            + (f", {copies_are}" if copies_are else "")
            + " (set by GRADSERVE_MAX_ACTIVATION_ELEMENTS, GRADSERVE_MAX_WEIGHT_ELEMENTS and "
            "GRADSERVE_MAX_NEURONS); refused before it was parsed"
        )


def numbers_allowed(limits: Limits, copies: int = 1) -> int:
    """The most numbers a request's body can hold within the limits, its endpoint taking the
    network's parameters `copies` times."""
    parameters = limits.max_weight_elements + 2 * limits.max_neurons  # biases and responses
    return limits.max_activation_elements + parameters * copies
