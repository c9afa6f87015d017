"""Arrays between the wire and NumPy: decoding request arrays, encoding responses."""

from __future__ import annotations

import binascii
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pybase64

from service import wire
from service.problems import InvalidRequestError, NonFiniteResultError, issue
from service.wire import framing

_DTYPES: dict[str, np.dtype[Any]] = {"float64": np.dtype("<f8"), "float32": np.dtype("<f4")}

#: the non-zero dimensions of an encoded array's shape multiply to at most this many elements:
#: NumPy refuses (ValueError) a shape whose float64 bytes pass its index type, even with no
#: elements at all (a zero among the dimensions); any real array is far below it
MAX_SPAN = 2**59


@dataclass(frozen=True)
class Sections:
    """A binary request's sections and its references, by the JSON path each stands at."""

    buffer: memoryview
    at: dict[framing.Path, framing.Reference]


_SECTIONS: ContextVar[Sections | None] = ContextVar("gradserve_sections", default=None)


@contextmanager
def binary_sections(sections: Sections | None) -> Iterator[None]:
    """Let `to_numpy` read the binary references of the request being handled from `sections`."""
    token = _SECTIONS.set(sections)
    try:
        yield
    finally:
        _SECTIONS.reset(token)


def to_numpy(value: Any, loc: Sequence[str | int]) -> np.ndarray:
    """A validated wire Array as a float64 NumPy array of the shape the client sent."""
    if isinstance(value, wire.EncodedArray):
        return _decode(value, loc)
    if isinstance(value, wire.BinaryReference):
        return _view(loc)
    try:
        array = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise InvalidRequestError(
            f"{_where(loc)}: the nested lists are ragged (rows of different lengths)",
            [issue(loc, "ragged nested lists")],
        ) from None
    return array


def _decode(value: wire.EncodedArray, loc: Sequence[str | int]) -> np.ndarray:
    dtype = _DTYPES[value.dtype]
    try:
        raw = pybase64.b64decode(value.data, validate=True)  # SIMD, far faster than binascii
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"{_where(loc)}: data is not valid base64", [issue([*loc, "data"], "invalid base64")]
        ) from None
    span = math.prod(max(d, 1) for d in value.shape)  # Python ints: a huge shape cannot wrap around
    if span > MAX_SPAN:
        msg = (
            f"{_where(loc)}: shape {_shape_text(value.shape)} is too large: its non-zero dimensions "
            f"multiply to more than 2**59 elements"
        )
        raise InvalidRequestError(msg, [issue([*loc, "shape"], msg)])
    count = math.prod(value.shape)
    if len(raw) != count * dtype.itemsize:
        msg = (
            f"{_where(loc)}: data holds {len(raw)} bytes but shape {_shape_text(value.shape)} of "
            f"{value.dtype} needs {count * dtype.itemsize}"
        )
        raise InvalidRequestError(msg, [issue([*loc, "data"], msg)])
    array = np.frombuffer(raw, dtype=dtype).reshape(value.shape).astype(np.float64)
    if not np.isfinite(array).all():
        msg = f"{_where(loc)}: every number must be finite (found NaN or infinity)"
        raise InvalidRequestError(msg, [issue([*loc, "data"], msg)])
    return array


def _view(loc: Sequence[str | int]) -> np.ndarray:
    """A binary reference's array: a view of the body's sections where it is FP64 and aligned,
    else a float64 copy (FP32 widened)."""
    sections = _SECTIONS.get()
    ref = None if sections is None else sections.at.get(tuple(loc))
    if sections is None or ref is None:
        msg = (
            f"{_where(loc)}: a binary reference stands only in a binary body (Content-Type "
            f"application/octet-stream, with {framing.HEADER}), its bytes after the JSON"
        )
        raise InvalidRequestError(msg, [issue(loc, msg)])
    dtype = np.dtype(ref.typestr)
    if math.prod(max(d, 1) for d in ref.shape) > MAX_SPAN:
        msg = (
            f"{_where(loc)}: shape {_shape_text(ref.shape)} is too large: its non-zero dimensions "
            f"multiply to more than 2**59 elements"
        )
        raise InvalidRequestError(msg, [issue([*loc, "shape"], msg)])
    if ref.count == 0:
        return np.zeros(ref.shape)
    array = np.frombuffer(sections.buffer, dtype, count=ref.count, offset=ref.offset).reshape(ref.shape)
    if dtype != np.float64 or not array.flags.aligned:
        array = array.astype(np.float64)
    if not _all_finite(array):
        msg = f"{_where(loc)}: every number must be finite (found NaN or infinity in its binary section)"
        raise InvalidRequestError(msg, [issue(loc, msg)])
    return array


def _all_finite(array: np.ndarray) -> bool:
    """Whether every element is finite, without a mask as large as the array: a sum is finite
    only if every term is (NaN and infinities carry through); one that overflowed is looked
    into piece by piece."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):
            return True
    flat = array.reshape(-1)
    step = 1 << 16
    return all(np.isfinite(flat[at : at + step]).all() for at in range(0, flat.size, step))


def _where(loc: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in loc)


def _shape_text(shape: Sequence[int]) -> str:
    """A shape for a message: a dimension of thousands of digits is not echoed whole."""
    return (
        "["
        + ", ".join(str(d) if d.bit_length() <= 64 else f"over 2**{d.bit_length() - 1}" for d in shape)
        + "]"
    )


def non_finite_at(body: Any, where: str = "") -> str | None:
    """Where in a response body (a path like `weights[2].paths[0].value`) the first number that
    is not finite sits, or None: JSON has no such numbers, and they would be written as null."""
    if isinstance(body, float):
        return None if math.isfinite(body) else where
    if isinstance(body, np.ndarray):
        return None if body.dtype.kind != "f" or np.isfinite(body).all() else where
    if isinstance(body, dict):
        items: Any = ((f"{where}.{key}" if where else str(key), value) for key, value in body.items())
    elif isinstance(body, (list, tuple)):
        items = ((f"{where}[{k}]", value) for k, value in enumerate(body))
    else:
        return None
    for place, value in items:
        if isinstance(value, (str, bool, int)) or value is None:
            continue
        found = non_finite_at(value, place)
        if found is not None:
            return found
    return None


def ensure_finite(body: Any) -> None:
    """Refuse (422 non-finite-result) a response body holding a number that is not finite: the
    last guard of answers assembled from many computed pieces (explain's, check's)."""
    where = non_finite_at(body)
    if where is not None:
        raise NonFiniteResultError(f"the answer's {where} is not finite: the numbers overflowed float64")


def encoded(array: np.ndarray) -> dict[str, Any]:
    """The wire's encoded form of an array: float64, C order, little-endian."""
    data = np.ascontiguousarray(array, dtype="<f8")
    return {
        "dtype": "float64",
        "shape": list(data.shape),
        "data": pybase64.b64encode(data.tobytes()).decode("ascii"),
    }


def _as_list(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.ascontiguousarray(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _as_encoded(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return encoded(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def framed_answer(body: Any) -> tuple[int, list[memoryview]]:
    """A response body holding NumPy arrays in the binary framing: the JSON document's length
    and the pieces to send (the document, then each array's bytes, FP64, in document order)."""
    arrays: list[np.ndarray] = []

    def reference(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            arrays.append(np.ascontiguousarray(value, dtype="<f8"))  # (no copy when it is already)
            return framing.reference(value.shape)
        raise TypeError(f"cannot serialise {type(value).__name__}")

    document = orjson.dumps(body, default=reference)  # (called in document order)
    return framing.frame(document, arrays)


def dumps(body: Any, encoding: wire.ArrayEncoding = "list") -> bytes:
    """Serialise a response body holding NumPy arrays: nested lists, base64 objects, or (joined:
    see `framed_answer`) the binary framing."""
    if encoding == "binary":
        return b"".join(framed_answer(body)[1])
    if encoding == "base64":
        return orjson.dumps(body, default=_as_encoded)
    return orjson.dumps(body, default=_as_list, option=orjson.OPT_SERIALIZE_NUMPY)
