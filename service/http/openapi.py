"""The OpenAPI description of the compute endpoints, which FastAPI does not serve."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from service import wire
from service.pipeline.handlers import HANDLERS, ROUTES
from service.wire import framing


def problem_doc(description: str) -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/problem+json": {"schema": ref}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: problem_doc("An API key is configured and the request did not carry it"),
    500: problem_doc("An unexpected error (the body carries a request id to report)"),
    # (answered below the app, on every path: service.http.edge)
    431: problem_doc("The request head is over GRADSERVE_MAX_HEADER_BYTES or GRADSERVE_MAX_HEADERS"),
}
COMPUTE_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    400: problem_doc("The body is not JSON, or a binary body's framing does not hold together"),
    408: problem_doc("The body did not all arrive within GRADSERVE_BODY_TIMEOUT_S"),
    413: problem_doc("The body or the work it asks for is over a configured limit"),
    415: problem_doc("The Content-Type is neither application/json nor application/octet-stream"),
    422: problem_doc("The request, the network or the samples are not valid, or the result overflowed"),
    503: problem_doc(
        "Every computation slot is busy, the server is shutting down, or it ran out of memory "
        "for this request (out-of-memory) (all with Retry-After), or the computation ran out of time"
    ),
}
RENDERED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The network drawn: SVG, Graphviz DOT with format=dot, or with format=layout the "
            "drawing's geometry as JSON (each unit's box; each edge's route, SVG path, colour, "
            "stroke width and label box), layers top to bottom with orient=vertical"
        ),
        "content": {
            "image/svg+xml": {"schema": {"type": "string"}},
            "text/vnd.graphviz": {"schema": {"type": "string"}},
            "application/json": {"schema": {"$ref": "#/components/schemas/RenderLayout"}},
        },
    },
}

STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "The network trained. With `Accept: text/event-stream`, once the request has been "
            "validated and admitted, the answer is a stream of server-sent events instead: "
            "`event: progress` with an SgdProgress as its data as epochs end (each epoch's until "
            "they come faster than ~10 a second, then the latest; the last epoch's always), a "
            "comment line (`: heartbeat`) after each GRADSERVE_STREAM_HEARTBEAT_S without an "
            "event, then `event: result` whose data is the JSON answer, or `event: error` whose "
            "data is the problem document (the deadline, a result that overflowed). A request "
            "refused before the training begins gets its plain problem+json answer and status."
        ),
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'event: progress\ndata: {"epoch":0,"epochs":2,"steps":1,"loss":0.25}\n\n'
                'event: progress\ndata: {"epoch":1,"epochs":2,"steps":2,"loss":0.16}\n\n'
                'event: result\ndata: {"network":{...},"steps":2,...}\n\n',
            }
        },
    },
}

#: models the compute routes parse themselves, so FastAPI does not see them: added to the document
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    *(e.request for e in ROUTES.values()),
    wire.Problem,
    wire.RenderLayout,
    wire.SgdProgress,
)


# Never called: the signature of the compute routes, for the OpenAPI document (their query
# parameters are the wire's: `_parameters`). (No docstring: FastAPI would publish it.)
def _served_by_compute_routes() -> None:
    pass


def _parameters(endpoint: wire.Endpoint) -> list[dict[str, Any]]:
    """An endpoint's query parameters, as FastAPI describes a `Literal` query parameter."""
    described = []
    for p in endpoint.query:
        schema = {"enum": list(p.values), "type": "string", "default": p.default, "title": p.name.title()}
        about = {"description": p.description} if p.description else {}
        described.append(
            {"name": p.name, "in": "query", "required": False, "schema": {**schema, **about}, **about}
        )
    return described


def compute_docs() -> list[APIRoute]:
    """The compute endpoints as FastAPI routes, to describe them; they are not mounted."""
    ref = {"$ref": "#/components/schemas/{}"}
    return [
        APIRoute(
            path,
            _served_by_compute_routes,
            methods=["POST"],
            name=c.name,
            summary=c.summary,
            response_model=c.response,
            response_class=JSONResponse if c.response else Response,
            responses={
                **COMPUTE_ERRORS,
                **({} if c.response else RENDERED),
                **(STREAMED if HANDLERS[c.name].streamed else {}),
            },
            openapi_extra={
                **({"parameters": _parameters(c)} if c.query else {}),
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": ref["$ref"].format(c.request.__name__)}},
                        framing.MEDIA_TYPE: BINARY_REQUEST,
                    },
                },
                **(
                    {"responses": {"200": {"content": {framing.MEDIA_TYPE: BINARY_ANSWER}}}}
                    if c.response
                    else {}
                ),
            },
        )
        for path, c in ROUTES.items()
    ]


BINARY_FRAMING = (
    "The binary framing of the Open Inference Protocol's binary tensor data extension (as Triton "
    f"and KServe implement it): the header `{framing.HEADER}: N` says that the body's first N bytes "
    "are the JSON document (UTF-8); the rest are binary sections. In the JSON any array may be a "
    'binary reference `{"datatype": "FP64" | "FP32", "shape": [...], "parameters": '
    '{"binary_data_size": bytes}}` whose elements are the next `bytes` of the sections: '
    "little-endian, row-major (C order), no padding; sections follow one another in the order "
    "their references appear in the JSON text. FP32 values are computed as the float64 numbers "
    "they are."
)
BINARY_REQUEST: dict[str, Any] = {
    "schema": {"type": "string", "format": "binary"},
    "description": BINARY_FRAMING
    + " A framing that does not hold (a missing or non-numeric header, N past the body, sections "
    "short or left over) is a 400; a reference that does not fit its array (binary_data_size not "
    "the shape's elements times the element size, an unknown datatype, a reference where no array "
    "may stand) or a non-finite element is a 422.",
}
BINARY_ANSWER: dict[str, Any] = {
    "schema": {"type": "string", "format": "binary"},
    "description": 'With "array_encoding": "binary" (from a JSON or a binary request): '
    + BINARY_FRAMING
    + f" Every array of the answer is an FP64 reference; the `{framing.HEADER}` header gives N.",
}
#: merged into a compute path's generated 200 answer (its JSON), beside it
BINARY_RESPONSES = {"responses": {"200": {"content": {framing.MEDIA_TYPE: BINARY_ANSWER}}}}
