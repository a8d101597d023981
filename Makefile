# G-Edge: `make run` starts the embedded service on http://127.0.0.1:8000; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SHARED_MODEL := ../shared/models/yolox_nano.onnx
PG_CTL := pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -n1) main start

.PHONY: run test venv scan-venv lock services lint bench clean

# The venv installs the dev lock (runtime + dev extra, hashed), then the project itself without dependencies;
# a changed lock or pyproject.toml reinstalls. `pip check` fails where pyproject.toml names a runtime
# dependency the lock lacks: run `make lock`. Versions and how to change them: docs/dependencies.md.
DEV_LOCK := requirements/dev.txt
$(VENV)/.installed: $(DEV_LOCK) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r $(DEV_LOCK)
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check || { echo "$(DEV_LOCK) lacks what pyproject.toml requires: run make lock"; exit 1; }
	touch $@

venv: $(VENV)/.installed

# checkov, the static security scan of the rendered manifests, in a virtualenv of its own (requirements/scan.in
# says why): tests/test_k8s_manifests.py runs .venv-scan/bin/checkov.
SCAN_VENV := .venv-scan
SCAN_LOCK := requirements/scan.txt
$(SCAN_VENV)/.installed: $(SCAN_LOCK)
	test -x $(SCAN_VENV)/bin/python || $(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install -q --upgrade pip
	$(SCAN_VENV)/bin/python -m pip install -q --require-hashes -r $(SCAN_LOCK)
	touch $@

scan-venv: $(SCAN_VENV)/.installed

# The lock files, compiled by uv from the ranges in pyproject.toml: dev.txt for .venv (any platform, Python
# 3.11+), cpu.txt and gpu.txt for the two images (Dockerfile: wheels only, their Python and glibc).
# Existing pins are kept; `make lock UPGRADE=1` upgrades every package within its range,
# `make lock UPGRADE_PACKAGE="django twisted"` only those.
UV := $(VENV)/bin/uv
UV_COMPILE := $(UV) pip compile --quiet --generate-hashes --custom-compile-command 'make lock' \
	$(if $(filter 1 yes true,$(UPGRADE)),--upgrade) $(foreach p,$(UPGRADE_PACKAGE),--upgrade-package $(p))
# uv compiles into a copy that replaces the lock only where it differs: an unchanged lock keeps its date, so
# the next `make test` does not reinstall .venv.
compile = f=requirements/$(1).txt; cp $$f $$f.new 2>/dev/null; \
	$(UV_COMPILE) $(2) $(or $(3),pyproject.toml) -o $$f.new || { rm -f $$f.new; exit 1; }; \
	if cmp -s $$f.new $$f; then rm $$f.new; echo "$$f: unchanged"; else mv $$f.new $$f; echo "$$f: written"; fi

lock: $(UV)
	@$(call compile,dev,--universal --python-version 3.11 --extra dev)
	@$(call compile,cpu,--only-binary :all: --python-version 3.11 --python-platform x86_64-manylinux_2_36 --extra cpu)
	@$(call compile,gpu,--only-binary :all: --python-version 3.12 --python-platform x86_64-manylinux_2_39 --extra gpu)
	@$(call compile,scan,--universal --python-version 3.11,requirements/scan.in)

# uv alone (at the dev lock's version), so that `make lock` runs where the lock no longer installs.
$(UV):
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$$(grep -m1 -o '^uv==[^ ]*' $(DEV_LOCK) 2>/dev/null || echo 'uv>=0.13,<1')"

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

# Tests run with production-style settings from the environment: real PostgreSQL and Redis, a secret key of the
# 50 characters production requires, and over plain HTTP (no TLS-ending ingress in front): no HTTPS redirect, no
# Secure-only cookies (tests/test_production_settings.py checks production's defaults without these switches).
TEST_ENV := DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/gedge} \
	REDIS_URL=$${TEST_REDIS_URL:-redis://127.0.0.1:6379/15} \
	DJANGO_SECRET_KEY=test-only-secret-key-never-used-in-production-0123456789 \
	GEDGE_SECURE_SSL_REDIRECT=false GEDGE_SECURE_COOKIES=false \
	GEDGE_MODEL_PATH=$${GEDGE_MODEL_PATH:-$(abspath $(SHARED_MODEL))} GEDGE_DRAMATIQ_NAMESPACE=gedge-test \
	GEDGE_CHANNELS_PREFIX=gedge-test GEDGE_FAULT_LAB=1

test: venv scan-venv services
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium could not be installed: browser tests will fail"
	@command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null; } || echo "nginx could not be installed: the ingress test will fail"
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

bench: venv services
	@command -v wrk >/dev/null && command -v hey >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk hey >/dev/null; } || echo "wrk/hey could not be installed: the API latency figures will be skipped"
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf var .pytest_cache
