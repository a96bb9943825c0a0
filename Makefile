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

# The main job: a fresh simulated A100 host, the example cluster planned and applied on
# it, the result probed. DEMO_DIR (default /tmp/aihow-demo) is rebuilt each time.
demo: setup
	$(AIHOW) validate config/example-mig-cluster.yaml
	$(AIHOW) sim init $(DEMO) --spec config/sim-a100.toml --force
	$(AIHOW) plan config/example-mig-cluster.yaml --host sim:$(DEMO) -o $(DEMO)/plan.json
	$(AIHOW) apply $(DEMO)/plan.json --host sim:$(DEMO) --auto-approve --allow-reset
	$(AIHOW) plan config/example-mig-cluster.yaml --host sim:$(DEMO) --detailed-exitcode
	$(AIHOW) probe --host sim:$(DEMO)

lint: setup
	$(VENV)/bin/ruff check planner tests benchmarks plans docs/guides contrib/ansible
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo
	shellcheck scripts/*.sh scripts/gpu/*.sh .ci/run

pytest: setup
	$(PY) -m pytest

test: lint pytest

bench: setup
	$(PY) benchmarks/run.py

# Rewrite plans/ from the example configs; commit the diff with the planner change.
plans: setup
	$(PY) plans/regen.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
