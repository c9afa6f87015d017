# gradserve: the HTTP service in a small image.
# The base is a build argument so the same file builds on a plain Debian python3 too
# (see .ci/container): everything runs from a venv, never from the base's python or pip.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/gradserve
COPY pyproject.toml README.md ./
COPY service ./service
COPY client ./client
RUN /opt/gradserve/bin/python -m pip install --no-cache-dir ".[server]"

FROM ${BASE_IMAGE}
# A non-root user with a fixed number, so Kubernetes can check runAsNonRoot.
RUN groupadd --gid 10001 gradserve \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gradserve
COPY --from=build /opt/gradserve /opt/gradserve
ENV PATH=/opt/gradserve/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRADSERVE_HOST=0.0.0.0 \
    GRADSERVE_PORT=8000 \
    GRADSERVE_SHUTDOWN_GRACE_S=20 \
    WEB_CONCURRENCY=1 \
    OPENBLAS_NUM_THREADS=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# No curl in slim images: Python's own urllib asks /healthz.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GRADSERVE_PORT', '8000'), timeout=2)"]
CMD ["gradserve", "--host", "0.0.0.0"]
