# Entry points. `make test` sets up everything it needs from a fresh clone.
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(CURDIR)/$(VENV)/bin

.PHONY: deps system-deps demo demo-scale test unit bench lint format clean

## deps: Debian packages and the Python virtualenv
deps: system-deps $(VENV)/.installed

system-deps:
	@scripts/system-deps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q '.[dev]'
	touch $@

## demo: the lab, a CA, a demo user, and a verified deploy to the lab's regbox
demo: deps
	scripts/demo.sh

## demo-scale: the demo, then its images moved to the lab's S3 bucket, served by two hosts
demo-scale: deps
	scripts/demo-scale.sh

## test: the whole suite, unit tests then lab tests on real hosts
test: deps
	PATH=$(BIN):$$PATH $(PY) -m pytest tests/unit tests/lab

## unit: only the unit tests (seconds, no lab)
unit: deps
	PATH=$(BIN):$$PATH $(PY) -m pytest tests/unit

## bench: speed on the lab (redeploy, fan-out, data path, local material, auth, prune); see docs/benchmarks.md
bench: deps
	PATH=$(BIN):$$PATH $(PY) -m bench.run

## lint: ruff, as CI runs it
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
