"""What a running app holds: one `Runtime`, built when the app starts (its lifespan) and read by
every route, typed (not kept in Starlette's untyped `app.state`, which mypy cannot check)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

from service.http.admission import Slots
from service.http.inflight import Inflight
from service.http.shutdown import Shutdown
from service.problems import NotReadyError
from service.settings import Limits, Settings
from service.transport.executors import Executor


@dataclass(frozen=True, slots=True)
class Runtime:
    """The app's settings and the parts built from them once, for as long as it runs.

    Built whole when the app starts, after its executor has started: so there is no Runtime
    without an executor, and none is changed afterwards (the parts that change, the slots taken,
    the bytes held, the shutdown's progress, are objects of their own).
    """

    settings: Settings
    #: settings.limits(), made once: what one request may ask for
    limits: Limits
    #: where computations run, started (worker processes, or threads)
    executor: Executor
    #: the engine passed its self-check where it runs (else /readyz answers 503)
    ready: bool
    #: the computation slots (GRADSERVE_MAX_CONCURRENT)
    slots: Slots
    #: bodies and answers held at once (GRADSERVE_MAX_INFLIGHT_BYTES)
    inflight: Inflight
    #: SIGTERM as the compute routes see it
    shutdown: Shutdown

    @classmethod
    def build(cls, settings: Settings, executor: Executor, ready: bool) -> Runtime:
        return cls(
            settings=settings,
            limits=settings.limits(),
            executor=executor,
            ready=ready,
            slots=Slots(settings.max_concurrent),
            inflight=Inflight(settings.max_inflight_bytes, settings.inflight_reserve_bytes),
            shutdown=Shutdown(settings.shutdown_grace_s),
        )

    @staticmethod
    def of(scope: Scope) -> Runtime:
        """The runtime of the app serving `scope`; a 503 before it has started (uvicorn sends
        nothing before then, but the app may be called without its lifespan)."""
        runtime = getattr(scope["app"], "runtime", None)
        if not isinstance(runtime, Runtime):
            raise NotReadyError("the server has not started")
        return runtime
