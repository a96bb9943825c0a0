# aihow: `make demo` runs the main job on a simulated host, `make test` runs every check.
VENV ?= .venv
PY := $(VENV)/bin/python
AIHOW := $(VENV)/bin/aihow
DEMO := $(or $(DEMO_DIR),/tmp/aihow-demo)

.PHONY: setup demo test lint pytest plans bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup-dev.sh
	bash scripts/setup-dev.sh
	touch $@

demo: setup
	$(AIHOW) validate config/example-mig-cluster.yaml

lint: setup
	$(VENV)/bin/ruff check planner tests benchmarks
	$(VENV)/bin/mypy
	shellcheck scripts/*.sh scripts/gpu/*.sh .ci/run

pytest: setup
	$(PY) -m pytest

test: lint pytest

bench: setup
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
