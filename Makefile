# One way to run each thing. `make serve` and `make test` each install what they need first.
# `make serve PORT=9000 HOST=0.0.0.0` passes --port and --host (default: GRADSERVE_PORT, else 8000;
# GRADSERVE_HOST, else 127.0.0.1).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test quick browser lint typecheck format bench install install-torch container kube wheel

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

# the tests compare every optimizer, schedule and gradient with torch's in float64: without
# torch they would be skipped, so `make test` installs it (the `torch` extra)
install-torch: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,torch]'

serve: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[server]'
	$(BIN)/gradserve $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

# the browser tests drive Debian's chromium (Playwright's own browser download cannot be used):
# installed here when missing and we may (root); without it they are skipped, saying why
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: install-torch browser
	$(BIN)/ruff check service client tests bench
	$(BIN)/ruff format --check service client tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# the loop while editing: every test but those marked slow
quick: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check service client tests bench

format: install
	$(BIN)/ruff format service client tests bench
	$(BIN)/ruff check --fix service client tests bench

typecheck: install
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

container: install
	bash .ci/container

# deploy/kubernetes played with podman on the image `make container` built
kube: container
	bash .ci/kube

# the sdist and wheel built, checked, and installed alone in fresh venvs
wheel: install
	bash .ci/wheel
