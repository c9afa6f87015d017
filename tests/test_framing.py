"""The binary framing module (service.wire.framing), on its own: split, references, write."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from typing import Any

import numpy as np
import orjson
import pytest

from service.wire import framing
from service.wire.framing import FramingError, InvalidReference


def _ref(shape: list[int], datatype: str = "FP64", size: int | None = None) -> dict[str, Any]:
    ref = framing.reference(shape, datatype)
    if size is not None:
        ref["parameters"]["binary_data_size"] = size
    return ref


def test_the_wire_package_imports_without_numpy() -> None:
    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "from service.wire import framing\n"
        "assert 'numpy' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("header", [None, "", "abc", "-3", "1.5", "٣", "1" * 21, b"x"])
def test_a_missing_or_non_numeric_header_is_a_framing_error(header: Any) -> None:
    with pytest.raises(FramingError, match="Inference-Header-Content-Length"):
        framing.split(b"{}", header)


def test_split_gives_views_of_the_body() -> None:
    body = bytearray(b'{"a": 1}' + bytes(range(16)))
    doc, sections = framing.split(body, " 8 ")
    assert bytes(doc) == b'{"a": 1}'
    assert bytes(sections) == bytes(range(16))
    body[8] = 99  # a view, not a copy
    assert sections[0] == 99
    assert [len(part) for part in framing.split(body, b"24")] == [24, 0]


def test_a_length_past_the_body_is_a_framing_error() -> None:
    with pytest.raises(FramingError, match="25 but the body has only 24"):
        framing.split(bytes(24), "25")


def test_references_are_found_in_document_order_with_their_paths() -> None:
    doc = {
        "network": {
            "units": [{"id": "x"}, {"id": "o", "bias": _ref([1], "FP32")}],
            "weights": [{"source": "x", "target": "o", "value": _ref([2, 1])}],
        },
        "samples": {"inputs": {"x": _ref([3, 2])}, "targets": {"o": [[1.0], [2.0], [3.0]]}},
        "learning_rate": 0.5,
    }
    parsed = orjson.loads(json.dumps(doc))
    refs = framing.references(parsed, 4 + 16 + 48)
    assert [r.path for r in refs] == [
        ("network", "units", 1, "bias"),
        ("network", "weights", 0, "value"),
        ("samples", "inputs", "x"),
    ]
    assert [(r.offset, r.size) for r in refs] == [(0, 4), (4, 16), (20, 48)]
    assert [r.shape for r in refs] == [(1,), (2, 1), (3, 2)]
    assert refs[0].typestr == "<f4"
    assert refs[1].typestr == "<f8"


def test_the_order_is_the_texts_not_the_alphabets() -> None:
    text = b'{"z": ' + orjson.dumps(_ref([1])) + b', "a": ' + orjson.dumps(_ref([2])) + b"}"
    refs = framing.references(orjson.loads(text), 24)
    assert [(r.path, r.offset) for r in refs] == [(("z",), 0), (("a",), 8)]


def test_a_document_without_references_takes_no_sections() -> None:
    assert framing.references({"a": [[1.0, 2.0]], "b": [{"c": 1}]}, 0) == []
    with pytest.raises(FramingError, match="3 bytes after its JSON document"):
        framing.references({"a": [1.0]}, 3)


def test_sections_short_or_left_over_are_framing_errors() -> None:
    doc = {"a": _ref([2]), "b": [_ref([1], "FP32")]}
    assert len(framing.references(doc, 20)) == 2
    with pytest.raises(FramingError, match="need 20 bytes of sections but the body has 19"):
        framing.references(doc, 19)
    with pytest.raises(FramingError, match="1 bytes after"):
        framing.references(doc, 21)


@pytest.mark.parametrize(
    ("ref", "path", "msg"),
    [
        (
            _ref([2], size=15),
            ("a", "parameters", "binary_data_size"),
            "is 15 but shape \\[2\\] of FP64 takes 16",
        ),
        (_ref([2], "FP32", size=16), ("a", "parameters", "binary_data_size"), "takes 8"),
        ({**_ref([2]), "datatype": "INT64"}, ("a", "datatype"), "must be 'FP64' or 'FP32'"),
        ({"shape": [2], "parameters": {"binary_data_size": 16}}, ("a", "datatype"), "not missing"),
        ({**_ref([2]), "shape": [2.0]}, ("a", "shape"), "integers >= 0"),
        ({**_ref([2]), "shape": [-1]}, ("a", "shape"), "integers >= 0"),
        ({**_ref([2]), "shape": [True]}, ("a", "shape"), "integers >= 0"),
        (_ref([2], size=-16), ("a", "parameters", "binary_data_size"), "integer >= 0"),
        (
            {**_ref([2]), "parameters": {"binary_data_size": "16"}},
            ("a", "parameters", "binary_data_size"),
            "an integer",
        ),
    ],
)
def test_a_reference_that_does_not_fit_its_bytes_is_invalid(
    ref: Any, path: tuple[Any, ...], msg: str
) -> None:
    with pytest.raises(InvalidReference, match=msg) as caught:
        framing.references({"a": ref}, 16)
    assert caught.value.path == path


def test_a_huge_shape_is_refused_without_building_it() -> None:
    with pytest.raises(InvalidReference, match="over 2\\*\\*100"):
        framing.references({"a": _ref([2**100], size=8)}, 8)


def test_a_document_is_walked_as_deep_as_it_is_read_and_no_deeper() -> None:
    doc: Any = _ref([1])
    for _ in range(framing.MAX_DEPTH):
        doc = [doc]
    (ref,) = framing.references(doc, 8)
    assert ref.path == (0,) * framing.MAX_DEPTH
    with pytest.raises(FramingError, match=f"nested more than {framing.MAX_DEPTH} deep"):
        framing.references([doc], 8)


def test_the_walk_holds_memory_for_its_depth_not_for_each_container() -> None:
    """The walk bomb: a deep document whose innermost list holds many empty lists was walked
    building a path (a tuple as long as the document is deep) for each container, 30 MB for
    this 60 KB document; now a path is built only for a reference found, and the walk holds
    one iterator per level."""
    inner: Any = [[] for _ in range(20_000)] + [[[]] for _ in range(20_000)]
    for _ in range(framing.MAX_DEPTH - 3):  # ([[]] at the deepest level read)
        inner = [inner]
    wide = {f"k{k}": [{"x": [1.0, 2.0]}, "s"] for k in range(20_000)}
    doc = {"binary_data_size": 1, "a": inner, "b": [wide, [[1.0]] * 20_000, _ref([1])]}
    tracemalloc.start()
    try:
        (ref,) = framing.references(doc, 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.path == ("b", 2)
    assert peak < 256 * 1024, peak


def test_write_then_read_round_trips_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=5).astype(np.float32)
    empty = np.zeros((2, 0))
    doc = {
        "x": framing.reference(a.shape),
        "y": {"z": framing.reference(b.shape, "FP32")},
        "e": framing.reference(empty.shape),
    }
    length, pieces = framing.frame(orjson.dumps(doc), [a, b, empty])
    assert np.shares_memory(np.asarray(pieces[1]), a)  # not copied
    body = b"".join(pieces)
    text, sections = framing.split(body, str(length))
    refs = framing.references(orjson.loads(text), len(sections))
    read = framing.resolve(
        orjson.loads(text),
        refs,
        lambda r: np.frombuffer(framing.section(sections, r), r.typestr).reshape(r.shape),
    )
    assert read["x"].tobytes() == a.tobytes()
    assert read["y"]["z"].tobytes() == b.tobytes()
    assert read["e"].shape == (2, 0)
    lists = framing.resolve(orjson.loads(text), refs, lambda r: framing.to_lists(sections, r))
    assert lists["x"] == a.tolist()
    assert lists["y"]["z"] == b.tolist()
    assert lists["e"] == [[], []]


def test_resolve_leaves_the_document_as_it_was() -> None:
    doc = {"a": [1.0, {"b": _ref([])}]}
    refs = framing.references(doc, 8)
    sections = np.array(2.5).tobytes()
    assert framing.resolve(doc, refs, lambda r: framing.to_lists(sections, r)) == {"a": [1.0, {"b": 2.5}]}
    assert doc == {"a": [1.0, {"b": _ref([])}]}
