# Two commands matter: `make run` and `make test`. Everything else is a helper for them.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck format install bench bench-agent bench-profile bench-routing lock clean system-deps js-deps agent-deps

# Installs only when pyproject.toml or requirements.lock changed (by content: a checkout that
# only touches their timestamps reinstalls nothing), quietly: `make run` should end with what
# the server prints, not pip's output.
PIP := $(BIN)/pip install -q --disable-pip-version-check
INSTALLED := $(VENV)/.installed-from
install:
	@sum=$$(cat pyproject.toml requirements.lock | cksum); \
	if [ -x $(BIN)/gateway ] && [ "$$(cat $(INSTALLED) 2>/dev/null)" = "$$sum" ]; then exit 0; fi; \
	echo "installing into $(VENV) ..."; \
	{ test -x $(BIN)/python || $(PY) -m venv $(VENV); } && \
	$(PIP) --upgrade pip && \
	$(PIP) -r requirements.lock && \
	$(PIP) --no-deps -e . && \
	echo "$$sum" > $(INSTALLED) && \
	echo "installed. The gateway command: . $(VENV)/bin/activate, then gateway --help (or $(BIN)/gateway)"

# `make run PORT=8081 HOST=0.0.0.0 CONFIG=my.yaml`: only what is given on make's command line is
# passed on. Otherwise the gateway's own defaults and GATEWAY_CONFIG/HOST/PORT decide, as for
# `gateway serve`: fixed flags here overrode those variables, and a HOST or PORT the shell
# happened to export (tcsh's HOST is the host name) silently moved the server.
given = $(if $(filter command line,$(origin $(1))),$(2) $($(1)))
run: install
	$(BIN)/gateway serve $(call given,CONFIG,--config) $(call given,HOST,--host) $(call given,PORT,--port)

# Debian packages that some tests and the benchmark drive for real (needs root and apt).
system-deps:
	./scripts/install-system-deps.sh

# The openai npm package tests/js drives (tests/e2e/test_js_client.py), from its lock file;
# done here rather than inside a test, where a slow registry would eat the test's timeout.
# Without npm there is nothing to install: that test skips, or fails under GATEWAY_TEST_STRICT.
# If `npm ci` fails (offline), the other tests still run; that test retries and says why.
JS_DEPS := tests/js/node_modules/.package-lock.json
$(JS_DEPS): tests/js/package-lock.json
	if command -v node >/dev/null && command -v npm >/dev/null; then \
	  npm ci --prefix tests/js --no-audit --no-fund || echo "warning: npm ci failed; tests/e2e/test_js_client.py will retry it" >&2; \
	fi

js-deps: $(JS_DEPS)

# Claude Code and Codex CLI, which tests/e2e/test_coding_agents_e2e.py runs headless against the
# gateway, from tests/agents/package-lock.json. About 800 MB of native binaries, so not part of
# `make test` (a developer who has not run this gets a skip); .ci/run runs it before `make test`,
# where GATEWAY_TEST_STRICT turns the skip into a failure. Reinstalls only when the lock changed;
# a failed `npm ci` fails this target (the test never installs them itself).
AGENT_DEPS := tests/agents/node_modules/.package-lock.json
$(AGENT_DEPS): tests/agents/package-lock.json
	npm ci --prefix tests/agents --no-audit --no-fund

agent-deps: $(AGENT_DEPS)

# One formatter and linter (ruff, pinned in requirements.lock); `make format` fixes what it can.
lint: install
	$(BIN)/ruff format --check gateway tests bench scripts
	$(BIN)/ruff check gateway tests bench scripts

# mypy --strict on all of gateway/ (`files` in [tool.mypy], pyproject.toml; pinned in requirements.lock).
typecheck: install
	$(BIN)/mypy

format: install
	$(BIN)/ruff format gateway tests bench scripts
	$(BIN)/ruff check --fix gateway tests bench scripts

# tests/test_openapi.py runs on its own, without xdist: under xdist schemathesis reports its
# thirty fuzzed operations as one test, which hides what ran (32 items, 3 reported).
# Three workers on a two-core machine: most end-to-end tests wait on the processes they start
# (gateways, Redis, fake upstreams), so two workers kept the cores busy 65% of the time (875 s
# for the suite; 789 s with three). Four saturated them, and a test that reads a stream's
# timing then saw its events late.
test: install js-deps lint typecheck
	$(BIN)/python -m pytest -n 3 --dist loadgroup --ignore=tests/test_openapi.py $(PYTEST_ARGS)
	$(BIN)/python -m pytest -p no:xdist tests/test_openapi.py

bench: install
	./bench/run.sh $(BENCH_ARGS)

# What each ingress API (chat, Messages, Responses; translated and pass-through) costs per
# request on a realistic agent turn (issue 9).
bench-agent: install
	$(BIN)/python bench/agent_bench.py $(BENCH_ARGS)

# Where the gateway's CPU goes under wrk, by py-spy (PY_SPY=path/to/py-spy; a dev tool, not a dependency).
bench-profile: install
	$(BIN)/python bench/profile_gateway.py $(BENCH_ARGS)

# Cost of the routing decision itself (in-process, no network).
bench-routing: install
	$(BIN)/python bench/routing_decision.py

lock:
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile -q --extra dev --strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) data .pytest_cache
