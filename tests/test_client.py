"""The Python client: against a live server, and with mock transports for retries and errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import httpx
import numpy as np
import pytest

import client
from client import _retry
from client.cli import main as cli_main
from service.launcher import free_port
from tests import seed

# ---------------------------------------------------------------- against a live server


def test_sync_calls_return_typed_results_equal_to_the_service(server_url: str) -> None:
    case = seed.chain()
    with client.Client(server_url) as gs:
        assert gs.health().status == "ok"
        assert gs.health(ready=True).status == "ready"
        assert "softmax" in gs.info().activations
        result = gs.gradients(case.network, case.samples)
        raw = httpx.post(
            server_url + "/v1/gradients", json={"network": case.network, "samples": case.samples}
        )
    assert isinstance(result, client.GradientsResponse)
    assert result.model_dump(exclude_none=True) == raw.json()
    assert result.gradients.weights[0].value == pytest.approx(case.weight_gradients[0], rel=1e-12)
    assert result.units is not None
    assert result.units["o"].z == result.units["o"].s  # a linear output
    assert client.to_numpy(result.units["j"].delta).shape == (1, 1)


def test_the_seed_chain_in_ten_lines(server_url: str) -> None:
    # the README's example, line for line
    from client import Client, single_units

    chain = single_units({"x->j": 0.5, "j->k": -0.3, "k->o": 0.8}, inputs=["x"], outputs=["o"])
    samples = {"inputs": {"x": [1.5]}, "targets": {"o": [0.25]}}
    with Client(server_url) as gs:
        grads = gs.gradients(chain, samples)
        trained = gs.sgd(chain, samples, learning_rate=0.5, epochs=20)
        after = gs.forward(trained.network, samples)
    expected = seed.chain().weight_gradients
    assert [w.value for w in grads.gradients.weights] == pytest.approx(expected, rel=1e-12)
    assert after.loss == pytest.approx(trained.loss_after, rel=1e-12)
    assert trained.loss_after < trained.loss_before


def test_eight_concurrent_async_calls(server_url: str) -> None:
    cases = [seed.chain(x=0.1 * k) for k in range(8)]

    async def go() -> list[client.GradientsResponse]:
        async with client.AsyncClient(server_url) as gs:
            assert (await gs.health()).status == "ok"
            return await asyncio.gather(*(gs.gradients(c.network, c.samples) for c in cases))

    results = asyncio.run(go())
    for case, result in zip(cases, results, strict=True):
        assert [w.value for w in result.gradients.weights] == pytest.approx(case.weight_gradients, rel=1e-12)


def test_a_cycle_raises_the_422_class_with_the_servers_words(server_url: str) -> None:
    case = seed.chain()
    case.network["weights"].append({"source": "o", "target": "j", "value": 1.0})
    with client.Client(server_url) as gs, pytest.raises(client.UnprocessableEntityError) as info:
        gs.gradients(case.network, case.samples)
    assert str(info.value) == "the network has a cycle: j -> k -> o -> j"
    assert info.value.status_code == 422
    assert info.value.problem["type"].endswith("invalid-network")


def test_a_dead_port_raises_a_connection_error() -> None:
    gs = client.Client(f"http://127.0.0.1:{free_port()}", max_retries=2)
    slept: list[float] = []
    gs._sleep = slept.append
    with gs, pytest.raises(client.APIConnectionError) as info:
        gs.info()
    assert "cannot reach gradserve" in str(info.value)
    assert len(slept) == 2


def test_numpy_arrays_work_as_inputs_small_and_large(server_url: str) -> None:
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(20, 30)), rng.normal(size=(30, 3))
    x, y = rng.normal(size=(40, 20)), rng.normal(size=(40, 3))
    units = [
        {"id": "x", "role": "input", "size": 20},
        {"id": "h", "size": 30, "activation": "tanh", "bias": np.zeros(30)},
        {"id": "y", "role": "output", "size": 3},
    ]

    def net(a: Any, b: Any) -> dict[str, Any]:
        return {
            "units": units,
            "weights": [
                {"source": "x", "target": "h", "value": a},
                {"source": "h", "target": "y", "value": b},
            ],
        }

    with client.Client(server_url) as gs:
        as_numpy = gs.gradients(net(w1, w2), {"inputs": {"x": x}, "targets": {"y": y}}, per_sample=True)
        as_lists = gs.gradients(
            net(w1.tolist(), w2.tolist()),
            {"inputs": {"x": x.tolist()}, "targets": {"y": y.tolist()}},
            per_sample=True,
        )
    # the large arrays went base64 both ways; the caller sees nested lists either way
    assert isinstance(as_numpy.gradients.weights[0].value, list)
    assert as_numpy == as_lists


def test_builders_make_networks_the_server_takes(server_url: str) -> None:
    net = client.mlp([6, 5, 4, 2], seed=1)
    assert [u.id for u in net.units] == ["input", "hidden1", "hidden2", "output"]
    assert client.to_numpy(net.weights[0].value).shape == (6, 5)
    assert client.mlp([6, 5, 4, 2], seed=1) == net
    big = client.mlp([64, 32, 2], seed=1)
    assert isinstance(big.weights[0].value, client.EncodedArray)
    rng = np.random.default_rng(2)
    with client.Client(server_url) as gs:
        trained = gs.sgd(
            big,
            {"inputs": {"input": rng.normal(size=(8, 64))}, "targets": {"output": np.zeros((8, 2))}},
            0.1,
            epochs=5,
        )
    assert trained.loss_after < trained.loss_before
    with pytest.raises(ValueError, match="source->target"):
        client.single_units({"x-j": 1.0}, inputs=["x"], outputs=["j"])


def test_to_numpy_reads_every_form() -> None:
    encoded = client.EncodedArray(dtype="float32", shape=[2], data="AACAPwAAAEA=")  # 1.0, 2.0
    assert client.to_numpy(encoded).tolist() == [1.0, 2.0]
    assert client.to_numpy(encoded.model_dump()).dtype == np.float64
    assert client.to_numpy([[1, 2]]).shape == (1, 2)
    assert client.to_numpy(3.0).shape == ()


def test_request_bodies_carry_numpy_as_lists_or_base64() -> None:
    """A client made with binary=False (tests/test_client_binary.py: the binary default)."""
    from client.arrays import encode, request_body

    def sent(body: dict[str, Any]) -> Any:
        return json.loads(request_body(body, binary=False).content)

    def asks_base64(body: dict[str, Any]) -> bool:
        made = request_body({**body, "array_encoding": None}, binary=False)
        assert made.decode == (json.loads(made.content).get("array_encoding") == "base64")
        return made.decode

    small, large = np.arange(3.0), np.zeros((16, 16))
    body = sent({"a": small, "b": large, "c": np.float32(0.5), "d": np.array(2.0)})
    assert body["a"] == [0.0, 1.0, 2.0]
    assert body["b"]["shape"] == [16, 16]
    assert client.to_numpy(body["b"]).tolist() == large.tolist()
    assert body["c"] == 0.5
    assert body["d"] == 2.0
    # models go as they dump, their None fields (the defaults) left out
    unit = sent({"u": client.Unit(id="x", role="input")})["u"]
    assert unit == {"id": "x", "role": "input", "size": 1}
    # a body that carries an encoded array asks for its answer base64, and only then
    assert asks_base64({"b": large})
    assert asks_base64({"w": client.EncodedArray(dtype="float64", shape=[0], data="")})
    assert asks_base64({"w": encode(large)})
    assert asks_base64({"n": client.mlp([64, 32, 2], seed=1)})
    assert not asks_base64({"units": [{"id": "dtype"}], "biases": {"dtype": small}})
    assert not asks_base64({"n": client.mlp([6, 5, 2], seed=1)})
    assert "array_encoding" not in sent({"a": small, "array_encoding": None})
    assert sent({"b": large, "array_encoding": "list"})["array_encoding"] == "list"
    with pytest.raises(TypeError, match="cannot send a object"):
        request_body({"a": object()})
    # every large array lands where it was, whatever the strings around it hold, and what
    # held it is left as it was
    arrays = [np.random.default_rng(k).normal(size=(20 + k, 13)) for k in range(3)]
    text = '\x00gradserve-array-0 "quoted" \\ and ünïcode'
    body = {"x": [arrays[0], {"y": arrays[1], "s": text}], "z": np.asfortranarray(arrays[2]), "t": text}
    got = sent(body)
    assert client.to_numpy(got["x"][0]).tolist() == arrays[0].tolist()
    assert client.to_numpy(got["x"][1]["y"]).tolist() == arrays[1].tolist()
    assert client.to_numpy(got["z"]).tolist() == arrays[2].tolist()
    assert got["x"][1]["s"] == got["t"] == text
    assert body["x"][0] is arrays[0]


def test_an_encoded_array_is_found_wherever_a_model_holds_it() -> None:
    from client.arrays import holds_encoded

    one = client.EncodedArray(dtype="float64", shape=[1], data="AAAAAAAA8D8=")  # [1.0]
    plain = client.Weight(source="a", target="b", value=[[1.0], [2.0]])
    encoded = client.Weight(source="a", target="b", value=one)
    assert not holds_encoded([plain, 1.0, "x", None, [[1.0]], {"k": [2.0]}, [plain, plain]])
    assert holds_encoded([1.0, plain, encoded])  # models of one class among other values
    assert holds_encoded([{"k": [plain, [one]]}])  # a list of mixed kinds, inside a dict
    assert holds_encoded([client.Samples(inputs={"x": [1.0], "y": one})])


# ---------------------------------------------------------------- configuration


def test_configuration_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADSERVE_URL", raising=False)
    monkeypatch.delenv("GRADSERVE_API_KEY", raising=False)
    assert client.Client().base_url == "http://127.0.0.1:8000"
    monkeypatch.setenv("GRADSERVE_URL", "http://env:1/")
    monkeypatch.setenv("GRADSERVE_API_KEY", "from-env")
    assert client.Client().base_url == "http://env:1"
    assert client.Client("http://arg:2").base_url == "http://arg:2"
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    mock = httpx.Client(transport=httpx.MockTransport(handler))
    client.Client(http_client=mock).health()
    client.Client(api_key="from-arg", http_client=mock).health()
    assert seen[0].headers["authorization"] == "Bearer from-env"
    assert seen[1].headers["authorization"] == "Bearer from-arg"
    assert str(seen[0].url) == "http://env:1/healthz"


# ---------------------------------------------------------------- errors and retries (mocked)


def scripted(*answers: httpx.Response | Exception) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport that answers with each of `answers` in turn."""
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(
            answer.status_code, headers=answer.headers, content=answer.content
        )  # a fresh one

    return httpx.MockTransport(handler), seen


def problem(status: int, detail: str = "nope", **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": "x", "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **headers})


HEALTHY = httpx.Response(200, json={"status": "ok"})


def sync_client(transport: httpx.MockTransport, **kwargs: Any) -> tuple[client.Client, list[float]]:
    gs = client.Client("http://mock", http_client=httpx.Client(transport=transport), **kwargs)
    slept: list[float] = []
    gs._sleep = slept.append
    return gs, slept


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, client.BadRequestError),
        (401, client.AuthenticationError),
        (404, client.NotFoundError),
        (413, client.PayloadTooLargeError),
        (422, client.UnprocessableEntityError),
        (429, client.RateLimitError),
        (500, client.InternalServerError),
        (503, client.InternalServerError),
        (405, client.APIStatusError),
    ],
)
def test_each_status_maps_to_its_class(status: int, cls: type[client.APIStatusError]) -> None:
    transport, seen = scripted(*[problem(status, "the words")] * 3)
    gs, _ = sync_client(transport)
    with pytest.raises(cls) as info:
        gs.health()
    assert type(info.value) is cls
    assert info.value.detail == "the words"
    assert info.value.status_code == status
    assert len(seen) == (3 if _retry.should_retry(status) else 1)


def test_5xx_and_429_are_retried_with_backoff_then_succeed() -> None:
    transport, seen = scripted(problem(503), problem(429, **{"retry-after": "3"}), HEALTHY)
    gs, slept = sync_client(transport)
    assert gs.health().status == "ok"
    assert len(seen) == 3
    assert 0.25 <= slept[0] <= 0.5  # backoff with jitter on the first retry
    assert slept[1] == 3.0  # Retry-After honoured


def test_connection_errors_are_retried() -> None:
    transport, seen = scripted(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), HEALTHY)
    gs, slept = sync_client(transport)
    assert gs.health().status == "ok"
    assert len(slept) == len(seen) - 1 == 2


def test_a_timeout_that_lasts_raises_the_timeout_class() -> None:
    transport, _ = scripted(*[httpx.ReadTimeout("slow")] * 3)
    gs, _ = sync_client(transport)
    with pytest.raises(client.APITimeoutError):
        gs.health()


def test_no_retries_when_asked_for_none() -> None:
    transport, seen = scripted(problem(500))
    gs, slept = sync_client(transport, max_retries=0)
    with pytest.raises(client.InternalServerError):
        gs.health()
    assert (len(seen), slept) == (1, [])


def test_a_body_that_is_not_the_api_raises_api_error() -> None:
    transport, _ = scripted(httpx.Response(200, json={"something": "else"}))
    gs, _ = sync_client(transport)
    with pytest.raises(client.APIError, match="does not fit the API"):
        gs.health()


def test_an_encoded_answer_with_a_nan_raises_api_error() -> None:
    nan = client.arrays.encode(np.array([np.nan] * 300))
    answer = {"outputs": {"o": nan}, "units": {}, "loss": None}
    transport, _ = scripted(httpx.Response(200, json=answer))
    gs, _ = sync_client(transport)
    with pytest.raises(client.APIError, match="NaN or an infinity"):
        gs.forward({"units": []}, {"inputs": {"x": np.zeros((300, 1))}})


def test_the_async_client_retries_the_same_way() -> None:
    transport, seen = scripted(problem(502), httpx.ConnectError("refused"), HEALTHY)

    async def go() -> tuple[str, list[float]]:
        slept: list[float] = []

        async def sleep(delay: float) -> None:
            slept.append(delay)

        async with client.AsyncClient(
            "http://mock", http_client=httpx.AsyncClient(transport=transport)
        ) as gs:
            gs._sleep = sleep
            return (await gs.health()).status, slept

    status, slept = asyncio.run(go())
    assert status == "ok"
    assert len(seen) == 3
    assert len(slept) == 2


def test_retry_delays() -> None:
    assert _retry.retry_delay(0, rand=1.0) == 0.5
    assert _retry.retry_delay(3, rand=0.0) == 2.0
    assert _retry.retry_delay(10, rand=1.0) == 8.0  # capped
    assert _retry.retry_delay(2, retry_after=1.5) == 1.5
    assert _retry.parse_retry_after("2") == 2.0
    assert _retry.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert _retry.parse_retry_after("soon") is None
    assert _retry.parse_retry_after("-1") is None
    assert _retry.parse_retry_after("100000") is None


# ---------------------------------------------------------------- the command line


def run_cli(args: list[str], stdin: str = "") -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "client", *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_cli_help_shows_real_defaults_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main(["sgd", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "None" not in text
    assert "default: the whole batch" in text  # --batch-size: what its absence means
    assert "default: 1)" in text or "default: 1;" in text or "default: 1 " in text  # --epochs


def test_cli_gradients_from_stdin(server_url: str) -> None:
    case = seed.chain()
    code, out, err = run_cli(
        ["--url", server_url, "gradients", "--reduction", "sum"],
        json.dumps({"network": case.network, "samples": case.samples}),
    )
    assert code == 0, err
    body = json.loads(out)
    assert body["gradients"]["weights"][2]["value"] == pytest.approx(case.weight_gradients[2], rel=1e-12)


def test_cli_prints_compact_json_unless_asked_to_indent(server_url: str) -> None:
    request = json.dumps({"network": seed.chain().network, "samples": seed.chain().samples})
    code, compact, err = run_cli(["--url", server_url, "gradients"], request)
    assert code == 0, err
    assert compact.count("\n") == 1
    code, pretty, err = run_cli(["--url", server_url, "gradients", "--pretty"], request)
    assert code == 0, err
    assert pretty.count("\n") > 10
    assert json.loads(pretty) == json.loads(compact)
    code, info, err = run_cli(["--url", server_url, "info"])
    assert (code, info.count("\n")) == (0, 1), err


def test_cli_checks_the_whole_answer_of_gradients(server_url: str, tmp_path: Path) -> None:
    """What `gradserve-client gradients` prints is what `check --gradients` takes."""
    case = seed.chain()
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"network": case.network, "samples": case.samples}))
    code, answer, err = run_cli(["--url", server_url, "gradients", str(request)])
    assert code == 0, err
    assert {"loss", "units", "gradients"} <= set(json.loads(answer))
    mine = tmp_path / "mine.json"
    mine.write_text(answer)
    code, out, err = run_cli(["--url", server_url, "check", "--gradients", str(mine), str(request)])
    assert code == 0, err
    checked = json.loads(out)
    assert checked["ok"] is True
    assert len(checked["weights"]) == 3
    wrong = json.loads(answer)
    wrong["gradients"]["weights"][0]["value"] *= 2
    mine.write_text(json.dumps(wrong))
    code, out, err = run_cli(["--url", server_url, "check", "--gradients", str(mine), str(request)])
    assert code == 3, err
    assert [w["ok"] for w in json.loads(out)["weights"]] == [False, True, True]
    mine.write_text(json.dumps(wrong["gradients"]))  # the gradients member alone, as before
    code, out, err = run_cli(["--url", server_url, "check", "--gradients", str(mine), str(request)])
    assert code == 3, err


def test_cli_sgd_from_files(server_url: str, tmp_path: Path) -> None:
    case = seed.chain()
    (tmp_path / "net.json").write_text(json.dumps(case.network))
    (tmp_path / "samples.json").write_text(json.dumps(case.samples))
    args = [
        "--url",
        server_url,
        "sgd",
        "--network",
        str(tmp_path / "net.json"),
        "--samples",
        str(tmp_path / "samples.json"),
    ]
    code, out, err = run_cli([*args, "--learning-rate", "0.5", "--epochs", "3"])
    assert code == 0, err
    assert json.loads(out)["steps"] == 3
    code, _, err = run_cli(args)
    assert code != 0
    assert "needs --learning-rate" in err


def test_cli_errors_are_clear(server_url: str, tmp_path: Path) -> None:
    case = seed.chain()
    case.network["weights"].append({"source": "o", "target": "j", "value": 1.0})
    code, out, err = run_cli(
        ["--url", server_url, "forward"], json.dumps({"network": case.network, "samples": case.samples})
    )
    assert (code, out) == (1, "")
    assert "422: the network has a cycle: j -> k -> o -> j" in err
    code, _, err = run_cli(["--url", server_url, "forward", str(tmp_path / "missing.json")])
    assert code != 0
    assert "cannot read" in err
    code, _, err = run_cli(["--url", server_url, "forward"], "{not json")
    assert code != 0
    assert "is not JSON" in err
    code, _, err = run_cli(["--url", f"http://127.0.0.1:{free_port()}", "info"])
    assert code == 1
    assert "cannot reach gradserve" in err


def test_cli_in_process_prints_info(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    out = io.StringIO()
    assert cli_main(["--url", server_url, "info"], stdout=out) == 0
    assert json.loads(out.getvalue())["version"]


# ---------------------------------------------------------------- a light install


def test_importing_the_client_loads_nothing_heavy() -> None:
    heavy = ("numpy", "fastapi", "starlette", "uvicorn")
    code = f"import sys, client; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


@pytest.mark.slow
def test_pip_install_without_extras_gives_a_working_client(server_url: str, tmp_path: Path) -> None:
    """`pip install .` alone: no fastapi, uvicorn or numpy, and the client still works."""
    root = Path(__file__).resolve().parent.parent
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(root)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    case = seed.chain()
    script = f"""
import importlib.util, json, sys
from client import Client, single_units
assert all(importlib.util.find_spec(m) is None for m in ("numpy", "fastapi", "uvicorn", "starlette"))
chain = single_units({{"x->j": 0.5, "j->k": -0.3, "k->o": 0.8}}, inputs=["x"], outputs=["o"])
with Client({server_url!r}) as gs:
    print(json.dumps([w.value for w in gs.gradients(chain, {json.dumps(case.samples)}).gradients.weights]))
"""
    out = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == pytest.approx(case.weight_gradients, rel=1e-12)
    # the server's command is installed too: it says what to install, not a traceback
    served = subprocess.run([str(venv / "bin" / "gradserve")], capture_output=True, text=True, cwd=tmp_path)
    assert served.returncode == 1
    assert "pip install 'gradserve[server]'" in served.stderr
    assert "pip install '.[server]'" in served.stderr
    assert "Traceback" not in served.stderr


def test_a_computation_that_ran_out_of_time_is_not_retried() -> None:
    deadline = problem(503)
    body = {**deadline.json(), "type": "urn:gradserve:problem:deadline-exceeded"}
    transport, seen = scripted(
        httpx.Response(503, json=body, headers={"content-type": "application/problem+json"})
    )
    gs, slept = sync_client(transport)
    with pytest.raises(client.InternalServerError):
        gs.health()
    assert (len(seen), slept) == (1, [])


# ---------------------------------------------------------------- explain, check, render


def test_explain_check_and_render_through_the_client(server_url: str, tmp_path: Path) -> None:
    case = seed.two_outputs()
    with client.Client(server_url) as gs:
        why = gs.explain(case.network, case.samples)
        grads = gs.gradients(case.network, case.samples)
        verdict = gs.check(case.network, case.samples, gradients=grads.gradients)
        wrong = grads.gradients.model_copy(deep=True)
        wrong.weights[0].value = 1.0
        refused = gs.check(case.network, case.samples, gradients=wrong)
        svg = gs.render(case.network, case.samples, show="gradients", path=tmp_path / "net.svg")
        dot = gs.render(case.network, format="dot")
    assert [p.value for p in why.weights[0].paths] == pytest.approx(list(case.paths), rel=1e-12)
    assert why.weights[0].latex.startswith(r"\frac{\partial E}{\partial w_{x\to j}}")
    assert verdict.ok is True
    assert refused.ok is False
    assert [w.ok for w in refused.weights] == [False, True, True, True, True]
    assert svg.startswith("<svg")
    assert (tmp_path / "net.svg").read_text() == svg
    assert dot.startswith("digraph")


def test_async_render_and_explain(server_url: str) -> None:
    case = seed.chain()

    async def go() -> tuple[str, client.ExplainResponse]:
        async with client.AsyncClient(server_url) as gs:
            return await gs.render(case.network), await gs.explain(case.network, case.samples, max_paths=1)

    svg, why = asyncio.run(go())
    assert "<svg" in svg
    assert why.weights[0].paths_total == 1


def test_cli_explain_check_render(server_url: str, tmp_path: Path) -> None:
    case = seed.two_outputs()
    request = json.dumps({"network": case.network, "samples": case.samples})
    code, out, err = run_cli(["--url", server_url, "explain", "--max-paths", "1"], request)
    assert code == 0, err
    assert json.loads(out)["weights"][0]["paths_truncated"] is True
    code, out, err = run_cli(
        ["--url", server_url, "render", "--show", "gradients", "-o", str(tmp_path / "a.svg")], request
    )
    assert code == 0, err
    assert (tmp_path / "a.svg").read_text().startswith("<svg")
    claimed = {"weights": [{"source": "x", "target": "j", "value": 0.0}]}
    (tmp_path / "mine.json").write_text(json.dumps(claimed))
    code, out, err = run_cli(
        ["--url", server_url, "check", "--gradients", str(tmp_path / "mine.json")], request
    )
    assert code == 3
    assert json.loads(out)["ok"] is False


def test_cli_options_come_from_the_wire_schema() -> None:
    """Every compute endpoint is a command and every field of its request an option of it, so a
    field added to the wire is on the command line too."""
    from client.cli import _numbers, _parser, _scalar
    from service.wire import ENDPOINTS

    parser = _parser()
    for endpoint in ENDPOINTS.values():
        for name, field in endpoint.request.model_fields.items():
            flag = "--" + name.replace("_", "-")
            kind = _scalar(field.annotation)
            count = _numbers(field.annotation)  # a fixed tuple of numbers (adam's betas)
            if count:
                args = parser.parse_args([endpoint.name, flag, *["0.5"] * count])
                assert getattr(args, name) == [0.5] * count, (endpoint.name, name)
                continue
            if kind is None:
                args = parser.parse_args([endpoint.name, flag, "file.json"])
                assert getattr(args, f"{name}_file") == "file.json", (endpoint.name, name)
                continue
            plain = {bool: True, int: 3, float: 0.25}
            value = plain[kind] if kind in plain else get_args(kind)[-1]
            words = [flag] if kind is bool else [flag, str(value)]
            args = parser.parse_args([endpoint.name, *words])
            assert getattr(args, name) == value, (endpoint.name, name)
