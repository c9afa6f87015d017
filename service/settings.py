"""The service's settings: one class, read from GRADSERVE_* environment variables."""

from __future__ import annotations

import os
import resource
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Limits(BaseSettings):
    """What one request may ask for; each is GRADSERVE_<NAME> and listed in /v1/info."""

    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="ignore")

    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1, description="request body size")
    max_units: int = Field(100_000, ge=1, description="unit entries in a network")
    max_neurons: int = Field(1_000_000, ge=1, description="units counted with their sizes")
    max_weight_elements: int = Field(5_000_000, ge=1, description="weight matrix elements")
    max_batch: int = Field(100_000, ge=1, description="samples in a batch")
    max_epochs: int = Field(10_000, ge=1, description="SGD epochs")
    max_steps: int = Field(100_000, ge=1, description="SGD steps (epochs x minibatches)")
    max_activation_elements: int = Field(
        4_000_000, ge=1, description="units (counted with their sizes) x batch: one table of values"
    )
    max_per_sample_elements: int = Field(
        4_000_000, ge=1, description="batch x parameters, when per_sample gradients are asked"
    )
    max_work: int = Field(
        300_000_000_000,
        ge=1,
        description="estimated work of a request's passes over its data (/v1/check's two per parameter "
        "included), in multiply-adds of a weight element by a sample; an activation or an update "
        "counted as the multiply-adds it takes as long as",
    )
    max_answer_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="estimated size of an answer, checked before computing it"
    )

    max_inflight_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="bytes held at once of request bodies (as they arrive, wait and compute) and of "
        "answers not yet sent",
    )
    inflight_reserve_bytes: int = Field(
        16 * 1024 * 1024,
        ge=0,
        description="bytes of max_inflight_bytes (at most half) kept for bodies of at most 64 KiB "
        "that have arrived whole: bodies still arriving together hold at most the rest, so slow or "
        "stalled uploads cannot deny small requests",
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="seconds a request's body may take to arrive before a 408"
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="seconds an answer waits for its client to read the next 256 KiB before the "
        "connection is dropped",
    )
    max_render_units: int = Field(200, ge=1, description="unit entries /v1/render draws")
    max_explain_factors: int = Field(
        100_000, ge=1, description="factors of all the paths one /v1/explain answer lists"
    )
    max_concurrent: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="computations at once"
    )
    queue_timeout_s: float = Field(
        2.0, ge=0, description="seconds a request waits for a free computation slot before a 503"
    )
    timeout_s: float = Field(30.0, gt=0, description="seconds one computation may run before a 503")
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="bytes of a request's head (its request line and headers); past it a 431",
    )
    max_headers: int = Field(200, ge=8, description="header lines in a request's head; past it a 431")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="seconds a request's whole head may take to arrive, from the connection's opening or the "
        "previous answer's end; past it the connection is closed",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="open connections per server process, at most the open-file limit less what the "
        "worker pool needs; past it an idle connection is closed for the new one, or the new one refused",
    )


class Settings(Limits):
    """Server settings: where to listen, workers, access, and the limits."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(
        default_factory=lambda: int(os.environ.get("WEB_CONCURRENCY", "1")),
        ge=1,
        description="uvicorn worker processes; WEB_CONCURRENCY when GRADSERVE_WORKERS is unset",
    )
    log_level: str = "info"
    api_key: SecretStr | None = Field(
        None, description="when set, every endpoint but the health checks needs it"
    )
    api_keys: SecretStr | None = Field(
        None, description="comma-separated keys, each accepted (beside api_key and api_keys_file)"
    )
    api_keys_file: Path | None = Field(
        None,
        description="a file of keys, one a line (blank lines and # comments ignored), each accepted; "
        "re-read when it changes, so keys rotate without a restart",
    )
    metrics: bool = Field(True, description="serve GET /metrics (Prometheus) and count what it shows")
    cors_origins: str = Field("", description="comma-separated origins allowed by CORS; none when empty")
    frame_ancestors: str = Field(
        "'none'",
        pattern=r"^[^;,\r\n]+$",
        description="the pages and SVG drawings' Content-Security-Policy frame-ancestors: who may "
        "frame them ('none': nobody; 'self' https://intranet.example: this server and that site)",
    )
    shutdown_grace_s: int = Field(10, ge=0, description="seconds in-flight requests get on SIGTERM")
    isolation: Literal["process", "thread"] = Field(
        "process", description="compute in worker processes (the default) or in the server's threads"
    )
    worker_max_tasks: int = Field(
        1000, ge=1, description="requests a worker process serves before it is replaced"
    )
    worker_max_rss_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="a worker process whose resident memory is over this after a request is "
        "replaced; 0: no budget",
    )
    inline_ms: float = Field(
        1.0,
        ge=0,
        description="forward, gradients and sgd requests of at most 64 KiB estimated to take (parse, "
        "compute and answer) under this many milliseconds run in the server process, without the hop "
        "to a worker; 0: never",
    )

    stream_heartbeat_s: float = Field(
        1.0,
        gt=0,
        description="a streamed answer (Accept: text/event-stream) sends a comment line after this many "
        "seconds without an event, so clients and proxies see it is alive",
    )

    @model_validator(mode="after")
    def _within_the_open_file_limit(self) -> Settings:
        self.max_connections = min(self.max_connections, connection_room(self))
        return self

    def limits(self) -> Limits:
        """The limits alone: what a computation needs to know, and all a worker is sent."""
        return Limits.model_construct(**{name: getattr(self, name) for name in Limits.model_fields})

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


#: descriptors the server process needs beside its connections: standard streams, the event
#: loop's, listening sockets, signal pipes, metrics files, a key file being read, the pipes
#: that start a worker process, the resource tracker's (measured: 15 with no worker)
FD_RESERVE = 32
#: and per worker process: its pipe, its sentinel, and its child end while it starts (3
#: measured, one spare); a recycled worker overlaps its successor, so twice the pool is reserved
FD_PER_WORKER = 4


def connection_room(settings: Settings) -> int:
    """How many connections this process can hold without running out of descriptors for
    what it needs beside them (so a dead worker can always be replaced); at least one.
    (A body's shared memory takes a descriptor too, but only when one is free: without, the
    body takes the pool's pipe.)"""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    workers = 2 * settings.max_concurrent if settings.isolation == "process" else 0
    return max(1, soft - FD_RESERVE - FD_PER_WORKER * workers)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
