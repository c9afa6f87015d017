"""The client's side of the binary framing: NumPy arrays sent as raw bytes, binary answers read
without a copy (or as lists without NumPy), and the CLI's --binary and --npz."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

import client
from client import cli
from client.arrays import binary_of, read_answer, request_body
from service.wire import framing

SIZES = (24, 16, 3)  # weights of 384 and 48 numbers: one array over the threshold, one under
BATCH = 32


def mlp_case(seed: int = 0, dtype: Any = np.float64) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dense network and a batch whose large arrays are NumPy arrays."""
    rng = np.random.default_rng(seed)
    ids = ["in", "hid", "out"]
    units: list[dict[str, Any]] = [{"id": "in", "role": "input", "size": SIZES[0]}]
    units += [{"id": "hid", "size": SIZES[1], "bias": rng.normal(size=SIZES[1]).astype(dtype)}]
    units += [{"id": "out", "role": "output", "size": SIZES[2], "activation": "tanh"}]
    weights = [
        {"source": ids[k], "target": ids[k + 1], "value": rng.normal(size=SIZES[k : k + 2]).astype(dtype)}
        for k in range(2)
    ]
    samples = {
        "inputs": {"in": rng.normal(size=(BATCH, SIZES[0])).astype(dtype)},
        "targets": {"out": rng.normal(size=(BATCH, SIZES[2])).astype(dtype)},
    }
    return {"units": units, "weights": weights}, samples


def as_lists(value: Any) -> Any:
    """The same request with every NumPy array as nested lists."""
    if isinstance(value, dict):
        return {key: as_lists(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_lists(item) for item in value]
    return value.astype(float).tolist() if isinstance(value, np.ndarray) else value


def arrays_of(result: client.GradientsResponse) -> list[np.ndarray]:
    grads = result.gradients
    assert isinstance(grads.weights, list)
    return [client.to_numpy(w.value) for w in grads.weights] + [
        client.to_numpy(b) for b in grads.biases.values()
    ]


class Recorder:
    """An httpx event hook that keeps the requests a client sends."""

    def __init__(self) -> None:
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.sent.append(request)

    def document(self, k: int = -1) -> Any:
        """The JSON document of the k-th request, framed or not."""
        request = self.sent[k]
        if request.headers["content-type"] != framing.MEDIA_TYPE:
            return json.loads(request.content)
        document, _ = framing.split(request.content, request.headers[framing.HEADER])
        return json.loads(bytes(document))


@contextlib.contextmanager
def recording_client(url: str) -> Iterator[tuple[client.Client, Recorder]]:
    """A client whose requests are kept."""
    recorder = Recorder()
    with httpx.Client(event_hooks={"request": [recorder]}, timeout=60) as http:
        yield client.Client(url, http_client=http), recorder


# ---------------------------------------------------------------- the SDK against a live server


def test_binary_answers_are_bit_for_bit_those_of_base64_and_lists(server_url: str) -> None:
    network, samples = mlp_case()
    with recording_client(server_url) as (gs, sent), client.Client(server_url, binary=False) as gs64:
        binary = gs.gradients(network, samples, array_encoding="binary")
        base64 = gs64.gradients(network, samples, array_encoding="base64")
        lists = gs64.gradients(as_lists(network), as_lists(samples), array_encoding="list")
    # the large arrays went as binary references, the small ones as lists
    assert sent.sent[0].headers["content-type"] == framing.MEDIA_TYPE
    document = sent.document()
    assert document["network"]["weights"][0]["value"] == framing.reference([24, 16])
    assert document["network"]["weights"][1]["value"] == as_lists(network["weights"][1]["value"])
    assert document["samples"]["inputs"]["in"] == framing.reference([BATCH, 24])
    assert document["array_encoding"] == "binary"
    # every array of the answer read where the answer holds it
    value = binary.gradients.weights[0].value  # type: ignore[union-attr]
    assert isinstance(value, client.BinaryArray)
    read = client.to_numpy(value)
    assert not read.flags.owndata
    assert not read.flags.writeable
    assert isinstance(binary.units, dict)
    assert isinstance(binary.units["hid"].delta, client.BinaryArray)
    assert binary.loss == base64.loss == lists.loss
    for a, b, c in zip(arrays_of(binary), arrays_of(base64), arrays_of(lists), strict=True):
        assert a.tobytes() == b.tobytes() == c.tobytes()
    assert client.to_list(value) == client.to_numpy(value).tolist() == lists.gradients.weights[0].value  # type: ignore[union-attr]


def test_left_open_the_answer_comes_binary_and_reads_as_lists(server_url: str) -> None:
    network, samples = mlp_case(1)
    with recording_client(server_url) as (gs, sent):
        auto = gs.gradients(network, samples, per_sample=True)
        lists = gs.gradients(as_lists(network), as_lists(samples), per_sample=True)
    assert sent.document(0)["array_encoding"] == "binary"
    assert sent.sent[1].headers["content-type"] == "application/json"
    assert "array_encoding" not in sent.document(1)
    assert auto == lists  # the same typed result, to the last bit, whatever travelled
    assert isinstance(auto.gradients.weights[0].value, list)  # type: ignore[union-attr]


def test_float32_arrays_travel_as_fp32(server_url: str) -> None:
    network, samples = mlp_case(2, np.float32)
    with recording_client(server_url) as (gs, sent):
        fp32 = gs.forward(network, samples, array_encoding="binary")
        widened = gs.forward(as_lists(network), as_lists(samples), array_encoding="binary")
    assert sent.document(0)["samples"]["inputs"]["in"]["datatype"] == "FP32"
    assert sent.sent[0].headers["content-length"] == str(len(sent.sent[0].content))
    assert fp32.loss == widened.loss
    for unit in fp32.outputs:
        assert (
            client.to_numpy(fp32.outputs[unit]).tobytes() == client.to_numpy(widened.outputs[unit]).tobytes()
        )


def test_a_binary_answer_posted_again_takes_its_bytes_along(server_url: str) -> None:
    """`trained.network` of a binary answer holds BinaryArrays: posting it sends their bytes."""
    network, samples = mlp_case(3)
    with recording_client(server_url) as (gs, sent):
        trained = gs.sgd(network, samples, 0.1, epochs=2, array_encoding="binary")
        assert isinstance(trained.network.weights[0].value, client.BinaryArray)  # type: ignore[union-attr]
        again = gs.gradients(trained.network, samples, array_encoding="binary")
        as_lists_ = gs.sgd(as_lists(network), as_lists(samples), 0.1, epochs=2, array_encoding="list")
        expected = gs.gradients(as_lists_.network, samples, array_encoding="binary")
    assert sent.document(1)["network"]["weights"][0]["value"] == framing.reference([24, 16])
    assert sent.document(3)["network"]["weights"][0]["value"] == as_lists_.network.weights[0].value  # type: ignore[union-attr]
    assert again.loss == expected.loss
    for a, b in zip(arrays_of(again), arrays_of(expected), strict=True):
        assert a.tobytes() == b.tobytes()


def test_the_async_client_speaks_binary_too(server_url: str) -> None:
    network, samples = mlp_case(4)

    async def go() -> tuple[client.GradientsResponse, client.GradientsResponse]:
        async with client.AsyncClient(server_url) as gs:
            return await asyncio.gather(
                gs.gradients(network, samples, array_encoding="binary"),
                gs.gradients(as_lists(network), as_lists(samples), array_encoding="list"),
            )

    binary, lists = asyncio.run(go())
    assert isinstance(binary.gradients.weights[0].value, client.BinaryArray)  # type: ignore[union-attr]
    for a, b in zip(arrays_of(binary), arrays_of(lists), strict=True):
        assert a.tobytes() == b.tobytes()


def test_without_numpy_binary_answers_read_as_lists(server_url: str) -> None:
    """NumPy hidden from a fresh interpreter: binary arrays are still sent and read."""
    network, samples = mlp_case(5)
    request = {"network": as_lists(network), "samples": as_lists(samples)}
    with client.Client(server_url) as gs:
        expected = gs.gradients(request["network"], request["samples"], array_encoding="list")
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        class NoNumpy(importlib.abc.MetaPathFinder):
            def __init__(self, finder):
                self.finder = finder
            def find_spec(self, name, path=None, target=None):
                if name == "numpy" or name.startswith("numpy."):
                    return None
                return self.finder.find_spec(name, path, target)

        sys.meta_path[:] = [NoNumpy(f) if hasattr(f, "find_spec") else f for f in sys.meta_path]
        import client
        from client.arrays import binary_of, numpy_available
        assert not numpy_available() and "numpy" not in sys.modules
        request = json.load(sys.stdin)
        x = binary_of(request["samples"]["inputs"]["in"])
        with client.Client({server_url!r}) as gs:
            got = gs.gradients(request["network"], {{**request["samples"], "inputs": {{"in": x}}}},
                               array_encoding="binary")
            auto = gs.gradients(request["network"], {{**request["samples"], "inputs": {{"in": x}}}})
        assert isinstance(got.gradients.weights[0].value, client.BinaryArray)
        assert "numpy" not in sys.modules
        print(json.dumps({{"binary": [client.to_list(w.value) for w in got.gradients.weights],
                          "auto": [w.value for w in auto.gradients.weights], "loss": got.loss}}))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(request), capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    lists = [w.value for w in expected.gradients.weights]  # type: ignore[union-attr]
    assert out["binary"] == out["auto"] == lists
    assert out["loss"] == expected.loss


# ---------------------------------------------------------------- bodies and answers, no server


def test_sections_follow_their_references_in_document_order() -> None:
    """Whatever the strings around them and the arrays' layouts, each section is its array."""
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(20 + k, 13)) for k in range(3)]
    text = '\x00"quoted" \\ {"datatype": "FP64", "parameters": {"binary_data_size": 8}} ünïcode'
    body = {
        "z": np.asfortranarray(arrays[2]),
        "x": [arrays[0], {"s": text, "y": arrays[1][::-1]}],
        "small": np.arange(3.0),
        "f": arrays[0].astype(np.float32),
    }
    made = request_body(body)
    document, sections = framing.split(made.content, made.headers[framing.HEADER])
    parsed = orjson.loads(document)
    refs = framing.references(parsed, len(sections))
    assert [ref.path for ref in refs] == [("z",), ("x", 0), ("x", 1, "y"), ("f",)]
    expected = [arrays[2], arrays[0], arrays[1][::-1], arrays[0].astype(np.float32)]
    for ref, array in zip(refs, expected, strict=True):
        assert framing.section(sections, ref).tobytes() == np.ascontiguousarray(array).tobytes()
    assert parsed["x"][1]["s"] == text
    assert parsed["small"] == [0.0, 1.0, 2.0]
    assert made.headers["content-type"] == framing.MEDIA_TYPE
    assert not made.decode  # the caller said nothing about the answer: it is not asked for
    assert body["x"][0] is arrays[0]  # what held the arrays is left as it was
    # binary=False: the same arrays base64, no framing
    plain = request_body(body, binary=False)
    assert plain.headers == {"content-type": "application/json"}
    assert client.to_numpy(orjson.loads(plain.content)["z"]).tolist() == arrays[2].tolist()


def test_a_framed_answer_with_a_nan_or_a_bad_framing_raises_api_error() -> None:
    document = {"outputs": {"o": framing.reference([300, 1])}, "units": {}, "loss": None}
    length, pieces = framing.frame(orjson.dumps(document), [np.full((300, 1), np.nan)])
    headers = {"content-type": framing.MEDIA_TYPE, framing.HEADER: str(length)}
    short = {**headers, framing.HEADER: str(length + 9)}
    for answer_headers in (headers, short):
        answer = httpx.Response(200, headers=answer_headers, content=b"".join(pieces))
        transport = httpx.MockTransport(lambda _, answer=answer: answer)  # type: ignore[misc]
        gs = client.Client("http://mock", http_client=httpx.Client(transport=transport))
        with pytest.raises(client.APIError, match="does not fit the API"):
            gs.forward({"units": []}, {"inputs": {"x": np.zeros((300, 1))}}, array_encoding="binary")


@pytest.mark.parametrize("numpy", [True, False])
def test_a_non_finite_binary_element_is_found_with_or_without_numpy(
    monkeypatch: pytest.MonkeyPatch, numpy: bool
) -> None:
    monkeypatch.setattr(client.arrays, "numpy_available", lambda: numpy)
    for datatype in ("FP64", "FP32"):
        values = np.array([[1.0, 2.0], [np.inf, 4.0]], dtype=framing.DATATYPES[datatype][0])
        length, pieces = framing.frame(orjson.dumps({"z": framing.reference([2, 2], datatype)}), [values])
        for decode in (True, False):
            with pytest.raises(ValueError, match="holds a NaN or an infinity"):
                read_answer(client.UnitValues, b"".join(pieces), str(length), decode)
        finite = b"".join(
            framing.frame(orjson.dumps({"z": framing.reference([2, 2], datatype)}), [np.zeros_like(values)])[
                1
            ]
        )
        assert client.to_list(read_answer(client.UnitValues, finite, str(length), False).z) == [
            [0.0, 0.0],
            [0.0, 0.0],
        ]


def test_binary_arrays_read_as_lists_and_back() -> None:
    nested = [[float(k * 7 + j) for j in range(7)] for k in range(5)]
    made = binary_of(nested)
    assert made is not None
    assert made.shape == [5, 7]
    assert made.datatype == "FP64"
    assert made.tolist() == client.to_list(made) == nested
    assert client.to_numpy(made).tolist() == nested
    assert binary_of(nested, min_elements=36) is None
    assert binary_of([[1.0, 2.0], [3.0]]) is None  # ragged
    assert binary_of([["a", "b"]]) is None
    assert binary_of([True, False]) is None
    assert binary_of([]) is None
    # read back from a framed answer, in lists (decode) or kept
    length, pieces = framing.frame(
        orjson.dumps({"s": framing.reference([5, 7], "FP32"), "z": [1.0]}), [np.array(nested, dtype="<f4")]
    )
    body = b"".join(pieces)
    kept = read_answer(client.UnitValues, body, str(length), False)
    decoded = read_answer(client.UnitValues, body, str(length), True)
    assert isinstance(kept.s, client.BinaryArray)
    assert kept.s.datatype == "FP32"
    assert client.to_numpy(kept.s).dtype == np.float64
    assert decoded.s == client.to_list(kept.s) == nested
    with pytest.raises(ValueError, match="without its bytes"):
        client.to_numpy(client.UnitValues.model_validate({"z": framing.reference([1])}).z)


# ---------------------------------------------------------------- the CLI


def big_request(seed: int = 6) -> dict[str, Any]:
    network, samples = mlp_case(seed)
    return {"network": as_lists(network), "samples": as_lists(samples)}


def test_cli_binary_sends_large_arrays_as_bytes_and_answers_the_same(server_url: str, tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(big_request()))
    parsed = cli._parser().parse_args(["gradients", "--binary", str(path)])
    request = cli._request(parsed, io.StringIO())
    assert isinstance(request["network"]["weights"][0]["value"], client.BinaryArray)
    assert isinstance(request["network"]["weights"][1]["value"], list)  # 48 numbers: JSON
    assert isinstance(request["samples"]["inputs"]["in"], client.BinaryArray)
    outputs = []
    for flags in ([], ["--binary"]):
        stdout = io.StringIO()
        assert cli.main(["--url", server_url, "gradients", *flags, str(path)], stdout=stdout) == 0
        outputs.append(json.loads(stdout.getvalue()))
    assert outputs[0] == outputs[1]


def test_cli_npz_writes_the_arrays_and_prints_the_rest(server_url: str, tmp_path: Path) -> None:
    request = big_request(7)
    path, npz = tmp_path / "request.json", tmp_path / "grads.npz"
    path.write_text(json.dumps(request))
    stdout = io.StringIO()
    assert (
        cli.main(["--url", server_url, "gradients", "--binary", "--npz", str(npz), str(path)], stdout=stdout)
        == 0
    )
    printed = json.loads(stdout.getvalue())
    with client.Client(server_url) as gs:
        expected = gs.gradients(request["network"], request["samples"], array_encoding="list")
    assert printed["loss"] == expected.loss
    assert printed["gradients"]["weights"][0] == {
        "source": "in",
        "target": "hid",
        "value": {"npz": "gradients.weights.0.value", "shape": [24, 16]},
    }
    with np.load(npz) as saved:
        assert "units.hid.delta" in saved.files
        for k, weight in enumerate(expected.gradients.weights):  # type: ignore[arg-type]
            assert saved[f"gradients.weights.{k}.value"].tolist() == weight.value
        for unit, bias in expected.gradients.biases.items():
            assert saved[f"gradients.biases.{unit}"].tolist() == bias
    assert len(stdout.getvalue()) < 4000  # the numbers are in the file, not on the screen


def test_cli_npz_refuses_base64_too(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(big_request()))
    with pytest.raises(SystemExit, match="asks for a binary answer"):
        cli.main(["gradients", "--npz", str(tmp_path / "x.npz"), "--array-encoding", "base64", str(path)])
