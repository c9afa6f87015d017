"""POST /v1/sgd with Accept: text/event-stream (issue 17): progress as server-sent events, then
the plain answer or its problem, against a real server over sockets."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

import client
from bench.reliability import huge_answer_body
from client.cli import main as cli_main
from service.launcher import Server
from service.settings import Settings
from tests.bodies import chain_request, heavy_request
from tests.servers import Serve
from tests.support import asgi, until_dropped
from tests.test_metrics import scrape, stopped, until

STREAM = {"accept": "text/event-stream"}

#: the stream's server: one slot, no inline computations (every request takes the slot), a
#: short heartbeat, a short queue (a slot held by a computation nobody waits for shows as a
#: 503), and a deadline that only guards a hang (10,000 epochs outlasted the default 30 s on
#: a loaded machine; the deadline tests start servers of their own)
ENV = {
    "GRADSERVE_MAX_CONCURRENT": "1",
    "GRADSERVE_INLINE_MS": "0",
    "GRADSERVE_STREAM_HEARTBEAT_S": "0.1",
    "GRADSERVE_QUEUE_TIMEOUT_S": "1",
    "GRADSERVE_TIMEOUT_S": "600",
}


@pytest.fixture(scope="module")
def server(serve_module: Serve) -> Server:
    return serve_module(ENV)


@pytest.fixture(scope="module")
def url(server: Server) -> str:
    return server.url


Event = tuple[str, str]  # (event name, data); ("", comment) for a comment line


def events(lines: Iterator[str]) -> Iterator[Event]:
    """Server-sent events from a stream's lines (comments as ("", text))."""
    name, data = "message", []
    for line in lines:
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line == "" and data:
            yield name, "\n".join(data)
            name, data = "message", []


def stream(url: str, body: dict[str, Any], timeout: float = 60) -> tuple[httpx.Response, list[Event]]:
    with httpx.stream("POST", url + "/v1/sgd", json=body, headers=STREAM, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            return r, []
        return r, list(events(r.iter_lines()))


def progress_of(got: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(data) for name, data in got if name == "progress"]


def test_progress_events_in_order_with_the_historys_losses_then_the_plain_answer(url: str) -> None:
    body = heavy_request(epochs=40, batch=64) | {"batch_size": 16}
    response, got = stream(url, body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    plain = httpx.post(url + "/v1/sgd", json=body, timeout=60)
    assert plain.status_code == 200
    assert plain.headers["content-type"] == "application/json"
    history = [h["loss"] for h in plain.json()["history"]]

    named = [name for name, _ in got if name]
    assert named[-1] == "result"
    assert set(named[:-1]) == {"progress"}
    progress = progress_of(got)
    epochs = [p["epoch"] for p in progress]
    assert epochs == sorted(set(epochs))
    assert epochs[0] == 0  # the first epoch is never held back
    assert epochs[-1] == 39  # nor the last
    for p in progress:
        assert p["loss"] == history[p["epoch"]]
        assert p["epochs"] == 40
        assert p["steps"] == (p["epoch"] + 1) * 4
    assert got[-1][1].encode() == plain.content


def test_refused_before_the_training_begins_is_a_plain_problem_with_its_status(url: str) -> None:
    cases = [
        (chain_request(learning_rate=-1), 422, "invalid-request"),
        (chain_request(learning_rate=0.1, epochs=10**6), 413, "limit-exceeded"),
        ({"network": {"units": []}, "samples": {}, "learning_rate": 0.1}, 422, None),
    ]
    for body, status, kind in cases:
        response, _ = stream(url, body)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        if kind is not None:
            assert response.json()["type"].endswith(kind)


def diverging(epochs: int) -> dict[str, Any]:
    """x -> o, linear: the error is multiplied by 1 - 2 x 5 = -9 each step, so the loss
    overflows float64 after some 160 epochs and the weights after some 320."""
    return {
        "network": {
            "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
            "weights": [{"source": "x", "target": "o", "value": 1.0}],
        },
        "samples": {"inputs": {"x": [1.0]}, "targets": {"o": [0.0]}},
        "learning_rate": 5.0,
        "epochs": epochs,
    }


def test_a_training_that_overflows_mid_way_ends_with_the_plain_answers_problem_as_an_error_event(
    url: str,
) -> None:
    body = diverging(400)
    plain = httpx.post(url + "/v1/sgd", json=body, timeout=60)
    assert plain.status_code == 422
    assert plain.json()["type"].endswith("non-finite-result")
    response, got = stream(url, body)
    assert response.status_code == 200
    assert [name for name, _ in got if name][-1] == "error"
    assert got[-1][1].encode() == plain.content
    progress = progress_of(got)
    assert progress  # it streamed before it failed
    assert progress[-1]["epoch"] < 200  # the non-finite losses are not sent (JSON has no Infinity)


def test_the_deadline_mid_stream_is_an_error_event(serve: Serve) -> None:
    # Its first epoch takes a few ms of CPU, the whole some 100 s (estimated): with a 3 s
    # deadline, progress then the deadline on any machine, loaded or fast.
    env = {"GRADSERVE_TIMEOUT_S": "3", "GRADSERVE_INLINE_MS": "0", "GRADSERVE_MAX_WORK": str(10**13)}
    server = serve(env)
    response, got = stream(server.url, heavy_request(epochs=10_000, batch=512))
    assert response.status_code == 200
    name, data = got[-1]
    assert name == "error"
    problem = json.loads(data)
    assert problem["status"] == 503
    assert problem["type"].endswith("deadline-exceeded")
    assert progress_of(got)


def test_many_tiny_epochs_are_throttled_to_a_few_events_a_second(url: str) -> None:
    body = chain_request(learning_rate=0.1, epochs=10_000)
    started = time.monotonic()
    response, got = stream(url, body)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    progress = progress_of(got)
    # at most one each 0.1 s of the training, and the last: true at any speed (the training
    # took less than `elapsed`); which events pass is tests/test_stream_clock.py's
    assert len(progress) <= 2 + elapsed / 0.1
    assert progress[-1]["epoch"] == 9_999
    assert got[-1][0] == "result"


@pytest.mark.chaos
def test_a_client_hanging_up_mid_stream_stops_the_training_and_frees_its_slot(url: str) -> None:
    body = heavy_request(epochs=5000)  # would hold the one slot for many seconds
    gone = stopped(url, "client-gone")
    with httpx.stream("POST", url + "/v1/sgd", json=body, headers=STREAM, timeout=30) as r:
        assert r.status_code == 200
        for name, _ in events(r.iter_lines()):
            if name == "progress":
                break  # and hang up, mid-training
    freed_after_hang_up(url, gone)
    after = httpx.post(url + "/v1/sgd", json=heavy_request(epochs=2), timeout=30)
    assert after.status_code == 200, after.text


def freed_after_hang_up(url: str, gone: float) -> None:
    """Until the server has stopped the computation for its client's hang-up and given its slot
    back, as /metrics says (what it decided, however slowly it got there on this machine)."""
    until(lambda: stopped(url, "client-gone") == gone + 1)
    until(lambda: scrape(url).value("gradserve_slots_in_use") == 0)


@pytest.mark.chaos
def test_a_training_hung_up_on_stops_at_its_next_report_and_its_worker_lives_on(server: Server) -> None:
    body = chain_request(learning_rate=0.1, epochs=10_000)  # short epochs: reports come often
    replaced = server.output().count("replacing compute worker")
    for _ in range(2):
        gone = stopped(server.url, "client-gone")
        with httpx.stream("POST", server.url + "/v1/sgd", json=body, headers=STREAM, timeout=30) as r:
            assert r.status_code == 200
            for name, _ in events(r.iter_lines()):
                if name == "progress":
                    break
        freed_after_hang_up(server.url, gone)
        after = httpx.post(server.url + "/v1/sgd", json=chain_request(learning_rate=0.1), timeout=30)
        assert after.status_code == 200, after.text
    assert server.output().count("replacing compute worker") == replaced  # stopped, not killed


def test_without_the_header_nothing_streams(url: str) -> None:
    body = chain_request(learning_rate=0.1, epochs=3)
    for accept in ("application/json", "*/*", "text/event-stream;q=0"):
        r = httpx.post(url + "/v1/sgd", json=body, headers={"accept": accept}, timeout=30)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert len(r.json()["history"]) == 3


def test_the_openapi_document_describes_the_stream(url: str) -> None:
    doc = httpx.get(url + "/openapi.json", timeout=60).json()
    ok = doc["paths"]["/v1/sgd"]["post"]["responses"]["200"]
    assert {"application/json", "text/event-stream"} <= set(ok["content"])
    assert "event: progress" in ok["description"]
    assert set(doc["components"]["schemas"]["SgdProgress"]["properties"]) == {
        "epoch",
        "epochs",
        "steps",
        "loss",
    }


# ---------------------------------------------------------------- the SDK


def assert_progress(seen: list[Any], plain: Any) -> None:
    """Progress events of a training whose plain answer is `plain`: the first epoch, then some
    in order (which ones the throttle passed depends on the machine's speed), then the last,
    each with its epoch's loss from the answer's history."""
    epochs = [p.epoch for p in seen]
    assert epochs[0] == 0
    assert epochs[-1] == len(plain.history) - 1
    assert epochs == sorted(set(epochs))
    assert [p.loss for p in seen] == [plain.history[p.epoch].loss for p in seen]


def test_the_sync_clients_callback_and_iterator(url: str) -> None:
    case = chain_request()
    with client.Client(url) as gs:
        plain = gs.sgd(case["network"], case["samples"], 0.5, epochs=30)
        seen: list[client.SgdProgress] = []
        result = gs.sgd(case["network"], case["samples"], 0.5, epochs=30, progress=seen.append)
        assert result == plain
        assert seen
        assert all(isinstance(p, client.SgdProgress) for p in seen)
        assert seen[-1].epoch == 29
        assert [p.loss for p in seen] == [plain.history[p.epoch].loss for p in seen]

        got = list(gs.sgd_stream(case["network"], case["samples"], 0.5, epochs=30))
        assert got[-1] == plain
        assert_progress(got[:-1], plain)

        with pytest.raises(client.UnprocessableEntityError) as caught:
            gs.sgd(
                diverging(400)["network"], diverging(400)["samples"], 5.0, epochs=400, progress=seen.append
            )
        assert caught.value.problem["type"].endswith("non-finite-result")
        with pytest.raises(client.UnprocessableEntityError):  # refused before the stream: plain
            list(gs.sgd_stream(case["network"], case["samples"], 0.5, epochs=1, batch_size=0))


def test_the_async_clients_callback_and_iterator(url: str) -> None:
    case = chain_request()

    async def go() -> None:
        async with client.AsyncClient(url) as gs:
            plain = await gs.sgd(case["network"], case["samples"], 0.5, epochs=30)
            seen: list[client.SgdProgress] = []

            async def note(p: client.SgdProgress) -> None:
                seen.append(p)

            assert await gs.sgd(case["network"], case["samples"], 0.5, epochs=30, progress=note) == plain
            assert seen[-1].epoch == 29
            got = [event async for event in gs.sgd_stream(case["network"], case["samples"], 0.5, epochs=30)]
            assert got[-1] == plain
            assert_progress(seen, plain)
            assert_progress(got[:-1], plain)
            body = diverging(400)
            with pytest.raises(client.UnprocessableEntityError):
                async for _ in gs.sgd_stream(body["network"], body["samples"], 5.0, epochs=400):
                    pass

    asyncio.run(go())


@pytest.mark.chaos
def test_leaving_the_sdks_iterator_early_stops_the_training(url: str) -> None:
    body = heavy_request(epochs=5000)
    with client.Client(url, max_retries=0) as gs:
        stream = gs.sgd_stream(body["network"], body["samples"], 0.01, epochs=5000)
        first = next(stream)
        assert isinstance(first, client.SgdProgress)
        stream.close()  # (what a `break` out of a for loop does once the iterator is dropped)
        after = gs.sgd(body["network"], body["samples"], 0.01, epochs=2)  # needs the one slot
        assert after.steps == 2


# ---------------------------------------------------------------- the CLI


def cli_sgd(url: str, *flags: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    request = io.StringIO(json.dumps(chain_request(learning_rate=0.5, epochs=30)))
    code = cli_main(["--url", url, "sgd", *flags], stdin=request, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_cli_shows_a_bar_with_progress_and_prints_the_result(url: str) -> None:
    pytest.importorskip("tqdm", reason="the bar is the cli extra's")
    code, out, err = cli_sgd(url, "--progress")
    assert code == 0, err
    answer = json.loads(out)
    assert answer["steps"] == 30
    assert "30/30" in err  # the bar, full at the end
    assert f"loss {answer['loss_after']:.6g}" in err


def test_without_tqdm_the_cli_shows_lines_and_without_a_terminal_nothing(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # (importing it fails)
    code, out, err = cli_sgd(url, "--progress")
    assert code == 0, err
    answer = json.loads(out)
    lines = err.splitlines()
    assert lines[-1].startswith("epoch 30/30  loss ")
    assert float(lines[-1].split()[3]) == pytest.approx(answer["loss_after"], rel=1e-5)
    assert lines[-1].endswith("s left")
    code, quiet, err = cli_sgd(url)  # stderr is not a terminal here
    assert (code, err) == (0, "")
    assert json.loads(quiet) == answer


def test_in_threads_the_stream_is_the_same(url: str) -> None:
    """GRADSERVE_ISOLATION=thread: the computation reports from the server's own thread."""
    body = chain_request(learning_rate=0.5, epochs=5)
    plain = httpx.post(url + "/v1/sgd", json=body, timeout=30)
    settings = Settings(inline_ms=0, isolation="thread")
    streamed, refused = asgi(
        settings,
        ("POST", "/v1/sgd", {"json": body, "headers": STREAM}),
        ("POST", "/v1/sgd", {"json": {**body, "epochs": 0}, "headers": STREAM}),
    )
    assert streamed.status_code == 200
    got = list(events(iter(streamed.text.splitlines())))
    assert got[-1] == ("result", plain.text)
    assert [p["loss"] for p in progress_of(got)] == [
        plain.json()["history"][p["epoch"]]["loss"] for p in progress_of(got)
    ]
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"


@pytest.mark.chaos
def test_a_client_that_does_not_read_its_streamed_result_is_dropped_after_the_send_timeout(
    serve: Serve,
) -> None:
    request = json.loads(huge_answer_body(999_000))  # the answer's network holds a bias for each: 4 MB
    request["samples"]["targets"] = {"o": [1.0]}
    body = json.dumps({**request, "learning_rate": 0.1}).encode()
    server = serve({"GRADSERVE_SEND_TIMEOUT_S": "1", "GRADSERVE_LOG_LEVEL": "warning"})
    json_ = {"content-type": "application/json"}
    plain = httpx.post(server.url + "/v1/sgd", content=body, headers=json_, timeout=30)
    assert plain.status_code == 200
    host, port = server.url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(
            b"POST /v1/sgd HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            b"accept: text/event-stream\r\ncontent-length: %d\r\n\r\n" % len(body) + body
        )
        # not reading: the result's first piece waits past the send timeout, and the server
        # drops the connection (however long the answer took to compute on this machine)
        until_dropped(sock, within=120)
        sock.settimeout(10)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):  # what the kernel held, then the end (no hang)
                got += chunk
    assert got.startswith(b"HTTP/1.1 200")
    assert b"event: progress" in got
    assert len(got) < len(plain.content)  # dropped: not its whole answer (the kernel held some)
    assert b'"history"' not in got  # (the answer's end)
    again = httpx.post(server.url + "/v1/sgd", content=body, headers=json_, timeout=30)
    assert again.content == plain.content  # and its bytes were let go


@pytest.mark.chaos
def test_sigterm_mid_stream_ends_it_with_a_shutting_down_error_event(serve: Serve) -> None:
    # some 100 s of training (estimated) outlasts the 2 s grace on any machine
    env = {"GRADSERVE_SHUTDOWN_GRACE_S": "2", "GRADSERVE_INLINE_MS": "0", "GRADSERVE_MAX_WORK": str(10**13)}
    server = serve(env)
    got: list[Event] = []
    body = heavy_request(epochs=10_000, batch=512)
    with httpx.stream("POST", server.url + "/v1/sgd", json=body, headers=STREAM, timeout=60) as r:
        assert r.status_code == 200
        for event in events(r.iter_lines()):
            got.append(event)
            if event[0] == "progress" and [name for name, _ in got].count("progress") == 1:
                os.kill(server.pid, signal.SIGTERM)  # (after heartbeats too, on a slow machine)
    name, data = got[-1]
    assert name == "error"
    assert json.loads(data)["type"].endswith("shutting-down")
    assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)  # (uvicorn re-raises the signal)


@pytest.mark.chaos
def test_a_stream_stopped_by_its_deadline_or_a_hang_up_is_counted(serve: Serve) -> None:
    env = {"GRADSERVE_TIMEOUT_S": "3", "GRADSERVE_INLINE_MS": "0", "GRADSERVE_MAX_WORK": str(10**13)}
    server = serve(env)
    _, got = stream(server.url, heavy_request(epochs=10_000, batch=512))  # (some 100 s)
    assert got[-1][0] == "error"  # the deadline, mid-stream
    assert stopped(server.url, "deadline") == 1
    with httpx.stream(
        "POST",
        server.url + "/v1/sgd",
        json=chain_request(learning_rate=0.1, epochs=10_000),
        headers=STREAM,
    ) as r:
        for name, _ in events(r.iter_lines()):
            if name == "progress":
                break  # hang up
    until(lambda: stopped(server.url, "client-gone") == 1)
    assert stopped(server.url, "deadline") == 1


def test_the_sdk_streams_a_training_of_numpy_arrays_and_a_binary_answer_is_refused_before_it(
    url: str,
) -> None:
    """The SDK sends large NumPy arrays framed and, left to choose, asks for binary answers; a
    streamed result is a JSON event, so for a stream it asks for base64, and a stream asked for
    binary arrays is refused before it starts (a plain 422), never a framed body in an event."""
    rng = np.random.default_rng(3)
    net = client.mlp([32, 16, 1], seed=3)
    samples = {
        "inputs": {"input": rng.normal(size=(64, 32))},
        "targets": {"output": rng.normal(size=(64, 1))},
    }
    with client.Client(url) as gs:
        plain = gs.sgd(net, samples, 0.1, epochs=3)
        seen: list[client.SgdProgress] = []
        streamed = gs.sgd(net, samples, 0.1, epochs=3, progress=seen.append)
        assert seen[-1].epoch == 2
        assert [p.loss for p in seen] == [plain.history[p.epoch].loss for p in seen]
        assert streamed.history == plain.history
        assert client.to_numpy(streamed.network.weights[0].value).tolist() == (
            client.to_numpy(plain.network.weights[0].value).tolist()
        )
    body = {**chain_request(), "learning_rate": 0.5, "array_encoding": "binary"}
    response = httpx.post(url + "/v1/sgd", json=body, headers={"accept": "text/event-stream"}, timeout=30)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "streamed training" in response.json()["detail"]
