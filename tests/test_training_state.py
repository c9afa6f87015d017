"""/v1/sgd's optimizers, schedules and resumable state, end to end on a real server: plain SGD
answers byte for byte as before (with `state` added), training resumed over several calls is
bit for bit one long training (raw HTTP and the SDK), and what does not fit is a 422 that
names it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import client
from client.cli import main as cli_main
from service import engine, wire

BEFORE = Path(__file__).parent / "data" / "sgd_answers_before_optimizers.json"

#: XOR on a 2-4-1 tanh/sigmoid network: four samples, so minibatches of 3 leave a short last one
XOR: dict[str, Any] = {
    "units": [
        {"id": "a", "role": "input"},
        {"id": "b", "role": "input"},
        {"id": "h", "size": 4, "activation": "tanh", "bias": [0.1, -0.2, 0.05, 0.3]},
        {"id": "y", "role": "output", "activation": "sigmoid", "response": 1.2},
    ],
    "weights": [
        {"source": "a", "target": "h", "value": [[0.5, -0.4, 0.3, 0.9]]},
        {"source": "b", "target": "h", "value": [[-0.6, 0.7, 0.2, -0.8]]},
        {"source": "h", "target": "y", "value": [[0.4], [-0.5], [0.6], [0.3]]},
        {"source": "a", "target": "y", "value": 0.2},
    ],
    "loss": "cross_entropy",
}
XOR_SAMPLES = {"inputs": {"a": [0, 0, 1, 1], "b": [0, 1, 0, 1]}, "targets": {"y": [0, 1, 1, 0]}}

#: every optimizer with the hyper-parameters that give it the most state, under a schedule
RESUMED: list[dict[str, Any]] = [
    {"optimizer": "sgd", "momentum": 0.9, "dampening": 0.1, "schedule": {"kind": "step", "step_size": 5}},
    {"optimizer": "sgd", "momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
    {"optimizer": "adam", "amsgrad": True, "schedule": {"kind": "cosine", "t_max": 12, "eta_min": 0.001}},
    {"optimizer": "adamw", "betas": [0.8, 0.99], "schedule": {"kind": "exponential", "gamma": 0.97}},
    {"optimizer": "rmsprop", "momentum": 0.3, "centered": True, "alpha": 0.9},
    {"optimizer": "adagrad", "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 0.001},
]


def _request(**fields: Any) -> dict[str, Any]:
    return {"network": XOR, "samples": XOR_SAMPLES, "learning_rate": 0.05, **fields}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _refused(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    return problem


# ---------------------------------------------------------------- unchanged answers


def _cases() -> Iterator[tuple[dict[str, Any], str]]:
    for case in json.loads(BEFORE.read_text()):
        yield case["request"], case["answer"]


@pytest.mark.parametrize(("request_", "before"), list(_cases()))
def test_plain_sgd_answers_are_byte_for_byte_what_they_were(
    http: httpx.Client, request_: dict[str, Any], before: str
) -> None:
    """Answers recorded from the service before optimizers came (no shuffle: its order is the one
    thing that changed): the same bytes, with `state` added at the end."""
    response = http.post("/v1/sgd", json=request_)
    assert response.status_code == 200
    now = response.content.decode()
    assert now.startswith(before[:-1] + ',"state":{'), (before, now)
    state = json.loads(now)["state"]
    assert state["optimizer"] == "sgd"
    assert state["epoch"] == request_.get("epochs", 1)
    assert list(state["buffers"]) == (["momentum_buffer"] if request_.get("momentum") else [])
    assert "seed" not in state


def test_history_gains_learning_rates_only_under_a_schedule(http: httpx.Client) -> None:
    plain = _ok(http.post("/v1/sgd", json=_request(epochs=3, optimizer="adam")))
    assert [set(entry) for entry in plain["history"]] == [{"epoch", "loss"}] * 3
    scheduled = _ok(
        http.post("/v1/sgd", json=_request(epochs=3, schedule={"kind": "step", "step_size": 2, "gamma": 0.5}))
    )
    assert [e["learning_rate"] for e in scheduled["history"]] == [0.05, 0.05, 0.025]


# ---------------------------------------------------------------- resumption


def _train_in_calls(
    http: httpx.Client, fields: dict[str, Any], calls: list[int], encoding: str = "list"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    network, state, history = XOR, None, []
    answer: dict[str, Any] = {}
    for epochs in calls:
        body = {**_request(**fields), "network": network, "epochs": epochs, "array_encoding": encoding}
        if state is not None:
            body["state"] = state
        answer = _ok(http.post("/v1/sgd", json=body))
        network, state = answer["network"], answer["state"]
        history += answer["history"]
    return answer, history


@pytest.mark.parametrize("fields", RESUMED, ids=lambda f: f["optimizer"])
def test_forty_epochs_in_one_call_are_forty_in_three(http: httpx.Client, fields: dict[str, Any]) -> None:
    fields = {**fields, "batch_size": 3, "shuffle": True, "seed": 11}
    whole, history = _train_in_calls(http, fields, [40])
    parts, part_history = _train_in_calls(http, fields, [1, 7, 32])
    assert parts["network"] == whole["network"]  # every float, bit for bit (JSON keeps them exact)
    assert parts["state"] == whole["state"]
    assert part_history == history
    assert [e["epoch"] for e in history] == list(range(40))
    assert whole["state"]["step"] == 40 * 2
    assert whole["state"]["epoch"] == 40
    assert parts["steps"] == 32 * 2
    kept = engine.OPTIMIZERS[fields["optimizer"]]
    hyper = engine.optimizers.resolved(kept, {k: v for k, v in fields.items() if k in kept.hyper})
    assert list(whole["state"]["buffers"]) == list(kept.buffers(hyper))


def test_resumed_in_base64_is_bit_for_bit_too(http: httpx.Client) -> None:
    fields = {**RESUMED[2], "batch_size": 2}
    whole, _ = _train_in_calls(http, fields, [10], "base64")
    parts, _ = _train_in_calls(http, fields, [3, 7], "base64")
    assert parts["network"] == whole["network"]
    assert parts["state"] == whole["state"]
    assert whole["state"]["buffers"]["exp_avg"]["weights"][0]["dtype"] == "float64"


def test_a_drawn_seed_is_returned_and_used_again(http: httpx.Client) -> None:
    first = _ok(http.post("/v1/sgd", json=_request(epochs=2, batch_size=1, shuffle=True)))
    seed = first["state"]["seed"]
    assert isinstance(seed, int)
    assert 0 <= seed < 2**53
    again = _ok(http.post("/v1/sgd", json=_request(epochs=2, batch_size=1, shuffle=True, seed=seed)))
    assert again["network"] == first["network"]
    more = {"network": first["network"], "state": first["state"], "epochs": 3}
    resumed = _ok(http.post("/v1/sgd", json=_request(batch_size=1, shuffle=True, **more)))
    whole = _ok(http.post("/v1/sgd", json=_request(epochs=5, batch_size=1, shuffle=True, seed=seed)))
    assert resumed["network"] == whole["network"]


def test_each_epochs_order_comes_from_the_seed_and_the_epoch(http: httpx.Client) -> None:
    """One sample a step and learning rate 1 under plain SGD: an epoch's updates are the
    permutation's order, which (seed, epoch) alone fix."""
    net = {
        "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
        "weights": [{"source": "x", "target": "o", "value": 0.0}],
    }
    samples = {"inputs": {"x": [1.0, 2.0, 3.0, 4.0, 5.0]}, "targets": {"o": [1.0, 2.0, 3.0, 4.0, 5.0]}}
    body = {"network": net, "samples": samples, "learning_rate": 0.01, "batch_size": 1, "shuffle": True}
    state = {"optimizer": "sgd", "step": 5, "epoch": 1, "seed": 3, "buffers": {}}
    answer = _ok(http.post("/v1/sgd", json={**body, "seed": 3, "state": state}))
    w = b = 0.0
    for row in np.random.default_rng([3, 1]).permutation(5):  # epoch 1's order, as the contract says
        x = float(row + 1)
        error = w * x + b - x
        w, b = w - 0.01 * (error * x), b - 0.01 * error
    assert answer["network"]["weights"][0]["value"] == pytest.approx(w, rel=1e-15)
    assert answer["network"]["units"][1]["bias"] == pytest.approx(b, rel=1e-15)
    assert answer["history"][0]["epoch"] == 1


def test_the_sdk_resumes_bit_for_bit(server_url: str) -> None:
    """The first call draws the shuffle's seed (seed left out) and the later ones use it from the
    state; one call of 40 epochs under that seed, plain or streamed, is the same training."""
    options: dict[str, Any] = {
        "optimizer": "rmsprop",
        "momentum": 0.2,
        "centered": True,
        "batch_size": 3,
        "shuffle": True,
        "schedule": {"kind": "cosine", "t_max": 10},
    }
    with client.Client(server_url) as gs:
        network, state = XOR, None
        for epochs in (1, 7, 32):
            part = gs.sgd(network, XOR_SAMPLES, 0.01, epochs=epochs, state=state, **options)
            network, state = part.network, part.state
        assert state is not None
        assert state.seed is not None
        whole = gs.sgd(XOR, XOR_SAMPLES, 0.01, epochs=40, seed=state.seed, **options)
        assert part.network == whole.network
        assert part.state == whole.state
        streamed = gs.sgd(XOR, XOR_SAMPLES, 0.01, epochs=40, seed=state.seed, progress=print, **options)
        assert streamed.state == whole.state
        assert streamed.network == whole.network


def test_the_sdk_sends_only_the_hyper_parameters_given(server_url: str) -> None:
    with client.Client(server_url) as gs:
        adam = gs.sgd(XOR, XOR_SAMPLES, 0.01, epochs=2, optimizer="adam", betas=(0.8, 0.9))
        assert adam.state is not None
        assert set(adam.state.buffers) == {"exp_avg", "exp_avg_sq"}
        with pytest.raises(client.UnprocessableEntityError, match="momentum"):
            gs.sgd(XOR, XOR_SAMPLES, 0.01, optimizer="adagrad", momentum=0.5)
        info = gs.info()
        assert info.optimizers == list(wire.OPTIMIZERS)
        assert info.schedules == list(wire.SCHEDULES)


def test_the_streamed_result_carries_the_state(http: httpx.Client) -> None:
    body = _request(epochs=5, optimizer="adam", batch_size=2)
    plain = http.post("/v1/sgd", json=body)
    with http.stream("POST", "/v1/sgd", json=body, headers={"accept": "text/event-stream"}) as streamed:
        text = "".join(streamed.iter_text())
    result = text.split("event: result\ndata: ", 1)[1].split("\n", 1)[0]
    assert result.encode() == plain.content
    assert json.loads(result)["state"]["step"] == 10


# ---------------------------------------------------------------- what does not fit


@pytest.mark.parametrize(
    ("optimizer", "foreign"),
    [
        ("adam", {"momentum": 0.0}),  # sgd's, at its default
        ("adamw", {"nesterov": False}),
        ("sgd", {"betas": [0.9, 0.999]}),  # adam's default
        ("sgd", {"eps": 1e-8}),
        ("rmsprop", {"amsgrad": False}),
        ("adagrad", {"alpha": 0.99}),
        ("adam", {"lr_decay": 0.0}),
        ("sgd", {"initial_accumulator_value": 0.0}),
        ("sgd", {"centered": False}),
        ("rmsprop", {"dampening": 0.0}),
    ],
)
def test_a_hyper_parameter_the_optimizer_does_not_take_is_named(
    http: httpx.Client, optimizer: str, foreign: dict[str, Any]
) -> None:
    (name,) = foreign
    problem = _refused(http.post("/v1/sgd", json=_request(optimizer=optimizer, **foreign)))
    assert f"{name} is not a hyper-parameter of the optimizer '{optimizer}'" in problem["detail"]
    assert problem["errors"][0]["loc"] == [name]


def test_torchs_refusals_are_422s(http: httpx.Client) -> None:
    for fields, words in [
        ({"nesterov": True}, "nesterov needs momentum > 0"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "dampening 0"),
        ({"optimizer": "adam", "betas": [0.9, 1.0]}, "betas"),
        ({"schedule": {"kind": "step", "step_size": 0}}, "step_size"),
        ({"schedule": {"kind": "cosine"}}, "t_max"),
        ({"schedule": {"kind": "linear"}}, "kind"),
    ]:
        assert words in json.dumps(_refused(http.post("/v1/sgd", json=_request(**fields)))), fields


def _state(http: httpx.Client, **fields: Any) -> dict[str, Any]:
    state: dict[str, Any] = _ok(http.post("/v1/sgd", json=_request(epochs=2, **fields)))["state"]
    return state


def test_a_state_that_does_not_fit_is_named(http: httpx.Client) -> None:
    adam = _state(http, optimizer="adam")

    def refused(state: dict[str, Any], **fields: Any) -> str:
        problem = _refused(
            http.post("/v1/sgd", json=_request(state=state, **{"optimizer": "adam", **fields}))
        )
        return str(problem["detail"])

    assert "state.optimizer is 'adam' but the request's optimizer is 'sgd'" in refused(adam, optimizer="sgd")
    assert "has no 'max_exp_avg_sq'" in refused(adam, amsgrad=True)
    missing = json.loads(json.dumps(adam))
    del missing["buffers"]["exp_avg_sq"]
    assert "state.buffers has no 'exp_avg_sq'" in refused(missing)
    extra = json.loads(json.dumps(adam))
    extra["buffers"]["momentum_buffer"] = adam["buffers"]["exp_avg"]
    assert "state.buffers.momentum_buffer is not a buffer adam keeps" in refused(extra)
    shape = json.loads(json.dumps(adam))
    shape["buffers"]["exp_avg"]["weights"][1] = [[0.0, 0.0, 0.0]]
    assert "state.buffers.exp_avg.weights.1 has shape [1, 3]; the network's is [1, 4]" in refused(shape)
    count = json.loads(json.dumps(adam))
    count["buffers"]["exp_avg_sq"]["weights"].pop()
    assert "state.buffers.exp_avg_sq.weights has 3 arrays; the network has 4 weights" in refused(count)
    unit = json.loads(json.dumps(adam))
    unit["buffers"]["exp_avg"]["biases"]["a"] = 0.0  # an input unit has no bias
    assert "state.buffers.exp_avg.biases names 'a', not a unit with a bias" in refused(unit)
    gone = json.loads(json.dumps(adam))
    del gone["buffers"]["exp_avg"]["responses"]["y"]
    assert "state.buffers.exp_avg.responses has no entry for unit 'y'" in refused(gone)
    bad = json.loads(json.dumps(adam))
    bad["step"] = -1
    assert "step" in refused(bad)


def test_a_state_for_weights_as_columns_is_one_column(http: httpx.Client) -> None:
    net = {
        "units": [{"id": "x", "role": "input"}, {"id": "j"}, {"id": "o", "role": "output"}],
        "weights": {"source": ["x", "j"], "target": ["j", "o"], "value": [0.5, -0.3]},
    }
    body = {"network": net, "samples": {"inputs": {"x": [1.0, 2.0]}, "targets": {"o": [0.3, 0.1]}}}
    body |= {"learning_rate": 0.1, "optimizer": "adagrad"}
    whole = _ok(http.post("/v1/sgd", json={**body, "epochs": 6}))
    first = _ok(http.post("/v1/sgd", json={**body, "epochs": 2}))
    assert len(first["state"]["buffers"]["sum"]["weights"]) == 2
    rest = _ok(
        http.post("/v1/sgd", json={**body, "network": first["network"], "state": first["state"], "epochs": 4})
    )
    assert rest["network"] == whole["network"]
    assert rest["state"] == whole["state"]
    first["state"]["buffers"]["sum"]["weights"] = [1.0, 2.0, 3.0]
    problem = _refused(http.post("/v1/sgd", json={**body, "state": first["state"]}))
    assert "state.buffers.sum.weights has shape [3]; the network's is [2]" in problem["detail"]


def test_the_cli_trains_with_adam_and_resumes_from_its_answer(server_url: str, tmp_path: Path) -> None:
    """Each field is an option (betas two numbers, the schedule a file), and --state takes the
    whole previous answer, whose network it continues."""
    request = tmp_path / "request.json"
    request.write_text(json.dumps(_request()))
    (tmp_path / "schedule.json").write_text(json.dumps({"kind": "exponential", "gamma": 0.9}))
    common = ["--url", server_url, "sgd", "--optimizer", "adam", "--betas", "0.8", "0.99", "--amsgrad"]
    common += ["--schedule", str(tmp_path / "schedule.json"), "--batch-size", "3", "--no-progress"]

    def run(*args: str) -> dict[str, Any]:
        out = io.StringIO()
        assert cli_main([*common, *args, str(request)], stdout=out, stderr=io.StringIO()) == 0
        answer: dict[str, Any] = json.loads(out.getvalue())
        return answer

    whole = run("--epochs", "5")
    first = run("--epochs", "2")
    (tmp_path / "first.json").write_text(json.dumps(first))
    rest = run("--epochs", "3", "--state", str(tmp_path / "first.json"))
    assert rest["network"] == whole["network"]
    assert rest["state"] == whole["state"]
    assert [e["learning_rate"] for e in rest["history"]] == [e["learning_rate"] for e in whole["history"][2:]]
    streamed = run("--epochs", "5", "--progress")
    assert streamed["state"] == whole["state"]


def test_the_registries_and_the_wire_name_the_same(http: httpx.Client) -> None:
    assert tuple(engine.OPTIMIZERS) == wire.OPTIMIZERS
    assert tuple(engine.SCHEDULES) == wire.SCHEDULES
    for name, entry in engine.OPTIMIZERS.items():
        assert set(entry.hyper) <= set(wire.HYPER_PARAMETERS), name
    assert {kind: set(engine.SCHEDULES[kind].params) for kind in wire.SCHEDULES} == {
        "step": {"step_size", "gamma"},
        "exponential": {"gamma"},
        "cosine": {"t_max", "eta_min"},
    }
    info = _ok(http.get("/v1/info"))
    assert (info["optimizers"], info["schedules"]) == (list(wire.OPTIMIZERS), list(wire.SCHEDULES))
    sgd = _ok(http.get("/openapi.json"))["components"]["schemas"]["SgdRequest"]["properties"]
    assert set(wire.HYPER_PARAMETERS) | {"optimizer", "schedule", "state"} <= set(sgd)


def test_a_state_answered_in_binary_posts_back_with_its_bytes(server_url: str) -> None:
    net = client.mlp([3, 20, 2], activation="tanh", seed=1)  # 60 + 40 weights: a framed answer
    samples = {
        "inputs": {"input": [[0.1, 0.2, 0.3], [0.3, -0.1, 0.5]]},
        "targets": {"output": [[1, 0], [0, 1]]},
    }
    options: dict[str, Any] = {"optimizer": "rmsprop", "centered": True, "array_encoding": "binary"}
    with client.Client(server_url) as gs:
        whole = gs.sgd(net, samples, 0.01, epochs=5, **options)
        first = gs.sgd(net, samples, 0.01, epochs=2, **options)
        assert first.state is not None
        assert isinstance(first.state.buffers["grad_avg"].weights[0], client.BinaryArray)
        rest = gs.sgd(first.network, samples, 0.01, epochs=3, state=first.state, **options)
        assert rest.state is not None
        assert whole.state is not None
        for name in ("square_avg", "grad_avg"):
            for mine, theirs in zip(
                rest.state.buffers[name].weights, whole.state.buffers[name].weights, strict=True
            ):
                assert client.to_list(mine) == client.to_list(theirs)
        for mine, theirs in zip(rest.network.weights, whole.network.weights, strict=True):  # type: ignore[arg-type]
            assert client.to_list(mine.value) == client.to_list(theirs.value)


def test_the_estimate_counts_the_states_buffers() -> None:
    from service.pipeline import costs, scan
    from service.pipeline.handlers import HANDLERS
    from service.settings import Limits

    def answer_bytes(**fields: Any) -> int:
        request = wire.SgdRequest.model_validate(_request(**fields))
        return costs.estimate(costs.sgd, request, Limits()).answer_bytes

    plain, adam, amsgrad = (
        answer_bytes(),
        answer_bytes(optimizer="adam"),
        answer_bytes(optimizer="adam", amsgrad=True),
    )
    assert plain < adam < amsgrad
    assert amsgrad - adam == adam - answer_bytes(optimizer="adagrad")  # one buffer more each
    sgd, gradients = HANDLERS["sgd"].copies, HANDLERS["gradients"].copies
    assert scan.numbers_allowed(Limits(), sgd) > scan.numbers_allowed(Limits(), gradients)


def test_a_schedule_resumed_from_far_along_is_work_to_refuse(http: httpx.Client) -> None:
    """The rates are replayed from epoch 0: a state claiming 10^12 epochs is refused before."""
    state = {"optimizer": "sgd", "step": 0, "epoch": 10**12, "buffers": {}}
    body = _request(state=state, schedule={"kind": "exponential", "gamma": 0.99})
    response = http.post("/v1/sgd", json=body)
    assert response.status_code == 413, response.text
    assert "max_work" in response.json()["detail"]


def test_a_columns_state_of_encoded_numbers_is_refused_not_a_500(http: httpx.Client) -> None:
    net = {
        "units": [{"id": "x", "role": "input"}, {"id": "o", "role": "output"}],
        "weights": {"source": ["x"], "target": ["o"], "value": [0.5]},
    }
    one = {"dtype": "float64", "shape": [], "data": "AAAAAAAA8D8="}
    state = {
        "optimizer": "adagrad",
        "step": 1,
        "epoch": 1,
        "buffers": {"sum": {"weights": [one], "biases": {"o": 1.0}}},
    }
    body = {"network": net, "samples": {"inputs": {"x": [1.0]}, "targets": {"o": [0.0]}}}
    response = http.post(
        "/v1/sgd", json={**body, "learning_rate": 0.1, "optimizer": "adagrad", "state": state}
    )
    assert "must be one column of numbers" in _refused(response)["detail"]
