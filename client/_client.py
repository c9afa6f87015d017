"""The sync `Client` and the `AsyncClient`, twins over one shared core."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel

from client import _constants as const
from client._errors import APIConnectionError, APIError, APITimeoutError, status_error
from client._retry import parse_retry_after, retry_delay, should_retry
from client._stream import ProgressCallback, SgdEvent, aevents, afollowed, events, followed
from client.arrays import RequestBody, decode_encoded, holds_encoded, read_answer, request_body
from client.display import Explanation, Svg, Training
from service import __version__
from service.wire import (
    ENDPOINTS,
    ArrayEncoding,
    CheckResponse,
    ExplainResponse,
    ForwardResponse,
    Gradients,
    GradientsResponse,
    Health,
    HvpResponse,
    InfoResponse,
    Network,
    OptimizerName,
    ParameterVector,
    Reduction,
    Samples,
    Schedule,
    SgdResponse,
    TrainingState,
    framing,
)

NetworkLike = Network | Mapping[str, Any]
SamplesLike = Samples | Mapping[str, Any]
#: a learning-rate schedule ({"kind": "cosine", "t_max": 50}) and a previous answer's state
ScheduleLike = Schedule | Mapping[str, Any]
StateLike = TrainingState | Mapping[str, Any]


class _Call:
    """One prepared call: where, what, and how to read the answer."""

    def __init__(
        self, method: str, path: str, model: type[BaseModel] | None, body: dict[str, Any] | None = None
    ) -> None:
        self.method, self.path, self.model = method, path, model
        self.body = body
        self.prepared: RequestBody | None = None
        self.streamed = False  # answered as server-sent events, whose result is JSON, never framed

    def prepare(self, binary: bool) -> RequestBody | None:
        """The body to send (built once, on first use: a retry sends the same bytes)."""
        if self.body is not None and self.prepared is None:
            self.prepared = request_body(self.body, binary, framed_answer=not self.streamed)
        return self.prepared

    def result(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise status_error(response)
        if self.model is None:
            return response.text
        decode = self.prepared is not None and self.prepared.decode
        try:
            if response.headers.get("content-type", "").startswith(framing.MEDIA_TYPE):
                return read_answer(self.model, response.content, response.headers.get(framing.HEADER), decode)
            result = self.model.model_validate_json(response.content)
            return decode_encoded(result) if decode and holds_encoded([result]) else result
        except ValueError as exc:
            raise APIError(
                f"the server's answer to {self.path} does not fit the API: {exc}", response.request
            ) from None


class _Core:
    """Configuration and request building shared by both clients."""

    def __init__(
        self, base_url: str | None, api_key: str | None, timeout: float, max_retries: int, binary: bool
    ) -> None:
        self.base_url = (base_url or os.environ.get(const.BASE_URL_ENV) or const.DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get(const.API_KEY_ENV)
        self.timeout = timeout
        self.max_retries = max_retries
        self.binary = binary

    def headers(self) -> dict[str, str]:
        headers = {"user-agent": f"gradserve-client/{__version__}", "accept": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def request(self, http: httpx.Client | httpx.AsyncClient, call: _Call) -> httpx.Request:
        headers = self.headers()
        body = call.prepare(self.binary)
        if body is not None:
            headers.update(body.headers)
        return http.build_request(
            call.method,
            self.base_url + call.path,
            content=None if body is None else body.content,
            headers=headers,
            timeout=self.timeout,
        )

    def failure(self, exc: httpx.TransportError, request: httpx.Request) -> APIConnectionError:
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                f"{request.method} {request.url} timed out after {self.timeout} s", request
            )
        return APIConnectionError(f"cannot reach gradserve at {self.base_url}: {exc}", request)

    def next_delay(self, attempt: int, outcome: httpx.Response | APIConnectionError) -> float | None:
        """Seconds to wait before trying again, or None when this outcome is final."""
        if attempt >= self.max_retries:
            return None
        if isinstance(outcome, httpx.Response):
            if not should_retry(outcome.status_code, _problem_type(outcome)):
                return None
            return retry_delay(attempt, parse_retry_after(outcome.headers.get("retry-after")))
        return retry_delay(attempt)


def _problem_type(response: httpx.Response) -> str:
    if not response.headers.get("content-type", "").startswith("application/problem+json"):
        return ""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def _post(name: str, body: dict[str, Any], **query: str) -> _Call:
    """A call of the compute endpoint `name`: its path and its answer's model (None: text) are
    the wire's (`service.wire.ENDPOINTS`)."""
    endpoint = ENDPOINTS[name]
    path = f"{endpoint.path}?{urlencode(query)}" if query else endpoint.path
    return _Call("POST", path, endpoint.response, body)


def _forward(network: NetworkLike, samples: SamplesLike, array_encoding: ArrayEncoding | None) -> _Call:
    body = {"network": network, "samples": samples, "array_encoding": array_encoding}
    return _post("forward", body)


def _gradients(
    network: NetworkLike,
    samples: SamplesLike,
    reduction: Reduction,
    per_sample: bool,
    include_units: bool,
    array_encoding: ArrayEncoding | None,
    wrt_inputs: bool = False,
) -> _Call:
    body = {
        "network": network,
        "samples": samples,
        "reduction": reduction,
        "per_sample": per_sample,
        "include_units": include_units,
        "array_encoding": array_encoding,
        "wrt_inputs": wrt_inputs or None,  # sent only when asked for: a server without it still answers
    }
    return _post("gradients", body)


def _hvp(
    network: NetworkLike,
    samples: SamplesLike,
    vector: ParameterVector | Mapping[str, Any],
    reduction: Reduction,
    array_encoding: ArrayEncoding | None,
) -> _Call:
    body = {
        "network": network,
        "samples": samples,
        "vector": vector,
        "reduction": reduction,
        "array_encoding": array_encoding,
    }
    return _post("hvp", body)


def _sgd(network: NetworkLike, samples: SamplesLike, learning_rate: float, options: dict[str, Any]) -> _Call:
    body = {"network": network, "samples": samples, "learning_rate": learning_rate, **options}
    call = _post("sgd", body)
    call.model = Training  # an SgdResponse that shows its loss curve in a notebook
    return call


def _explain(
    network: NetworkLike,
    samples: SamplesLike,
    sample: int,
    max_paths: int,
    array_encoding: ArrayEncoding | None,
) -> _Call:
    body = {
        "network": network,
        "samples": samples,
        "sample": sample,
        "max_paths": max_paths,
        "array_encoding": array_encoding,
    }
    call = _post("explain", body)
    call.model = Explanation  # an ExplainResponse whose formulas a notebook typesets
    return call


def _check(
    network: NetworkLike,
    samples: SamplesLike,
    gradients: Gradients | Mapping[str, Any] | None,
    reduction: Reduction,
    epsilon: float,
    rtol: float,
    atol: float,
    array_encoding: ArrayEncoding | None,
) -> _Call:
    body: dict[str, Any] = {
        "network": network,
        "samples": samples,
        "reduction": reduction,
        "epsilon": epsilon,
        "rtol": rtol,
        "atol": atol,
        "array_encoding": array_encoding,
    }
    if gradients is not None:
        body["gradients"] = gradients
    return _post("check", body)


def _render(network: NetworkLike, samples: SamplesLike | None, show: str, format: str) -> _Call:
    body: dict[str, Any] = {"network": network, "show": show}
    if samples is not None:
        body["samples"] = samples
    return _post("render", body, format=format)


def _saved(text: str, path: str | os.PathLike[str] | None, format: str = "dot") -> str:
    """The drawing (an Svg, shown as a picture in a notebook, when it is SVG), saved to `path`."""
    if path is not None:
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
    return Svg(text) if format == "svg" else text


def _sgd_options(
    epochs: int,
    batch_size: int | None,
    shuffle: bool,
    seed: int | None,
    reduction: Reduction,
    optimizer: OptimizerName,
    hyper: dict[str, Any],
    schedule: ScheduleLike | None,
    state: StateLike | None,
    array_encoding: ArrayEncoding | None,
) -> dict[str, Any]:
    """sgd's fields; the hyper-parameters left None are left out (the optimizer's defaults: the
    server refuses one the optimizer does not take, even at its default)."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "reduction": reduction,
        "optimizer": optimizer,
        **hyper,
        "schedule": schedule,
        "state": state,
        "array_encoding": array_encoding,
    }


#: sgd's options and their defaults, for sgd_stream (None: left out, the server's default)
_SGD_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "batch_size": None,
    "shuffle": False,
    "seed": None,
    "reduction": "mean",
    "array_encoding": None,
}


class Client:
    """A synchronous gradserve client.

    `base_url` falls back to GRADSERVE_URL, then http://127.0.0.1:8000; `api_key` to
    GRADSERVE_API_KEY. Connection errors, 429 and 5xx are retried `max_retries` times with
    exponential backoff and jitter, honouring Retry-After. Pass `http_client` to use your own
    `httpx.Client` (a custom transport, proxies); it is then yours to close.

    NumPy arrays of BASE64_MIN_ELEMENTS or more travel as raw bytes after the JSON (the binary
    framing); `binary=False` sends them base64 instead (for a server without the
    binary_tensor_data extension). `array_encoding="binary"` on a compute method asks for the
    answer framed too: each of its arrays a `BinaryArray` that `client.to_numpy` reads without
    a copy. Left open (None), the answer's arrays come as the request's large arrays went and
    read as nested lists.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = const.DEFAULT_TIMEOUT,
        max_retries: int = const.DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
        binary: bool = True,
    ) -> None:
        self._core = _Core(base_url, api_key, timeout, max_retries, binary)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client()
        self._sleep: Callable[[float], None] = time.sleep

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            request = self._core.request(self._http, call)
            outcome: httpx.Response | APIConnectionError
            try:
                outcome = self._http.send(request)
            except httpx.TransportError as exc:
                outcome = self._core.failure(exc, request)
            delay = self._core.next_delay(attempt, outcome)
            if delay is None:
                if isinstance(outcome, APIConnectionError):
                    raise outcome
                return call.result(outcome)
            self._sleep(delay)
            attempt += 1

    def call(self, endpoint: str, request: Mapping[str, Any], **query: str) -> Any:
        """Any compute endpoint by its name in `service.wire.ENDPOINTS`, the request a mapping of
        its fields: the answer as that endpoint's model (a drawing as text). The typed methods
        below are this, spelled out."""
        return self._send(_post(endpoint, {"array_encoding": None, **request}, **query))

    def forward(
        self, network: NetworkLike, samples: SamplesLike, *, array_encoding: ArrayEncoding | None = None
    ) -> ForwardResponse:
        """Every unit's s and z for a batch, and the loss when targets are given."""
        result: ForwardResponse = self._send(_forward(network, samples, array_encoding))
        return result

    def gradients(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        reduction: Reduction = "mean",
        per_sample: bool = False,
        include_units: bool = True,
        array_encoding: ArrayEncoding | None = None,
        wrt_inputs: bool = False,
    ) -> GradientsResponse:
        """The loss and its gradient with respect to every weight and bias; with `wrt_inputs`,
        also with respect to each sample's inputs (`result.gradients.inputs`)."""
        call = _gradients(network, samples, reduction, per_sample, include_units, array_encoding, wrt_inputs)
        result: GradientsResponse = self._send(call)
        return result

    def sgd(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        learning_rate: float,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        reduction: Reduction = "mean",
        optimizer: OptimizerName = "sgd",
        momentum: float | None = None,
        dampening: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        amsgrad: bool | None = None,
        alpha: float | None = None,
        centered: bool | None = None,
        lr_decay: float | None = None,
        initial_accumulator_value: float | None = None,
        schedule: ScheduleLike | None = None,
        state: StateLike | None = None,
        array_encoding: ArrayEncoding | None = None,
        progress: ProgressCallback | None = None,
    ) -> SgdResponse:
        """Train with `optimizer` (torch.optim's of that name; its hyper-parameters left None
        take its defaults) under `schedule`; `result.network` is the updated network, ready to
        post again, and `state=result.state` continues the training as if the calls were one. With
        `progress`, the training is streamed and each SgdProgress handed to it as epochs end."""
        hyper = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "betas": betas,
            "eps": eps,
            "amsgrad": amsgrad,
            "alpha": alpha,
            "centered": centered,
            "lr_decay": lr_decay,
            "initial_accumulator_value": initial_accumulator_value,
        }
        options = _sgd_options(
            epochs, batch_size, shuffle, seed, reduction, optimizer, hyper, schedule, state, array_encoding
        )
        if progress is not None:
            return followed(
                events(self._core, self._http, self._sleep, _sgd(network, samples, learning_rate, options)),
                progress,
            )
        result: SgdResponse = self._send(_sgd(network, samples, learning_rate, options))
        return result

    def sgd_stream(
        self, network: NetworkLike, samples: SamplesLike, learning_rate: float, **options: Any
    ) -> Iterator[SgdEvent]:
        """`sgd` streamed: an SgdProgress as each epoch ends (throttled to a few a second), last
        the SgdResponse. `options` are sgd's. Leaving the loop early stops the training."""
        options = {**_SGD_DEFAULTS, **options}  # (a field the server does not know: its 422)
        return events(self._core, self._http, self._sleep, _sgd(network, samples, learning_rate, options))

    def explain(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        sample: int = 0,
        max_paths: int = 64,
        array_encoding: ArrayEncoding | None = None,
    ) -> ExplainResponse:
        """Why each gradient has its value, for one sample: deltas, their terms, the paths."""
        result: ExplainResponse = self._send(_explain(network, samples, sample, max_paths, array_encoding))
        return result

    def check(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        gradients: Gradients | Mapping[str, Any] | None = None,
        reduction: Reduction = "mean",
        epsilon: float = 1e-6,
        rtol: float = 1e-5,
        atol: float = 1e-8,
        array_encoding: ArrayEncoding | None = None,
    ) -> CheckResponse:
        """Gradients checked by central differences: the service's own, or `gradients` (yours)."""
        call = _check(network, samples, gradients, reduction, epsilon, rtol, atol, array_encoding)
        result: CheckResponse = self._send(call)
        return result

    def hvp(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        vector: ParameterVector | Mapping[str, Any],
        *,
        reduction: Reduction = "mean",
        array_encoding: ArrayEncoding | None = None,
    ) -> HvpResponse:
        """H v, H the Hessian of the reduced loss with respect to every weight, bias and response,
        and `vector` v in the form of the gradients ({"weights": [...], "biases": {...}}, a missing
        bias or response 0); the gradients and v . H v beside it."""
        result: HvpResponse = self._send(_hvp(network, samples, vector, reduction, array_encoding))
        return result

    def render(
        self,
        network: NetworkLike,
        samples: SamplesLike | None = None,
        *,
        show: Literal["weights", "gradients"] = "weights",
        format: Literal["svg", "dot"] = "svg",
        path: str | os.PathLike[str] | None = None,
    ) -> str:
        """The network drawn as SVG (or Graphviz DOT); saved to `path` too when given."""
        text: str = self._send(_render(network, samples, show, format))
        return _saved(text, path, format)

    def info(self) -> InfoResponse:
        """The server's version, activations, losses and limits."""
        result: InfoResponse = self._send(_Call("GET", "/v1/info", InfoResponse))
        return result

    def health(self, ready: bool = False) -> Health:
        """Liveness (or, with `ready`, readiness) of the server."""
        result: Health = self._send(_Call("GET", "/readyz" if ready else "/healthz", Health))
        return result


class AsyncClient:
    """The asynchronous twin of `Client`: the same arguments, methods and errors, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = const.DEFAULT_TIMEOUT,
        max_retries: int = const.DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        binary: bool = True,
    ) -> None:
        self._core = _Core(base_url, api_key, timeout, max_retries, binary)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient()
        self._sleep: Callable[[float], Any] = asyncio.sleep

    @property
    def base_url(self) -> str:
        return self._core.base_url

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        attempt = 0
        while True:
            request = self._core.request(self._http, call)
            outcome: httpx.Response | APIConnectionError
            try:
                outcome = await self._http.send(request)
            except httpx.TransportError as exc:
                outcome = self._core.failure(exc, request)
            delay = self._core.next_delay(attempt, outcome)
            if delay is None:
                if isinstance(outcome, APIConnectionError):
                    raise outcome
                return call.result(outcome)
            await self._sleep(delay)
            attempt += 1

    async def call(self, endpoint: str, request: Mapping[str, Any], **query: str) -> Any:
        """Any compute endpoint by its name in `service.wire.ENDPOINTS` (see `Client.call`)."""
        return await self._send(_post(endpoint, {"array_encoding": None, **request}, **query))

    async def forward(
        self, network: NetworkLike, samples: SamplesLike, *, array_encoding: ArrayEncoding | None = None
    ) -> ForwardResponse:
        """Every unit's s and z for a batch, and the loss when targets are given."""
        result: ForwardResponse = await self._send(_forward(network, samples, array_encoding))
        return result

    async def gradients(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        reduction: Reduction = "mean",
        per_sample: bool = False,
        include_units: bool = True,
        array_encoding: ArrayEncoding | None = None,
        wrt_inputs: bool = False,
    ) -> GradientsResponse:
        """The loss and its gradient with respect to every weight and bias; with `wrt_inputs`,
        also with respect to each sample's inputs (`result.gradients.inputs`)."""
        call = _gradients(network, samples, reduction, per_sample, include_units, array_encoding, wrt_inputs)
        result: GradientsResponse = await self._send(call)
        return result

    async def sgd(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        learning_rate: float,
        *,
        epochs: int = 1,
        batch_size: int | None = None,
        shuffle: bool = False,
        seed: int | None = None,
        reduction: Reduction = "mean",
        optimizer: OptimizerName = "sgd",
        momentum: float | None = None,
        dampening: float | None = None,
        nesterov: bool | None = None,
        weight_decay: float | None = None,
        betas: tuple[float, float] | None = None,
        eps: float | None = None,
        amsgrad: bool | None = None,
        alpha: float | None = None,
        centered: bool | None = None,
        lr_decay: float | None = None,
        initial_accumulator_value: float | None = None,
        schedule: ScheduleLike | None = None,
        state: StateLike | None = None,
        array_encoding: ArrayEncoding | None = None,
        progress: ProgressCallback | None = None,
    ) -> SgdResponse:
        """Train with `optimizer` (torch.optim's of that name; its hyper-parameters left None
        take its defaults) under `schedule`; `result.network` is the updated network, ready to
        post again, and `state=result.state` continues the training as if the calls were one. With
        `progress` (a function or a coroutine function), the training is streamed and each
        SgdProgress handed to it as epochs end."""
        hyper = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "betas": betas,
            "eps": eps,
            "amsgrad": amsgrad,
            "alpha": alpha,
            "centered": centered,
            "lr_decay": lr_decay,
            "initial_accumulator_value": initial_accumulator_value,
        }
        options = _sgd_options(
            epochs, batch_size, shuffle, seed, reduction, optimizer, hyper, schedule, state, array_encoding
        )
        if progress is not None:
            return await afollowed(
                aevents(self._core, self._http, self._sleep, _sgd(network, samples, learning_rate, options)),
                progress,
            )
        result: SgdResponse = await self._send(_sgd(network, samples, learning_rate, options))
        return result

    def sgd_stream(
        self, network: NetworkLike, samples: SamplesLike, learning_rate: float, **options: Any
    ) -> AsyncIterator[SgdEvent]:
        """`sgd` streamed, for `async for`: an SgdProgress as each epoch ends (throttled to a
        few a second), last the SgdResponse. `options` are sgd's."""
        options = {**_SGD_DEFAULTS, **options}
        return aevents(self._core, self._http, self._sleep, _sgd(network, samples, learning_rate, options))

    async def explain(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        sample: int = 0,
        max_paths: int = 64,
        array_encoding: ArrayEncoding | None = None,
    ) -> ExplainResponse:
        """Why each gradient has its value, for one sample: deltas, their terms, the paths."""
        result: ExplainResponse = await self._send(
            _explain(network, samples, sample, max_paths, array_encoding)
        )
        return result

    async def check(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        *,
        gradients: Gradients | Mapping[str, Any] | None = None,
        reduction: Reduction = "mean",
        epsilon: float = 1e-6,
        rtol: float = 1e-5,
        atol: float = 1e-8,
        array_encoding: ArrayEncoding | None = None,
    ) -> CheckResponse:
        """Gradients checked by central differences: the service's own, or `gradients` (yours)."""
        call = _check(network, samples, gradients, reduction, epsilon, rtol, atol, array_encoding)
        result: CheckResponse = await self._send(call)
        return result

    async def hvp(
        self,
        network: NetworkLike,
        samples: SamplesLike,
        vector: ParameterVector | Mapping[str, Any],
        *,
        reduction: Reduction = "mean",
        array_encoding: ArrayEncoding | None = None,
    ) -> HvpResponse:
        """H v with the gradients and v . H v (see `Client.hvp`)."""
        result: HvpResponse = await self._send(_hvp(network, samples, vector, reduction, array_encoding))
        return result

    async def render(
        self,
        network: NetworkLike,
        samples: SamplesLike | None = None,
        *,
        show: Literal["weights", "gradients"] = "weights",
        format: Literal["svg", "dot"] = "svg",
        path: str | os.PathLike[str] | None = None,
    ) -> str:
        """The network drawn as SVG (or Graphviz DOT); saved to `path` too when given."""
        text: str = await self._send(_render(network, samples, show, format))
        return _saved(text, path, format)

    async def info(self) -> InfoResponse:
        """The server's version, activations, losses and limits."""
        result: InfoResponse = await self._send(_Call("GET", "/v1/info", InfoResponse))
        return result

    async def health(self, ready: bool = False) -> Health:
        """Liveness (or, with `ready`, readiness) of the server."""
        result: Health = await self._send(_Call("GET", "/readyz" if ready else "/healthz", Health))
        return result
