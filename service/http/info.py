"""The FastAPI routes: /v1/info, /healthz and /readyz."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service import __version__, engine, wire
from service.http.openapi import AUTH_ERRORS, problem_doc
from service.http.runtime import Runtime
from service.problems import (
    NotReadyError,
)
from service.settings import Limits, Settings
from service.wire import framing


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return Runtime.of(request.scope).settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

router = APIRouter(prefix="/v1")


@router.get(
    "/info",
    response_model=wire.InfoResponse,
    responses=AUTH_ERRORS,
    summary="Version, activations, losses, optimizers, schedules and limits",
)
async def info(settings: SettingsDep) -> wire.InfoResponse:
    limits = {name: getattr(settings, name) for name in Limits.model_fields}
    return wire.InfoResponse(
        version=__version__,
        activations=list(engine.ACTIVATIONS),
        losses=list(engine.LOSSES),
        optimizers=list(engine.OPTIMIZERS),
        schedules=list(engine.SCHEDULES),
        limits=limits,
        extensions=[framing.EXTENSION],
    )


health = APIRouter()


@health.get("/healthz", response_model=wire.Health, summary="Liveness")
async def healthz() -> wire.Health:
    return wire.Health(status="ok")


@health.get(
    "/readyz",
    response_model=wire.Health,
    responses={503: problem_doc("The self-check has not passed")},
    summary="Readiness: 200 once the engine has passed its self-check",
)
async def readyz(request: Request) -> wire.Health:
    runtime = Runtime.of(request.scope)
    if runtime.shutdown.started:
        raise NotReadyError("the server is shutting down")
    if not runtime.ready:
        raise NotReadyError("the engine's start-up self-check has not passed")
    return wire.Health(status="ready")
