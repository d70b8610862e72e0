# Two entry points for a fresh machine:
#   make demo   set up, bring the real stack up, migrate, produce sample orders, run the pipeline
#   make test   set up, bring the real stack up, run the whole test suite against it
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  := ./scripts/devstack
ENV    := eval "$$($(STACK) env)"

.PHONY: install up down status migrate demo test lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

up:
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status

migrate: install up
	$(ENV) && $(PY) -m eos_pipeline migrate

demo: migrate
	$(ENV) && ./scripts/demo $(PY)

test: install up
	$(ENV) && $(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check eos_pipeline tests benchmarks migrations
	$(VENV)/bin/ruff format --check eos_pipeline tests benchmarks migrations

typecheck: install
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
