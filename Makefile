# Two commands matter: `make run` and `make test`. Everything else is a helper for them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= policies/default.yaml
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: run test install bench lock clean system-deps

$(BIN)/gateway: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(BIN)/gateway

install: $(BIN)/gateway

run: install
	$(BIN)/gateway serve --config $(CONFIG) --host $(HOST) --port $(PORT)

# Debian packages that some tests and the benchmark drive for real (needs root and apt).
system-deps:
	./scripts/install-system-deps.sh

test: install
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: install
	./bench/run.sh $(BENCH_ARGS)

lock:
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile -q --extra dev --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) data .pytest_cache
