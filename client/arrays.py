"""Arrays between Python, NumPy and the wire. NumPy is optional and imported only when used."""

from __future__ import annotations

import functools
import types
from collections.abc import Mapping
from enum import Enum
from operator import attrgetter
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel

try:  # SIMD base64, far faster than the standard library on large arrays (the `numpy` extra)
    from pybase64 import b64decode, b64encode
except ImportError:  # pragma: no cover - the standard library does the same, slower
    from base64 import b64decode, b64encode  # type: ignore[assignment]

from client._constants import BASE64_MIN_ELEMENTS
from service.wire import EncodedArray

if TYPE_CHECKING:
    import numpy as np

_ENCODED_KEYS = frozenset({"dtype", "shape", "data"})
#: values that are never an array nor hold one (a bool is an int)
_SCALARS = (str, int, float)
_PLAIN_KINDS = frozenset({str, int, float, bool, type(None)})


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
    import numpy as np

    data = np.ascontiguousarray(array, dtype="<f8")
    return {"dtype": "float64", "shape": list(data.shape), "data": b64encode(data.data.cast("B")).decode()}


def _is_plain_type(annotation: Any) -> bool:
    """Whether a field's type admits only plain values (text, numbers, flags, names)."""
    if annotation in (str, int, float, bool, type(None)):
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return True
    if origin is Annotated:
        return _is_plain_type(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return all(_is_plain_type(arg) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, Enum)


@functools.cache
def _array_fields(kind: type) -> tuple[str, ...]:
    """The fields of a model class that may hold an array (those not typed as plain values);
    none for any other class."""
    if not issubclass(kind, BaseModel):
        return ()
    return tuple(name for name, field in kind.model_fields.items() if not _is_plain_type(field.annotation))


class _Document:
    """A request body in its wire form, and whether it carries an encoded array."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.encoded = False
        self.body: dict[str, Any] = {key: self._wire(value) for key, value in body.items()}

    def _wire(self, value: Any) -> Any:
        """`value` with every NumPy value in its wire form: arrays of BASE64_MIN_ELEMENTS or
        more encoded, smaller ones as lists, scalars as numbers. What holds a NumPy value is
        copied, never changed."""
        kind = type(value)
        if value is None or isinstance(value, _SCALARS):
            return value
        if kind is dict:
            if value.keys() == _ENCODED_KEYS:
                self.encoded = True
                return value
            return {key: self._wire(item) for key, item in value.items()}
        if kind is list or kind is tuple:
            if not value or isinstance(value[0], _SCALARS):  # numbers or ids: no array inside
                return value
            return [self._wire(item) for item in value]
        if isinstance(value, BaseModel):  # a validated wire model: no NumPy value inside
            self.encoded = self.encoded or holds_encoded([value])
            return value
        if _is_ndarray(value):
            if value.ndim == 0:
                return float(value)
            if value.size < BASE64_MIN_ELEMENTS:
                return value.astype(float).tolist()
            self.encoded = True
            return encode(value)
        if kind.__module__ == "numpy":  # a NumPy scalar
            return float(value)
        raise TypeError(f"cannot send a {kind.__name__} to gradserve")

    def json(self) -> bytes:
        """The body as JSON; models as they dump, their None fields (the defaults) left out."""
        try:
            return orjson.dumps(self.body, default=_dumped)
        except orjson.JSONEncodeError as exc:
            raise TypeError(str(exc.__cause__ or exc)) from None


def _dumped(value: Any) -> Any:
    """What orjson writes for a value it does not know: a model's dump, a number for a NumPy
    value the walk left in a list of numbers."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=True)
    if _is_ndarray(value):
        return value.astype(float).tolist()
    if type(value).__module__ == "numpy":
        return float(value)
    raise TypeError(f"cannot send a {type(value).__name__} to gradserve")


def holds_encoded(values: list[Any]) -> bool:
    """Whether any of `values` (models, dicts, lists) holds an encoded array.

    It looks a kind at a time, so a list of thousands of weights costs a few C-level passes:
    models of one class are looked into a field at a time, all of them at once.
    """
    every = set(map(type, values))
    kinds = every - _PLAIN_KINDS
    if EncodedArray in kinds:
        return True
    for kind in kinds:
        group: list[Any] = values if every == {kind} else [value for value in values if type(value) is kind]
        if kind is dict:
            inner = [item for value in group for item in value.values()]
        elif kind is list:
            lists = [value for value in group if value and type(value[0]) not in _PLAIN_KINDS]
            inner = [item for value in lists for item in value]  # (numbers or ids hold no array)
        else:
            inner = [item for name in _array_fields(kind) for item in map(attrgetter(name), group)]
        if holds_encoded(inner):
            return True
    return False


def request_body(body: Mapping[str, Any]) -> tuple[bytes, bool]:
    """A request body as JSON, and whether its answer comes back base64, to be decoded here.

    None values are left out (on the wire they mean the default). An `array_encoding` of None
    (the caller left it open) asks for base64 when the body carries an encoded array and NumPy
    is here to read the answer's, so large arrays travel base64 both ways.
    """
    document = _Document({key: value for key, value in body.items() if value is not None})
    decode = "array_encoding" in body and body["array_encoding"] is None
    decode = decode and document.encoded and numpy_available()
    if decode:
        document.body["array_encoding"] = "base64"
    return document.json(), decode


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
        for name in _array_fields(type(value)):
            setattr(value, name, decode_encoded(getattr(value, name)))
    elif isinstance(value, dict):
        for key, item in value.items():
            value[key] = decode_encoded(item)
    elif isinstance(value, list) and value and not isinstance(value[0], _SCALARS):
        value[:] = [decode_encoded(item) for item in value]
    return value
