"""Arrays between Python, NumPy and the wire. NumPy is optional and imported only when used."""

from __future__ import annotations

import functools
import math
import sys
import types
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel, PrivateAttr

try:  # SIMD base64, far faster than the standard library on large arrays (the `numpy` extra)
    from pybase64 import b64decode, b64encode
except ImportError:  # pragma: no cover - the standard library does the same, slower
    from base64 import b64decode, b64encode  # type: ignore[assignment]

from client._constants import BASE64_MIN_ELEMENTS
from service.wire import BinaryReference, EncodedArray, framing

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
    """Any array of a request or a result (number, nested lists, encoded, binary) as a float64
    NumPy array; a binary answer's FP64 array is read where the answer holds it, not copied."""
    import numpy as np

    if isinstance(value, BinaryArray):
        raw = np.frombuffer(value.data, dtype=framing.DATATYPES[value.datatype][0]).reshape(value.shape)
        return raw if raw.dtype == np.float64 else raw.astype(np.float64)
    if isinstance(value, BinaryReference):
        raise ValueError("a binary reference without its bytes (arrays are read where the answer holds them)")
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


def to_list(value: Any) -> Any:
    """Any array of a request or a result as nested lists of floats (a float for a number),
    without NumPy."""
    if isinstance(value, BinaryArray):
        return value.tolist()
    if isinstance(value, EncodedArray):
        value = value.model_dump()
    if isinstance(value, Mapping) and set(value) == _ENCODED_KEYS:
        datatype = "FP64" if value["dtype"] == "float64" else "FP32"
        raw = b64decode(value["data"], validate=True)
        return _nested(raw, datatype, tuple(value["shape"]))
    if isinstance(value, list):
        return [to_list(item) for item in value]
    return float(value)


def _nested(raw: Any, datatype: str, shape: tuple[int, ...]) -> Any:
    """Little-endian bytes of `datatype` as nested lists of `shape` (the framing's own reader)."""
    size = math.prod(shape) * framing.DATATYPES[datatype][1]
    ref = framing.Reference(path=(), datatype=datatype, shape=shape, offset=0, size=size)
    if len(raw) != size:
        raise ValueError(f"{len(raw)} bytes cannot hold shape {list(shape)} of {datatype}")
    return framing.to_lists(raw, ref)


class BinaryArray(BinaryReference):
    """A binary reference of an answer together with its bytes (a view of the answer's body):
    `client.to_numpy` reads it without a copy, `client.to_list` (or `.tolist()`) without NumPy.
    Sent again in a request, it travels as it came."""

    _data: memoryview = PrivateAttr()

    @classmethod
    def of(cls, reference: BinaryReference, data: memoryview) -> BinaryArray:
        made = cls.model_construct(**dict(reference))
        made._data = data
        return made

    @property
    def data(self) -> memoryview:
        """The elements' bytes: little-endian, C order."""
        return self._data

    def tolist(self) -> Any:
        return _nested(self._data, self.datatype, tuple(self.shape))


def binary_of(value: list[Any], min_elements: int = 0) -> BinaryArray | None:
    """Nested lists of numbers (rectangular) as a BinaryArray of FP64, to be sent as raw bytes;
    None when `value` is no such array or holds fewer than `min_elements` numbers. No NumPy needed."""
    shape, probe = [], value
    while type(probe) is list:
        if not probe:
            return None
        shape.append(len(probe))
        probe = probe[0]
    if math.prod(shape) < min_elements:
        return None
    flat: list[Any] = value
    for size in shape[1:]:
        if any(type(row) is not list or len(row) != size for row in flat):
            return None
        flat = [item for row in flat for item in row]
    if not all(type(item) is float or type(item) is int for item in flat):
        return None
    try:
        data = array("d", flat)
    except OverflowError:  # an integer past float64: the server says so, in its words
        return None
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        data.byteswap()
    reference = BinaryReference.model_validate(framing.reference(shape))
    return BinaryArray.of(reference, memoryview(data).cast("B"))


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
    """A request body in its wire form: the JSON document, the binary sections its references
    stand for (in the order they appear in it), and whether it carries an encoded or binary array.

    With `binary`, arrays of BASE64_MIN_ELEMENTS or more travel as binary references; without,
    base64-encoded. The walk visits values in the order they are serialised (dicts keep
    insertion order), so the sections line up with their references.
    """

    def __init__(self, body: Mapping[str, Any], binary: bool = True) -> None:
        self.binary = binary
        self.encoded = False
        self.sections: list[Any] = []
        self.body: dict[str, Any] = {key: self._wire(value) for key, value in body.items()}

    def _wire(self, value: Any) -> Any:
        """`value` with every NumPy value in its wire form: arrays of BASE64_MIN_ELEMENTS or
        more binary or encoded, smaller ones as lists, scalars as numbers. What holds a NumPy
        value is copied, never changed."""
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
        if kind is BinaryArray:
            self.encoded = True
            return self._binary(value.data, value.datatype, value.shape)
        if isinstance(value, BaseModel):  # a validated wire model: no NumPy value inside
            if holds_binary([value]):  # but an answer's arrays, to be sent with their bytes
                return self._model(value)
            self.encoded = self.encoded or holds_encoded([value])
            return value
        if _is_ndarray(value):
            if value.ndim == 0:
                return float(value)
            if value.size < BASE64_MIN_ELEMENTS:
                return value.astype(float).tolist()
            self.encoded = True
            if self.binary:
                datatype = "FP32" if value.dtype == "float32" else "FP64"
                data = value.astype(framing.DATATYPES[datatype][0], order="C", copy=False)  # C-contiguous
                return self._binary(data, datatype, data.shape)
            return encode(value)
        if kind.__module__ == "numpy":  # a NumPy scalar
            return float(value)
        raise TypeError(f"cannot send a {kind.__name__} to gradserve")

    def _binary(self, data: Any, datatype: str, shape: Any) -> dict[str, Any]:
        """A reference in the document, its bytes the next section (or base64 without `binary`)."""
        if not self.binary:
            dtype = "float64" if datatype == "FP64" else "float32"
            return {"dtype": dtype, "shape": list(shape), "data": b64encode(data).decode()}
        self.sections.append(data)
        return framing.reference(shape, datatype)

    def _model(self, model: BaseModel) -> dict[str, Any]:
        """A model as it dumps (None fields left out), each of its binary arrays with its bytes."""
        return {
            name: self._wire(item)
            for name in type(model).model_fields
            if (item := getattr(model, name)) is not None
        }

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
    """Whether any of `values` (models, dicts, lists) holds an encoded array."""
    return _holds(values, EncodedArray)


def holds_binary(values: list[Any]) -> bool:
    """Whether any of `values` (models, dicts, lists) holds a binary array with its bytes."""
    return _holds(values, BinaryArray)


def _holds(values: list[Any], target: type) -> bool:
    """Whether any of `values` holds a `target`.

    It looks a kind at a time, so a list of thousands of weights costs a few C-level passes:
    models of one class are looked into a field at a time, all of them at once.
    """
    every = set(map(type, values))
    kinds = every - _PLAIN_KINDS
    if target in kinds:
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
        if _holds(inner, target):
            return True
    return False


@dataclass
class RequestBody:
    """A request body ready to send, and how to read its answer."""

    content: bytes
    headers: dict[str, str] = field(default_factory=dict)
    #: whether the answer's arrays come base64 or binary because this client asked, to be read
    #: into nested lists here (the caller left the encoding open)
    decode: bool = False


def request_body(body: Mapping[str, Any], binary: bool = True, framed_answer: bool = True) -> RequestBody:
    """A request body, framed when it carries binary arrays, else JSON.

    None values are left out (on the wire they mean the default). An `array_encoding` of None
    (the caller left it open) asks for binary (base64 without `binary`) when the body carries
    a binary or encoded array and the answer's can be read here, so large arrays travel the
    same way both ways; the answer then reads as nested lists, as if they had been lists.
    """
    document = _Document({key: value for key, value in body.items() if value is not None}, binary)
    answer = "binary" if binary and framed_answer else "base64"  # (a streamed answer is JSON)
    decode = "array_encoding" in body and body["array_encoding"] is None
    decode = decode and document.encoded and (answer == "binary" or numpy_available())
    if decode:
        document.body["array_encoding"] = answer
    text = document.json()
    if not document.sections:
        return RequestBody(text, {"content-type": "application/json"}, decode)
    length, pieces = framing.frame(text, document.sections)
    headers = {"content-type": framing.MEDIA_TYPE, framing.HEADER: str(length)}
    return RequestBody(b"".join(pieces), headers, decode)


def read_answer(model: type[BaseModel], content: bytes, header: str | None, decode: bool) -> BaseModel:
    """A framed answer (the JSON document, then its arrays' bytes) as `model`.

    With `decode` every binary array is read into nested lists; else each stays a BinaryArray
    whose bytes are a view of `content`. A non-finite element is a ValueError.
    """
    document, sections = framing.split(content, header)
    parsed = orjson.loads(document)
    refs = framing.references(parsed, len(sections))
    views = [framing.section(sections, ref) for ref in refs]
    for ref, view in zip(refs, views, strict=True):
        if not _finite(view, ref.datatype):
            raise ValueError(f"the binary array at {'.'.join(map(str, ref.path))} holds a NaN or an infinity")
    if decode:
        lists = {ref.path: _decoded(view, ref) for ref, view in zip(refs, views, strict=True)}
        return model.model_validate(framing.resolve(parsed, refs, lambda ref: lists[ref.path]))
    result = model.model_validate_json(bytes(document))  # the JSON alone: small
    for ref, view in zip(refs, views, strict=True):
        _attach(result, ref.path, view)
    return result


def _finite(view: memoryview, datatype: str) -> bool:
    if numpy_available():
        import numpy as np

        return bool(np.isfinite(np.frombuffer(view, dtype=framing.DATATYPES[datatype][0])).all())
    values = array("d" if datatype == "FP64" else "f")
    values.frombytes(view)
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        values.byteswap()
    return all(map(math.isfinite, values))


def _decoded(view: memoryview, ref: framing.Reference) -> Any:
    """A reference's elements as nested lists (NumPy's reader when it is here: faster)."""
    if numpy_available():
        import numpy as np

        return np.frombuffer(view, dtype=ref.typestr).reshape(ref.shape).astype(float).tolist()
    return framing.to_lists(view, framing.Reference((), ref.datatype, ref.shape, 0, ref.size))


def _attach(node: Any, path: framing.Path, view: memoryview) -> None:
    """The BinaryReference at `path` in a validated answer given its bytes (becomes a
    BinaryArray); a reference where the model keeps none (a field it ignores) is left out."""
    try:
        for key in path[:-1]:
            node = getattr(node, str(key)) if isinstance(node, BaseModel) else node[key]
        last = path[-1]
        if isinstance(node, BaseModel):
            reference = getattr(node, str(last))
            if isinstance(reference, BinaryReference):
                setattr(node, str(last), BinaryArray.of(reference, view))
        else:
            reference = node[last]
            if isinstance(reference, BinaryReference):
                node[last] = BinaryArray.of(reference, view)
    except (AttributeError, KeyError, IndexError, TypeError):
        return


def binary_arrays(value: Any, path: framing.Path = ()) -> Iterator[tuple[framing.Path, BinaryArray]]:
    """Every BinaryArray in an answer (models, dicts, lists) with its JSON path, in order."""
    if isinstance(value, BinaryArray):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in _array_fields(type(value)):
            yield from binary_arrays(getattr(value, name), (*path, name))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from binary_arrays(item, (*path, key))
    elif isinstance(value, list) and value and not isinstance(value[0], _SCALARS):
        for index, item in enumerate(value):
            yield from binary_arrays(item, (*path, index))


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
