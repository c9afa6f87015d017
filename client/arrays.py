"""Arrays between Python, NumPy and the wire. NumPy is optional and imported only when used."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_json

try:  # SIMD base64, ~40x the standard library on large arrays (the `numpy` extra installs it)
    from pybase64 import b64decode, b64encode
except ImportError:  # pragma: no cover - the standard library does the same, slower
    from base64 import b64decode, b64encode  # type: ignore[assignment]

from client._constants import BASE64_MIN_ELEMENTS
from service.wire import EncodedArray

if TYPE_CHECKING:
    import numpy as np

_ENCODED_KEYS = {"dtype", "shape", "data"}


def numpy_available() -> bool:
    """Whether NumPy can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("numpy") is not None


def _is_ndarray(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "__array__")


def to_numpy(value: Any) -> np.ndarray:
    """Any array of a request or a result (number, nested lists, encoded) as a float64 NumPy array."""
    import numpy as np

    if isinstance(value, EncodedArray):
        value = value.model_dump()
    if isinstance(value, Mapping) and set(value) == _ENCODED_KEYS:
        dtype = "<f8" if value["dtype"] == "float64" else "<f4"
        raw = np.frombuffer(b64decode(value["data"], validate=True), dtype=dtype)
        return raw.reshape(value["shape"]).astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def encode(array: Any) -> dict[str, Any]:
    """A NumPy array in the wire's encoded form (float64, little-endian, C order)."""
    fields, data = _encoded(array)
    return {**fields, "data": data.decode("ascii")}


def _encoded(array: Any) -> tuple[dict[str, Any], bytes]:
    """An encoded array's dtype and shape, and its data as base64 bytes."""
    import numpy as np

    data = np.ascontiguousarray(array, dtype="<f8")
    return {"dtype": "float64", "shape": list(data.shape)}, b64encode(data.data.cast("B"))


#: how an encoded array's dtype reads in pydantic_core.to_json's output; nothing else can
#: (unit ids are not string values of a "dtype" key)
_ENCODED_MARK = b'"dtype":"float'


def carries_encoded(content: bytes) -> bool:
    """Whether a JSON body (as to_json writes them, or as the server does) holds an encoded array."""
    return _ENCODED_MARK in content


def request_json(body: Mapping[str, Any]) -> bytes:
    """A request body as JSON, by pydantic's Rust encoder: models as they dump (their None
    fields left out: on the wire they mean the default), NumPy arrays of 256+ elements as base64 and
    smaller ones as lists, NumPy scalars as numbers.

    The base64 goes into the body as bytes, not through the encoder, which would look at every
    character of it for escaping (~2.6 ms for the MLP bench's 5 MB) after two more copies of
    it: each large array is written as a placeholder, then replaced.
    """
    encoded: list[tuple[bytes, bytes]] = []  # per large array: its JSON up to the data, the data
    mark = f"\x00gradserve-array-{secrets.token_hex(8)}-"  # \x00 is written escaped: no text has it raw

    def numpy_values(value: Any) -> Any:
        if _is_ndarray(value):
            if value.ndim == 0:
                return float(value)
            if value.size < BASE64_MIN_ELEMENTS:
                return value.astype(float).tolist()
            fields, data = _encoded(value)
            encoded.append((to_json({**fields, "data": ""})[:-2], data))  # (the JSON up to the data)
            return f"{mark}{len(encoded) - 1}"
        if type(value).__module__ == "numpy":  # a NumPy scalar
            return float(value)
        raise TypeError(f"cannot send a {type(value).__name__} to gradserve")

    try:
        content = to_json(body, fallback=numpy_values, exclude_none=True)
    except PydanticSerializationError as exc:
        raise TypeError(str(exc)) from None
    if not encoded:
        return content
    quoted = b'"' + to_json(mark)[1:-1]  # the placeholder as the encoder wrote it, up to its number
    head, *rest = content.split(quoted)
    parts = [head]
    for piece in rest:  # '<k>"' and what follows the placeholder
        k, _, tail = piece.partition(b'"')
        parts += [*encoded[int(k)], b'"}', tail]
    return b"".join(parts)


def decode_encoded(value: Any) -> Any:
    """Every EncodedArray in a validated answer (models, lists, dicts) replaced, in place, by
    the nested lists it encodes, so an answer reads the same however its arrays travelled."""
    if isinstance(value, EncodedArray):
        import numpy as np

        array = to_numpy(value)
        if not np.isfinite(array).all():
            raise ValueError("an encoded array holds a NaN or an infinity")
        return array.tolist()
    if isinstance(value, BaseModel):
        for name, item in value:
            setattr(value, name, decode_encoded(item))
    elif isinstance(value, dict):
        for key, item in value.items():
            value[key] = decode_encoded(item)
    elif isinstance(value, list) and value and not isinstance(value[0], (str, float)):
        value[:] = [decode_encoded(item) for item in value]  # (lists of ids or numbers hold no array)
    return value
