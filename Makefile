# Two commands on a fresh machine: `make demo` (run the app) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py
ONLY ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install lock browser demo test test-faults bench lint format serve worker clean

install: $(VENV)/.installed  ## create .venv and install requirements.lock (quick when nothing changed)

# requirements.txt is the list people edit (top-level pins); requirements.lock pins the whole tree
# and is what gets installed. `make lock` re-resolves it after requirements.txt changes.
$(VENV)/.installed: requirements.lock requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	touch $@

# Re-resolve the locks from requirements.txt with uv (in its own throwaway venv), keeping every
# pin that still satisfies it; `make lock UPGRADE=1` takes the newest versions instead.
# requirements-gpu.lock is the same with tensorflow[and-cuda] (the GPU worker image).
UV_TOOLS := var/lock-tools
UV_COMPILE = $(UV_TOOLS)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--index-url https://pypi.org/simple --custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)
lock:
	test -x $(UV_TOOLS)/bin/uv || { $(PYTHON) -m venv $(UV_TOOLS) && $(UV_TOOLS)/bin/pip install --quiet uv==0.13.9; }
	$(UV_COMPILE) requirements.txt -o requirements.lock
	sed 's/^tensorflow-cpu==/tensorflow[and-cuda]==/' requirements.txt > var/requirements-gpu.txt
	$(UV_COMPILE) var/requirements-gpu.txt -o requirements-gpu.lock

# Browser tests drive Debian's Chromium (apt package `chromium`); Playwright never downloads a browser.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: install Debian's chromium (sudo apt-get install chromium) to run the browser tests"; fi; }

demo: install  ## migrate, load the bundled data, train, screen, and serve on http://$(HOST):$(PORT)/
	$(MANAGE) migrate --noinput
	$(MANAGE) demo --url http://$(HOST):$(PORT)/
	$(MANAGE) runserver $(HOST):$(PORT) --noreload

serve: install
	$(MANAGE) runserver $(HOST):$(PORT)

worker: install  ## a Celery worker on every CPU queue (needs CELERY_BROKER_URL)
	$(BIN)/celery -A screening worker -Q default,ingest,feff,classify,train --loglevel=INFO

test: install browser  ## the whole suite; uses PostgreSQL/Redis when DATABASE_URL/CELERY_BROKER_URL are set
	$(BIN)/python -m pytest

test-faults: install  ## the fault-injection suite only (real workers, kill -9, restarts)
	$(BIN)/python -m pytest -m faults

bench: install  ## every benchmark in bench/, or one group: make bench ONLY=mlcore
	$(BIN)/python bench/run.py $(ONLY)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var staticfiles .pytest_cache test-artifacts
