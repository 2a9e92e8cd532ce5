# paystream: `make run` brings up the embedded stack and runs the demo; `make test` tests it.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PAYSTREAM := $(BIN)/paystream
PYTEST_ARGS ?=
# Test files run in parallel, each file on one pytest worker with its own broker: most of an
# integration test's time is waiting on processes, so 2 workers on 2 cores took make test's
# pytest from 19 to 10.5 minutes. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: chaos-payments help venv kafka run demo test unit integration soak chaos bench bench-readme check openapi format up down status clean fuzz

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install paystream with its dev tools

kafka: $(STAMP) ## fetch the Apache Kafka jars from Maven Central into var/kafka/libs
	$(BIN)/python -c "from base.config import kafka_libs_dir, load_settings; from ops.kafka import ensure_jars; print(ensure_jars(kafka_libs_dir(load_settings())))"

run: kafka ## bring up the embedded stack, send the demo workload, print a summary
	$(PAYSTREAM) up
	$(PAYSTREAM) demo
	@echo "The stack keeps running: try '$(PAYSTREAM) status', '$(PAYSTREAM) balances'; 'make down' stops it."

demo: ## send the demo workload again to a running stack
	$(PAYSTREAM) demo --seed $$RANDOM

up: kafka ## start the stack (idempotent)
	$(PAYSTREAM) up

down: ## stop what `up` started (data is kept)
	@if [ -x $(PAYSTREAM) ]; then $(PAYSTREAM) down; fi

status: ## show the broker and every process
	$(PAYSTREAM) status

test: kafka check ## make check, then unit + integration tests (real Kafka broker on free ports), no chaos
	$(BIN)/pytest -m 'not chaos' $(XDIST) $(PYTEST_ARGS)

unit: $(STAMP) ## unit tests only (no broker; under 2 minutes)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: kafka ## integration tests only (real Kafka broker, chDB, HTTP servers), no chaos
	$(BIN)/pytest tests/integration -m 'not chaos' $(XDIST) $(PYTEST_ARGS)

soak: kafka ## chaos soak: 100k transfers + every command type, 24 kill -9 and a broker restart, verified (SOAK_ARGS=--help)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

chaos: kafka ## the soak, then the other chaos tests (kill -9 of workers in 50k transfers, 3-broker failover)
	@$(BIN)/python -m tests.soak $(SOAK_ARGS); soak=$$?; \
	$(BIN)/pytest -m chaos -v --deselect tests/chaos/test_soak.py $(PYTEST_ARGS); tests=$$?; \
	exit $$(( soak || tests ))

chaos-payments: kafka ## payments under kill -9 of every payments process (PAYSTREAM_CHAOS_ROUNDS, _SEED)
	$(BIN)/pytest -m chaos tests/chaos/test_payments_chaos.py -s $(PYTEST_ARGS)

bench: kafka ## benchmarks; JSON lines out, summary in bench/report.json (BENCH_ARGS="--only X")
	@$(BIN)/python -c 'import locust' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-readme: $(STAMP) ## rewrite the README's benchmark table (and bench/report.md) from bench/report.json
	$(BIN)/python bench/run.py --readme

FUZZ_SECONDS ?= 60
fuzz: $(STAMP) ## atheris on the JSON and Avro decoders, FUZZ_SECONDS each (skipped without atheris)
	@if $(BIN)/python -c 'import atheris' 2>/dev/null; then \
		for h in tests/fuzz/atheris_*.py; do \
			echo "== $$h ($(FUZZ_SECONDS) s)"; \
			$(BIN)/python $$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
		done; \
	else \
		echo "fuzz: atheris is not installed, skipping ($(BIN)/pip install atheris)"; \
	fi

check: $(STAMP) ## ruff (lint + format check), mypy strict, and the import layers (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

openapi: $(STAMP) ## write the read side's OpenAPI document (streams/readside/openapi.json) after its views change
	$(BIN)/python -c "import json, pathlib; from streams.readside.app import openapi_document; pathlib.Path('streams/readside/openapi.json').write_text(json.dumps(openapi_document(), indent=2) + '\n')"

format: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: down ## remove var/ (all local data) and the venv
	rm -rf var $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
