"""The binary framing of arrays (the Open Inference Protocol's binary tensor data extension),
the one place that knows it: the service reads requests and writes answers with it, the
client writes requests and reads answers with it.

A framed body is a JSON document of `Inference-Header-Content-Length` bytes followed by the
binary sections. In the document any array may be a binary reference
`{"datatype": "FP64" | "FP32", "shape": [...], "parameters": {"binary_data_size": n}}`
whose elements are the next `n` bytes of the sections (little-endian, C order, no padding);
sections follow one another in the order their references appear in the document.

Standard library only: the wire imports without NumPy.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: the header that says how many of the body's first bytes are its JSON document
HEADER = "Inference-Header-Content-Length"
#: the media type of a framed body, request or answer
MEDIA_TYPE = "application/octet-stream"
#: the name of the extension, as servers list it among their extensions
EXTENSION = "binary_tensor_data"
#: datatype -> (NumPy's little-endian type string, bytes per element)
DATATYPES: dict[str, tuple[str, int]] = {"FP64": ("<f8", 8), "FP32": ("<f4", 4)}

#: a JSON path: the keys and list indices from the document's root (the `loc` of errors)
Path = tuple[str | int, ...]
#: what bytes may be read from or sent: bytes, bytearray, memoryview, a NumPy array
Buffer = Any


class FramingError(ValueError):
    """The body does not hold together as a framed body (the service answers 400)."""


class InvalidReference(ValueError):  # noqa: N818  (a fault of the request, like ValueError)
    """A binary reference does not describe its own bytes (the service answers 422)."""

    def __init__(self, path: Path, msg: str) -> None:
        super().__init__(f"{_where(path)}: {msg}")
        self.path, self.msg = path, msg


@dataclass(frozen=True)
class Reference:
    """A binary reference found in a document: where it stands and which bytes are its."""

    path: Path
    datatype: str
    shape: tuple[int, ...]
    offset: int  # into the sections
    size: int

    @property
    def typestr(self) -> str:
        """NumPy's type string of its elements (`np.dtype(ref.typestr)`)."""
        return DATATYPES[self.datatype][0]

    @property
    def count(self) -> int:
        return math.prod(self.shape)


# ---------------------------------------------------------------- reading


def header_length(value: str | bytes | None) -> int:
    """The JSON document's length, from the header's value."""
    if value is None:
        raise FramingError(f"a binary body needs the header {HEADER}: the length of its JSON document")
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise FramingError(f"{HEADER} must be a number of bytes, not {text[:40]!r}")
    return int(text)


def split(body: Buffer, header: str | bytes | None) -> tuple[memoryview, memoryview]:
    """A framed body's JSON document and its sections, as views of the body (no copy)."""
    return cut(body, header_length(header))


def cut(body: Buffer, length: int) -> tuple[memoryview, memoryview]:
    """`split`, the JSON document's length already read from the header."""
    view = as_bytes(body)
    if length > len(view):
        raise FramingError(f"{HEADER} is {length} but the body has only {len(view)} bytes")
    return view[:length], view[length:]


def is_reference(value: Any) -> bool:
    """Whether a parsed JSON value claims to be a binary reference (it may still be a bad one)."""
    if type(value) is not dict:
        return False
    parameters = value.get("parameters")
    return type(parameters) is dict and "binary_data_size" in parameters


def references(document: Any, sections: int) -> list[Reference]:
    """Every binary reference of a parsed JSON document (dicts in document order, as json and
    orjson give them), in that order, each given its bytes of `sections` bytes of sections.

    A reference that does not describe its own bytes is an InvalidReference; references that
    do not take up the sections exactly, a FramingError.
    """
    found: list[Reference] = []
    offset = 0
    for path, value in _walk(document):
        ref = _reference(path, value, offset)
        found.append(ref)
        offset += ref.size
    if offset > sections:
        raise FramingError(
            f"the binary references need {offset} bytes of sections but the body has {sections} "
            f"after its JSON document"
        )
    if offset < sections:
        raise FramingError(
            f"the body has {sections - offset} bytes after its JSON document and its "
            f"{len(found)} binary references' sections ({offset} bytes): {HEADER} or a "
            "binary_data_size is wrong"
        )
    return found


#: how deep (lists and objects within each other) a document's references are looked for: as
#: deep as the service's JSON parser (pydantic's) reads a document at all. A deeper document
#: is refused (a FramingError) before more of it is walked, so the walk holds at most this
#: many levels, whatever the document's shape.
MAX_DEPTH = 200


def _walk(document: Any) -> Iterator[tuple[Path, Any]]:
    """(path, value) of each reference in document order.

    The walk is linear in the document: each container is visited once, with one iterator per
    level open (at most MAX_DEPTH); a container's path is never built, only a reference's,
    when it is found (only a dict with parameters.binary_data_size can be one). Containers
    that cannot hold a reference (empty ones, lists and objects of numbers and strings) are
    passed over by a test in C, not a step of Python each.
    """
    if is_reference(document):
        yield (), document
        return
    keys: list[str | int] = []  # the path to the container whose children `levels[-1]` gives
    levels = [_children(document)]
    while levels:
        for key, value in levels[-1]:
            if is_reference(value):
                yield (*keys, key), value
                continue
            if len(levels) >= MAX_DEPTH:
                raise FramingError(
                    f"the JSON document is nested more than {MAX_DEPTH} deep (lists and objects within "
                    "each other), deeper than it is read"
                )
            keys.append(key)
            levels.append(_children(value))
            break
        else:
            levels.pop()
            if keys:
                keys.pop()


def _children(value: Any) -> Iterator[tuple[str | int, Any]]:
    """The (key, child) of a container's children that are containers with something in them."""
    if type(value) is dict:
        if _SCALARS.issuperset(map(type, value.values())):
            return iter(())
        return ((k, v) for k, v in value.items() if v and type(v) in _CONTAINERS)
    if type(value) is not list or not any(value) or _SCALARS.issuperset(map(type, value)):
        return iter(())  # (not a container; only empty ones or false scalars; numbers and strings)
    return ((k, v) for k, v in enumerate(value) if v and type(v) in _CONTAINERS)


_CONTAINERS = frozenset({dict, list})
_SCALARS = frozenset({float, int, str, bool, type(None)})


def _reference(path: Path, value: dict[str, Any], offset: int) -> Reference:
    datatype = value.get("datatype")
    if type(datatype) is not str or datatype not in DATATYPES:
        known = " or ".join(map(repr, DATATYPES))
        raise InvalidReference((*path, "datatype"), f"the datatype must be {known}, not {_text(datatype)}")
    shape = value.get("shape")
    if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidReference((*path, "shape"), "the shape must be a list of integers >= 0")
    size = value["parameters"]["binary_data_size"]
    if type(size) is not int or size < 0:
        raise InvalidReference(
            (*path, "parameters", "binary_data_size"), "binary_data_size must be an integer >= 0"
        )
    itemsize = DATATYPES[datatype][1]
    need = math.prod(shape) * itemsize
    if size != need:
        raise InvalidReference(
            (*path, "parameters", "binary_data_size"),
            f"binary_data_size is {size} but shape {_shape_text(shape)} of {datatype} takes {need} bytes",
        )
    return Reference(path, datatype, tuple(shape), offset, size)


def section(sections: Buffer, ref: Reference) -> memoryview:
    """A reference's bytes, as a view of the sections."""
    return as_bytes(sections)[ref.offset : ref.offset + ref.size]


def to_lists(sections: Buffer, ref: Reference) -> Any:
    """A reference's elements as nested lists of floats (a number for shape []): for readers
    without NumPy."""
    code = "d" if ref.datatype == "FP64" else "f"
    flat = list(struct.unpack_from(f"<{ref.count}{code}", sections, ref.offset))
    return _nest(flat, ref.shape) if ref.shape else flat[0]


def _nest(flat: list[float], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) == 1:
        return flat
    step = math.prod(shape[1:])
    return [_nest(flat[k * step : (k + 1) * step], shape[1:]) for k in range(shape[0])]


def resolve(document: Any, refs: Sequence[Reference], read: Callable[[Reference], Any]) -> Any:
    """The document with each reference replaced by `read(reference)` (a NumPy array, lists...);
    the containers on the references' paths are copied, the document itself left as it was."""
    for ref in refs:
        document = _put(document, ref.path, read(ref))
    return document


def _put(node: Any, path: Path, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    copy: Any = dict(node) if type(node) is dict else list(node)
    copy[head] = _put(node[head], rest, value)
    return copy


# ---------------------------------------------------------------- writing


def reference(shape: Sequence[int], datatype: str = "FP64") -> dict[str, Any]:
    """The binary reference of an array of `shape`, to stand in the document for it."""
    itemsize = DATATYPES[datatype][1]
    return {
        "datatype": datatype,
        "shape": list(shape),
        "parameters": {"binary_data_size": math.prod(shape) * itemsize},
    }


def frame(document: bytes, sections: Sequence[Buffer], align: int = 8) -> tuple[int, list[memoryview]]:
    """A framed body: the value of its `Inference-Header-Content-Length` and the pieces to send
    one after another (the document, then each section in the order of its reference), each a
    flat view of bytes: the pieces are not joined, so no array is copied. Sections must be
    C-contiguous (`np.ascontiguousarray`).

    The document is padded with spaces (still the same JSON) to a multiple of `align` bytes, so
    that a reader that keeps the body at an aligned address can view FP64 sections in place."""
    document += b" " * (-len(document) % align)
    return len(document), [as_bytes(document), *map(as_bytes, sections)]


def as_bytes(buffer: Buffer) -> memoryview:
    """A C-contiguous buffer (bytes, an array of any shape) as a flat view of its bytes."""
    view = memoryview(buffer)
    if view.nbytes == 0:
        return memoryview(b"")
    if not view.c_contiguous:
        raise ValueError("a section must be C-contiguous")
    return view.cast("B")


def _where(path: Path) -> str:
    return ".".join(map(str, path)) or "the document"


def _text(value: Any) -> str:
    return (
        repr(value)[:40]
        if isinstance(value, str)
        else type(value).__name__
        if value is not None
        else "missing"
    )


def _shape_text(shape: Sequence[int]) -> str:
    return (
        "["
        + ", ".join(str(d) if d.bit_length() <= 64 else f"over 2**{d.bit_length() - 1}" for d in shape)
        + "]"
    )
