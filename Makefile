# tokentide: the two commands that matter are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.8
UV := python3 -m uv
STACK := python3 scripts/stack.py
PYTEST_ARGS ?=

.PHONY: help install up down status test lint bench bench-ingest bench-peer bench-streams bench-sink bench-dashboard clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: ## system packages (Java, Maven, PostgreSQL, promtool, Chromium), the locked Python environment, helm + compose, the web UI's vendored chart library, the Claude Code, Codex and Gemini CLIs (for their end-to-end tests); TimescaleDB when TIMESCALEDB_SOURCE names its source tarball
	bash scripts/install-system-deps.sh
	@if [ -n "$$TIMESCALEDB_SOURCE" ]; then bash scripts/install-timescaledb.sh >/dev/null; fi
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	bash scripts/install-helm.sh
	bash scripts/install-compose.sh
	bash scripts/vendor-web.sh
	bash scripts/install-claude-code.sh
	bash scripts/install-codex.sh
	bash scripts/install-gemini-cli.sh

up: install ## start Kafka, PostgreSQL (with TimescaleDB when available) and the five services (ingest, streams, sink, dashboard, notify); prints the URLs and the layout
	$(STACK) up

down: ## stop exactly what `make up` started
	$(STACK) down

status: ## what is running
	$(STACK) status

lint: install ## ruff (lint + format) and mypy --strict
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

test: lint ## the whole suite (unit, integration, end to end) on a real Kafka and PostgreSQL, then its database tests again on TimescaleDB
	$(STACK) run --timescale -- python3 scripts/pytest_legs.py .venv/bin/pytest $(PYTEST_ARGS)

bench: install ## end-to-end throughput and POST-to-API latency (not a test)
	$(STACK) run -- .venv/bin/python bench/e2e.py

bench-streams: install ## one streams worker: events+points/s, raw-to-signal latency (not a test)
	$(STACK) run -- .venv/bin/python bench/streams.py

bench-sink: install ## one sink process: rows/s into PostgreSQL vs a bare psql COPY of the same rows, both layouts (not a test)
	$(STACK) run --timescale -- python3 scripts/each_layout.py .venv/bin/python bench/sink.py

bench-dashboard: install ## the API over 10,000 sessions and 30 days of rollups: p50/p99 per route, both layouts (not a test)
	$(STACK) run --timescale -- python3 scripts/each_layout.py .venv/bin/python bench/dashboard.py

bench-ingest: install ## one ingest process under wrk: requests/s, records/s, p99 (not a test)
	@command -v wrk >/dev/null || apt-get install -y -q wrk
	$(STACK) run -- .venv/bin/python bench/ingest.py

bench-peer: install ## tokentide ingest against the OpenTelemetry Collector (built with ocb, cached in .local/peer), same Kafka, wrk, A B rounds (not a test)
	@command -v wrk >/dev/null || apt-get install -y -q wrk
	$(STACK) run -- .venv/bin/python bench/peer.py

clean: down ## stop the stack and delete its data (.local/)
	rm -rf .local
