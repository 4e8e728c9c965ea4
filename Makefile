# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export ANOMALY_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(ANOMALY_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help env prometheus demo test bench-features bench-validation bench-train bench-score lint format clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(UV):
	@echo "installing uv (Python package manager) with pip..."
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

env: $(UV) ## create .venv from uv.lock (Python 3.11)
	$(UV) sync --frozen --python 3.11

prometheus: ## install the Debian prometheus package when missing and we are root
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian package prometheus..."; \
	  (apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null)); \
	else echo "note: prometheus is not installed and cannot be installed here (needs root and apt-get)"; fi

demo: env prometheus ## simulate a fleet, serve it from Prometheus, ingest it through Airflow, print it
	$(UV) run --frozen anomaly demo

test: env prometheus ## run the whole test suite (2 workers, slowest modules first)
	$(UV) run --frozen pytest -n 2 --dist loadfile --no-loadscope-reorder

bench-features: env ## time the SQL features against pandas and polars (ARGS=--quick for a smoke run)
	$(UV) run --frozen python -m bench.bench_features $(ARGS)

bench-validation: env ## time the raw GE suite against numpy/pandas, target 1M rows/s (ARGS=--quick for a smoke run)
	$(UV) run --frozen python -m bench.bench_validation $(ARGS)

bench-train: env ## train and test the ensemble on a simulated fleet; leave-types-out (ARGS=--quick for a smoke run)
	$(UV) run --frozen python -m bench.bench_train $(ARGS)

bench-score: env ## score speed of the champion ensemble vs its XGBoost member: 100k rows/s, 1 ms (ARGS=--quick for a smoke run)
	$(UV) run --frozen python -m bench.bench_score $(ARGS)

lint: env ## ruff lint and format check
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: env ## apply ruff fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

clean: ## remove local state (the lake, Airflow's home) and the venv
	rm -rf var .venv
