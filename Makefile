# G-Edge: `make run` starts the embedded service on http://127.0.0.1:8000; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_MODEL := ../shared/models/yolox_nano.onnx
PG_CTL := pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start

.PHONY: run test venv services lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The embedded default: SQLite, in-process broker and worker threads, in-memory channel layer.
run: venv
	@mkdir -p var
	@if [ -z "$$GEDGE_MODEL_PATH" ] && [ ! -f models/yolox_nano.onnx ]; then \
	  if [ -f $(SHARED_MODEL) ]; then $(PY) manage.py fetch_model --from $(SHARED_MODEL); \
	  else $(PY) manage.py fetch_model; fi; \
	fi
	$(PY) manage.py migrate --noinput -v 0
	$(PY) manage.py ensure_admin
	$(PY) manage.py run_embedded --host 127.0.0.1 --port 8000

# PostgreSQL and Redis: start them where they are not running (CI machines start them; a stopped one is
# started with the same commands the machine uses).
services:
	@pg_isready -h 127.0.0.1 -p 5432 -q || { $(PG_CTL); for i in $$(seq 30); do pg_isready -h 127.0.0.1 -q && break; sleep 1; done; }
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log; sleep 1; }
	@pg_isready -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 -p 6379 ping

# Tests run with production-style settings from the environment: real PostgreSQL and Redis.
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gedge} \
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/15} DJANGO_SECRET_KEY=test-only-secret \
	GEDGE_MODEL_PATH=$${GEDGE_MODEL_PATH:-$(abspath $(SHARED_MODEL))} GEDGE_DRAMATIQ_NAMESPACE=gedge-test \
	GEDGE_CHANNELS_PREFIX=gedge-test

test: venv services
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests will fail"
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv services
	@command -v wrk >/dev/null && command -v hey >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk hey >/dev/null; } || echo "wrk/hey could not be installed: the API latency figures will be skipped"
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache
