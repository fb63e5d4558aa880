# The two commands a newcomer needs are `make run` and `make test`; both create the venv first.

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
# pip runs again only when requirements.txt is newer than this stamp.
STAMP := $(VENV)/.requirements-installed
COMPOSE ?= docker-compose
PYTEST_ARGS ?=

# The fast suite runs on SQLite, the filesystem store and an eager worker, whatever
# the caller's shell has exported.
FAST_ENV := env -u DATABASE_URL -u REDIS_URL -u BLOB_STORAGE_URL -u S3_ENDPOINT_URL

.PHONY: venv run test integration compose-check

venv: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# pip byte-compiles one file at a time, which costs minutes with onnx, sympy and moto;
# compileall does it on every core. Compile up front all the same: with
# PYTHONDONTWRITEBYTECODE set (as on the CI machines) nothing is cached on import, and
# every process would pay for compiling its imports at each start. Like pip, a file that
# does not compile is reported, not fatal.
$(STAMP): requirements.txt | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --disable-pip-version-check --no-compile -q -r requirements.txt
	$(VENV)/bin/python -m compileall -q -j 0 $(VENV)/lib || true
	touch $@

run: venv
	$(VENV)/bin/python manage.py serve

test: venv
	$(FAST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS)

# The whole suite, integration tests included, against real PostgreSQL and Redis.
# BLOBHUB_REQUIRE_INTEGRATION turns a would-be skip into a failure, so a misconfigured
# run cannot pass by skipping everything that matters.
integration: venv
	@test -n "$(DATABASE_URL)" || { echo "integration: set DATABASE_URL (postgres://...)" >&2; exit 2; }
	@test -n "$(REDIS_URL)" || { echo "integration: set REDIS_URL (redis://...)" >&2; exit 2; }
	BLOBHUB_REQUIRE_INTEGRATION=1 $(VENV)/bin/pytest $(PYTEST_ARGS)

compose-check:
	$(COMPOSE) -f docker-compose.yml config -q
