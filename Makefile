# Two commands matter on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: setup demo test lint manifest ui bench clean

setup: $(VENV)/.installed .env $(DAGSTER_HOME)/dagster.yaml

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.env:
	cp .env.example .env

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Generate the demo world into data/raw and materialize the whole asset graph into data/warehouse.duckdb.
demo: setup
	$(BIN)/plg-pipeline generate --out data/raw --accounts 200 --days 90 --seed 7 --bad-rate 0.002
	$(BIN)/plg-pipeline run --raw data/raw --warehouse data/warehouse.duckdb

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# dbt's manifest is parsed afresh so @dbt_assets never load a stale one.
manifest: setup
	$(BIN)/python -c "from plg_pipeline.manifest import ensure_dbt_manifest; ensure_dbt_manifest(force=True)"

test: lint manifest
	$(BIN)/dagster definitions validate -m plg_pipeline.definitions
	$(BIN)/pytest -n 2 --durations=15

ui: setup
	$(BIN)/plg-pipeline ui

bench: setup
	$(BIN)/plg-pipeline bench --events 1000000

clean:
	rm -rf data/raw data/lake data/warehouse.duckdb* .dagster_home
