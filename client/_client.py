"""The synchronous `Client`; `client._async_client.AsyncClient` is its twin, over the same
core (`client._core`) and the same calls (`client._calls`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import httpx

from client import _calls as calls
from client import _constants as const
from client._calls import NetworkLike, SamplesLike, ScheduleLike, StateLike
from client._core import Call, Core
from client._errors import APIConnectionError
from client._stream import ProgressCallback, SgdEvent, events, followed
from service.wire import (
    ArrayEncoding,
    CheckResponse,
    ExplainResponse,
    ForwardResponse,
    Gradients,
    GradientsResponse,
    Health,
    HvpResponse,
    InfoResponse,
    OptimizerName,
    ParameterVector,
    Reduction,
    SgdResponse,
)


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
        self._core = Core(base_url, api_key, timeout, max_retries, binary)
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

    def _send(self, call: Call) -> Any:
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
        return self._send(calls.post(endpoint, {"array_encoding": None, **request}, **query))

    def forward(
        self, network: NetworkLike, samples: SamplesLike, *, array_encoding: ArrayEncoding | None = None
    ) -> ForwardResponse:
        """Every unit's s and z for a batch, and the loss when targets are given."""
        result: ForwardResponse = self._send(calls.forward(network, samples, array_encoding))
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
        call = calls.gradients(
            network, samples, reduction, per_sample, include_units, array_encoding, wrt_inputs
        )
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
        options = calls.sgd_options(
            epochs, batch_size, shuffle, seed, reduction, optimizer, hyper, schedule, state, array_encoding
        )
        if progress is not None:
            return followed(
                events(
                    self._core, self._http, self._sleep, calls.sgd(network, samples, learning_rate, options)
                ),
                progress,
            )
        result: SgdResponse = self._send(calls.sgd(network, samples, learning_rate, options))
        return result

    def sgd_stream(
        self, network: NetworkLike, samples: SamplesLike, learning_rate: float, **options: Any
    ) -> Iterator[SgdEvent]:
        """`sgd` streamed: an SgdProgress as each epoch ends (throttled to a few a second), last
        the SgdResponse. `options` are sgd's. Leaving the loop early stops the training."""
        options = {**calls.SGD_DEFAULTS, **options}  # (a field the server does not know: its 422)
        return events(
            self._core, self._http, self._sleep, calls.sgd(network, samples, learning_rate, options)
        )

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
        result: ExplainResponse = self._send(
            calls.explain(network, samples, sample, max_paths, array_encoding)
        )
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
        call = calls.check(network, samples, gradients, reduction, epsilon, rtol, atol, array_encoding)
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
        result: HvpResponse = self._send(calls.hvp(network, samples, vector, reduction, array_encoding))
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
        text: str = self._send(calls.render(network, samples, show, format))
        return calls.saved(text, path, format)

    def info(self) -> InfoResponse:
        """The server's version, activations, losses and limits."""
        result: InfoResponse = self._send(Call("GET", "/v1/info", InfoResponse))
        return result

    def health(self, ready: bool = False) -> Health:
        """Liveness (or, with `ready`, readiness) of the server."""
        result: Health = self._send(Call("GET", "/readyz" if ready else "/healthz", Health))
        return result
