# Lunara — the two commands operators and CI need: `make run` and `make test`;
# `make check` is the quick one for the edit loop.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_PROD := $(VENV)/.installed-prod
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test check coverage mutation lint typecheck stop status clean lock bench

$(BIN)/python:
	@scripts/ensure-venv.sh $(PYTHON) $(VENV)

$(STAMP_PROD): requirements/prod.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/prod.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	$(BIN)/python -m compileall -q blueprint lunara >/dev/null
	@touch $@

$(STAMP_DEV): requirements/dev.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
	$(BIN)/python -m compileall -q blueprint lunara >/dev/null
	@touch $@ $(STAMP_PROD)

## run: start the bot under the watchdog on its embedded defaults, then show its status
## (a clone made under umask 002 leaves the shipped manifest group-writable, which the
## CLI refuses: the shipped one is made go-w here; one an operator edits stays checked)
run: $(STAMP_PROD)
	chmod go-w manifest.json
	$(BIN)/lunara start --wait 60
	$(BIN)/lunara status

stop: $(STAMP_PROD)
	$(BIN)/lunara stop

status: $(STAMP_PROD)
	$(BIN)/lunara status

lint: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## typecheck: mypy, strict, over blueprint, lunara, tests and bench ([tool.mypy] files)
typecheck: $(STAMP_DEV)
	$(BIN)/mypy

## test: lint, type-check and run the whole suite against a private Redis
test: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	scripts/with-redis.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

## check: lint, type-check and run every test not marked `slow`, two at a time (the
## edit loop, under 3 minutes; CI and `make test` run the whole suite)
check: $(STAMP_DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	scripts/with-redis.sh $(BIN)/python -m pytest -m "not slow" -n 2 $(PYTEST_ARGS)

## coverage: the whole suite under coverage.py, the processes it starts measured too
## (the watchdog, the bot, the CLI); each module's figure and the total. Not part of
## `make test` (slower); PYTEST_ARGS='-m "not slow"' measures what `make check` runs.
coverage: $(STAMP_DEV)
	rm -f .coverage .coverage.*
	scripts/with-redis.sh $(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS); \
	status=$$?; \
	$(BIN)/python -m coverage combine --quiet && $(BIN)/python -m coverage report; \
	exit $$status

## mutation: mutmut over the order path, trailing stops, permission checks, accounts,
## payments and redaction, each under its own tests, then each one's score
## (docs/mutation-testing.md). Not part of `make test` (the order path alone takes
## about 10 minutes); MUTATION='redaction' runs only the named targets.
mutation: $(STAMP_DEV)
	scripts/with-redis.sh $(BIN)/python scripts/mutation.py $(MUTATION)

## lock: re-resolve the pinned lock files from pyproject.toml (needs uv)
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements/dev.lock
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -c requirements/dev.lock -o requirements/prod.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
